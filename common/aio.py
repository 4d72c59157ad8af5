"""Handing work from reqrep's threads to an asyncio event loop, in batches.

``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call: one wake-up a reply.
A ``LoopInbox`` queues callables under a lock and wakes the loop once per batch, so a burst of
replies that an I/O thread handles in one turn costs the loop one wake-up. The callables run on
the loop's thread, never on the thread that put them: reqrep's I/O threads run no user code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

__all__ = ["LoopInbox"]

log = logging.getLogger("reqrep.aio")


class LoopInbox:
    """Runs callables on one event loop, in the order they were put.

    Threads: ``put`` from any thread (an I/O thread, a caller, the loop itself); the callables
    run on the loop's thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[Callable[[], object]] = []

    def put(self, fn: Callable[[], object]) -> bool:
        """Queue ``fn``; False if the loop is closed (``fn`` will never run)."""
        with self._lock:
            self._items.append(fn)
            if len(self._items) > 1:
                return True  # a wake-up is on its way and will take this one too
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: nobody is left to await these
            with self._lock:
                dropped, self._items = len(self._items), []
            log.debug("event loop closed: %d hand-overs dropped", dropped)
            return False
        return True

    def _run(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for fn in items:
            try:
                fn()
            except Exception:
                log.exception("hand-over to the event loop failed")
