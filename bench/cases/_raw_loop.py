"""What the bare-pika cases (``raw_pika``, ``raw_threaded``) share: a ``SelectConnection`` with
one channel, opened (in confirm mode for the durable cases) up to its queue's declaration, and
``--tuned``'s coalesced writes. Subclasses say what happens once the queue is declared and with
each publisher confirm."""

from __future__ import annotations

import collections
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.frame

from bench.cases import amqp_url

__all__ = ["Loop", "coalesce_writes"]

_MAX_JOIN = 256 * 1024


def coalesce_writes() -> None:
    """Make pika's plaintext transport send everything queued in one ``send()`` call."""
    from pika.adapters.utils import io_services_utils  # noqa: PLC0415 - only with --tuned

    transport = io_services_utils._AsyncPlaintextTransport
    original = transport._produce

    def produce(self: Any) -> None:
        buffers: collections.deque[bytes] = self._tx_buffers
        if len(buffers) > 1:
            joined: list[bytes] = []
            size = 0
            while buffers and size < _MAX_JOIN:
                chunk = buffers.popleft()
                joined.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(joined))
        original(self)

    transport._produce = produce


def _parameters() -> pika.URLParameters:
    params = pika.URLParameters(amqp_url())
    params.connection_attempts = 3
    params.retry_delay = 1
    params.socket_timeout = 10
    params.heartbeat = 30
    return params


def _queue_arguments(durable: bool) -> dict[str, Any]:
    return {"x-queue-type": "quorum" if durable else "classic"}


class Loop:
    """A SelectConnection and the steps to open a channel on it; subclasses do the rest."""

    def __init__(self, queue: str, durable: bool) -> None:
        self.queue = queue
        self.durable = durable
        self.channel: pika.channel.Channel | None = None
        self.failure: str | None = None
        self.connection = pika.SelectConnection(
            _parameters(),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )

    def run(self) -> None:
        self.connection.ioloop.start()

    def stop(self) -> None:
        """Close the connection (from the loop's own thread); the loop stops once closed."""
        if self.connection.is_open:
            self.connection.close()
        elif self.connection.is_closed:
            self.connection.ioloop.stop()

    def stop_threadsafe(self) -> None:
        self.connection.ioloop.add_callback_threadsafe(self.stop)

    def _on_open_error(self, _connection: Any, error: BaseException | str) -> None:
        self.failure = f"cannot connect: {error!r}"
        self.connection.ioloop.stop()

    def _on_closed(self, _connection: Any, reason: BaseException) -> None:
        if not isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            self.failure = self.failure or f"connection closed: {reason!r}"
        self.connection.ioloop.stop()

    def _on_open(self, _connection: Any) -> None:
        self.connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        if self.durable:
            channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._declare())
        else:
            self._declare()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if not isinstance(reason, pika.exceptions.ChannelClosedByClient):
            self.failure = self.failure or f"channel closed: {reason!r}"
        if self.connection.is_open:
            self.connection.close()

    def _declare(self) -> None:
        assert self.channel is not None
        self.channel.queue_declare(
            self.queue,
            durable=True,
            arguments=_queue_arguments(self.durable),
            callback=lambda _frame: self._declared(),
        )

    def _declared(self) -> None:
        raise NotImplementedError

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        raise NotImplementedError
