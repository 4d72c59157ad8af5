"""Done-callbacks of call futures run off the I/O thread.

``concurrent.futures.Future`` runs its done-callbacks on the thread that completes it. Replies
complete futures on the requestor's I/O thread, which also runs pika's loop and heartbeats: a
slow callback there would stall every call, and a callback that makes a call of its own would
wait for a reply that thread can no longer read. So a ``ReplyFuture`` hands the callbacks it
would run on an I/O thread to a ``CallbackRunner``: one thread per requestor, started when first
needed and gone when idle, which runs them in order. Waiters (``result()``, ``wait()``,
``as_completed()``) are woken directly by the I/O thread, without a hop; callbacks cost one hop,
and a burst of them costs one wake-up. A callback added to a future that is already done runs at
once on the caller's thread, as with any Future.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from reqrep.common._iothread import on_io_thread

__all__ = ["CallbackRunner", "ReplyFuture"]

log = logging.getLogger("reqrep.requestor")

_IDLE_EXIT = 5.0  # seconds a runner thread waits for work before it ends

_Callback = Callable[["Future[Any]"], object]


class CallbackRunner:
    """Runs callbacks on its own thread, in the order they were queued.

    Threads: ``run`` from any thread (never blocks); the callbacks on ``reqrep-callbacks-<name>``.
    """

    def __init__(self, name: str) -> None:
        self._name = f"reqrep-callbacks-{name}"
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[tuple[_Callback, Future[Any]]] = deque()
        self._thread: threading.Thread | None = None
        self._waiting = False  # the thread sleeps on the condition and nobody woke it yet

    def run(self, fn: _Callback, future: Future[Any]) -> None:
        # deque.append is atomic; the lock is taken only to start or wake the thread. The
        # thread sets _waiting before it looks at the deque one last time, so an item appended
        # after that look sees _waiting set and wakes it.
        self._items.append((fn, future))
        if self._waiting or self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()
                elif self._waiting:
                    self._waiting = False
                    self._cond.notify()

    def _loop(self) -> None:
        items = self._items
        while True:
            while items:
                _run_one(*items.popleft())  # in a function: no local keeps it alive afterwards
            with self._cond:
                self._waiting = True
                if not items:
                    self._cond.wait(_IDLE_EXIT)
                self._waiting = False
                # Gone first, then one last look: an item appended after that look sees no
                # thread and starts one.
                self._thread = None
                if not items:
                    return
                self._thread = threading.current_thread()


def _run_one(fn: _Callback, future: Future[Any]) -> None:
    try:
        fn(future)
    except Exception:
        log.exception("a done-callback of %r raised", future)


class ReplyFuture(Future[Any]):
    """A Future whose done-callbacks never run on an I/O thread (see the module docstring).

    It stays pending (never "running") until its call ends, so ``cancel()`` works; a
    successful ``cancel()`` runs ``on_cancel`` (which cancels the call itself) on the thread
    that cancelled it."""

    def __init__(self, runner: CallbackRunner, on_cancel: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._runner = runner
        self._on_cancel = on_cancel

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled and self._on_cancel is not None:
            self._on_cancel()
        return cancelled

    def add_done_callback(self, fn: _Callback) -> None:
        runner = self._runner

        def hop(future: Future[Any]) -> None:
            if on_io_thread():
                runner.run(fn, future)
            else:
                fn(future)

        super().add_done_callback(hop)
