"""The calls of a chaos run: how many are in flight, and how each one ended."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from bench.chaos._result import CallRecord


class Tracker:
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


def is_idempotent(index: int, share: float) -> bool:
    """Exactly round-down(share * n) of the first n calls, spread evenly."""
    return math.floor((index + 1) * share) > math.floor(index * share)
