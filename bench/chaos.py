"""Chaos benchmark: many calls while workers are SIGKILLed and every connection is reset.

``python -m bench.chaos [--calls 10000] [--workers 3] [--kill-every 2] [--cut-every 3] ...``

What it does, bounded by ``--max-seconds`` from start to clean-up:

1. starts a ``FaultProxy`` (tests/faults/proxy.py) in front of the broker, which must be on a
   loopback address, and points every connection of the run through it;
2. starts ``--workers`` worker processes of ``bench.chaos_service:service`` under a private queue
   prefix; each handler run appends the call's idempotency key to a side-effect log;
3. sends ``--calls`` calls of ``chaos.record`` from one Requestor, at most ``--concurrency`` in
   flight, a share ``--idempotent-share`` of them ``idempotent=True`` with a known key;
4. meanwhile SIGKILLs one worker every ``--kill-every`` seconds (round robin; a replacement starts
   at once) and resets every proxied connection every ``--cut-every`` seconds;
5. reports how every call ended, how late, and how many times each key really ran.

The promise under test (README, "Reliability"): every call ends, by its deadline, with its result
or a typed error; an idempotent call survives lost connections and dead workers. The run passes
(exit 0) when no call was lost (its future never completed), none ended more than 1 s after its
deadline, every idempotent call succeeded, and every planned call was sent. Plain calls may fail
with ``ConnectionLost`` (their request may or may not have run) and keys may run more than once
when a duplicate reaches another worker process (the dedupe window is per process): both are
reported, not failures of the run.

``run_chaos(ChaosConfig(...))`` is the same run as a function (tests/integration/test_chaos.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions

from bench.chaos_service import LOG_ENV
from bench.faultproxy import FaultProxy
from reqrep.common import DEFAULT_URL, Settings, topology
from reqrep.common.config import redact_url
from reqrep.requestor import Requestor

__all__ = ["ChaosConfig", "ChaosError", "ChaosResult", "main", "render", "run_chaos"]

log = logging.getLogger("reqrep.bench.chaos")

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_SPEC = "bench.chaos_service:service"
SERVICE = "chaos"
METHOD = "record"
READY_TEXT = "worker ready"
LATE_GRACE = 1.0
"""A call that ends more than this many seconds after its deadline counts as hung."""
LOST_GRACE = 30.0
"""After the last call's deadline, wait at most this long for stragglers before calling the
rest lost (within ``--max-seconds`` in any case)."""
TEARDOWN_RESERVE = 20.0
"""Seconds of ``--max-seconds`` kept for stopping chaos, workers, the requestor and the proxy."""
WORKER_DRAIN = 5.0
"""``--drain-timeout`` of the workers: how long they may drain after SIGTERM at the end."""
WORKER_STOP_WAIT = 10.0
"""After SIGTERM at the end, how long to wait for all workers before SIGKILL."""
SAMPLES = 20
"""How many failed, hung and lost calls are described in the result."""


class ChaosError(Exception):
    """The run could not be set up (bad options, broker not loopback, workers never ready)."""


@dataclasses.dataclass(frozen=True)
class ChaosConfig:
    """Options of one run; the defaults are those of ``python -m bench.chaos``."""

    calls: int = 10_000
    workers: int = 3
    kill_every: float = 2.0  # seconds; 0 disables killing
    cut_every: float = 3.0  # seconds; 0 disables cutting
    concurrency: int = 64
    idempotent_share: float = 0.5
    timeout: float = 15.0
    max_seconds: float = 300.0
    url: str = DEFAULT_URL
    rate: float = 0.0  # calls started per second at most; 0 = as fast as the window allows
    worker_concurrency: int = 8
    ready_timeout: float = 30.0  # for a worker process to log "worker ready"

    def __post_init__(self) -> None:
        def positive(name: str, value: float, *, zero_ok: bool = False) -> None:
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise ChaosError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")

        for name in ("calls", "workers", "concurrency", "worker_concurrency"):
            if getattr(self, name) < 1:
                raise ChaosError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        positive("kill_every", self.kill_every, zero_ok=True)
        positive("cut_every", self.cut_every, zero_ok=True)
        positive("rate", self.rate, zero_ok=True)
        positive("timeout", self.timeout)
        positive("ready_timeout", self.ready_timeout)
        if not 0.0 <= self.idempotent_share <= 1.0:
            raise ChaosError(f"idempotent_share must be in [0, 1], got {self.idempotent_share!r}")
        minimum = TEARDOWN_RESERVE + self.timeout + 10
        if not self.max_seconds >= minimum:
            raise ChaosError(
                f"max_seconds must be >= {minimum:g} (timeout + {TEARDOWN_RESERVE:g} s for "
                f"clean-up + 10 s), got {self.max_seconds!r}"
            )


@dataclasses.dataclass
class CallRecord:
    """One call: times are ``time.monotonic()`` seconds."""

    index: int
    idempotent: bool
    key: str | None  # the idempotency key we chose (idempotent calls only)
    start: float
    deadline: float
    end: float | None = None
    outcome: str | None = None  # "ok", or the exception's class name
    message: str = ""


@dataclasses.dataclass
class ChaosResult:
    """What a run saw. ``passed`` is the verdict; ``rows()`` the table."""

    calls_planned: int
    calls_sent: int
    succeeded: int
    failures: dict[str, int]  # exception class name -> calls
    lost: int  # futures never completed by the end of the run
    hung: int  # completed more than LATE_GRACE after their deadline, or never
    idempotent_sent: int
    idempotent_succeeded: int
    side_effects: int  # handler runs recorded in the side-effect log
    idempotent_keys_run_more_than_once: int
    other_keys_run_more_than_once: int
    latency_worst: float | None  # seconds, over completed calls (any outcome)
    latency_p50: float | None
    latency_p99: float | None
    workers_killed: int
    kills_skipped: int  # the worker due to be killed was not ready yet
    workers_exited_unexpectedly: int
    worker_start_worst: float | None  # seconds from spawn to "worker ready"
    connection_cuts: int
    connections_reset: int  # client connections the cuts reset
    requestor_reconnects: int
    late_replies: int  # replies that came after their call had ended
    wall_seconds: float
    harness_errors: list[str] = dataclasses.field(default_factory=list)
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def idempotent_all_succeeded(self) -> bool:
        return self.idempotent_succeeded == self.idempotent_sent

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.hung == 0
            and self.idempotent_all_succeeded
            and self.calls_sent == self.calls_planned
            and not self.harness_errors
        )

    def rows(self) -> list[tuple[str, str, bool]]:
        """``(label, value, ok)`` for the table; ``ok`` False marks a row that fails the run."""
        rows: list[tuple[str, str, bool]] = []
        sent = str(self.calls_sent)
        if self.calls_sent != self.calls_planned:
            sent = f"{self.calls_sent} of {self.calls_planned} (--max-seconds reached)"
        rows.append(("calls sent", sent, self.calls_sent == self.calls_planned))
        rows.append(("succeeded", str(self.succeeded), True))
        for name, count in sorted(self.failures.items()):
            rows.append((f"failed: {name}", str(count), True))
        if not self.failures:
            rows.append(("failed", "0", True))
        rows.append(("lost (never completed; must be 0)", str(self.lost), self.lost == 0))
        rows.append(
            (
                f"hung past deadline (> {LATE_GRACE:g} s late; must be 0)",
                str(self.hung),
                self.hung == 0,
            )
        )
        rows.append(
            (
                "idempotent calls succeeded",
                f"{self.idempotent_succeeded} / {self.idempotent_sent}",
                self.idempotent_all_succeeded,
            )
        )
        rows.append(
            (
                "duplicate side effects (keys run > 1 time)",
                f"idempotent keys: {self.idempotent_keys_run_more_than_once}; "
                f"other keys: {self.other_keys_run_more_than_once}",
                True,
            )
        )
        rows.append(("side effects recorded (handler runs)", str(self.side_effects), True))
        rows.append(("worst latency", _seconds(self.latency_worst), True))
        rows.append(
            (
                "p50 / p99 latency",
                f"{_seconds(self.latency_p50)} / {_seconds(self.latency_p99)}",
                True,
            )
        )
        killed = str(self.workers_killed)
        if self.kills_skipped:
            killed += f" ({self.kills_skipped} skipped: replacement not ready)"
        rows.append(("workers killed", killed, True))
        if self.workers_exited_unexpectedly:
            rows.append(
                ("workers exited on their own", str(self.workers_exited_unexpectedly), True)
            )
        rows.append(
            ("worst worker start (spawn to ready)", _seconds(self.worker_start_worst), True)
        )
        rows.append(
            (
                "connection cuts",
                f"{self.connection_cuts} ({self.connections_reset} connections reset)",
                True,
            )
        )
        rows.append(("requestor reconnects", str(self.requestor_reconnects), True))
        rows.append(("late replies discarded", str(self.late_replies), True))
        rows.append(("wall time", f"{self.wall_seconds:.1f} s", True))
        for error in self.harness_errors:
            rows.append(("harness error", error, False))
        rows.append(("verdict", "PASS" if self.passed else "FAIL", self.passed))
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["idempotent_all_succeeded"] = self.idempotent_all_succeeded
        data["passed"] = self.passed
        return data


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


# -- worker processes ------------------------------------------------------------------------


class _WorkerProcess:
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


class _WorkerPool:
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
        self._slots: list[_WorkerProcess] = []
        self._retired: list[_WorkerProcess] = []
        self._next = 0  # round robin
        self.killed = 0
        self.kills_skipped = 0
        self.unexpected_exits = 0
        self.events: list[tuple[float, str, str]] = []  # (monotonic, kind, detail)
        self.problems: list[str] = []

    def start_all(self) -> None:
        with self._lock:
            self._slots = [self._spawn(slot) for slot in range(self._size)]

    def _spawn(self, slot: int) -> _WorkerProcess:
        """Start a worker for ``slot``. Caller holds the lock."""
        if self._closed:
            raise ChaosError("worker pool is stopping")
        worker = _WorkerProcess(slot, self._argv, self._env)
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


# -- chaos -----------------------------------------------------------------------------------


class _Chaos:
    """The chaos thread: kills a worker every ``kill_every`` s, cuts every ``cut_every`` s."""

    def __init__(
        self, pool: _WorkerPool, proxy: FaultProxy, *, kill_every: float, cut_every: float
    ) -> None:
        self._pool = pool
        self._proxy = proxy
        self._kill_every = kill_every
        self._cut_every = cut_every
        self._stop = threading.Event()
        self.cuts = 0
        self.connections_reset = 0
        self.events: list[tuple[float, str, str]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.error = self.error or TimeoutError(f"chaos thread still busy after {timeout}s")

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported in the result, not lost
            self.error = exc
            log.exception("chaos thread failed")

    def _loop(self) -> None:
        start = time.monotonic()
        next_kill = start + self._kill_every if self._kill_every > 0 else math.inf
        next_cut = start + self._cut_every if self._cut_every > 0 else math.inf
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_kill:
                # Wait for a starting worker at most until the next kill is due.
                self._pool.kill_next(wait_ready=min(self._kill_every, 5.0))
                next_kill = max(next_kill + self._kill_every, time.monotonic())
            if now >= next_cut:
                reset = self._proxy.cut()
                self.cuts += 1
                self.connections_reset += reset
                self.events.append((time.monotonic(), "cut", f"{reset} connections"))
                next_cut = max(next_cut + self._cut_every, time.monotonic())
            self._pool.check()
            wake = min(next_kill, next_cut, time.monotonic() + 0.2)
            self._stop.wait(max(0.0, wake - time.monotonic()))


# -- calls -----------------------------------------------------------------------------------


class _Tracker:
    """Counts calls in flight (the semaphore) and completed (the condition)."""

    def __init__(self, concurrency: int) -> None:
        self.window = threading.BoundedSemaphore(concurrency)
        self._cond = threading.Condition()
        self.started = 0
        self.finished = 0

    def acquire(self, *, until: float) -> bool:
        """Take a slot in the window; False (no slot taken) once ``until`` has passed."""
        while not self.window.acquire(timeout=0.25):
            if time.monotonic() >= until:
                return False
        if time.monotonic() >= until:
            self.window.release()
            return False
        return True

    def begin(self) -> None:
        with self._cond:
            self.started += 1

    def end(self, record: CallRecord, outcome: str, message: str = "") -> None:
        """Record how a call ended (any thread: usually the requestor's I/O thread)."""
        record.end = time.monotonic()
        record.outcome = outcome
        record.message = message
        with self._cond:
            self.finished += 1
            self._cond.notify_all()
        self.window.release()

    def on_done(self, record: CallRecord) -> Callable[[Future[Any]], None]:
        def done(future: Future[Any]) -> None:
            try:
                error = future.exception()
                if error is not None:
                    self.end(record, type(error).__name__, str(error))
                    return
                result = future.result()
                if result == record.index:
                    self.end(record, "ok")
                else:
                    self.end(record, "WrongResult", f"expected {record.index!r}, got {result!r}")
            except BaseException as exc:  # noqa: BLE001 - never leave a call unaccounted for
                if record.end is None:
                    self.end(record, type(exc).__name__, f"in done callback: {exc}")

        return done

    def wait_all(self, deadline: float, progress: Callable[[], None] | None) -> bool:
        """Wait until every started call finished, or ``deadline``; True if all did."""
        last = time.monotonic()
        with self._cond:
            while self.finished < self.started:
                now = time.monotonic()
                if now >= deadline:
                    return False
                self._cond.wait(min(1.0, deadline - now))
                if progress is not None and time.monotonic() - last >= 5.0:
                    last = time.monotonic()
                    self._cond.release()
                    try:
                        progress()
                    finally:
                        self._cond.acquire()
        return True


def _is_idempotent(index: int, share: float) -> bool:
    """Exactly round-down(share * n) of the first n calls, spread evenly."""
    return math.floor((index + 1) * share) > math.floor(index * share)


# -- the run ---------------------------------------------------------------------------------


def _upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "amqp":
        raise ChaosError(f"--url must be amqp:// (the proxy cannot carry TLS): {redact_url(url)}")
    host = parts.hostname or ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = parts.port or 5672
    except ValueError as exc:
        raise ChaosError(f"bad --url {redact_url(url)}: {exc}") from None
    return host, port


def _proxied_url(url: str, netloc: str) -> str:
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(
        (parts.scheme, f"{userinfo}{at}{netloc}", parts.path, parts.query, parts.fragment)
    )


def _delete_topology(url: str, prefix: str) -> None:
    """Delete the run's request queue, dead-letter queue and dead-letter exchange."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue = topology.request_queue(prefix, SERVICE)
        channel.queue_delete(queue)
        channel.queue_delete(topology.dead_letter_queue(queue))
        channel.exchange_delete(topology.dead_letter_exchange(prefix))
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]


def _count_side_effects(path: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key = line.strip()
                if key:
                    counts[key] += 1
    return counts


def run_chaos(config: ChaosConfig, *, progress: Callable[[str], None] | None = None) -> ChaosResult:
    """Run the chaos benchmark once (see the module docstring); always cleans up.

    ``progress`` receives a line now and then. Raises ChaosError if the run cannot be set up
    (the broker is not on a loopback address, the workers never become ready, ...).
    """
    return _Run(config, progress).execute()


class _Run:
    """One run: set up, send calls under chaos, tear down, count. Used by one thread; the chaos
    thread and the requestor's I/O thread only touch ``_Chaos``, ``_WorkerPool`` and
    ``_Tracker``/``CallRecord`` (through the done callbacks)."""

    def __init__(self, config: ChaosConfig, progress: Callable[[str], None] | None) -> None:
        self.config = config
        self._progress = progress
        self.t0 = time.monotonic()
        self.phase_end = self.t0 + config.max_seconds - TEARDOWN_RESERVE  # calls, chaos end
        self.host, self.port = _upstream(config.url)
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"chaos-{self.run_id}."
        self.records: list[CallRecord] = []
        self.tracker = _Tracker(config.concurrency)
        self.harness_errors: list[str] = []
        self.proxy: FaultProxy | None = None
        self.pool: _WorkerPool | None = None
        self.chaos: _Chaos | None = None
        self.requestor: Requestor | None = None
        self.reconnects = 0
        self.late = 0
        self.side_effects: collections.Counter[str] = collections.Counter()

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress(f"[{time.monotonic() - self.t0:6.1f}s] {text}")

    def report_progress(self) -> None:
        ok = sum(1 for r in self.records if r.outcome == "ok")
        pool, chaos = self.pool, self.chaos
        self.say(
            f"sent {self.tracker.started}/{self.config.calls}, finished {self.tracker.finished}, "
            f"ok {ok}, killed {pool.killed if pool else 0}, cuts {chaos.cuts if chaos else 0}"
        )

    def execute(self) -> ChaosResult:
        tmpdir = Path(tempfile.mkdtemp(prefix=f"reqrep-chaos-{self.run_id}-"))
        side_log = tmpdir / "side-effects.log"
        try:
            side_log.touch(mode=0o600)
            try:
                self._setup(side_log)
                self._send_all()
                self._wait_all()
            finally:
                self._teardown()
                self.side_effects = _count_side_effects(side_log)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return self._summarize()

    def _setup(self, side_log: Path) -> None:
        try:
            proxy = FaultProxy((self.host, self.port))  # only an IPv4 loopback upstream
        except ValueError as exc:
            raise ChaosError(str(exc)) from None
        self.proxy = proxy.start()
        proxied = _proxied_url(self.config.url, proxy.url_netloc)
        env = {
            **os.environ,
            "AMQP_URL": proxied,
            "REQREP_QUEUE_PREFIX": self.prefix,
            "REQREP_LOG_LEVEL": "INFO",  # "worker ready" is an INFO line
            LOG_ENV: str(side_log),
        }
        argv = [
            sys.executable,
            "-m",
            "reqrep",
            "worker",
            SERVICE_SPEC,
            "--concurrency",
            str(self.config.worker_concurrency),
            "--drain-timeout",
            str(WORKER_DRAIN),
            "--parent-pid",  # a worker whose parent (this run) died drains and exits
            str(os.getpid()),
        ]
        self.say(
            f"proxy {proxy.url_netloc} -> {self.host}:{self.port}, queue prefix {self.prefix}: "
            f"starting {self.config.workers} workers"
        )
        self.pool = _WorkerPool(self.config.workers, argv, env, self.config.ready_timeout)
        self.pool.start_all()
        self.pool.wait_ready(min(self.t0 + self.config.ready_timeout, self.phase_end))
        settings = Settings.from_env(
            url=proxied, queue_prefix=self.prefix, timeout=self.config.timeout
        )
        self.requestor = Requestor(settings=settings, service=SERVICE).open()
        self.chaos = _Chaos(
            self.pool, proxy, kill_every=self.config.kill_every, cut_every=self.config.cut_every
        )
        self.chaos.start()
        self.say("workers ready; sending calls under chaos")

    def _send_all(self) -> None:
        config, tracker, requestor = self.config, self.tracker, self.requestor
        assert requestor is not None
        # A call sent after this could not end (deadline + grace) before the phase ends.
        send_end = self.phase_end - config.timeout - LATE_GRACE
        next_report = time.monotonic() + 5.0
        send_start = time.monotonic()
        for index in range(config.calls):
            if config.rate > 0:
                pause = min(send_start + index / config.rate, send_end) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            if not tracker.acquire(until=send_end):
                self.say(f"--max-seconds: stopped sending after {tracker.started} calls")
                break
            idempotent = _is_idempotent(index, config.idempotent_share)
            key = f"chaos-{self.run_id}-{index}" if idempotent else None
            start = time.monotonic()
            record = CallRecord(index, idempotent, key, start, start + config.timeout)
            self.records.append(record)
            tracker.begin()
            try:
                future = requestor.call_async(
                    METHOD, index, idempotent=idempotent, idempotency_key=key
                )
            except Exception as exc:  # noqa: BLE001 - an error at send is an outcome too
                tracker.end(record, type(exc).__name__, f"at send: {exc}")
            else:
                future.add_done_callback(tracker.on_done(record))
            if time.monotonic() >= next_report:
                next_report += 5.0
                self.report_progress()

    def _wait_all(self) -> None:
        self.say(f"{self.tracker.started} calls sent; waiting for them to end")
        last_deadline = max((r.deadline for r in self.records), default=time.monotonic())
        until = min(self.phase_end, last_deadline + LOST_GRACE)
        self.tracker.wait_all(until, self.report_progress)
        self.say("calls ended; stopping chaos, requestor, workers and proxy")

    def _teardown(self) -> None:
        """Stop everything this run started; each step is bounded and runs even if one fails."""
        if self.chaos is not None:
            self.chaos.stop()
            if self.chaos.error is not None:
                self.harness_errors.append(f"chaos thread: {self.chaos.error!r}")
        if self.requestor is not None:
            self.reconnects = self.requestor.reconnects
            self.late = self.requestor.stats().late
            with contextlib.suppress(Exception):
                self.requestor.close(5)
        if self.pool is not None:
            self.pool.stop_all()
            self.harness_errors.extend(self.pool.problems)
        if self.proxy is not None:
            try:
                self.proxy.stop()
            except RuntimeError as exc:
                self.harness_errors.append(f"proxy: {exc}")
        try:
            _delete_topology(self.config.url, self.prefix)
        except Exception as exc:  # noqa: BLE001 - clean-up is best effort, but reported
            log.warning("could not delete the queues of prefix %s: %r", self.prefix, exc)

    def _summarize(self) -> ChaosResult:
        assert self.pool is not None
        assert self.chaos is not None
        pool, chaos, t0, side_effects = self.pool, self.chaos, self.t0, self.side_effects
        # A snapshot: nothing completes any more (the requestor is closed), but be safe.
        calls = [dataclasses.replace(r) for r in self.records]
        failures: collections.Counter[str] = collections.Counter(
            r.outcome for r in calls if r.outcome is not None and r.outcome != "ok"
        )
        lost = [r for r in calls if r.end is None]
        hung = [r for r in calls if r.end is None or r.end > r.deadline + LATE_GRACE]
        idempotent = [r for r in calls if r.idempotent]
        idempotent_keys = {r.key for r in idempotent if r.key is not None}
        repeated = {key for key, runs in side_effects.items() if runs > 1}
        latencies = sorted(r.end - r.start for r in calls if r.end is not None)

        def describe(record: CallRecord) -> dict[str, Any]:
            return {
                "index": record.index,
                "idempotent": record.idempotent,
                "key": record.key,
                "outcome": record.outcome,
                "message": record.message[:300],
                "started_at": round(record.start - t0, 3),
                "ended_at": None if record.end is None else round(record.end - t0, 3),
                "late_by": None if record.end is None else round(record.end - record.deadline, 3),
                "runs": side_effects.get(record.key, 0) if record.key else None,
            }

        samples: list[dict[str, Any]] = []
        for kind, chosen in (
            ("lost", lost),
            ("hung", [r for r in hung if r.end is not None]),
            ("idempotent failed", [r for r in idempotent if r.outcome not in ("ok", None)]),
            ("failed", [r for r in calls if r.outcome not in ("ok", None) and not r.idempotent]),
        ):
            samples.extend({"kind": kind, **describe(r)} for r in chosen[:SAMPLES])
        events = [
            {"at": round(at - t0, 3), "event": kind, "detail": detail}
            for at, kind, detail in sorted([*pool.events, *chaos.events])
        ]
        return ChaosResult(
            calls_planned=self.config.calls,
            calls_sent=len(calls),
            succeeded=sum(1 for r in calls if r.outcome == "ok"),
            failures=dict(failures),
            lost=len(lost),
            hung=len(hung),
            idempotent_sent=len(idempotent),
            idempotent_succeeded=sum(1 for r in idempotent if r.outcome == "ok"),
            side_effects=sum(side_effects.values()),
            idempotent_keys_run_more_than_once=len(repeated & idempotent_keys),
            other_keys_run_more_than_once=len(repeated - idempotent_keys),
            latency_worst=latencies[-1] if latencies else None,
            latency_p50=_percentile(latencies, 0.50),
            latency_p99=_percentile(latencies, 0.99),
            workers_killed=pool.killed,
            kills_skipped=pool.kills_skipped,
            workers_exited_unexpectedly=pool.unexpected_exits,
            worker_start_worst=pool.start_worst(),
            connection_cuts=chaos.cuts,
            connections_reset=chaos.connections_reset,
            requestor_reconnects=self.reconnects,
            late_replies=self.late,
            wall_seconds=time.monotonic() - t0,
            harness_errors=self.harness_errors,
            samples=samples,
            events=events,
        )


# -- output ----------------------------------------------------------------------------------


def render(result: ChaosResult, config: ChaosConfig) -> str:
    """The result as a table: with rich if it is installed, else plain text."""
    title = (
        f"reqrep chaos: {config.calls} calls, {config.workers} workers, "
        f"kill every {config.kill_every:g}s, cut every {config.cut_every:g}s"
    )
    rows = result.rows()
    try:
        from rich.console import Console  # noqa: PLC0415 - optional dependency
        from rich.table import Table  # noqa: PLC0415
    except ImportError:
        width = max(len(label) for label, _, _ in rows)
        lines = [title, "-" * len(title)]
        lines += [
            f"{label.ljust(width)}  {value}{'' if ok else '   <-- FAIL'}"
            for label, value, ok in rows
        ]
        return "\n".join(lines)
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for label, value, ok in rows:
        table.add_row(label, value, style=None if ok else "bold red")
    console = Console(width=120, record=True, force_terminal=sys.stdout.isatty())
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip("\n")


def _describe_samples(result: ChaosResult) -> str:
    lines = []
    for sample in result.samples:
        if sample["kind"] == "failed":
            continue  # plain calls failing with a typed error is allowed
        lines.append(
            f"  {sample['kind']}: call {sample['index']} key={sample['key']} "
            f"outcome={sample['outcome']} started={sample['started_at']}s "
            f"ended={sample['ended_at']}s late_by={sample['late_by']} runs={sample['runs']}: "
            f"{sample['message']}"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> tuple[ChaosConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Calls reqrep under chaos: killed workers and reset connections.",
    )
    defaults = ChaosConfig()
    parser.add_argument("--calls", type=int, default=defaults.calls)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--kill-every", type=float, default=defaults.kill_every, help="seconds; 0: never"
    )
    parser.add_argument(
        "--cut-every", type=float, default=defaults.cut_every, help="seconds; 0: never"
    )
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--idempotent-share", type=float, default=defaults.idempotent_share)
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="per call, s")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="calls started per second; 0: no cap"
    )
    parser.add_argument(
        "--url", default=defaults.url, help="the broker (loopback); default %(default)s"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--verbose", action="store_true", help="log the library's warnings")
    args = parser.parse_args(argv)
    try:
        config = ChaosConfig(
            calls=args.calls,
            workers=args.workers,
            kill_every=args.kill_every,
            cut_every=args.cut_every,
            concurrency=args.concurrency,
            idempotent_share=args.idempotent_share,
            timeout=args.timeout,
            max_seconds=args.max_seconds,
            url=args.url,
            rate=args.rate,
        )
    except ChaosError as exc:
        parser.error(str(exc))
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = _parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pika").setLevel(logging.CRITICAL)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        result = run_chaos(config, progress=progress)
    except ChaosError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaos: interrupted (workers, proxy and queues were cleaned up)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result, config))
        details = _describe_samples(result)
        if details:
            print(f"\nproblem calls (first {SAMPLES} of each kind):\n{details}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
