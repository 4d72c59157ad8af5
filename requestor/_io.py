"""The requestor's I/O thread: the only code of the requestor that touches pika.

It declares the exclusive, server-named callback queue, consumes replies from it, and publishes
requests with ``mandatory=True`` on a channel in confirm mode. Why both: a request to a queue that
does not exist is otherwise dropped by the broker without a word, and the caller would wait out
its whole timeout. With ``mandatory`` the broker returns it (312 NO_ROUTE) and the call fails at
once with NoSuchService; confirms add a nack for requests the broker accepted but could not keep.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import pika

from common.config import Settings
from common.connection import ConnectionThread
from common.errors import ConnectionLost, NoSuchService, PublishRejected, ReqrepError
from common.serialization import CONTENT_TYPE
from requestor.reply_handler import ReplyHandler

__all__ = ["RequestorIO"]

log = logging.getLogger("reqrep.requestor")

# How often the I/O thread fails calls whose deadline passed. Blocking calls wait with their own
# exact timeout; this bounds how late an async call's future learns of its timeout.
SWEEP_INTERVAL = 0.1


class RequestorIO(ConnectionThread):
    """Publishes requests and routes replies into a ReplyHandler.

    Threads: ``publish`` is called from any caller thread and only queues work; everything else
    runs on the I/O thread this object owns.
    """

    def __init__(self, settings: Settings, replies: ReplyHandler, *, name: str) -> None:
        super().__init__(settings, name=name)
        self._replies = replies
        self._reply_queue = ""
        self._published = 0  # publish sequence number == confirm delivery tag
        self._unconfirmed: OrderedDict[int, str] = OrderedDict()  # tag -> correlation id
        self._services: dict[str, str] = {}  # request queue -> service, for NoSuchService

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    def publish(
        self, service: str, queue: str, method: str, correlation_id: str, body: bytes
    ) -> None:
        """Queue a request for publishing (any thread); raises if the connection is not open."""
        self.submit(lambda: self._publish(service, queue, method, correlation_id, body))

    # -- I/O thread ---------------------------------------------------------------------------

    def _setup(self, channel: Any) -> None:
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._declare())

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
        self.call_later(SWEEP_INTERVAL, self._sweep)
        self._ready()

    def _publish(
        self, service: str, queue: str, method: str, correlation_id: str, body: bytes
    ) -> None:
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
            type=method,
            message_id=correlation_id,
            delivery_mode=2,
        )
        self._services[queue] = service
        try:
            self.channel.basic_publish("", queue, body, properties, mandatory=True)
        except Exception as exc:  # noqa: BLE001 - pika raises several types once the channel closes
            self._replies.fail(correlation_id, ConnectionLost(f"could not publish: {exc!r}"))
            return
        self._published += 1
        self._unconfirmed[self._published] = correlation_id

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        self._replies.resolve(properties.correlation_id, body)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        queue = method.routing_key
        service = self._services.get(queue, queue)
        log.debug(
            "request %s returned: %s %s",
            properties.correlation_id,
            method.reply_code,
            method.reply_text,
        )
        if properties.correlation_id:
            self._replies.fail(properties.correlation_id, NoSuchService(service))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for correlation_id in self._settle(method.delivery_tag, method.multiple):
            if nacked:
                self._replies.fail(
                    correlation_id, PublishRejected("the broker refused the request (nack)")
                )

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
        self._replies.expire_due(time.monotonic())
        self.call_later(SWEEP_INTERVAL, self._sweep)

    def _on_lost(self, error: ReqrepError) -> None:
        failed = self._replies.fail_all(error)
        if failed:
            log.warning("%d pending calls failed: %s", failed, error)
