"""The worker's side of the control protocol (``common/control.py``): it answers pings.

It uses a channel of its own on the worker's connection, so nothing it does can close the
request channel. Whoever can publish to the control exchange can send pings, so answering them
must never cost the requests their I/O thread:

- the control queue holds at most ``QUEUE_MAX`` pings (the broker drops the oldest of a flood,
  not us), and is consumed with a prefetch of ``PREFETCH``: a flood waits in the broker, not in
  the worker's socket;
- at most ``PER_ASKER`` answers a second to one reply queue, and ``RATE`` in all (token
  buckets): pings beyond that are acknowledged unanswered, and a flood is logged once per
  interval. A flood from one queue cannot starve another asker (an operator's ``reqrep ping``
  has a queue of its own); a flood that changes its reply queue each time meets the overall cap;
- an answer is cheap (the package version is read once), and goes only to a queue that looks
  like an asker's callback queue (server-named: ``amq.gen-...``), never to a request queue.

The control queue is named ``{prefix}control.{service}.{id}``, under the prefix, so that the
worker permissions that cover a service's queues cover it too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from reqrep.common import control, envelope, topology
from reqrep.common._transport import (
    Channel,
    Connection,
    Delivery,
    Failure,
    Properties,
    PublishError,
)
from reqrep.common.config import Settings
from reqrep.common.logthrottle import LogThrottle
from reqrep.common.serialization import CONTENT_TYPE

__all__ = ["PER_ASKER", "PREFETCH", "QUEUE_MAX", "RATE", "Answer", "ControlResponder"]

log = logging.getLogger("reqrep.worker")

QUEUE_MAX = 100  # pings the control queue keeps; the broker drops the oldest beyond
PREFETCH = 10  # pings the broker hands this worker before it has acknowledged them
RATE = 500.0  # answers a second in all, at most (and a burst of as many)
PER_ASKER = 5.0  # answers a second to one reply queue (and a burst of as many)
_ASKERS = 1024  # reply queues whose buckets are kept, the most recent
_ANSWERABLE = ("amq.gen-", "amq.rabbitmq.reply-to")  # what an asker's reply queue looks like

Answer = Callable[[bytes], None]  # publishes one answer to the asker (I/O thread)


class ControlResponder:
    """Declares the worker's control queue and answers what arrives on it.

    Threads: every method runs on the worker's I/O thread; ``open(connection)`` is called once
    the worker's channel is set up on each new connection, ``describe()`` on every answered
    ping. ``silent`` maps control types that are never answered (``cancel``) to what handles
    them, on the I/O thread; ``later`` those answered once their work is done (``broadcast``):
    each is given the delivery and an ``Answer`` to call, on the I/O thread, with the body.
    ``id`` (random, per worker) tags every answer (``control.WORKER_HEADER``). ``ready`` is
    set on the I/O thread once the first control queue is consumed (or failed for good); the
    Worker's controlling thread waits on it, so that a worker that has started answers pings.
    """

    def __init__(
        self,
        settings: Settings,
        service: str,
        describe: Callable[[], control.WorkerInfo],
        *,
        silent: Mapping[str, Callable[[Delivery], None]] | None = None,
        later: Mapping[str, Callable[[Delivery, Answer], None]] | None = None,
        rate: float = RATE,
        per_asker: float = PER_ASKER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exchange = topology.control_exchange(settings.queue_prefix)
        self.id = os.urandom(6).hex()  # this worker's, in every answer (control.WORKER_HEADER)
        self._queue = topology.control_queue(settings.queue_prefix, service, self.id)
        self._service = service
        self._describe = describe
        self._silent = dict(silent or {})  # control types never answered (cancel), by type
        self._later = dict(later or {})  # control types answered once done (broadcast), by type
        self._channel: Channel | None = None
        self._clock = clock
        self._all = _Bucket(rate, clock())
        self._per_asker = per_asker
        self._askers: OrderedDict[str, _Bucket] = OrderedDict()
        self._throttled = LogThrottle(log)
        self.answered = 0
        self.dropped = 0  # pings not answered: over the rate, or with a reply_to not an asker's
        self.ready = threading.Event()

    def open(self, connection: Connection) -> None:
        """Open the control channel on ``connection`` (the previous one died with its
        connection)."""
        try:
            connection.open_channel(self._on_open)
        except Exception:  # noqa: BLE001 - the connection is going; the next one retries
            log.debug("control channel not opened: the connection is closing")
            self.ready.set()

    def _on_open(self, channel: Channel) -> None:
        self._channel = channel
        channel.on_close(self._on_close)
        channel.qos(
            PREFETCH,
            lambda: channel.declare_exchange(
                self._exchange,
                kind="direct",
                durable=True,
                on_ok=lambda: channel.declare_queue(
                    self._queue,
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-max-length": QUEUE_MAX, "x-overflow": "drop-head"},
                    on_ok=lambda _info: self._bind(channel),
                ),
            ),
        )

    def _bind(self, channel: Channel) -> None:
        def consume() -> None:
            channel.consume(self._queue, self._on_request, on_ok=lambda _tag: self.ready.set())

        channel.bind_queue(self._queue, self._exchange, control.ALL, lambda: None)
        channel.bind_queue(self._queue, self._exchange, control.service_key(self._service), consume)

    def _on_request(self, delivery: Delivery) -> None:
        channel = self._channel
        if channel is None:
            return
        try:
            self._answer(channel, delivery)
        finally:
            if channel.is_open:
                channel.ack(delivery.tag)

    def _answer(self, channel: Channel, delivery: Delivery) -> None:
        props = delivery.properties
        silent = self._silent.get(props.type) if isinstance(props.type, str) else None
        if silent is not None:
            silent(delivery)  # answered by nobody: no reply queue to check, no token to spend
            return
        reply_to, correlation_id = props.reply_to, props.correlation_id
        if not (isinstance(reply_to, str) and reply_to.startswith(_ANSWERABLE)):
            self.dropped += 1
            return  # nobody to answer, or a queue that is not an asker's
        if not isinstance(correlation_id, str) or not correlation_id:
            self.dropped += 1
            return
        if not self._take_token(reply_to):
            self.dropped += 1
            self._throttled.warning("pings arrive too fast: the excess is not answered")
            return
        later = self._later.get(props.type) if isinstance(props.type, str) else None
        if later is not None:
            later(delivery, lambda body: self.answer(reply_to, correlation_id, body))
            return
        if props.type == control.PING:
            body = envelope.success_body(self._describe().to_wire())
        else:
            methods = [control.PING, *self._silent, *self._later]
            body = envelope.error_body(
                envelope.ErrorInfo(
                    envelope.METHOD_NOT_FOUND,
                    "MethodNotFound",
                    f"unknown control request {props.type!r}",
                    {"methods": methods},
                )
            )
        self.answer(reply_to, correlation_id, body)

    def answer(self, reply_to: str, correlation_id: str, body: bytes) -> None:
        """Publish an answer to an asker (not mandatory: an asker that has gone misses
        nothing), tagged with this worker's id. Dropped if the control channel is gone."""
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        properties = Properties(
            content_type=CONTENT_TYPE,
            correlation_id=correlation_id,
            type=envelope.REPLY_TYPE,
            headers={control.WORKER_HEADER: self.id},
        )
        try:
            channel.publish("", reply_to, body, properties)
        except PublishError:
            return  # the channel is closing
        self.answered += 1

    def _take_token(self, asker: str) -> bool:
        """One answer's worth from the asker's bucket and from the overall one, if both have it."""
        now = self._clock()
        bucket = self._askers.get(asker)
        if bucket is None:
            bucket = self._askers[asker] = _Bucket(self._per_asker, now)
            if len(self._askers) > _ASKERS:
                self._askers.popitem(last=False)
        else:
            self._askers.move_to_end(asker)
        if not (bucket.has(now) and self._all.has(now)):
            return False
        bucket.take()
        self._all.take()
        return True

    def _on_close(self, channel: Channel, failure: Failure) -> None:
        if channel is self._channel:
            self._channel = None
        self.ready.set()  # nobody should wait for a channel that is gone
        if not failure.with_connection and failure.by_broker:
            log.warning("control channel closed (%s): pings will not see this worker", failure)


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``rate`` kept (I/O thread)."""

    __slots__ = ("_last", "_rate", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._last = now

    def has(self, now: float) -> bool:
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        return self._tokens >= 1.0

    def take(self) -> None:
        self._tokens -= 1.0
