"""The worker's side of the control protocol (``common/control.py``): it answers pings.

It uses a channel of its own on the worker's connection, so nothing it does can close the
request channel, and its auto-ack consumer is not counted against the request prefetch. It
answers on the worker's I/O thread, between requests, with live numbers read there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from reqrep.common import control, envelope, topology
from reqrep.common.config import Settings
from reqrep.common.serialization import CONTENT_TYPE

__all__ = ["ControlResponder"]

log = logging.getLogger("reqrep.worker")


class ControlResponder:
    """Declares the worker's control queue and answers what arrives on it.

    Threads: every method runs on the worker's I/O thread; ``open(connection)`` is called once
    the worker's channel is set up on each new connection, ``describe()`` on every ping.
    ``ready`` is set there once the first control queue is consumed (or failed for good); the
    Worker's controlling thread waits on it, so that a worker that has started answers pings.
    """

    def __init__(
        self, settings: Settings, service: str, describe: Callable[[], control.WorkerInfo]
    ) -> None:
        self._exchange = topology.control_exchange(settings.queue_prefix)
        self._service = service
        self._describe = describe
        self._channel: Any = None
        self.answered = 0
        self.ready = threading.Event()

    def open(self, connection: Any) -> None:
        """Open the control channel on ``connection`` (the previous one died with its
        connection)."""
        try:
            connection.channel(on_open_callback=self._on_open)
        except Exception:  # noqa: BLE001 - the connection is going; the next one retries
            log.debug("control channel not opened: the connection is closing")
            self.ready.set()

    def _on_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_close)
        channel.exchange_declare(
            self._exchange,
            exchange_type="direct",
            durable=True,
            callback=lambda _frame: channel.queue_declare(
                "", exclusive=True, auto_delete=True, callback=self._on_declared
            ),
        )

    def _on_declared(self, frame: Any) -> None:
        channel, queue = self._channel, frame.method.queue
        channel.queue_bind(queue, self._exchange, routing_key=control.ALL)
        channel.queue_bind(queue, self._exchange, routing_key=control.service_key(self._service))
        channel.basic_consume(
            queue, self._on_request, auto_ack=True, callback=lambda _frame: self.ready.set()
        )

    def _on_request(self, channel: Any, _deliver: Any, props: Any, _body: bytes) -> None:
        if not props.reply_to or not props.correlation_id:
            return  # nobody to answer
        if props.type == control.PING:
            body = envelope.success_body(self._describe().to_wire())
        else:
            body = envelope.error_body(
                envelope.ErrorInfo(
                    envelope.METHOD_NOT_FOUND,
                    "MethodNotFound",
                    f"unknown control request {props.type!r}",
                    {"methods": [control.PING]},
                )
            )
        properties = pika.BasicProperties(
            correlation_id=props.correlation_id,
            content_type=CONTENT_TYPE,
            type=envelope.REPLY_TYPE,
        )
        channel.basic_publish("", props.reply_to, body, properties)
        self.answered += 1

    def _on_close(self, channel: Any, reason: BaseException) -> None:
        if channel is self._channel:
            self._channel = None
        self.ready.set()  # nobody should wait for a channel that is gone
        if not isinstance(reason, pika.exceptions.AMQPConnectionError) and not (
            isinstance(reason, pika.exceptions.ChannelClosedByClient)
        ):
            log.warning("control channel closed (%s): pings will not see this worker", reason)
