"""ReplyHandler: correlation id -> the future a blocked caller waits on.

A caller registers its future *before* its request is published, so a reply can never arrive for
a call that is not yet known. Replies for ids nobody waits for (late after a timeout, duplicated,
or forged by another connection in the vhost) are discarded and counted; they never wake a caller
and never raise on the I/O thread.

Deadlines are kept in a heap beside the table, so the I/O thread's periodic sweep costs only the
calls that are due, not a scan of all of them. At most ``max_pending`` calls are outstanding: one
more raises TooManyPending at once, so a requestor's memory is bounded however fast callers go.

Futures are ``ReplyFuture``s: their done-callbacks never run on the I/O thread.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from reqrep.common import envelope
from reqrep.common.errors import CallTimeout, ReqrepError, TooManyPending
from reqrep.common.logthrottle import LogThrottle
from reqrep.requestor._callbacks import CallbackRunner, ReplyFuture

__all__ = ["Deliver", "ReplyHandler", "ReplyStats"]

log = logging.getLogger("reqrep.requestor")

# Where a call's outcome goes instead of a Future: called once with (result, None) or
# (None, error), on whichever thread completes the call (usually the I/O thread), so it must
# only hand the outcome over (AsyncRequestor queues it for its event loop), never run user code.
Deliver = Callable[[Any, BaseException | None], None]


@dataclasses.dataclass(frozen=True)
class ReplyStats:
    """Counters of a ReplyHandler. ``late`` replies came for calls no longer waiting (timed
    out, or answered already: a duplicate); ``unknown`` ones for ids this requestor never issued
    (forged, or finished too long ago to remember)."""

    pending: int
    resolved: int
    late: int
    unknown: int
    untrusted: int = 0  # from a broker user not in the requestor's trusted_repliers
    undecodable: int = 0  # properties pika could not decode (common/_pika_decode.py): dropped


@dataclasses.dataclass
class _Pending:
    future: Future[Any] | Deliver
    deadline: float
    what: str  # "service.method", for error messages
    timeout: float


class ReplyHandler:
    """Thread-safe table of outstanding calls.

    Threads: ``expect`` and ``forget`` run on caller threads; ``resolve``, ``fail``, ``fail_all``
    and ``expire_due`` on the requestor's I/O thread; ``stats`` anywhere. One lock guards the
    table; futures are completed outside it so waking a caller never holds it. Done-callbacks
    of the futures run on the handler's callback thread, never on the I/O thread.
    """

    def __init__(
        self,
        remember: int = 10_000,
        *,
        max_pending: int = 10_000,
        name: str = "requestor",
        on_discard: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._max_pending = max_pending
        self._runner = CallbackRunner(name)
        self._pending: dict[str, _Pending] = {}
        self._deadlines: list[tuple[float, str]] = []  # a heap; entries of finished calls linger
        self._finished: OrderedDict[str, None] = OrderedDict()  # recent ids, for "late"
        self._remember = remember
        self._resolved = 0
        self._late = 0
        self._unknown = 0
        self._untrusted = 0
        self._undecodable = 0
        self._throttled = LogThrottle(log)  # forged replies can come by the thousand
        self._on_discard = on_discard  # told "late", "unknown" or "untrusted" (I/O thread)

    def expect(
        self, correlation_id: str, *, deadline: float, timeout: float, what: str
    ) -> Future[Any]:
        """Register a call; its future completes with the reply or a typed error.

        Raises TooManyPending if ``max_pending`` calls are outstanding already.
        """
        future: Future[Any] = ReplyFuture(self._runner)
        future.set_running_or_notify_cancel()  # a running future cannot be cancelled by users
        self._register(correlation_id, _Pending(future, deadline, what, timeout))
        return future

    def expect_deliver(
        self, correlation_id: str, deliver: Deliver, *, deadline: float, timeout: float, what: str
    ) -> None:
        """Register a call whose outcome goes to ``deliver`` (see ``Deliver``), not a Future.

        Raises TooManyPending if ``max_pending`` calls are outstanding already.
        """
        self._register(correlation_id, _Pending(deliver, deadline, what, timeout))

    def _register(self, correlation_id: str, entry: _Pending) -> None:
        with self._lock:
            if len(self._pending) >= self._max_pending:
                raise TooManyPending(
                    f"{entry.what}: {len(self._pending)} calls are pending already (max_pending="
                    f"{self._max_pending}); wait for some to finish"
                )
            self._pending[correlation_id] = entry
            heapq.heappush(self._deadlines, (entry.deadline, correlation_id))
            if len(self._deadlines) > 2 * len(self._pending) + 64:
                # Mostly finished calls: rebuild from the live ones (amortised O(1) a call).
                self._deadlines = [(e.deadline, c) for c, e in self._pending.items()]
                heapq.heapify(self._deadlines)

    def forget(self, correlation_id: str, error: BaseException | None = None) -> None:
        """The caller stopped waiting (its timeout passed): a later reply is late. The call
        completes with ``error``, if given, so that whoever watches it learns how it ended."""
        with self._lock:
            entry = self._pending.pop(correlation_id, None)
            if entry is not None:
                self._remember_finished(correlation_id)
        if entry is not None and error is not None:
            _complete(entry.future, error=error)

    def resolve(self, correlation_id: str | None, body: bytes) -> bool:
        """Complete the call ``correlation_id`` with a reply body; False if nobody waits."""
        cid = correlation_id or ""
        with self._lock:
            entry = self._pending.pop(cid, None)
            if entry is None:
                late = cid in self._finished
                if late:
                    self._late += 1
                else:
                    self._unknown += 1
            else:
                self._resolved += 1
                self._remember_finished(cid)
        if entry is None:
            log.debug(
                "discarded %s reply (correlation_id=%r)",
                "late" if late else "unknown",
                correlation_id,
            )
            if self._on_discard is not None:
                self._on_discard("late" if late else "unknown")
            return False
        try:
            result = envelope.decode_reply(body)
        except ReqrepError as exc:
            _complete(entry.future, error=exc)
        else:
            _complete(entry.future, result=result)
        return True

    def fail(self, correlation_id: str, error: ReqrepError) -> bool:
        """Complete one call with ``error``; False if it was no longer pending."""
        with self._lock:
            entry = self._pending.pop(correlation_id, None)
        if entry is None:
            return False
        _complete(entry.future, error=error)
        return True

    def fail_all(self, error: ReqrepError) -> int:
        """Complete every pending call with ``error`` (the requestor is closing)."""
        with self._lock:
            failed, self._pending = self._pending, {}
        for entry in failed.values():
            _complete(entry.future, error=error)
        return len(failed)

    def fail_many(self, correlation_ids: Iterable[str], error: ReqrepError) -> int:
        """Complete the given calls, those still pending, with ``error``."""
        with self._lock:
            entries = [e for c in correlation_ids if (e := self._pending.pop(c, None)) is not None]
        for entry in entries:
            _complete(entry.future, error=error)
        return len(entries)

    def pending_among(self, correlation_ids: Iterable[str]) -> set[str]:
        """Which of ``correlation_ids`` are still waited for."""
        with self._lock:
            return {c for c in correlation_ids if c in self._pending}

    def discard_untrusted(self, correlation_id: str | None, user_id: str | None) -> None:
        """A reply from a user we do not trust: ignored; the call keeps waiting."""
        with self._lock:
            self._untrusted += 1
        self._throttled.warning(
            "discarded reply %r from untrusted user %r", correlation_id, user_id
        )
        if self._on_discard is not None:
            self._on_discard("untrusted")

    def discard_undecodable(self, reason: str) -> None:
        """A message on the callback queue whose properties could not be decoded: dropped."""
        with self._lock:
            self._undecodable += 1
        self._throttled.warning("discarded a reply whose properties cannot be decoded (%s)", reason)
        if self._on_discard is not None:
            self._on_discard("undecodable")

    def is_pending(self, correlation_id: str) -> bool:
        with self._lock:
            return correlation_id in self._pending

    def expire_due(
        self, now: float, explain: Callable[[str], str | None] | None = None
    ) -> list[str]:
        """Fail calls whose deadline has passed with CallTimeout; return their ids.
        ``explain(cid)`` may give a call's error a message of its own (e.g. why it was never
        sent). Only the heap's due entries are looked at; those of calls that ended otherwise
        are dropped on the way."""
        entries: list[tuple[str, _Pending]] = []
        with self._lock:
            heap = self._deadlines
            while heap and heap[0][0] <= now:
                cid = heapq.heappop(heap)[1]
                entry = self._pending.get(cid)
                if entry is not None and entry.deadline <= now:
                    del self._pending[cid]
                    self._remember_finished(cid)
                    entries.append((cid, entry))
        for cid, entry in entries:
            message = explain(cid) if explain is not None else None
            error = CallTimeout(message) if message else timeout_error(entry.what, entry.timeout)
            _complete(entry.future, error=error)
        return [cid for cid, _entry in entries]

    def stats(self) -> ReplyStats:
        with self._lock:
            return ReplyStats(
                len(self._pending),
                self._resolved,
                self._late,
                self._unknown,
                self._untrusted,
                self._undecodable,
            )

    def _remember_finished(self, correlation_id: str) -> None:
        self._finished[correlation_id] = None
        if len(self._finished) > self._remember:
            self._finished.popitem(last=False)


def timeout_error(what: str, timeout: float) -> CallTimeout:
    return CallTimeout(f"no reply from {what} within {timeout:g}s")


def _complete(
    future: Future[Any] | Deliver, *, result: Any = None, error: BaseException | None = None
) -> None:
    if not isinstance(future, Future):
        try:
            future(result, error)
        except Exception:  # a broken hand-over must not kill the I/O thread
            log.exception("could not deliver the outcome of a call")
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # completed by a racing path (e.g. expiry); first one wins
        pass
