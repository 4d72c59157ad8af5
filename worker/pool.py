"""HandlerPool: a worker's handler threads, each woken only for a job of its own.

Why not one ``queue.SimpleQueue`` that every thread waits on: CPython's SimpleQueue keeps a
single lock for "empty". A ``put`` lets it go, which wakes one waiting thread; that thread takes
the job and lets the lock go again, which wakes a second one, only to find the queue empty and
sleep again. So with idle threads waiting, every job woke two, and the second one took the GIL
from the thread about to run the handler. With 64 threads and one job at a time (no broker,
``python -m bench.machine``), the pool cost 34-40 us of CPU and 4.2 context switches per job
that way, and 8-12 us and 2.8 this way (the switches are steady; the CPU time depends on where
the kernel places the threads).

Here each idle thread parks on a lock of its own, on a stack. A job joins a queue and wakes the
thread that parked last (the one most likely still warm in a CPU's cache), unless a woken
thread is on its way already; while every thread is busy, jobs wait there until finishing
threads take them, oldest first, before they park again.
Threads are daemons, unlike ThreadPoolExecutor's, so the process can exit even if a handler
never returns; the broker then redelivers its request.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HandlerPool"]

log = logging.getLogger("reqrep.worker")

JobT = TypeVar("JobT")  # a worker's Job; anything with a ``method`` for the log line


class _Parked:
    """An idle thread's own wake-up: ``wake`` (any thread, once per park) lets ``wait`` (the
    parked thread) return."""

    __slots__ = ("_wake",)

    def __init__(self) -> None:
        self._wake = threading.Lock()
        self._wake.acquire()  # released by wake()

    def wake(self) -> None:
        self._wake.release()

    def wait(self) -> None:
        self._wake.acquire()


class HandlerPool(Generic[JobT]):
    """A fixed set of daemon threads (``reqrep-handler-<i>``) running jobs with ``run``.

    Threads: ``submit`` from the worker's I/O thread (it never blocks); ``start`` and
    ``shutdown`` from the controlling thread; ``run`` on the handler threads.
    """

    def __init__(self, size: int, run: Callable[[JobT], None]) -> None:
        self._size = size
        self._run = run
        self._lock = threading.Lock()  # guards the fields below; held only briefly
        self._jobs: deque[JobT] = deque()  # waiting to be taken, oldest first
        self._idle: list[_Parked] = []  # a stack: the thread that parked last goes first
        self._searcher: _Parked | None = None  # woken for the jobs, not there yet
        self._closed = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._size):
            thread = threading.Thread(target=self._loop, name=f"reqrep-handler-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: JobT) -> None:
        """Queue ``job``; wake an idle thread for it unless one is on its way already."""
        with self._lock:
            self._jobs.append(job)
            parked = self._pick_searcher()
        if parked is not None:
            parked.wake()

    def shutdown(self) -> None:
        """Let every thread end once the queued jobs are done; running handlers finish first."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for parked in idle:
            parked.wake()
        self._threads.clear()

    def _pick_searcher(self) -> _Parked | None:
        """Under the lock: the idle thread to wake for queued jobs, if one should be woken.

        At most one woken thread is on its way at a time. A burst of jobs is then mostly taken
        by threads finishing theirs, without sleeping, and a searcher that finds more jobs than
        it takes wakes the next one: handlers still start at once on idle threads.
        """
        if self._searcher is not None or not self._idle or not self._jobs:
            return None
        self._searcher = self._idle.pop()
        return self._searcher

    def _loop(self) -> None:
        me = _Parked()
        while True:
            with self._lock:
                if self._searcher is me:
                    self._searcher = None
                job = self._jobs.popleft() if self._jobs else None
                if job is None:
                    if self._closed:
                        return
                    self._idle.append(me)
                    parked = None
                else:
                    parked = self._pick_searcher()  # more jobs than this one: one more thread
            if parked is not None:
                parked.wake()
            if job is None:
                me.wait()
                continue
            try:
                self._run(job)
            except Exception:
                log.exception("unexpected error running %s", getattr(job, "method", job))
