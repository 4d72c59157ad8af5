"""The requestor's I/O thread: the only code of the requestor that touches pika.

It declares the exclusive, server-named callback queue, consumes replies from it, and publishes
requests with ``mandatory=True`` on a channel in confirm mode. Why both: a request to a queue that
does not exist is otherwise dropped by the broker without a word, and the caller would wait out
its whole timeout. With ``mandatory`` the broker returns it (312 NO_ROUTE) and the call fails at
once with NoSuchService; confirms add a nack for requests the broker accepted but could not keep.

When the connection drops, the callback queue dies with it (it is exclusive), so no reply to a
request already sent can arrive any more: those calls fail at once with ConnectionLost, except
calls marked retryable, which are sent again after the reconnection with the same idempotency key
and a ``reply_to`` naming the new callback queue. Calls made while reconnecting wait, within their
own deadline, and go out once the connection is back. The same holds while the broker blocks the
connection (a memory or disk alarm, ``connection.blocked``): requests are held, not written into
a socket the broker no longer reads, and go out when it unblocks; a call whose deadline passes
first fails with CallTimeout saying why.

Deadlines do not depend on the connection: the sweep that fails due calls starts with the I/O
thread, before the first connection, and its timer is guarded like every callback here.

A nack means the broker did not queue the request. The channel is then replaced (on RabbitMQ
3.10 a channel that first published to a quorum queue while its leader was down has every later
publish nacked, while a new channel works), and a retryable call is sent again after a short
pause, within its deadline; other calls fail with PublishRejected. The callback queue is declared
without auto-delete, so it outlives a replaced channel: replies to calls in flight still arrive.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections import OrderedDict
from typing import Any

import pika

from reqrep.common._pika_decode import undecodable
from reqrep.common._pika_deliver import confirm_delivery
from reqrep.common._pika_props import RequestProperties
from reqrep.common._pika_publish import publish
from reqrep.common.config import Settings
from reqrep.common.connection import ConnectionThread
from reqrep.common.errors import (
    CallError,
    ClosedError,
    ConnectionLost,
    MessageTooLarge,
    NoSuchService,
    PublishRejected,
    ReqrepError,
    TooManyPending,
)
from reqrep.common.observe import Probe
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.requestor._presence import WorkerPresence
from reqrep.requestor.reply_handler import ReplyHandler

__all__ = ["DEADLINE_HEADER", "OutgoingRequest", "RequestorIO"]

log = logging.getLogger("reqrep.requestor")

# How often the I/O thread fails calls whose deadline passed. Blocking calls wait with their own
# exact timeout; this bounds how late an async call's future learns of its timeout.
SWEEP_INTERVAL = 0.1
DEADLINE_HEADER = "x-deadline"  # absolute deadline, Unix time in milliseconds
# After a nack the channel is replaced, at most once in this many seconds: a queue that refuses
# every publish (x-overflow=reject-publish) must not make the requestor churn channels.
NACK_CHANNEL_PAUSE = 1.0


@dataclasses.dataclass
class OutgoingRequest:
    """A request as the I/O thread publishes it (and, if retryable, publishes it again)."""

    service: str
    queue: str
    method: str
    correlation_id: str
    message_id: str
    body: bytes
    deadline: float  # time.monotonic() seconds
    deadline_ms: int  # Unix time in milliseconds, for the worker
    retries: int  # resends still allowed after a lost connection or a nack
    rejections: int = 0  # nacks so far
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. traceparent


class RequestorIO(ConnectionThread):
    """Publishes requests and routes replies into a ReplyHandler.

    Threads: ``publish`` is called from any caller thread and only queues work; everything else
    runs on the I/O thread this object owns.
    """

    def __init__(
        self,
        settings: Settings,
        replies: ReplyHandler,
        *,
        name: str,
        trusted_repliers: frozenset[str] | None = None,
        probe: Probe | None = None,
    ) -> None:
        super().__init__(settings, name=name)
        self._replies = replies
        self._trusted = trusted_repliers
        self._reply_queue = ""
        self._published = 0  # publish sequence number == confirm delivery tag
        self._unconfirmed: OrderedDict[int, str] = OrderedDict()  # tag -> correlation id
        self._held: dict[str, OutgoingRequest] = {}  # waiting for a connection
        self._retryable: dict[str, OutgoingRequest] = {}  # sent; may be sent again
        self._sent: set[str] = set()  # sent on this connection, no outcome yet
        self._sweeps = 0
        self._keep_queue = False  # the channel was replaced: the callback queue lives on
        self._last_replaced = -math.inf  # when the channel was last replaced after a nack
        self._presence = (  # fail fast with NoWorkers unless the caller would rather wait
            None
            if settings.wait_for_workers
            else WorkerPresence(self._open_check_channel, self.call_later)
        )
        self._probe = probe if probe is not None else Probe("requestor", observers=())

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    def publish(self, request: OutgoingRequest) -> None:
        """Queue a request for publishing (any thread); raises ClosedError once closed."""
        self.submit(lambda: self._publish(request))

    # -- I/O thread ---------------------------------------------------------------------------

    def _on_thread_start(self) -> None:
        self.call_later(SWEEP_INTERVAL, self._sweep)

    def _setup(self, channel: Any) -> None:
        self._published = 0
        self._unconfirmed.clear()
        channel.add_on_return_callback(self.guarded(self._on_return))
        if self._settings.persistent:
            confirm_delivery(  # pika's, with confirms on the short road
                channel, self.guarded(self._on_confirm), lambda _frame: self._declare()
            )
        else:  # mandatory returns need no confirms: NoSuchService still fails at once
            self._declare()

    def _declare(self) -> None:
        if self._keep_queue:  # a replaced channel: the connection's callback queue is still there
            self._keep_queue = False
            self._consume_replies()
            return
        # Not auto-delete: the queue must outlive a replaced channel. Exclusive: it goes with
        # the connection.
        self.channel.queue_declare(
            queue="", exclusive=True, auto_delete=False, callback=self._on_declared
        )

    def _on_declared(self, frame: Any) -> None:
        self._reply_queue = frame.method.queue
        self._consume_replies()

    def _consume_replies(self) -> None:
        self.channel.basic_consume(
            self._reply_queue,
            self._on_reply_guarded,
            auto_ack=True,
            exclusive=True,
            callback=lambda _frame: self._on_consuming(),
        )

    def _on_consuming(self) -> None:
        self._ready()

    def _on_recovered(self) -> None:
        self._probe.reconnected()
        if self._presence is not None:  # the workers are probably reconnecting too
            self._presence.recovered(self._settings.reconnect_max + 1.0)
        self._publish_held()

    def _on_unblocked(self) -> None:
        self._publish_held()

    def _publish_held(self) -> None:
        held, self._held = self._held, {}
        for request in held.values():
            if self._replies.is_pending(request.correlation_id):
                self._publish(request)

    def _publish(self, request: OutgoingRequest) -> None:
        # While the broker blocks us (a resource alarm) a check might never be answered: the
        # request is held instead, and gated when it is published after the unblock.
        if self._presence is not None and self.is_open and self.blocked is None:
            cid = request.correlation_id
            self._presence.gate(
                request.queue,
                request.service,
                lambda: self._send(request),
                lambda error: self._replies.fail(cid, error),
            )
        else:
            self._send(request)

    def _open_check_channel(self, on_open: Any) -> None:
        connection = self._connection
        if connection is None or not connection.is_open:
            raise ConnectionLost("no connection")
        connection.channel(on_open_callback=on_open)

    def _send(self, request: OutgoingRequest) -> None:
        cid = request.correlation_id
        if not self.is_open or self.blocked is not None:
            if len(self._held) >= self._settings.max_pending:  # a backstop: pending is capped
                self._replies.fail(cid, TooManyPending(f"{len(self._held)} requests held"))
                return
            self._held[cid] = request
            return
        left_ms = math.ceil((request.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return  # the sweep fails it with CallTimeout
        properties = RequestProperties(  # its constant fields' bytes are reused
            content_type=CONTENT_TYPE,
            correlation_id=cid,
            reply_to=self._reply_queue,
            type=request.method,
            message_id=request.message_id,
            delivery_mode=2 if self._settings.persistent else 1,
            expiration=str(left_ms),
            headers={DEADLINE_HEADER: request.deadline_ms, **request.headers},
        )
        try:
            publish(self.channel, "", request.queue, request.body, properties, mandatory=True)
        except Exception:  # noqa: BLE001 - pika raises several types once the channel closes
            self._held[cid] = request  # never sent: send it after the reconnection
            return
        if self._settings.persistent:
            self._published += 1
            self._unconfirmed[self._published] = cid
        self._sent.add(cid)
        if request.retries > 0:
            self._retryable[cid] = request

    def _on_reply_guarded(self, channel: Any, deliver: Any, properties: Any, body: bytes) -> None:
        """A reply we cannot handle fails its own call, not the connection (and every call)."""
        try:
            self._on_reply(channel, deliver, properties, body)
        except Exception as exc:
            log.exception("could not handle reply %r", getattr(properties, "correlation_id", None))
            cid = getattr(properties, "correlation_id", None)
            if isinstance(cid, str):
                self._replies.fail(cid, CallError(f"could not handle the reply: {exc!r}"))

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        if (reason := undecodable(properties)) is not None:  # see common/_pika_decode.py
            self._replies.discard_undecodable(reason)
            return
        if self._trusted is not None and properties.user_id not in self._trusted:
            self._replies.discard_untrusted(properties.correlation_id, properties.user_id)
            return
        cid = properties.correlation_id
        if cid:
            self._retryable.pop(cid, None)
            self._sent.discard(cid)
        if len(body) > self._settings.max_message_bytes:
            self._replies.fail(
                cid or "",
                MessageTooLarge(
                    f"reply of {len(body)} bytes exceeds max_message_bytes="
                    f"{self._settings.max_message_bytes}"
                ),
            )
            return
        self._replies.resolve(cid, body)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        cid = properties.correlation_id
        log.debug("request %s returned: %s %s", cid, method.reply_code, method.reply_text)
        if cid:
            self._retryable.pop(cid, None)
            self._sent.discard(cid)
            queue, prefix = str(method.routing_key), self._settings.queue_prefix
            service = queue[len(prefix) :] if prefix and queue.startswith(prefix) else queue
            self._replies.fail(cid, NoSuchService(service))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if not isinstance(method, pika.spec.Basic.Nack):
            self._settle(method.delivery_tag, method.multiple)
            return
        now = time.monotonic()
        for cid in self._settle(method.delivery_tag, method.multiple):
            self._sent.discard(cid)
            if not self._retry_rejected(cid, now):
                self._replies.fail(cid, PublishRejected("the broker refused the request (nack)"))
        if now - self._last_replaced >= NACK_CHANNEL_PAUSE:
            self._last_replaced = now
            # Confirms of the old channel die with it: send retryable calls again rather than
            # wait for an answer that may never come (their key makes a duplicate harmless).
            for cid in self._unconfirmed.values():
                self._retry_rejected(cid, now)
            self._unconfirmed.clear()  # a late confirm of the closing channel settles nothing
            self._keep_queue = True
            self._reopen_channel()

    def _retry_rejected(self, cid: str, now: float) -> bool:
        """Schedule a nacked call to be sent again, if it may be; say whether it was."""
        request = self._retryable.get(cid)
        if request is None or request.retries <= 0 or request.deadline <= now:
            self._retryable.pop(cid, None)
            return False
        del self._retryable[cid]
        self._sent.discard(cid)
        # Not queued, so safe to send again: after a pause that grows with each nack.
        request.retries -= 1
        request.rejections += 1
        pause = min(1.0, 0.05 * 2 ** min(request.rejections, 5))
        self.call_later(pause, functools.partial(self._resend, request))
        return True

    def _resend(self, request: OutgoingRequest) -> None:
        if self._replies.is_pending(request.correlation_id):
            self._publish(request)

    def _settle(self, tag: int, multiple: bool) -> list[str]:
        if not multiple:
            cid = self._unconfirmed.pop(tag, None)
            return [] if cid is None else [cid]
        settled = []
        while self._unconfirmed:
            first = next(iter(self._unconfirmed))
            if first > tag:
                break
            settled.append(self._unconfirmed.popitem(last=False)[1])
        return settled

    def _sweep(self) -> None:
        """Fail the calls that are due (a heap: the cost is theirs, not all calls'), and drop
        them from this connection's maps. Runs every SWEEP_INTERVAL for the thread's life."""
        try:
            for cid in self._replies.expire_due(time.monotonic(), self._why_unsent):
                self._held.pop(cid, None)
                self._retryable.pop(cid, None)
                self._sent.discard(cid)
            self._sweeps += 1
            if self._sweeps % 50 == 0:  # calls that ended otherwise: the caller timed out
                live = self._replies.pending_among([*self._sent, *self._retryable, *self._held])
                self._sent.intersection_update(live)
                self._retryable = {c: r for c, r in self._retryable.items() if c in live}
                self._held = {c: r for c, r in self._held.items() if c in live}
        finally:
            self.call_later(SWEEP_INTERVAL, self._sweep)

    def _why_unsent(self, cid: str) -> str | None:
        request = self._held.get(cid)
        if request is None:
            return None
        if request.rejections:
            why = f"the broker refused the request (nack) {request.rejections} times"
        elif self.blocked is not None:
            why = f"the broker blocked publishing ({self.blocked})"
        else:
            why = "the broker connection was down"
        return f"no reply from {request.service}.{request.method}: {why} until the call's deadline"

    def _on_lost(self, error: ReqrepError) -> None:
        self._keep_queue = False  # the callback queue went with the connection
        self._lose_sent(error)

    def _lose_sent(self, error: ReqrepError) -> None:
        """Fail the calls whose replies can no longer arrive (sent on the lost connection, whose
        callback queue died with it), except those that may be resent. Calls not sent yet are
        not touched: they go out on the next connection."""
        if self._presence is not None:
            self._presence.reset()
        for cid, request in self._retryable.items():
            if request.retries > 0 and self._replies.is_pending(cid):
                request.retries -= 1
                self._held[cid] = request
        self._retryable.clear()
        stranded = self._sent.difference(self._held)
        self._sent.clear()
        lost = ConnectionLost(f"{error} (the request may or may not have been run)")
        failed = self._replies.fail_many(stranded, lost)
        if failed:
            log.warning("%d pending calls failed: %s", failed, error)

    def _on_closed(self) -> None:
        """The I/O thread is ending (closed, or crashed): no pending call can complete now."""
        self._held.clear()
        self._retryable.clear()
        self._sent.clear()
        error = self.error or ClosedError("the requestor's connection was closed")
        self._replies.fail_all(type(error)(f"{error} (the request may or may not have been run)"))
