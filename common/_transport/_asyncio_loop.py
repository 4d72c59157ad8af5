"""A caller's asyncio event loop as a ``Loop``: for a connection hosted on that loop.

A hosted connection has no I/O thread of its own: it lives on the event loop of the code that
uses it (an ``AsyncRequestor`` opened with ``native=True``), so that its calls are published and
its replies resolve asyncio futures on that loop with no thread hand-off. Both transports take
such a loop: pika's opens an ``AsyncioConnection`` on it, the in-memory one posts to it.

The loop belongs to its caller, who runs it: ``run`` and ``stop`` are not for a hosted loop (the
Link ends a hosted connection without them), and ``close`` only makes it drop what is still
scheduled for reqrep (its timers, posted callbacks): the event loop itself goes on.

Threads: made on the loop's thread (or anywhere, given that thread's ident);
``call_soon_threadsafe`` from any thread; everything else on the loop's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["AsyncioLoop"]


class AsyncioLoop:
    """``Loop`` over a running asyncio event loop owned by its caller (see the module
    docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, thread: int | None = None) -> None:
        self.loop = loop
        # The thread that runs ``loop``: this one, unless its ident is given.
        self._thread = threading.get_ident() if thread is None else thread
        self._timers: set[asyncio.Handle] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"<AsyncioLoop {self.loop!r} closed={self._closed}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop_thread(self) -> bool:
        """True on the thread that runs the event loop (any thread)."""
        return threading.get_ident() == self._thread

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        if self._closed:
            return None

        def fire() -> None:
            self._timers.discard(handle)
            fn()

        handle: asyncio.Handle = (
            self.loop.call_soon(fire) if delay <= 0 else self.loop.call_later(delay, fire)
        )
        self._timers.add(handle)
        return handle

    def cancel(self, handle: object) -> None:
        if isinstance(handle, asyncio.Handle):
            handle.cancel()
            self._timers.discard(handle)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        if self._closed:
            return

        def run() -> None:
            if not self._closed:
                fn()

        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:  # the event loop is closed: nothing it was to run matters now
            self._closed = True

    def run(self) -> None:
        raise RuntimeError("a hosted loop is run by its owner, not by reqrep")

    def stop(self) -> None:
        raise RuntimeError("a hosted loop is stopped by its owner, not by reqrep")

    def close(self) -> None:
        """Drop reqrep's timers and posted callbacks; the event loop goes on (loop thread)."""
        self._closed = True
        timers, self._timers = self._timers, set()
        for handle in timers:
            handle.cancel()
