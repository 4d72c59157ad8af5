"""Inline handlers: run on the worker's I/O thread, watched against a time budget.

A handler registered with ``inline=True`` runs where its request is delivered, on the worker's
I/O thread, instead of being handed to a handler thread and its reply handed back: two thread
hand-offs fewer per call. While it runs, that thread does nothing else: no other request is
read, no reply published or acknowledged, no heartbeat sent. So every run has a budget
(``Settings.inline_budget``, 10 ms by default).

A handler cannot be interrupted; a watchdog thread sees it instead. The I/O thread marks each
run (one attribute set before it and cleared after it: no lock, no wake-up of another thread
while the watchdog is awake). While inline handlers run, the watchdog looks every quarter
budget; when the run it finds is older than the budget it takes the I/O thread's stack
(``sys._current_frames``) while the handler is still in it, counts the overrun (once per run,
through ``on_overrun``) and logs it at WARNING with that stack (one line per 10 s at most, with
a count of the others: ``LogThrottle``). A run that overran but ended between two looks is not
missed: the I/O thread, which times every run, leaves it for the watchdog to count and log
(without a stack: it is gone). After a second without an inline run it sleeps until the next
one.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from types import FrameType
from typing import NamedTuple, TypeVar

from reqrep.common.logthrottle import LogThrottle

__all__ = ["IDLE_AFTER", "InlineWatch"]

log = logging.getLogger("reqrep.worker")

T = TypeVar("T")
IDLE_AFTER = 1.0  # seconds without an inline run before the watchdog sleeps until the next one
_STACK_FRAMES = 10  # innermost frames of the handler's stack shown in an overrun's warning
_RECENT = 256  # reported runs remembered, so that a run is counted once
_RETURNED = "  (it returned before its stack was taken)"


class _Run(NamedTuple):
    """One inline run, as the I/O thread marks it."""

    seq: int
    method: str
    started: float  # time.monotonic()
    thread: int  # the ident of the thread that runs it


class InlineWatch:
    """Runs inline handlers and watches their time.

    Threads: ``run`` on the worker's I/O thread; ``start`` and ``stop`` on the controlling
    thread; the watchdog is a daemon thread of its own (``name``), which calls ``on_overrun``
    (the method, the seconds it had run) and logs. ``overruns`` is written by the watchdog only.
    """

    def __init__(
        self, name: str, budget: float, on_overrun: Callable[[str, float], None] | None = None
    ) -> None:
        self.name = name
        self.budget = budget
        self.overruns = 0
        self._on_overrun = on_overrun
        self._running: _Run | None = None  # the run in progress (set and cleared by run())
        # runs that ended over their budget (I/O thread appends, watchdog pops: deque is safe)
        self._ended_late: deque[tuple[_Run, float]] = deque()
        self._reported: OrderedDict[int, None] = OrderedDict()  # watchdog only: recent seqs
        self._seq = 0  # runs started (I/O thread)
        self._idle = True  # the watchdog sleeps on _wake until a run starts
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._throttled = LogThrottle(log)

    def start(self) -> None:
        """Start the watchdog thread (once)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the watchdog thread. Idempotent."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run(self, method: str, fn: Callable[[], T]) -> T:
        """I/O thread: ``fn()`` (an inline handler's whole run), watched; what it returns."""
        self._seq += 1
        run = self._running = _Run(self._seq, method, time.monotonic(), threading.get_ident())
        if self._idle:  # the watchdog sleeps: this run wakes it (once per quiet spell)
            self._idle = False
            self._wake.set()
        try:
            return fn()
        finally:
            self._running = None
            took = time.monotonic() - run.started
            if took >= self.budget:  # the watchdog may not have looked while it ran
                self._ended_late.append((run, took))

    # -- watchdog thread ------------------------------------------------------------------------

    def _watch(self) -> None:
        tick = self.budget / 4
        seen, active = 0, time.monotonic()  # the last seq seen, and when it was first seen
        while not self._stopping.is_set():
            now = time.monotonic()
            run = self._running
            if self._seq != seen:
                seen, active = self._seq, now
            if (
                run is not None
                and run.seq not in self._reported
                and now - run.started >= self.budget
            ):
                self._report(run, now - run.started, self._stack_of(run))
            self._report_ended()
            if run is None and now - active >= IDLE_AFTER:
                self._sleep()
                active = time.monotonic()
                continue
            self._stopping.wait(tick)
        self._report_ended()

    def _report_ended(self) -> None:
        """Count and log the runs that ended over their budget, unless already reported."""
        while self._ended_late:
            run, took = self._ended_late.popleft()
            if run.seq not in self._reported:
                self._report(run, took, _RETURNED)

    def _sleep(self) -> None:
        """Wait for the next run. Said before it looks again: a run that starts meanwhile
        either is seen here or sees ``_idle`` and sets the Event."""
        self._wake.clear()
        self._idle = True
        if self._running is None and not self._stopping.is_set():
            self._wake.wait()
        self._idle = False

    def _stack_of(self, run: _Run) -> str:
        frame = sys._current_frames().get(run.thread)  # the one way to see another thread
        if self._running is run and frame is not None:  # still in that run: its stack
            return _handler_stack(frame)
        return _RETURNED

    def _report(self, run: _Run, seconds: float, stack: str) -> None:
        self._reported[run.seq] = None
        if len(self._reported) > _RECENT:
            self._reported.popitem(last=False)
        self.overruns += 1
        if self._on_overrun is not None:
            try:
                self._on_overrun(run.method, seconds)
            except Exception:
                log.exception("counting an inline overrun failed")
        self._throttled.warning(
            "inline handler %r has held the worker's I/O thread for %.1f ms, over its budget of "
            "%.1f ms (inline_budget): every other request, reply and heartbeat of this worker "
            "waits; make it faster, or drop inline=True. It is at:\n%s",
            run.method,
            seconds * 1000,
            self.budget * 1000,
            stack,
        )


def _handler_stack(frame: FrameType) -> str:
    """The frames inside ``InlineWatch.run`` (the handler's side), innermost last."""
    inner: list[FrameType] = []
    current: FrameType | None = frame
    while current is not None and current.f_code is not _RUN_CODE:
        inner.append(current)
        current = current.f_back
    frames = list(reversed(inner))[-_STACK_FRAMES:]
    summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)
    return "".join(summary.format()).rstrip() or "  (stack unavailable)"


_RUN_CODE = InlineWatch.run.__code__
