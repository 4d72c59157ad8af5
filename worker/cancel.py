"""Cancellation that reaches the worker: a caller's cancel stops its call here.

A requestor whose call is cancelled (an AsyncRequestor task cancelled, ``Future.cancel()`` on
``call_async``) publishes a ``cancel`` control message (``common/control.py``) to the workers of
the call's service. It names the call by its ``reply_to`` and ``correlation_id`` together
(correlation ids are unique per requestor only). Every worker of the service gets it; what one
does depends on where the call is:

- running here: its ``CancelSignal`` is set. An ``async def`` handler's task is cancelled
  (``CancelledError`` inside it); a plain handler sees ``current().cancelled()`` turn true and
  may stop early. Either way no reply is sent (its caller has gone) and the request is
  acknowledged.
- waiting here for a handler (prefetched, queued for a thread or a slot of the loop): skipped
  when its turn comes: acknowledged, not run, no reply.
- not here (still in the queue, or at another worker): remembered until its deadline (the
  cancel's ``x-deadline``; at most ``REMEMBER`` seconds, and the ``MAX_REMEMBERED`` latest), so
  that if it is delivered here later it is skipped at once.

A caller's deadline needs no message: the request carries it (``x-deadline``), and
``current().cancelled()`` turns true once it passes.

Threads: ``Cancellations`` is used on the worker's I/O thread only (admission, the control
channel, settlement). A ``CancelSignal`` is set there and read on handler threads and on the
handler loop; what it runs when set must only hand work over (``call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from reqrep.common._transport import Delivery
from reqrep.worker import admission

__all__ = ["MAX_REMEMBERED", "REMEMBER", "CancelSignal", "Cancellations"]

log = logging.getLogger("reqrep.worker")

REMEMBER = 300.0  # seconds a cancel of a call not here is kept, at most (or until its deadline)
MAX_REMEMBERED = 10_000  # cancels of calls not here kept at once; the oldest go first

Key = tuple[Hashable, Hashable]  # (reply_to, correlation_id): one call


class CancelSignal:
    """Set once when the call's caller cancels it.

    Threads: ``set`` on the I/O thread; ``is_set`` anywhere; ``on_set`` on the thread that runs
    the call (its function runs on whichever thread sets the signal, or at once if it is set).
    """

    __slots__ = ("_callbacks", "_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("a cancel callback failed")

    def on_set(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` when the signal is set (now, if it is); returns what takes it back."""
        with self._lock:
            if not self._set:
                self._callbacks.append(fn)
                return lambda: self._discard(fn)
        fn()
        return _nothing

    def _discard(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._callbacks:
                self._callbacks.remove(fn)


def _nothing() -> None:
    return None


class Cancellations:
    """The calls dispatched here (by key), and the cancels of calls that are not (yet).

    Threads: every method on the worker's I/O thread.
    """

    def __init__(
        self,
        *,
        remember: float = REMEMBER,
        limit: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remember = remember
        self._limit = limit
        self._clock = clock
        self._live: dict[Key, CancelSignal] = {}
        self._cancelled: OrderedDict[Key, float] = OrderedDict()  # key -> kept until (clock)
        self.received = 0  # cancels that arrived

    def taken_back(self, reply_to: Hashable, correlation_id: Hashable) -> bool:
        """Whether the call was cancelled before it reached this worker (then it is forgotten:
        the caller skips it once)."""
        until = self._cancelled.pop((reply_to, correlation_id), None)
        return until is not None and until > self._clock()

    def start(self, reply_to: Hashable, correlation_id: Hashable) -> CancelSignal:
        """A call is dispatched to a handler: its signal, set if a cancel comes."""
        signal = CancelSignal()
        self._live[(reply_to, correlation_id)] = signal
        return signal

    def finish(self, reply_to: Hashable, correlation_id: Hashable) -> None:
        """The call was answered or skipped: a cancel that comes now changes nothing."""
        self._live.pop((reply_to, correlation_id), None)

    def on_message(self, delivery: Delivery) -> None:
        """A ``cancel`` control message: stop the call it names, or remember it."""
        props = delivery.properties
        self.received += 1
        if not props.reply_to or not props.correlation_id:
            return
        key = (props.reply_to, props.correlation_id)
        signal = self._live.get(key)
        if signal is not None:
            log.debug("call %s cancelled by its caller", props.correlation_id)
            signal.set()
            return
        self._remember_cancel(key, admission.deadline_of(props.headers))

    def _remember_cancel(self, key: Key, deadline_ms: int | None) -> None:
        now = self._clock()
        keep = self._remember
        if deadline_ms is not None:
            keep = min(keep, max(0.0, deadline_ms / 1000 - time.time()))
        if keep <= 0:
            return  # its deadline passed: a worker skips it by that alone
        self._cancelled[key] = now + keep
        self._cancelled.move_to_end(key)
        while self._cancelled and (
            len(self._cancelled) > self._limit or next(iter(self._cancelled.values())) <= now
        ):
            self._cancelled.popitem(last=False)
