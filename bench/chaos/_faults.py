"""The chaos thread: SIGKILLs a worker and resets every proxied connection, on a schedule."""

from __future__ import annotations

import logging
import math
import threading
import time

from bench.chaos._workers import WorkerPool
from bench.faultproxy import FaultProxy

log = logging.getLogger("reqrep.bench.chaos")


class ChaosThread:
    """The chaos thread: kills a worker every ``kill_every`` s, cuts every ``cut_every`` s."""

    def __init__(
        self, pool: WorkerPool, proxy: FaultProxy, *, kill_every: float, cut_every: float
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
