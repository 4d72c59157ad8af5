"""HandlerLoop: the event loop thread on which a worker runs its ``async def`` handlers.

One loop per worker process, not a thread per call: thousands of handlers that await I/O cost
a task each. A semaphore bounds how many run at once (the worker's ``concurrency``).

A coroutine that blocks (``time.sleep``, a blocking client, CPU work) stalls every other
handler on the loop. A watchdog thread sees it: the loop stamps a heartbeat every
``block_warning / 4`` seconds, and when the stamp is older than ``block_warning`` the watchdog
logs a warning with the stack the loop thread is stuck in, once per stall, and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar

from reqrep.common.aio import LoopInbox

__all__ = ["HandlerLoop"]

log = logging.getLogger("reqrep.worker")

T = TypeVar("T")
_STACK_LINES = 6  # innermost frames shown when the loop is blocked


class HandlerLoop:
    """An asyncio loop on its own thread, running at most ``concurrency`` tasks at a time.

    Threads: ``start`` and ``stop`` on the controlling thread; ``spawn`` from any thread (the
    worker's I/O thread); ``run_bounded`` and the coroutines run on the loop thread.
    ``blocked`` counts the stalls the watchdog thread saw.
    """

    def __init__(self, concurrency: int, *, name: str, block_warning: float = 0.5) -> None:
        self.name = name
        self.blocked = 0
        self.block_warning = block_warning
        self._concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: LoopInbox | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last_beat = 0.0

    @property
    def ident(self) -> int | None:
        """The loop thread's ident, once started."""
        thread = self._thread
        return thread.ident if thread is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._loop

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop, self._inbox = loop, LoopInbox(loop)
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(ready,), name=self.name, daemon=True)
        self._thread = thread
        thread.start()
        ready.wait()
        threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True).start()

    def spawn(self, make: Callable[[], Awaitable[None]]) -> None:
        """Run ``make()`` on the loop once a slot is free (batched hand-over, never blocks; on
        the loop's own thread, where a native worker's connection lives, no hand-over)."""
        inbox = self._inbox
        if inbox is None:
            raise RuntimeError(f"{self.name} is not started")
        if threading.get_ident() == self.ident:
            self._start_task(make)
        else:
            inbox.put(lambda: self._start_task(make))

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs, stop the loop and join its thread. Idempotent."""
        self._stopping.set()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(timeout)

    # -- loop thread ----------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        self._slots = asyncio.Semaphore(self._concurrency)
        self._beat()
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            self._cancel_all(loop)
        finally:
            loop.close()

    def _start_task(self, make: Callable[[], Awaitable[None]]) -> None:
        task = self.loop.create_task(self.run_bounded(make))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def run_bounded(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` once one of the ``concurrency`` slots is free."""
        assert self._slots is not None  # noqa: S101 - set before the loop runs
        async with self._slots:
            return await make()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async job failed", exc_info=task.exception())

    def _cancel_all(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop was stopped: cancel the jobs still running (their requests were not acked:
        the broker redelivers them) and let them unwind."""
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            log.warning("%s: %d tasks cancelled at stop", self.name, len(tasks))
            loop.run_until_complete(asyncio.wait(tasks, timeout=2.0))

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self.loop.call_later(self.block_warning / 4, self._beat)

    # -- watchdog thread ------------------------------------------------------------------------

    def _watch(self) -> None:
        warned_for = 0.0  # the heartbeat whose stall was reported
        while not self._stopping.wait(self.block_warning / 4):
            beat = self._last_beat
            stalled = time.monotonic() - beat - self.block_warning / 4
            if stalled < self.block_warning or beat == warned_for:
                continue
            warned_for = beat
            self.blocked += 1
            log.warning(
                "%s: the event loop has been blocked for %.2fs: an async handler runs blocking "
                "code (await it, or move it off the loop with asyncio.to_thread); it is at:\n%s",
                self.name,
                stalled,
                self._stack(),
            )

    def _stack(self) -> str:
        thread = self._thread
        frame = sys._current_frames().get(thread.ident) if thread and thread.ident else None
        if frame is None:
            return "  (stack unavailable)"
        return "".join(traceback.format_stack(frame)[-_STACK_LINES:]).rstrip()
