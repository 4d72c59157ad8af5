"""Per-method concurrency limits: at most N calls of a method run at once in one worker process.

A call over its method's limit is not handed to a handler thread (where it would hold the
thread while it waits, starving the other methods); it waits here, in arrival order, and is
handed over when a call of the same method finishes. It still counts against the worker's
prefetch, so the broker keeps the rest in the queue for other workers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar

__all__ = ["MethodLimits"]


class _HasMethod(Protocol):
    @property
    def method(self) -> str: ...


J = TypeVar("J", bound=_HasMethod)


class MethodLimits(Generic[J]):
    """Running counts and waiting jobs of the methods that have a limit.

    Threads: ``admit`` on the worker's I/O thread; ``release`` on the handler thread or loop
    that finished a job. One lock guards the counts and queues.
    """

    def __init__(self, limits: Mapping[str, int]) -> None:
        self._limits = dict(limits)
        self._running = dict.fromkeys(self._limits, 0)
        self._waiting: dict[str, deque[J]] = {method: deque() for method in self._limits}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._limits)

    def admit(self, job: J) -> bool:
        """True: run ``job`` now (it counts as running). False: it waits for a ``release``."""
        limit = self._limits.get(job.method)
        if limit is None:
            return True
        with self._lock:
            if self._running[job.method] < limit:
                self._running[job.method] += 1
                return True
            self._waiting[job.method].append(job)
            return False

    def release(self, method: str) -> J | None:
        """A job of ``method`` finished: the next waiting one to run now (it takes the freed
        place), if any."""
        if method not in self._limits:
            return None
        with self._lock:
            waiting = self._waiting[method]
            if waiting:
                return waiting.popleft()
            self._running[method] -= 1
            return None
