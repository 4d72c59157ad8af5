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
own deadline, and go out once the connection is back.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import OrderedDict
from typing import Any

import pika

from reqrep.common.config import Settings
from reqrep.common.connection import ConnectionThread
from reqrep.common.errors import (
    CallTimeout,
    ClosedError,
    ConnectionLost,
    MessageTooLarge,
    NoSuchService,
    PublishRejected,
    ReqrepError,
)
from reqrep.common.observe import Probe
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.requestor.reply_handler import ReplyHandler

__all__ = ["DEADLINE_HEADER", "OutgoingRequest", "RequestorIO"]

log = logging.getLogger("reqrep.requestor")

# How often the I/O thread fails calls whose deadline passed. Blocking calls wait with their own
# exact timeout; this bounds how late an async call's future learns of its timeout.
SWEEP_INTERVAL = 0.1
DEADLINE_HEADER = "x-deadline"  # absolute deadline, Unix time in milliseconds


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
    retries: int  # resends still allowed after a lost connection
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
        self._services: dict[str, str] = {}  # request queue -> service, for NoSuchService
        self._probe = probe if probe is not None else Probe("requestor", observers=())

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    def publish(self, request: OutgoingRequest) -> None:
        """Queue a request for publishing (any thread); raises ClosedError once closed."""
        self.submit(lambda: self._publish(request))

    # -- I/O thread ---------------------------------------------------------------------------

    def _setup(self, channel: Any) -> None:
        self._published = 0
        self._unconfirmed.clear()
        channel.add_on_return_callback(self._on_return)
        if self._settings.persistent:
            channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._declare())
        else:  # mandatory returns need no confirms: NoSuchService still fails at once
            self._declare()

    def _declare(self) -> None:
        self.channel.queue_declare(
            queue="", exclusive=True, auto_delete=True, callback=self._on_declared
        )

    def _on_declared(self, frame: Any) -> None:
        self._reply_queue = frame.method.queue
        self.channel.basic_consume(
            self._reply_queue,
            self._on_reply,
            auto_ack=True,
            exclusive=True,
            callback=lambda _frame: self._on_consuming(),
        )

    def _on_consuming(self) -> None:
        if self.generation == 1:
            self.call_later(SWEEP_INTERVAL, self._sweep)
        self._ready()

    def _on_recovered(self) -> None:
        self._probe.reconnected()
        held, self._held = self._held, {}
        for request in held.values():
            if self._replies.is_pending(request.correlation_id):
                self._publish(request)

    def _publish(self, request: OutgoingRequest) -> None:
        cid = request.correlation_id
        if not self.is_open:
            self._held[cid] = request
            return
        left_ms = math.ceil((request.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return  # the sweep fails it with CallTimeout
        properties = pika.BasicProperties(
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
            self.channel.basic_publish("", request.queue, request.body, properties, mandatory=True)
        except Exception:  # noqa: BLE001 - pika raises several types once the channel closes
            self._held[cid] = request  # never sent: send it after the reconnection
            return
        if self._settings.persistent:
            self._published += 1
            self._unconfirmed[self._published] = cid
        self._sent.add(cid)
        self._services[request.queue] = request.service
        if request.retries > 0:
            self._retryable[cid] = request

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
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
            service = self._services.get(method.routing_key, method.routing_key)
            self._replies.fail(cid, NoSuchService(service))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if not isinstance(method, pika.spec.Basic.Nack):
            self._settle(method.delivery_tag, method.multiple)
            return
        for cid in self._settle(method.delivery_tag, method.multiple):
            self._retryable.pop(cid, None)
            self._sent.discard(cid)
            self._replies.fail(cid, PublishRejected("the broker refused the request (nack)"))

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
        now = time.monotonic()
        for cid in [c for c, r in self._held.items() if r.deadline <= now]:
            request = self._held.pop(cid)
            self._replies.fail(
                cid,
                CallTimeout(
                    f"no reply from {request.service}.{request.method}: the broker connection "
                    "was down until the call's deadline"
                ),
            )
        for cid in [c for c, r in self._retryable.items() if r.deadline <= now]:
            del self._retryable[cid]
        self._sent.difference_update(self._replies.expire_due(now))
        self._sweeps += 1
        if self._sweeps % 50 == 0:  # calls whose callers timed out on their own thread
            self._sent = self._replies.pending_among(self._sent)
        self.call_later(SWEEP_INTERVAL, self._sweep)

    def _on_lost(self, error: ReqrepError) -> None:
        """Fail the calls whose replies can no longer arrive (sent on the lost connection, whose
        callback queue died with it), except those that may be resent. Calls not sent yet are
        not touched: they go out on the next connection."""
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
