"""The worker processes of a chaos run: each one a child whose stderr is watched, and the pool
that starts, kills, replaces and finally stops them."""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

from bench.chaos._config import READY_TEXT, WORKER_STOP_WAIT, ChaosError

log = logging.getLogger("reqrep.bench.chaos")

REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One ``python -m reqrep worker bench.chaos_service:service`` child; its stderr is read on
    a thread (so the pipe never fills), keeping the last lines and watching for "worker ready".
    """

    def __init__(self, slot: int, argv: list[str], env: dict[str, str]) -> None:
        self.slot = slot
        self.spawned = time.monotonic()
        self.ready_at: float | None = None
        self.ready = threading.Event()
        self.killed = False  # by us, on purpose
        self.tail: collections.deque[str] = collections.deque(maxlen=100)
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not theirs
        )
        self._reader = threading.Thread(
            target=self._read, name=f"chaos-worker-{slot}-{self.proc.pid}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        stream = self.proc.stderr
        if stream is None:
            return
        with contextlib.suppress(OSError, ValueError):  # the pipe closed under us at the end
            for line in stream:
                self.tail.append(line.rstrip("\n"))
                if not self.ready.is_set() and READY_TEXT in line:
                    self.ready_at = time.monotonic()
                    self.ready.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap (bounded)."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the process to exit, SIGKILL it if not; close the pipe."""
        try:
            self.proc.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not exit after SIGTERM: killing it", self.pid)
            self.kill()
        self._reader.join(2)
        if self.proc.stderr is not None:
            with contextlib.suppress(OSError):
                self.proc.stderr.close()

    def describe(self) -> str:
        lines = "\n".join(f"    {line}" for line in list(self.tail)[-15:])
        return f"worker pid {self.pid} (exit {self.proc.returncode}); last stderr lines:\n{lines}"


class WorkerPool:
    """``size`` worker slots. The chaos thread kills and replaces workers; the run's thread
    starts them and stops them at the end. A lock guards the slots; after ``stop_all`` no new
    worker is started."""

    def __init__(
        self, size: int, argv: list[str], env: dict[str, str], ready_timeout: float
    ) -> None:
        self._size = size
        self._argv = argv
        self._env = env
        self._ready_timeout = ready_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._slots: list[WorkerProcess] = []
        self._retired: list[WorkerProcess] = []
        self._next = 0  # round robin
        self.killed = 0
        self.kills_skipped = 0
        self.unexpected_exits = 0
        self.events: list[tuple[float, str, str]] = []  # (monotonic, kind, detail)
        self.problems: list[str] = []

    def start_all(self) -> None:
        with self._lock:
            self._slots = [self._spawn(slot) for slot in range(self._size)]

    def _spawn(self, slot: int) -> WorkerProcess:
        """Start a worker for ``slot``. Caller holds the lock."""
        if self._closed:
            raise ChaosError("worker pool is stopping")
        worker = WorkerProcess(slot, self._argv, self._env)
        self.events.append((worker.spawned, "spawn", f"slot {slot} pid {worker.pid}"))
        return worker

    def wait_ready(self, deadline: float) -> None:
        """Wait until every current worker is ready; ChaosError at ``deadline``."""
        with self._lock:
            workers = list(self._slots)
        for worker in workers:
            while not worker.ready.wait(0.1):
                if not worker.alive():
                    raise ChaosError(f"a worker exited before it was ready: {worker.describe()}")
                if time.monotonic() >= deadline:
                    raise ChaosError(f"a worker was not ready in time: {worker.describe()}")

    def kill_next(self, wait_ready: float) -> None:
        """SIGKILL the next worker in turn and start its replacement at once.

        A worker still starting is given up to ``wait_ready`` seconds to become ready first,
        else this turn is skipped (counted), so kills never pile up on workers that never served.
        """
        with self._lock:
            if self._closed:
                return
            slot = self._next % self._size
            self._next += 1
            worker = self._slots[slot]
        if not worker.ready.wait(wait_ready):
            self.kills_skipped += 1
            self.events.append((time.monotonic(), "kill-skipped", f"slot {slot}"))
            return
        with self._lock:
            if self._closed or self._slots[slot] is not worker:
                return
            worker.kill()
            self.killed += 1
            self.events.append((time.monotonic(), "kill", f"slot {slot} pid {worker.pid}"))
            self._retired.append(worker)
            self._slots[slot] = self._spawn(slot)

    def check(self) -> None:
        """Replace a worker that exited by itself or never became ready (both are problems)."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            for slot, worker in enumerate(self._slots):
                if worker.alive() and (
                    worker.ready.is_set() or now - worker.spawned < self._ready_timeout
                ):
                    continue
                if worker.alive():
                    self.problems.append(
                        f"not ready within {self._ready_timeout:g}s: {worker.describe()}"
                    )
                    worker.kill()
                else:
                    self.unexpected_exits += 1
                    worker.finish(1)
                    self.problems.append(f"exited on its own: {worker.describe()}")
                self.events.append((now, "respawn", f"slot {slot} pid {worker.pid}"))
                self._retired.append(worker)
                self._slots[slot] = self._spawn(slot)

    def start_worst(self) -> float | None:
        """The longest any worker took from spawn to "worker ready"."""
        with self._lock:
            workers = [*self._retired, *self._slots]
        times = [w.ready_at - w.spawned for w in workers if w.ready_at is not None]
        return max(times) if times else None

    def stop_all(self) -> None:
        """SIGTERM every live worker, wait (bounded), SIGKILL what is left; reap everything."""
        with self._lock:
            self._closed = True
            workers = [*self._slots, *self._retired]
        for worker in workers:
            worker.terminate()
        deadline = time.monotonic() + WORKER_STOP_WAIT
        for worker in workers:
            worker.finish(deadline - time.monotonic())
