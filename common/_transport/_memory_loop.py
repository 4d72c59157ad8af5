"""The in-memory transport's event loop: callbacks and timers run by one thread, no sockets.

A hand-written loop rather than asyncio's: the seam's ``Loop`` is pika's ``IOLoop`` contract
(``call_later`` / ``cancel`` handles, ``run`` until ``stop``, exceptions out of ``run``), which
an asyncio loop would need as much glue to meet, and the memory transport needs no I/O.

Threads: ``run`` on the one thread that runs the loop (the connection's I/O thread);
``stop``, ``call_later`` and ``cancel`` on that thread (safe from any, as a courtesy);
``call_soon_threadsafe`` from any thread; ``close`` once ``run`` has returned for good. Waiting
costs nothing: the thread sleeps on a condition until the next timer is due or a callback is
posted.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["MemoryLoop", "Timer"]

# Cancelled timers stay in the heap until due; past this many (and half the heap) it is rebuilt.
_COMPACT_AFTER = 256


class Timer:
    """A ``call_later`` handle: when it is due, and what to run (None once run or cancelled)."""

    __slots__ = ("due", "fn", "seq", "when")

    def __init__(self, when: float, seq: int, fn: Callable[[], None]) -> None:
        self.when = when
        self.seq = seq
        self.fn: Callable[[], None] | None = fn
        self.due = False  # out of the heap, waiting its turn among the ready callbacks

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        state = "pending" if self.fn is not None else "done"
        return f"<Timer at {self.when:.3f} {state}>"


class MemoryLoop:
    """An event loop owned by one thread: ``Loop`` of ``_api.py`` (see the module docstring).

    Callbacks run one at a time, in the order posted; a due timer joins the callbacks posted
    before it fell due. An exception a callback raises propagates out of ``run`` (as out of
    pika's ``IOLoop.start``); the callbacks still queued stay queued for the next ``run``.
    ``stop`` makes ``run`` return after the current callback; a ``stop`` before ``run`` makes the
    next ``run`` return at once (pika's rule). After ``close``, posted callbacks are dropped
    silently, as pika's ``IOLoop`` drops them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready: deque[Callable[[], None] | Timer] = deque()
        self._timers: list[Timer] = []  # a heap
        self._cancelled = 0  # cancelled timers still in the heap
        self._seq = itertools.count()
        self._stopping = False
        self._running = False
        self._sleeping = False
        self._closed = False
        self._owner: int | None = None  # the thread that runs (or last ran) the loop

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._running else "idle"
        return f"<MemoryLoop {state} ready={len(self._ready)} timers={len(self._timers)}>"

    # -- any thread --------------------------------------------------------------------------------

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop soon (any thread). Dropped if the loop is closed."""
        with self._lock:
            if self._closed:
                return
            self._ready.append(fn)
            if self._sleeping:
                self._wake.notify()

    def in_loop_thread(self) -> bool:
        """The calling thread is the one that runs (or last ran) this loop, or none has yet."""
        owner = self._owner
        return owner is None or owner == threading.get_ident()

    # -- the loop's thread -------------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` on the loop after ``delay`` seconds; the handle is for ``cancel``."""
        timer = Timer(time.monotonic() + max(0.0, delay), next(self._seq), fn)
        with self._lock:
            heapq.heappush(self._timers, timer)
            if self._sleeping and self._timers[0] is timer:
                self._wake.notify()  # it sleeps until a later deadline
        return timer

    def cancel(self, handle: object) -> None:
        """Cancel a ``call_later`` that has not run yet; any other handle is ignored."""
        if not isinstance(handle, Timer):
            return
        with self._lock:
            if handle.fn is None:
                return
            handle.fn = None
            if handle.due:
                return  # it waits among the ready callbacks, and will be skipped there
            self._cancelled += 1
            if self._cancelled > _COMPACT_AFTER and self._cancelled > len(self._timers) // 2:
                self._timers = [t for t in self._timers if t.fn is not None]
                heapq.heapify(self._timers)
                self._cancelled = 0

    def run(self) -> None:
        """Run callbacks and timers until ``stop``; a callback's exception propagates."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the loop is closed")
            if self._running:
                raise RuntimeError("the loop is already running (it is not reentrant)")
            self._running = True
            self._owner = threading.get_ident()
        try:
            while (item := self._next()) is not None:
                if isinstance(item, Timer):
                    fn, item.fn = item.fn, None
                    if fn is None:
                        continue  # cancelled after it fell due
                    fn()
                else:
                    item()
        finally:
            with self._lock:
                self._running = False
                self._stopping = False

    def stop(self) -> None:
        """Make ``run`` return after the current callback."""
        with self._lock:
            self._stopping = True
            if self._sleeping:
                self._wake.notify()

    def close(self) -> None:
        """Drop every queued callback and timer; the loop cannot run again."""
        with self._lock:
            if self._running:
                raise RuntimeError("close() while the loop runs: stop it first")
            self._closed = True
            self._ready.clear()
            self._timers.clear()
            self._cancelled = 0

    def _next(self) -> Callable[[], None] | Timer | None:
        """The next callback to run, waiting for one; None when the loop is to stop."""
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                timers = self._timers
                while timers and timers[0].when <= now:
                    timer = heapq.heappop(timers)
                    if timer.fn is None:
                        self._cancelled -= 1
                    else:
                        timer.due = True
                        self._ready.append(timer)
                if self._ready:
                    return self._ready.popleft()
                self._sleeping = True
                try:
                    self._wake.wait(timers[0].when - now if timers else None)
                finally:
                    self._sleeping = False
            return None
