"""Steady, bounded load for the cluster tests: caller threads sharing one Requestor."""

from __future__ import annotations

import dataclasses
import threading
import time

from reqrep.common.errors import ReqrepError
from reqrep.requestor import Requestor


@dataclasses.dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    ended: float
    error: str | None  # the error's class name; None for a correct result
    typed: bool = True  # the error was a ReqrepError


class Load:
    """``threads`` callers, each making one call at a time with a pause after it.

    Every call is idempotent (resent after a lost connection or a nack, within its deadline)
    and has ``timeout``. ``stop()`` returns every outcome, and the number of callers still
    stuck in a call long after its deadline (hung).
    """

    def __init__(
        self, requestor: Requestor, *, threads: int = 4, pause: float = 0.02, timeout: float = 3.0
    ) -> None:
        self._rq = requestor
        self._pause = pause
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> int:
        """Stop the callers; return how many did not finish their call in time (hung)."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout + 2.0
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)

    def since(self, start: float, end: float = float("inf")) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if start <= o.started < end]

    def _loop(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            payload = {"caller": index, "n": n}
            started = time.monotonic()
            error: str | None = None
            typed = True
            try:
                result = self._rq.call("echo", payload, timeout=self.timeout, idempotent=True)
                if result != payload:
                    error = f"wrong result {result!r}"
            except ReqrepError as exc:
                error = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - an untyped error is itself a failure
                error, typed = f"{type(exc).__name__}: {exc}", False
            with self._lock:
                self.outcomes.append(Outcome(started, time.monotonic(), error, typed))
            self._stop.wait(self._pause)
