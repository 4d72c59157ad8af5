"""The worker's I/O thread: consumes the request queue, publishes replies, acknowledges.

A request is acknowledged only after the broker has confirmed its reply, so a worker that dies
between running a handler and replying leaves the request to be redelivered, never lost.
Replies go out with ``mandatory=True``: a reply whose callback queue is gone (the requestor
disconnected) comes back and is counted, instead of vanishing without a trace.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

import pika

from common import envelope
from common.config import Settings
from common.connection import ConnectionThread
from common.errors import ReqrepError
from common.serialization import CONTENT_TYPE
from worker.service import Handler, Service

__all__ = ["Consumer", "ConsumerStats", "Job"]

log = logging.getLogger("reqrep.worker")


@dataclasses.dataclass(frozen=True)
class Job:
    """One request to run: what a handler thread needs, and what the reply needs."""

    tag: int
    method: str
    correlation_id: str
    reply_to: str
    body: bytes
    handler: Handler


@dataclasses.dataclass
class ConsumerStats:
    """Counters, written on the I/O thread; reads from elsewhere may be a moment stale."""

    received: int = 0
    replied: int = 0
    rejected: int = 0  # unanswerable (no reply_to / correlation_id): rejected, not requeued
    requeued: int = 0
    replies_returned: int = 0  # the requestor's callback queue no longer existed


class Consumer(ConnectionThread):
    """Consumes one service's request queue.

    Threads: ``reply``, ``requeue`` and ``drain`` may be called from any thread and only queue
    work; ``dispatch`` and ``on_closed`` (given by the Worker) are called on the I/O thread and
    must not block.
    Everything else runs on the I/O thread.
    """

    def __init__(
        self,
        settings: Settings,
        service: Service,
        *,
        prefetch: int,
        dispatch: Callable[[Job], None],
        on_closed: Callable[[], None],
        name: str,
    ) -> None:
        super().__init__(settings, name=name)
        self.queue = settings.request_queue(service.name)
        self.stats = ConsumerStats()
        self.drained = threading.Event()
        self._service = service
        self._prefetch = prefetch
        self._dispatch = dispatch
        self._notify_closed = on_closed
        self._consumer_tag: str | None = None
        self._draining = False
        self._unsettled: set[int] = set()  # request tags not yet acked, nacked or rejected
        self._published = 0
        self._reply_for: dict[int, int] = {}  # reply confirm tag -> request tag

    @property
    def draining(self) -> bool:
        return self._draining

    def reply(self, job: Job, body: bytes) -> None:
        """Publish ``body`` as the reply to ``job``, then ack it once confirmed."""
        self.submit(lambda: self._publish_reply(job.tag, job.reply_to, job.correlation_id, body))

    def requeue(self, job: Job) -> None:
        """Give ``job`` back to the queue unrun (the worker is draining)."""
        self.submit(lambda: self._settle(job.tag, requeue=True))

    def drain(self) -> None:
        """Stop taking requests; ``drained`` is set once every received one is settled."""
        self.submit(self._begin_drain)

    # -- I/O thread ---------------------------------------------------------------------------

    def _setup(self, channel: Any) -> None:
        channel.add_on_return_callback(self._on_return)
        channel.basic_qos(prefetch_count=self._prefetch, callback=lambda _f: self._confirm())

    def _confirm(self) -> None:
        self.channel.confirm_delivery(self._on_confirm, callback=lambda _f: self._declare())

    def _declare(self) -> None:
        self.channel.queue_declare(
            queue=self.queue,
            durable=True,
            arguments={"x-queue-type": self._settings.queue_type},
            callback=lambda _f: self._consume(),
        )

    def _consume(self) -> None:
        self._consumer_tag = self.channel.basic_consume(
            self.queue, self._on_request, callback=lambda _f: self._ready()
        )

    def _on_request(self, channel: Any, deliver: Any, props: Any, body: bytes) -> None:
        tag = deliver.delivery_tag
        self.stats.received += 1
        self._unsettled.add(tag)
        if not props.reply_to or not props.correlation_id:
            log.warning(
                "rejected request without %s (tag %s, type %r): it cannot be answered",
                "reply_to" if not props.reply_to else "correlation_id",
                tag,
                props.type,
            )
            self.stats.rejected += 1
            self._settle(tag, requeue=False)
            return
        if self._draining:
            self._settle(tag, requeue=True)
            return
        log.debug("request %s: %r (tag %s)", props.correlation_id, props.type, tag)
        found = self._classify(props)
        if isinstance(found, envelope.ErrorInfo):
            body = envelope.error_body(found)
            self._publish_reply(tag, props.reply_to, props.correlation_id, body)
            return
        self._dispatch(Job(tag, props.type, props.correlation_id, props.reply_to, body, found))

    def _classify(self, props: Any) -> Handler | envelope.ErrorInfo:
        """The handler for a request, or why it has none (answered at once, off the pool)."""
        problem = envelope.check_request(props.type, props.content_type)
        if problem is not None:
            return problem
        handler = self._service.get(props.type)
        if handler is None:
            return envelope.ErrorInfo(
                envelope.METHOD_NOT_FOUND,
                "MethodNotFound",
                f"service {self._service.name!r} has no method {props.type!r}",
                {"methods": self._service.methods},
            )
        return handler

    def _publish_reply(self, tag: int, reply_to: str, correlation_id: str, body: bytes) -> None:
        properties = pika.BasicProperties(
            correlation_id=correlation_id, content_type=CONTENT_TYPE, type=envelope.REPLY_TYPE
        )
        try:
            self.channel.basic_publish("", reply_to, body, properties, mandatory=True)
        except Exception:  # noqa: BLE001 - channel closing: the broker will redeliver the request
            log.warning("could not publish reply %s; request will be redelivered", correlation_id)
            return
        self._published += 1
        self._reply_for[self._published] = tag

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            tags = [t for t in self._reply_for if t <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._reply_for else []
        for reply_tag in tags:
            request_tag = self._reply_for.pop(reply_tag)
            if nacked:  # the reply was not kept: let the request run again rather than lose it
                log.warning("reply nacked by the broker; requeueing request %s", request_tag)
                self._settle(request_tag, requeue=True)
            else:
                self.stats.replied += 1
                self._settle(request_tag, ack=True)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self.stats.replies_returned += 1
        log.info(
            "reply %s returned (%s %s): the requestor's queue %r is gone",
            properties.correlation_id,
            method.reply_code,
            method.reply_text,
            method.routing_key,
        )

    def _settle(self, tag: int, *, ack: bool = False, requeue: bool = False) -> None:
        if tag not in self._unsettled:
            return
        self._unsettled.discard(tag)
        if ack:
            self.channel.basic_ack(tag)
        elif requeue:
            self.stats.requeued += 1
            self.channel.basic_nack(tag, requeue=True)
        else:
            self.channel.basic_reject(tag, requeue=False)
        self._check_drained()

    def _begin_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        if self._consumer_tag is not None:
            self.channel.basic_cancel(self._consumer_tag)
        log.info("draining: %d requests in flight", len(self._unsettled))
        self._check_drained()

    def _check_drained(self) -> None:
        if self._draining and not self._unsettled:
            self.drained.set()

    def _on_closed(self) -> None:
        self._notify_closed()

    def _on_lost(self, error: ReqrepError) -> None:
        log.error(
            "worker connection lost with %d requests in flight: %s", len(self._unsettled), error
        )
