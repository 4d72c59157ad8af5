"""The requestor's one table of calls: a record per call, keyed by correlation id.

The design card's ReplyHandler: it matches replies to the callers waiting for them. A caller
registers its call *before* the request is published, so a reply can never arrive for a call
that is not yet known. Replies for ids nobody waits for (late after a timeout, duplicated, or
forged by another connection in the vhost) are discarded and counted; they never wake a caller
and never raise on the I/O thread.

Each ``Call`` holds everything about one call: its request (to send it again after a lost
connection or a nack), where its outcome goes (``deliver``), its deadline, and its ``state``
(``CallState``), which only the requestor's I/O thread moves while the call is live. Being in
the table is what makes a call live: once it is out (``DONE``), whatever its record says is
history. Deadlines
sit in a heap beside the table, so the I/O thread's sweep costs only the calls that are due.
At most ``max_pending`` calls are live: one more raises TooManyPending at once, so a
requestor's memory is bounded however fast callers go.

A call ends once: whichever of its reply, an error (a return, a nack, a lost connection), its
deadline, its caller giving up or ``close()`` comes first takes it out of the table under the
lock and hands the outcome to ``deliver``, outside the lock.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from reqrep.common import plain
from reqrep.common.errors import CallTimeout, ReqrepError, TooManyPending
from reqrep.common.logthrottle import LogThrottle
from reqrep.common.serialization import CONTENT_TYPE

__all__ = ["Call", "CallState", "Deliver", "ReplyHandler", "ReplyStats", "timeout_error"]

log = logging.getLogger("reqrep.requestor")

# Where a call's outcome goes: called once with (result, None) or (None, error), on whichever
# thread ends the call (usually the I/O thread), so it must only hand the outcome over (wake a
# waiter, complete a Future, queue it for an event loop), never run user code.
Deliver = Callable[[Any, BaseException | None], None]


class CallState(enum.Enum):
    """Where a live call stands (moved by the I/O thread only)."""

    NEW = "new"  # handed to the I/O thread; not published yet (it may wait for a worker check)
    HELD = "held"  # waiting for a connection, or for the broker to unblock it
    UNCONFIRMED = "unconfirmed"  # published; the broker has not confirmed it yet
    SENT = "sent"  # published (and confirmed, with confirms): waiting for the reply
    RETRYING = "retrying"  # refused (a nack) or in doubt: to be sent again after a pause
    DONE = "done"  # ended; out of the table


@dataclasses.dataclass(eq=False)
class Call:
    """One call: its request, its deadline, where its outcome goes, and its state."""

    correlation_id: str
    service: str
    method: str
    queue: str
    message_id: str
    body: bytes
    deadline: float  # time.monotonic() seconds
    deadline_ms: int  # Unix time in milliseconds, for the worker
    timeout: float  # seconds, as the caller gave it (for messages)
    retries: int  # resends still allowed after a lost connection or a nack
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. traceparent
    # The caller's own headers, as the AMQP header that carries them (common/callheaders.py).
    app_headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    deliver: Deliver | None = None  # set when the call is sent
    state: CallState = CallState.NEW
    rejections: int = 0  # nacks so far
    generation: int = 0  # the channel it was last published on
    tag: int = 0  # its publisher-confirm tag on that channel
    plain: bool = False  # a plain call (common/plain.py): to the queue, the reply's body back
    content_type: str | None = CONTENT_TYPE  # of the request's body
    fail_fast: bool = False  # fail at once, not held, while no connection is up
    sent_to: str = ""  # the reply_to of its last publish ("": never published)

    @property
    def what(self) -> str:
        return f"{self.service}.{self.method}" if self.method else f"queue {self.queue!r}"


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
    undecodable: int = 0  # properties the transport could not decode: dropped


class ReplyHandler:
    """The table of live calls.

    Threads: ``expect`` and ``forget`` run on caller threads (and ``forget`` on an event loop
    of an AsyncRequestor); ``resolve``, ``fail``, ``fail_many``, ``expire_due`` and the
    ``discard_*`` counters on the requestor's I/O thread; ``fail_all`` on whichever thread
    closes; ``get``, ``live`` and ``stats`` anywhere. One lock guards the table; outcomes are
    delivered outside it, so waking a caller never holds it.
    """

    def __init__(
        self,
        remember: int = 10_000,
        *,
        max_pending: int = 10_000,
        on_discard: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._max_pending = max_pending
        self._calls: dict[str, Call] = {}  # live calls, in the order they were made
        self._deadlines: list[tuple[float, str]] = []  # a heap; entries of ended calls linger
        self._finished: OrderedDict[str, None] = OrderedDict()  # recent ids, for "late"
        self._remember = remember
        self._resolved = 0
        self._late = 0
        self._unknown = 0
        self._untrusted = 0
        self._undecodable = 0
        self._throttled = LogThrottle(log)  # forged replies can come by the thousand
        self._on_discard = on_discard  # told "late", "unknown", "untrusted"... (I/O thread)

    def expect(self, call: Call) -> None:
        """Register ``call`` (its ``deliver`` set). Raises TooManyPending if ``max_pending``
        calls are live already."""
        with self._lock:
            if len(self._calls) >= self._max_pending:
                raise TooManyPending(
                    f"{call.what}: {len(self._calls)} calls are pending already (max_pending="
                    f"{self._max_pending}); wait for some to finish"
                )
            self._calls[call.correlation_id] = call
            heapq.heappush(self._deadlines, (call.deadline, call.correlation_id))
            if len(self._deadlines) > 2 * len(self._calls) + 64:
                # Mostly ended calls: rebuild from the live ones (amortised O(1) a call).
                self._deadlines = [(c.deadline, k) for k, c in self._calls.items()]
                heapq.heapify(self._deadlines)

    def get(self, correlation_id: str) -> Call | None:
        """The live call with this id, if any."""
        return self._calls.get(correlation_id)

    def live(self) -> list[Call]:
        """The live calls, oldest first (a snapshot)."""
        with self._lock:
            return list(self._calls.values())

    def forget(self, correlation_id: str, error: BaseException | None = None) -> None:
        """The caller stopped waiting (its timeout passed, its task was cancelled): a later
        reply is late. The call is delivered ``error``, if given, so that whoever reports on it
        learns how it ended."""
        call = self._end(correlation_id)
        if call is not None and error is not None:
            _deliver(call, None, error)

    def resolve(self, correlation_id: Any, body: bytes, kind: Any = None) -> bool:
        """End the call ``correlation_id`` with a reply body (of AMQP type ``kind``); False if
        nobody waits for it."""
        cid = correlation_id if isinstance(correlation_id, str) else ""
        with self._lock:
            call = self._calls.pop(cid, None)
            if call is None:
                late = cid in self._finished
                if late:
                    self._late += 1
                else:
                    self._unknown += 1
            else:
                call.state = CallState.DONE
                self._resolved += 1
                self._remember_finished(cid)
        if call is None:
            log.debug(
                "discarded %s reply (correlation_id=%r)",
                "late" if late else "unknown",
                correlation_id,
            )
            if self._on_discard is not None:
                self._on_discard("late" if late else "unknown")
            return False
        try:
            result = (
                plain.plain_result(body, kind)
                if call.plain
                else plain.enveloped_result(body, call.what)
            )
        except ReqrepError as exc:
            _deliver(call, None, exc)
        else:
            _deliver(call, result, None)
        return True

    def fail(self, correlation_id: str, error: ReqrepError) -> bool:
        """End one call with ``error``; False if it was no longer live."""
        call = self._end(correlation_id)
        if call is None:
            return False
        _deliver(call, None, error)
        return True

    def fail_many(self, calls: Iterable[Call], error: ReqrepError) -> int:
        """End the given calls, those still live, with ``error``; how many."""
        with self._lock:
            ended = []
            for call in calls:
                if self._calls.pop(call.correlation_id, None) is not None:
                    call.state = CallState.DONE
                    self._remember_finished(call.correlation_id)
                    ended.append(call)
        for call in ended:
            _deliver(call, None, error)
        return len(ended)

    def fail_all(self, error: ReqrepError) -> int:
        """End every live call with ``error`` (the requestor is closing)."""
        with self._lock:
            ended, self._calls = self._calls, {}
            for call in ended.values():
                call.state = CallState.DONE
        for call in ended.values():
            _deliver(call, None, error)
        return len(ended)

    def expire_due(
        self, now: float, explain: Callable[[Call], str | None] | None = None
    ) -> list[str]:
        """End the calls whose deadline has passed with CallTimeout; return their ids.
        ``explain(call)`` may give a call's error a message of its own (e.g. why it was never
        sent). Only the heap's due entries are looked at."""
        due: list[Call] = []
        with self._lock:
            heap = self._deadlines
            while heap and heap[0][0] <= now:
                cid = heapq.heappop(heap)[1]
                call = self._calls.get(cid)
                if call is not None and call.deadline <= now:
                    del self._calls[cid]
                    self._remember_finished(cid)
                    due.append(call)
        for call in due:
            message = explain(call) if explain else None  # before DONE: where it stood
            call.state = CallState.DONE
            error = CallTimeout(message) if message else timeout_error(call.what, call.timeout)
            _deliver(call, None, error)
        return [call.correlation_id for call in due]

    def discard_untrusted(self, correlation_id: Any, user_id: Any) -> None:
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

    def stats(self) -> ReplyStats:
        with self._lock:
            return ReplyStats(
                len(self._calls),
                self._resolved,
                self._late,
                self._unknown,
                self._untrusted,
                self._undecodable,
            )

    def _end(self, correlation_id: str) -> Call | None:
        with self._lock:
            call = self._calls.pop(correlation_id, None)
            if call is not None:
                call.state = CallState.DONE
                self._remember_finished(correlation_id)
        return call

    def _remember_finished(self, correlation_id: str) -> None:
        self._finished[correlation_id] = None
        if len(self._finished) > self._remember:
            self._finished.popitem(last=False)


def timeout_error(what: str, timeout: float) -> CallTimeout:
    return CallTimeout(f"no reply from {what} within {timeout:g}s")


def _deliver(call: Call, result: Any, error: BaseException | None) -> None:
    deliver = call.deliver
    if deliver is None:
        return
    try:
        deliver(result, error)
    except Exception:  # a broken hand-over must not kill the I/O thread
        log.exception("could not deliver the outcome of %s", call.what)
