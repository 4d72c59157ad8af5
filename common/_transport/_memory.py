"""An AMQP 0-9-1 broker in this process: the transport seam (``_api.py``) without RabbitMQ.

``MemoryBroker()`` holds one virtual host's exchanges, queues and connections; its
``transport`` is a ``Transport`` whose connections talk to it, so the real requestor, worker and
consumer code runs in tests without a broker (kombu's ``memory://``, but with RabbitMQ's rules)::

    broker = MemoryBroker()
    transport = broker.transport          # pass it where a Transport is taken

There is no module-level broker: every test makes its own.

What it keeps of RabbitMQ, as measured on 3.10 and 4.0 (``tests/integration/
test_transport_conformance.py`` pins each against a real broker). Where the two differ, 4.x
is followed, marked (4.x):

- Exchanges: the default exchange ``""`` (also ``amq.default``), ``direct``, ``fanout``,
  ``topic`` and ``headers`` (a headers binding has no arguments here, so it matches every
  message), the predeclared ``amq.*`` ones; a publish to a missing exchange closes the channel
  (404). An unknown kind closes the channel with 406 (4.x; 3.10 closes the connection, 503).
- Queues: server-named (``amq.gen-``...), exclusive (its connection's alone: 405 for any other,
  deleted with it), auto-delete (after its last consumer, if it ever had one); redeclaring with
  other durability, auto-delete, exclusivity or arguments closes the channel in RabbitMQ's words;
  arguments are checked as RabbitMQ checks them (``{value_negative,-1}``...). ``x-queue-type``
  is compared by the effective type (4.x: a queue declared without it is ``classic``). Quorum
  queues must be durable, non-exclusive, not auto-delete, and not server-named.
- Honoured arguments: ``x-queue-type`` (classic, quorum), ``x-dead-letter-exchange``,
  ``x-dead-letter-routing-key``, ``x-max-length`` with ``x-overflow`` ``drop-head`` (default),
  ``reject-publish`` (a confirm nack) or ``reject-publish-dlx``, ``x-message-ttl``,
  ``x-delivery-limit`` on quorum queues (20 when absent, and a negative one is unlimited: 4.x).
  Others are kept and compared on redeclaration but not honoured (``x-expires``,
  ``x-max-length-bytes``, ``x-max-priority``, ``x-single-active-consumer``...).
- Messages: per-message ``expiration`` and ``x-message-ttl`` (the lower wins) expire at the head
  of the queue only, promptly (a broker thread runs while messages with a deadline wait); a
  message for a consumer with room does not wait, so a TTL of 0 reaches a waiting consumer.
  Publishing checks, in RabbitMQ's order: ``max_message_size`` (406 ``message size N is larger
  than configured max size M``), the exchange (404), ``user_id`` against the login (406), the
  ``expiration`` (406). ``mandatory`` with no route returns the message (312 NO_ROUTE) before
  its confirm. Confirms come one per publish (never ``multiple``), in publish order: RabbitMQ
  keeps that order for publishes to one queue, and may confirm an unroutable publish before an
  earlier routed one, so code must not lean on more.
- Consuming: round-robin over the consumers with room; ``qos`` bounds each consumer made after
  it (RabbitMQ's per-consumer prefetch); ``auto_ack``, ``ack``/``nack``/``reject`` with
  ``multiple`` and ``requeue``; an unknown delivery tag closes the channel (406). A requeued
  message is ``redelivered``: on a classic queue it goes back to its place (in front of what
  was published after it), on a quorum queue ahead of the others in the order returned (4.x;
  3.10 puts it at the tail). On a quorum queue every return counts: ``x-delivery-count`` says
  how many, absent on a first delivery (4.x; 3.10 sends 0), and a message returned more than
  the delivery limit is dead-lettered (``delivery_limit``). Unacked deliveries of a channel that
  closes are requeued. ``x-max-length`` counts ready messages (a requeue can push one out).
- Dead-lettering (``rejected``, ``expired``, ``maxlen``, ``delivery_limit``) to the queue's
  dead-letter exchange with its dead-letter routing key (else the message's own); ``x-death``
  as RabbitMQ writes it (a list, most recent first; the same queue and reason counts up), the
  ``expiration`` moved into ``original-expiration``, ``x-first-death-*`` and (4.x)
  ``x-last-death-*``. Cycles without a rejection in them are cut, as RabbitMQ cuts them.
- Connections: a user table (``users=``; no table: any login); ``block``/``unblock`` (a blocked
  connection's first publish, and everything it sends after it, waits for ``unblock``: RabbitMQ
  stops reading its socket); ``close_connections`` (``rabbitmqctl close_connection``);
  ``stop``/``start`` (``stop_app``/``start_app``: transient and exclusive queues go, a durable
  classic queue keeps only persistent messages, a quorum queue keeps all).

What the client side keeps of pika (the other half of what code above the seam sees):

- Values cross as pika 1.4 encodes and decodes them (``_memory_wire.py``): a value pika could
  not encode makes ``publish`` raise ``PublishError``, nothing sent.
- Deliveries that arrive for a consumer after ``cancel()`` are not handed over (pika rejects
  them back to the queue, or drops them under ``auto_ack``); ``cancel`` of a tag the channel no
  longer knows never calls ``on_ok`` (pika logs a warning). A closing channel still gets the
  answers to earlier requests, but no more deliveries.
- Channel numbers are the lowest free; consumer tags are pika's (``ctag1.<hex>``); failure
  texts are scrubbed of the URL's password (even where it is also the user name).

Deliberate simplifications:

- One virtual host; the URL's host and vhost are ignored (``vhost=`` names it in texts).
- Not implemented: heartbeats, frame sizes, channel limits, priorities, streams (declaring one
  closes the channel: 540), exchange-to-exchange bindings, headers-binding arguments, alternate
  exchanges, direct reply-to, transactions, ``x-expires``, ``x-max-length-bytes``, single
  active consumers.
- A publish is confirmed at once (there is no disk); ``x-max-length`` counts ready messages on
  quorum queues too.
- ``max_message_size`` defaults to 3.10's 128 MiB (4.0's is 16 MiB).
- A connection has no socket: ``hold_writes``/``flush_writes`` do nothing, and ``abandon()``
  takes effect at once, even while an alarm holds the connection (RabbitMQ would notice later).
- ``ack``/``nack``/``reject`` on a channel that is not open raise PublishError, where pika
  raises its ChannelWrongStateError.

Threads. A connection and its channels belong to the thread that runs their loop; on a
``MemoryLoop`` any other caller gets RuntimeError, so that code above the seam cannot lean on
the in-memory transport being laxer than pika. The broker's state sits behind one lock. What a
client asks is done at once on its own thread under that lock (a network without latency);
what the broker says back is posted to the loop of the connection it is for, in the order the
broker said it: callbacks are never run inline nor on another connection's thread, and keep
AMQP's order on a channel. ``MemoryBroker``'s public methods may be called from any thread. The
broker has one thread of its own, only while messages with a deadline wait: it expires them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import heapq
import itertools
import logging
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from reqrep.common._transport._api import Address, Channel, Connection, Loop
from reqrep.common._transport._memory_loop import MemoryLoop
from reqrep.common._transport._memory_wire import (
    Unencodable,
    copy_properties,
    short_string,
    wire_properties,
    wire_table,
)
from reqrep.common._transport._types import (
    Confirm,
    Delivery,
    Failure,
    Properties,
    PublishError,
    QueueInfo,
    Returned,
)
from reqrep.common.addresses import redact_url
from reqrep.common.errors import ConfigError

__all__ = [
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MemoryAddress",
    "MemoryBroker",
    "MemoryChannel",
    "MemoryConnection",
    "MemoryTransport",
]

log = logging.getLogger("reqrep.connection")

DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024  # RabbitMQ 3.10's max_message_size
DEFAULT_DELIVERY_LIMIT = 20  # a quorum queue declared without x-delivery-limit (4.x)

_REPLY_NAMES = {
    200: "OK",
    312: "NO_ROUTE",
    320: "CONNECTION_FORCED",
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    503: "COMMAND_INVALID",
    504: "CHANNEL_ERROR",
    530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
    541: "INTERNAL_ERROR",
}
_SHUTDOWN = "broker forced connection closure with reason 'shutdown'"  # stop_app's words
_EXCHANGE_KINDS = ("direct", "fanout", "topic", "headers")
_PREDECLARED = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
_QUEUE_TYPES = ("classic", "quorum", "stream")
_OVERFLOWS = ("drop-head", "reject-publish", "reject-publish-dlx")
# Arguments RabbitMQ compares when a queue is declared again (others are ignored there).
_COMPARED_ARGS = frozenset(
    {
        "x-expires",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-dead-letter-strategy",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-max-priority",
        "x-overflow",
        "x-queue-mode",
        "x-queue-version",
        "x-single-active-consumer",
        "x-delivery-limit",
        "x-quorum-initial-group-size",
        "x-queue-leader-locator",
        "x-queue-master-locator",
    }
)
# Arguments that must be non-negative integers (x-expires: positive), as RabbitMQ checks them.
_INTEGER_ARGS = ("x-max-length", "x-max-length-bytes", "x-message-ttl", "x-max-priority")
_STRING_ARGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key")
_INTEGER = re.compile(r"([+-]?[0-9]+)(.*)", re.DOTALL)  # Erlang's string:to_integer
_LOCKED = (
    "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally "
    "declared on another connection or the exclusive property value does not match that of the "
    "original declaration."
)


def _failure(code: int, text: str, *, with_connection: bool = False) -> Failure:
    """What the broker closing a channel (or connection) with ``code`` reads as."""
    return Failure(
        f"{code} {_REPLY_NAMES.get(code, 'ERROR')} - {text}",
        code=code,
        by_broker=True,
        with_connection=with_connection,
    )


class _Refused(Exception):
    """A refusal that closes the channel, in RabbitMQ's words (its ``protocol_error``)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _State(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_ANSWERS = (_State.OPEN, _State.CLOSING)  # a closing channel still gets its answers


# -- the broker ------------------------------------------------------------------------------------


class MemoryBroker:
    """One virtual host's exchanges, queues and connections, in this process.

    ``users``: login name -> password (a wrong one is refused like RabbitMQ's ACCESS_REFUSED);
    None lets any login in. ``max_message_size``: bodies above it close the publisher's channel
    (406). ``vhost`` only names the virtual host in error texts.

    Threads: every public method from any thread; see the module docstring.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        vhost: str = "/",
    ) -> None:
        self._lock = threading.Lock()
        self._users = dict(users) if users is not None else None
        self.max_message_size = max_message_size
        self.vhost = vhost
        self._exchanges: dict[str, _Exchange] = {"": _Exchange("", "direct", durable=True)}
        for name, kind in _PREDECLARED.items():
            self._exchanges[name] = _Exchange(name, kind, durable=True)
        self._queues: dict[str, _Queue] = {}
        self._peers: list[_Peer] = []
        self._running = True
        self._blocked: str | None = None
        self._seq = itertools.count(1)  # publish order, across queues
        self._deadlines = _Deadlines(self._lock, self._drain)
        self._transport = MemoryTransport(self)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        blocked = f" blocked={self._blocked!r}" if self._blocked is not None else ""
        users = "any login" if self._users is None else f"{len(self._users)} users"
        return (
            f"<MemoryBroker vhost={self.vhost!r} {state} connections={len(self._peers)} "
            f"queues={len(self._queues)} {users}{blocked}>"
        )

    @property
    def transport(self) -> MemoryTransport:
        """The ``Transport`` whose connections talk to this broker."""
        return self._transport

    @property
    def is_running(self) -> bool:
        return self._running

    # -- inspection (any thread) -------------------------------------------------------------------

    def queue_info(self, name: str) -> QueueInfo | None:
        """The queue's ready messages and consumers now, or None if there is no such queue."""
        with self._lock:
            queue = self._queues.get(name)
            return queue.info() if queue is not None else None

    def queue_names(self) -> list[str]:
        """The names of the queues there are now."""
        with self._lock:
            return list(self._queues)

    def connection_names(self) -> list[str]:
        """The connection names (``connection_name`` of the address) of open connections."""
        with self._lock:
            return [peer.name for peer in self._peers]

    # -- faults (any thread) -----------------------------------------------------------------------

    def block(self, reason: str = "low on memory") -> None:
        """Raise a resource alarm: every open connection (and every new one) gets
        ``on_blocked(reason)``; a connection's publishes, and all it sends after the first
        of them, wait until ``unblock``."""
        with self._lock:
            if self._blocked is not None:
                return
            self._blocked = reason
            for peer in self._peers:
                peer.post(partial(peer.client._blocked, reason))

    def unblock(self) -> None:
        """Clear the alarm: ``on_unblocked`` for every connection, then what waited is done."""
        with self._lock:
            if self._blocked is None:
                return
            self._blocked = None
            peers = list(self._peers)
            for peer in peers:
                peer.post(peer.client._unblocked)
            for peer in peers:
                held, peer.held = peer.held, deque()
                for channel, op in held:
                    if not peer.closed:
                        self._perform(channel, op)

    def close_connections(
        self, reason: str = "closed by the test", code: int = 320, *, name: str | None = None
    ) -> int:
        """Close every open connection (only those named ``name``, if given) as
        ``rabbitmqctl close_connection`` does: ``on_closed`` with ``by_broker``. Returns how
        many were closed."""
        failure = _failure(code, reason, with_connection=True)
        with self._lock:
            peers = [p for p in self._peers if name is None or p.name == name]
            for peer in peers:
                self._close_peer(peer, failure, failure)
            return len(peers)

    def stop(self) -> None:
        """``rabbitmqctl stop_app``: close every connection (320); connecting fails (not
        refused) until ``start``. What a restart loses is gone at once: exclusive and transient
        queues and exchanges, and the transient messages of durable classic queues (unacked
        messages are requeued first). An alarm raised with ``block`` stays until ``unblock``."""
        failure = _failure(320, _SHUTDOWN, with_connection=True)
        with self._lock:
            if not self._running:
                return
            self._running = False
            for peer in list(self._peers):
                self._close_peer(peer, failure, failure)
            for queue in list(self._queues.values()):
                if not queue.durable or queue.owner is not None:
                    self._delete_queue(queue)
                elif queue.kind == "classic":
                    queue.ready = deque(m for m in queue.ready if m.persistent)
                    self._schedule(queue)
            for exchange in list(self._exchanges.values()):
                if not exchange.durable:
                    del self._exchanges[exchange.name]

    def start(self) -> None:
        """``rabbitmqctl start_app``: accept connections again."""
        with self._lock:
            self._running = True

    # -- what connections ask (their loop's thread) ------------------------------------------------

    def _connect(self, peer: _Peer, password: str) -> None:
        client = peer.client
        with self._lock:
            if not self._running:
                # What pika reports for a refused TCP connection: retrying may help.
                peer.post(
                    partial(
                        client._open_failed, Failure("connection refused", with_connection=True)
                    )
                )
                return
            if self._users is not None and self._users.get(peer.user) != password:
                peer.post(
                    partial(
                        client._open_failed,
                        Failure("login refused (check the user name and password)", refused=True),
                    )
                )
                return
            peer.closed = False
            self._peers.append(peer)
            peer.post(client._opened)
            if self._blocked is not None:
                peer.post(partial(client._blocked, self._blocked))

    def _submit(
        self, peer: _Peer, channel: _ServerChannel | None, op: Callable[[], None], *, publish: bool
    ) -> None:
        """Do ``op`` for ``channel`` (None: for the connection) now, or hold it while the
        broker does not read this connection (a publish under an alarm, and all after it)."""
        with self._lock:
            if peer.closed:
                return  # its close is on its way to the client
            if peer.held or (publish and self._blocked is not None):
                peer.held.append((channel, op))
                return
            self._perform(channel, op)

    def _perform(self, channel: _ServerChannel | None, op: Callable[[], None]) -> None:
        if channel is not None and not channel.open:
            return  # RabbitMQ ignores what arrives on a channel it has closed
        try:
            op()
        except _Refused as refusal:
            assert channel is not None  # noqa: S101 - connection-level ops refuse nothing
            self._close_channel(channel, _failure(refusal.code, refusal.text))

    def _abandon(self, peer: _Peer) -> None:
        with self._lock:
            peer.abandoned = True  # nothing more is posted to it
            failure = Failure("connection abandoned", with_connection=True)
            self._close_peer(peer, failure, failure)

    # Each op below runs under the lock, from _perform.

    def _open_channel(self, channel: _ServerChannel, on_open: Callable[[Channel], None]) -> None:
        peer = channel.peer
        channel.open = True
        peer.channels[channel.number] = channel
        peer.post(partial(channel.client._opened, on_open))

    def _close_by_client(self, peer: _Peer) -> None:
        # pika closes each channel first (ChannelClosedByClient), then the connection.
        self._close_peer(
            peer,
            Failure("200 Normal shutdown", code=200, with_connection=True),
            Failure("200 Normal shutdown", code=200),
        )

    def _close_channel_by_client(self, channel: _ServerChannel) -> None:
        self._close_channel(channel, Failure("200 Normal shutdown", code=200))

    def _qos(self, channel: _ServerChannel, prefetch: int, on_ok: Callable[[], None]) -> None:
        channel.prefetch = prefetch  # for consumers made from now on (global=false)
        channel.answer(on_ok)

    def _confirm(self, channel: _ServerChannel, on_ok: Callable[[], None]) -> None:
        channel.confirming = True
        channel.answer(on_ok)

    def _declare_exchange(
        self,
        channel: _ServerChannel,
        name: str,
        kind: str,
        durable: bool,
        on_ok: Callable[[], None],
    ) -> None:
        if name in ("", "amq.default"):
            raise _Refused(403, "operation not permitted on the default exchange")
        if kind not in _EXCHANGE_KINDS:
            raise _Refused(406, f"invalid exchange type '{kind}'")
        exchange = self._exchanges.get(name)
        if exchange is None:
            if name.startswith("amq."):
                raise _Refused(403, f"exchange name '{name}' contains reserved prefix 'amq.*'")
            self._exchanges[name] = _Exchange(name, kind, durable=durable)
        else:
            where = f"exchange '{name}' in vhost '{self.vhost}'"
            if exchange.kind != kind:
                raise _Refused(
                    406,
                    f"inequivalent arg 'type' for {where}: received '{kind}' but current is "
                    f"'{exchange.kind}'",
                )
            if exchange.durable != durable:
                raise _Refused(
                    406, _inequivalent_field("durable", where, durable, exchange.durable)
                )
        channel.answer(on_ok)

    def _delete_exchange(
        self, channel: _ServerChannel, name: str, on_ok: Callable[[], None]
    ) -> None:
        if name in ("", "amq.default"):
            raise _Refused(403, "operation not permitted on the default exchange")
        if name in _PREDECLARED:
            raise _Refused(
                403, f"deletion of system exchange '{name}' in vhost '{self.vhost}' not allowed"
            )
        self._exchanges.pop(name, None)
        channel.answer(on_ok)

    def _declare_queue(  # noqa: PLR0917 - one call site, the channel's declare_queue
        self,
        channel: _ServerChannel,
        name: str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[Any, Any],
        on_ok: Callable[[QueueInfo], None],
    ) -> None:
        peer = channel.peer
        if passive:
            channel.answer(on_ok, self._queue(peer, name).info())
            return
        if name.startswith("amq."):
            raise _Refused(403, f"queue name '{name}' contains reserved prefix 'amq.*'")
        settings = _QueueSettings.parse(name, self.vhost, arguments)
        if not name:
            if settings.kind == "quorum":
                raise _Refused(
                    406, "Cannot declare a server-named queue for type rabbit_quorum_queue"
                )
            name = "amq.gen-" + secrets.token_urlsafe(16)
        owner = peer if exclusive else None
        queue = self._queues.get(name)
        if queue is None:
            settings.check_new(
                name, self.vhost, durable=durable, exclusive=exclusive, auto_delete=auto_delete
            )
            queue = _Queue(name, settings, arguments, durable=durable, auto_delete=auto_delete)
            queue.owner = owner
            self._queues[name] = queue
        else:
            if queue.owner is not owner:
                raise _Refused(405, _LOCKED.format(name, self.vhost))
            queue.check_equivalent(
                f"queue '{name}' in vhost '{self.vhost}'",
                settings.kind,
                arguments,
                durable=durable,
                auto_delete=auto_delete,
            )
        channel.answer(on_ok, queue.info())

    def _bind_queue(
        self,
        channel: _ServerChannel,
        queue_name: str,
        exchange_name: str,
        routing_key: str,
        on_ok: Callable[[], None],
    ) -> None:
        if exchange_name in ("", "amq.default"):
            raise _Refused(403, "operation not permitted on the default exchange")
        exchange = self._exchange(exchange_name)
        queue = self._queue(channel.peer, queue_name)
        exchange.bindings.setdefault(routing_key, {})[queue.name] = None
        channel.answer(on_ok)

    def _delete_queue_op(
        self, channel: _ServerChannel, name: str, on_ok: Callable[[], None]
    ) -> None:
        queue = self._queues.get(name)
        if queue is not None:
            self._check_access(channel.peer, queue)
            self._delete_queue(queue)
        channel.answer(on_ok)  # a queue that is not there is deleted already (RabbitMQ's rule)

    def _purge(self, channel: _ServerChannel, name: str, on_ok: Callable[[int], None]) -> None:
        queue = self._queue(channel.peer, name)
        count = len(queue.ready)
        queue.ready.clear()
        queue.returned = 0
        self._schedule(queue)
        channel.answer(on_ok, count)

    def _consume(  # noqa: PLR0917 - one call site, the channel's consume
        self,
        channel: _ServerChannel,
        queue_name: str,
        tag: str,
        auto_ack: bool,
        exclusive: bool,
        on_ok: Callable[[str], None],
    ) -> None:
        queue = self._queue(channel.peer, queue_name)
        if queue.exclusive_consumer is not None or (exclusive and queue.consumers):
            raise _Refused(403, f"queue '{queue.name}' in vhost '{self.vhost}' in exclusive use")
        consumer = _Consumer(tag, queue, channel, auto_ack=auto_ack, limit=channel.prefetch)
        queue.consumers.append(consumer)
        queue.had_consumer = True
        if exclusive:
            queue.exclusive_consumer = consumer
        channel.consumers[tag] = consumer
        channel.answer(on_ok, tag)  # consume-ok goes before the first delivery, as RabbitMQ's
        self._drain(queue)

    def _cancel(self, channel: _ServerChannel, tag: str, on_ok: Callable[[], None]) -> None:
        consumer = channel.consumers.pop(tag, None)
        if consumer is not None:
            self._remove_consumer(consumer)
        # cancel-ok even for a tag it does not know (RabbitMQ's rule)
        channel.peer.post(partial(channel.client._cancel_ok, tag, on_ok))

    def _get(
        self, channel: _ServerChannel, name: str, on_result: Callable[[Delivery | None], None]
    ) -> None:
        queue = self._queue(channel.peer, name)
        self._expire_head(queue)
        if not queue.ready:
            channel.answer(on_result, None)
            return
        message = self._pop_head(queue)
        self._schedule(queue)
        channel.next_tag += 1
        tag = channel.next_tag
        channel.unacked[tag] = _Unacked(queue, message, None)
        channel.answer(on_result, self._delivery(queue, message, tag, None))

    def _publish(  # noqa: PLR0917 - one call site, the channel's publish
        self,
        channel: _ServerChannel,
        exchange_name: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool,
    ) -> None:
        if len(body) > self.max_message_size:
            raise _Refused(
                406,
                f"message size {len(body)} is larger than configured max size "
                f"{self.max_message_size}",
            )
        exchange = self._exchange(exchange_name)
        user_id = properties.user_id
        if user_id is not None and user_id != channel.peer.user:
            shown = user_id.decode("utf-8", "replace") if isinstance(user_id, bytes) else user_id
            raise _Refused(
                406,
                f"user_id property set to '{shown}' but authenticated user was "
                f"'{channel.peer.user}'",
            )
        ttl = _expiration(properties.expiration)
        tag = 0
        if channel.confirming:
            channel.published += 1
            tag = channel.published
        queues = self._route(exchange, routing_key)
        accepted = True
        if not queues and mandatory:
            returned = Returned(
                312, "NO_ROUTE", exchange_name, routing_key, copy_properties(properties), body
            )
            channel.peer.post(partial(channel.client._returned, returned))
        seq = next(self._seq)
        for queue in queues:
            message = _Message(seq, exchange_name, routing_key, properties, body)
            accepted = self._enqueue(queue, message, ttl) and accepted
        if tag:
            channel.peer.post(partial(channel.client._confirmed, Confirm(tag, False, accepted)))

    def _settle(
        self,
        channel: _ServerChannel,
        tag: int,
        multiple: bool,
        outcome: Literal["ack", "requeue", "reject"],
    ) -> None:
        """basic.ack, basic.nack and basic.reject: what becomes of the deliveries."""
        if multiple and tag == 0:
            records = list(channel.unacked.values())
            channel.unacked.clear()
        elif tag not in channel.unacked:
            raise _Refused(406, f"unknown delivery tag {tag}")
        elif multiple:
            tags = list(itertools.takewhile(lambda t: t <= tag, channel.unacked))
            records = [channel.unacked.pop(t) for t in tags]
        else:
            records = [channel.unacked.pop(tag)]
        touched: dict[_Queue, None] = {}
        for record in records:
            if record.consumer is not None:
                record.consumer.unacked -= 1
                touched[record.consumer.queue] = None
            queue = record.queue
            if queue.deleted:
                continue  # settling a message of a deleted queue is a no-op
            if outcome == "requeue":
                self._requeue(queue, record.message)
            elif outcome == "reject":
                self._dead_letter(queue, record.message, "rejected")
            touched[queue] = None
        for queue in touched:
            if not queue.deleted:
                self._enforce_max_length(queue)
                self._drain(queue)

    # -- the machinery (under the lock) ------------------------------------------------------------

    def _exchange(self, name: str) -> _Exchange:
        exchange = self._exchanges.get("" if name == "amq.default" else name)
        if exchange is None:
            raise _Refused(404, f"no exchange '{name}' in vhost '{self.vhost}'")
        return exchange

    def _queue(self, peer: _Peer, name: str) -> _Queue:
        """The queue ``peer`` may use: 404 if there is none, 405 if another's exclusive."""
        queue = self._queues.get(name)
        if queue is None:
            raise _Refused(404, f"no queue '{name}' in vhost '{self.vhost}'")
        self._check_access(peer, queue)
        return queue

    def _check_access(self, peer: _Peer, queue: _Queue) -> None:
        if queue.owner is not None and queue.owner is not peer:
            raise _Refused(405, _LOCKED.format(queue.name, self.vhost))

    def _route(self, exchange: _Exchange, routing_key: str) -> list[_Queue]:
        if not exchange.name:
            queue = self._queues.get(routing_key)
            return [queue] if queue is not None else []
        return [self._queues[n] for n in exchange.route(routing_key) if n in self._queues]

    def _enqueue(self, queue: _Queue, message: _Message, ttl: int | None) -> bool:
        """Put ``message`` in ``queue``; False if the queue refused it (reject-publish)."""
        limit = queue.max_length
        if limit is not None and queue.overflow != "drop-head" and len(queue.ready) >= limit:
            if queue.overflow == "reject-publish-dlx":
                self._dead_letter(queue, message, "maxlen")
            return False
        if queue.ttl is not None:
            ttl = queue.ttl if ttl is None else min(ttl, queue.ttl)
        if ttl is not None:
            message.deadline = time.monotonic() + ttl / 1000
        if not queue.ready:
            # Nothing waits ahead of it: a consumer with room takes it before it can expire.
            consumer = self._next_consumer(queue)
            if consumer is not None:
                self._deliver(consumer, queue, message)
                return True
        queue.ready.append(message)
        self._enforce_max_length(queue)
        self._drain(queue)
        return True

    def _drain(self, queue: _Queue) -> None:
        """Expire what is due at the head, and hand ready messages to consumers with room."""
        while not queue.deleted:
            self._expire_head(queue)
            if not queue.ready:
                break
            consumer = self._next_consumer(queue)
            if consumer is None:
                break
            self._deliver(consumer, queue, self._pop_head(queue))
        self._schedule(queue)

    def _schedule(self, queue: _Queue) -> None:
        """Wake the queue when its head expires (only the head can: RabbitMQ's rule)."""
        head = queue.ready[0] if queue.ready and not queue.deleted else None
        self._deadlines.set(queue, head.deadline if head is not None else None)

    def _expire_head(self, queue: _Queue) -> None:
        now = time.monotonic()
        ready = queue.ready
        while ready and (deadline := ready[0].deadline) is not None and deadline <= now:
            self._dead_letter(queue, self._pop_head(queue), "expired")

    def _enforce_max_length(self, queue: _Queue) -> None:
        limit = queue.max_length
        if limit is None or queue.overflow != "drop-head":
            return
        while len(queue.ready) > limit:
            self._dead_letter(queue, self._pop_head(queue), "maxlen")

    @staticmethod
    def _pop_head(queue: _Queue) -> _Message:
        if queue.returned:
            queue.returned -= 1
        return queue.ready.popleft()

    @staticmethod
    def _next_consumer(queue: _Queue) -> _Consumer | None:
        """The next consumer with room, round-robin."""
        consumers = queue.consumers
        count = len(consumers)
        for step in range(count):
            index = (queue.rr + step) % count
            consumer = consumers[index]
            if consumer.auto_ack or not consumer.limit or consumer.unacked < consumer.limit:
                queue.rr = index + 1
                return consumer
        return None

    def _deliver(self, consumer: _Consumer, queue: _Queue, message: _Message) -> None:
        channel = consumer.channel
        channel.next_tag += 1
        tag = channel.next_tag
        if not consumer.auto_ack:
            channel.unacked[tag] = _Unacked(queue, message, consumer)
            consumer.unacked += 1
        delivery = self._delivery(queue, message, tag, consumer.tag)
        channel.peer.post(partial(channel.client._deliver, delivery, consumer.auto_ack))

    @staticmethod
    def _delivery(queue: _Queue, message: _Message, tag: int, consumer_tag: str | None) -> Delivery:
        properties = copy_properties(message.properties)
        if queue.kind == "quorum" and message.returns:
            headers = properties.headers if isinstance(properties.headers, dict) else {}
            headers["x-delivery-count"] = message.returns
            properties.headers = headers
        return Delivery(
            tag,
            message.redelivered,
            message.exchange,
            message.routing_key,
            properties,
            message.body,
            consumer_tag,
        )

    def _requeue(self, queue: _Queue, message: _Message) -> None:
        message.redelivered = True
        ready = queue.ready
        if queue.kind == "quorum":
            message.returns += 1
            limit = queue.delivery_limit
            if limit is not None and message.returns > limit:
                self._dead_letter(queue, message, "delivery_limit")
                return
            # 4.x: returned messages go ahead of the rest, in the order they came back.
            ready.insert(queue.returned, message)
            queue.returned += 1
        else:
            # A classic queue puts it back in its place: before what was published after it.
            index = next((i for i, m in enumerate(ready) if m.seq > message.seq), len(ready))
            ready.insert(index, message)

    def _dead_letter(self, queue: _Queue, message: _Message, reason: str) -> None:
        exchange = self._exchanges.get(queue.dlx) if queue.dlx is not None else None
        if exchange is None:
            return  # dropped: no dead-letter exchange (or it is gone), as RabbitMQ drops it
        routing_key = queue.dlrk if queue.dlrk is not None else message.routing_key
        properties = _dead_lettered(message, queue.name, reason)
        deaths = properties.headers["x-death"]
        seq = next(self._seq)
        for target in self._route(exchange, routing_key):
            if reason != "rejected" and _is_cycle(target.name, deaths):
                continue  # a cycle with no client in it would never end
            self._enqueue(
                target,
                _Message(seq, exchange.name, routing_key, properties, message.body),
                None,
            )

    def _remove_consumer(self, consumer: _Consumer) -> None:
        queue = consumer.queue
        with contextlib.suppress(ValueError):
            queue.consumers.remove(consumer)
        if queue.exclusive_consumer is consumer:
            queue.exclusive_consumer = None
        if queue.auto_delete and queue.had_consumer and not queue.consumers and not queue.deleted:
            self._delete_queue(queue)

    def _delete_queue(self, queue: _Queue) -> None:
        queue.deleted = True
        self._queues.pop(queue.name, None)
        for exchange in self._exchanges.values():
            exchange.unbind(queue.name)
        for consumer in queue.consumers:
            channel = consumer.channel
            channel.consumers.pop(consumer.tag, None)
            channel.peer.post(partial(channel.client._cancelled, consumer.tag))
        queue.consumers.clear()
        queue.ready.clear()
        self._schedule(queue)

    def _close_channel(self, channel: _ServerChannel, failure: Failure) -> None:
        if not channel.open:
            return
        channel.open = False
        channel.peer.channels.pop(channel.number, None)
        for consumer in list(channel.consumers.values()):
            self._remove_consumer(consumer)  # first: requeued messages go to the others
        channel.consumers.clear()
        touched: dict[_Queue, None] = {}
        for record in channel.unacked.values():
            if not record.queue.deleted:
                self._requeue(record.queue, record.message)
                touched[record.queue] = None
        channel.unacked.clear()
        for queue in touched:
            if not queue.deleted:
                self._enforce_max_length(queue)
                self._drain(queue)
        channel.peer.post(partial(channel.client._closed, failure))

    def _close_peer(self, peer: _Peer, failure: Failure, channel_failure: Failure) -> None:
        if peer.closed:
            return
        peer.closed = True
        peer.held.clear()
        self._peers.remove(peer)
        for channel in list(peer.channels.values()):
            self._close_channel(channel, channel_failure)
        for queue in [q for q in self._queues.values() if q.owner is peer]:
            self._delete_queue(queue)
        peer.post(partial(peer.client._closed, failure))


# -- the transport ---------------------------------------------------------------------------------


class MemoryAddress:
    """A ``MemoryBroker`` login: the URL (for ``shown``), the user and the password.

    Any URL is taken (``amqp://...``, ``memory://``...): the broker is in this process. The
    password comes from the URL (pika's default, ``guest``, when it names no user) and never
    shows in a repr; a password written in the URL is scrubbed from failure texts, as the pika
    transport scrubs it.
    """

    __slots__ = ("_password", "_secret", "connection_name", "shown", "user")

    def __init__(
        self, url: str, user: str, password: str, connection_name: str, *, secret: str | None
    ) -> None:
        self.shown = redact_url(url)
        self.user = user
        self._password = password
        self._secret = secret  # the URL's own password, if it has one
        self.connection_name = connection_name

    def __repr__(self) -> str:
        return f"<MemoryAddress {self.shown} user={self.user!r} name={self.connection_name!r}>"


class MemoryTransport:
    """``Transport`` of ``_api.py`` for one ``MemoryBroker`` (its ``transport`` attribute).

    Threads: ``address`` and ``new_loop`` on any thread, ``connect`` on the loop's.
    """

    name = "memory"

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def __repr__(self) -> str:
        return f"<MemoryTransport of {self.broker!r}>"

    def address(self, settings: Any, url: str, connection_name: str) -> MemoryAddress:
        """The login for ``url``: the user is ``settings.username``, the password the URL's."""
        if not isinstance(url, str):
            raise ConfigError(f"a broker URL must be a string, got {type(url).__name__}")
        try:
            parts = urlsplit(url)
            url_user, url_password = parts.username, parts.password
        except ValueError:
            url_user = url_password = None
        user = getattr(settings, "username", None)
        if not isinstance(user, str):
            user = unquote(url_user) if url_user else "guest"
        secret = unquote(url_password) if url_password else None
        password = (secret or "") if url_user is not None else "guest"  # pika's default login
        return MemoryAddress(url, user, password, connection_name, secret=secret)

    def new_loop(self) -> MemoryLoop:
        return MemoryLoop()

    def connect(
        self,
        loop: Loop,
        address: Address,
        *,
        on_open: Callable[[Connection], None],
        on_open_failed: Callable[[Connection, Failure], None],
        on_closed: Callable[[Connection, Failure], None],
        on_blocked: Callable[[Connection, str], None],
        on_unblocked: Callable[[Connection], None],
    ) -> MemoryConnection:
        if not isinstance(address, MemoryAddress):
            raise TypeError(f"not an address of the memory transport: {address!r}")
        connection = MemoryConnection(
            self.broker,
            loop,
            address,
            on_open=on_open,
            on_open_failed=on_open_failed,
            on_closed=on_closed,
            on_blocked=on_blocked,
            on_unblocked=on_unblocked,
        )
        connection._check_thread()
        self.broker._connect(connection.peer, address._password)
        return connection


class MemoryConnection:
    """One connection to a ``MemoryBroker``: ``Connection`` of ``_api.py``.

    Threads: every method on the loop's thread (checked on a ``MemoryLoop``); the methods named
    with an underscore below ``abandon`` are the broker's messages, run by the loop.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        loop: Loop,
        address: MemoryAddress,
        *,
        on_open: Callable[[Connection], None],
        on_open_failed: Callable[[Connection, Failure], None],
        on_closed: Callable[[Connection, Failure], None],
        on_blocked: Callable[[Connection, str], None],
        on_unblocked: Callable[[Connection], None],
    ) -> None:
        self._broker = broker
        self._loop = loop
        self.name = address.connection_name
        self.user = address.user
        self._on_open = on_open
        self._on_open_failed = on_open_failed
        self._on_closed = on_closed
        self._on_blocked = on_blocked
        self._on_unblocked = on_unblocked
        self._secret = address._secret  # scrubbed from every failure text, as pika's are
        self._state = _State.OPENING
        self._reported_open = False
        self._channels: dict[int, MemoryChannel] = {}
        self.peer = _Peer(self, loop, address.user, address.connection_name)

    def __repr__(self) -> str:
        return f"<MemoryConnection {self.name!r} user={self.user!r} {self._state.value}>"

    def _check_thread(self) -> None:
        loop = self._loop
        if isinstance(loop, MemoryLoop) and not loop.in_loop_thread():
            raise RuntimeError(
                f"{self!r} used from thread {threading.current_thread().name!r}: only its "
                "loop's thread may (hand work over with call_soon_threadsafe)"
            )

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    def open_channel(self, on_open: Callable[[Channel], None]) -> None:
        self._check_thread()
        if self._state is not _State.OPEN:
            raise PublishError(f"cannot open a channel: the connection is {self._state.value}")
        number = next(n for n in itertools.count(1) if n not in self._channels)
        channel = MemoryChannel(self, number)
        self._channels[number] = channel
        self._broker._submit(
            self.peer,
            None,
            partial(self._broker._open_channel, channel.server, on_open),
            publish=False,
        )

    def close(self) -> None:
        self._check_thread()
        if self._state not in (_State.OPENING, _State.OPEN):
            return
        self._state = _State.CLOSING
        for channel in self._channels.values():
            channel._closing()
        self._broker._submit(
            self.peer, None, partial(self._broker._close_by_client, self.peer), publish=False
        )

    def abandon(self) -> None:
        """Vanish: the broker requeues this connection's unacked messages and deletes its
        exclusive queues at once; no callback follows here."""
        self._check_thread()
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        for channel in self._channels.values():
            channel._state = _State.CLOSED
        self._channels.clear()
        self._broker._abandon(self.peer)

    def hold_writes(self) -> None:
        """Nothing to hold: there is no socket (see the module docstring)."""

    def flush_writes(self) -> None:
        """Nothing to flush."""

    # -- the broker's messages (loop thread) -------------------------------------------------------

    def _scrub(self, failure: Failure) -> Failure:
        """``failure`` with the URL's password hidden, as the pika transport hides it (even
        where it is also the user name: guest/guest)."""
        if self._secret and self._secret in failure.text:
            return dataclasses.replace(failure, text=failure.text.replace(self._secret, "***"))
        return failure

    def _opened(self) -> None:
        if self._state is _State.OPENING:
            self._state = _State.OPEN
            self._reported_open = True
            self._on_open(self)

    def _open_failed(self, failure: Failure) -> None:
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
            self._on_open_failed(self, self._scrub(failure))

    def _closed(self, failure: Failure) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        for channel in list(self._channels.values()):
            channel._closed(failure)  # each had its own close first; this is a safety net
        failure = self._scrub(failure)
        if self._reported_open:
            self._on_closed(self, failure)
        else:
            self._on_open_failed(self, Failure(f"connection open aborted: {failure.text}"))

    def _blocked(self, reason: str) -> None:
        if self._state is _State.OPEN:
            self._on_blocked(self, reason)

    def _unblocked(self) -> None:
        if self._state is _State.OPEN:
            self._on_unblocked(self)

    def _forget(self, channel: MemoryChannel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]


class MemoryChannel:
    """One channel of a ``MemoryConnection``: ``Channel`` of ``_api.py``.

    Threads: every method on the connection's loop thread (checked on a ``MemoryLoop``). A
    method other than ``close`` called when the channel is not open raises PublishError
    (nothing is sent), where pika raises its ChannelWrongStateError.
    """

    def __init__(self, connection: MemoryConnection, number: int) -> None:
        self._connection = connection
        self._broker = connection._broker
        self._number = number
        self._state = _State.OPENING
        self.server = _ServerChannel(connection.peer, self, number)
        self._on_close: list[Callable[[Channel, Failure], None]] = []
        self._on_return: list[Callable[[Returned], None]] = []
        self._on_cancel: list[Callable[[str], None]] = []
        self._on_confirm: Callable[[Confirm], None] | None = None
        self._consumers: dict[str, Callable[[Delivery], None]] = {}
        self._cancelling: set[str] = set()

    def __repr__(self) -> str:
        return f"<MemoryChannel {self._number} {self._state.value} of {self._connection!r}>"

    @property
    def number(self) -> int:
        return self._number

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    def _usable(self) -> None:
        self._connection._check_thread()
        if self._state is not _State.OPEN:
            raise PublishError(f"channel {self._number} is {self._state.value}")

    def _send(self, op: Callable[[], None], *, publish: bool = False) -> None:
        self._broker._submit(self._connection.peer, self.server, op, publish=publish)

    def on_close(self, fn: Callable[[Channel, Failure], None]) -> None:
        self._connection._check_thread()
        self._on_close.append(fn)

    def on_return(self, fn: Callable[[Returned], None]) -> None:
        self._connection._check_thread()
        self._on_return.append(fn)

    def on_cancel(self, fn: Callable[[str], None]) -> None:
        self._connection._check_thread()
        self._on_cancel.append(fn)

    def qos(self, prefetch: int, on_ok: Callable[[], None]) -> None:
        self._usable()
        self._send(partial(self._broker._qos, self.server, prefetch, on_ok))

    def confirm(self, on_confirm: Callable[[Confirm], None], on_ok: Callable[[], None]) -> None:
        self._usable()
        self._on_confirm = on_confirm
        self._send(partial(self._broker._confirm, self.server, on_ok))

    def declare_exchange(
        self, name: str, *, kind: str, durable: bool, on_ok: Callable[[], None]
    ) -> None:
        self._usable()
        self._send(partial(self._broker._declare_exchange, self.server, name, kind, durable, on_ok))

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        on_ok: Callable[[QueueInfo], None],
    ) -> None:
        self._usable()
        try:
            table = wire_table(dict(arguments)) if arguments else {}
        except Unencodable as exc:
            raise PublishError(f"not declared: {exc}") from None
        self._send(
            partial(
                self._broker._declare_queue,
                self.server,
                name,
                passive,
                durable,
                exclusive,
                auto_delete,
                table,
                on_ok,
            )
        )

    def bind_queue(
        self, queue: str, exchange: str, routing_key: str, on_ok: Callable[[], None]
    ) -> None:
        self._usable()
        self._send(
            partial(self._broker._bind_queue, self.server, queue, exchange, routing_key, on_ok)
        )

    def delete_queue(self, name: str, on_ok: Callable[[], None]) -> None:
        self._usable()
        self._send(partial(self._broker._delete_queue_op, self.server, name, on_ok))

    def delete_exchange(self, name: str, on_ok: Callable[[], None]) -> None:
        self._usable()
        self._send(partial(self._broker._delete_exchange, self.server, name, on_ok))

    def purge_queue(self, name: str, on_ok: Callable[[int], None]) -> None:
        self._usable()
        self._send(partial(self._broker._purge, self.server, name, on_ok))

    def consume(
        self,
        queue: str,
        on_delivery: Callable[[Delivery], None],
        *,
        auto_ack: bool = False,
        exclusive: bool = False,
        on_ok: Callable[[str], None],
    ) -> str:
        self._usable()
        tag = f"ctag{self._number}.{uuid.uuid4().hex}"  # pika's form
        self._consumers[tag] = on_delivery
        self._send(
            partial(self._broker._consume, self.server, queue, tag, auto_ack, exclusive, on_ok)
        )
        return tag

    def cancel(self, consumer_tag: str, on_ok: Callable[[], None]) -> None:
        """Stop a consumer. As pika: deliveries that arrive for it from now on are rejected back
        to the queue (dropped under ``auto_ack``), and a tag the channel does not know (never
        made, cancelled already, or cancelled by the broker) gets a warning and no ``on_ok``."""
        self._usable()
        if consumer_tag not in self._consumers or consumer_tag in self._cancelling:
            log.warning("cancel: no such consumer on %r: %s", self, consumer_tag)
            return
        self._cancelling.add(consumer_tag)
        self._send(partial(self._broker._cancel, self.server, consumer_tag, on_ok))

    def get(self, queue: str, on_result: Callable[[Delivery | None], None]) -> None:
        self._usable()
        self._send(partial(self._broker._get, self.server, queue, on_result))

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = False,
    ) -> None:
        self._usable()
        try:
            wire = wire_properties(properties)
            short_string(exchange, "exchange")
            short_string(routing_key, "routing key")
        except Unencodable as exc:
            raise PublishError(f"not published: {exc}") from None
        data = body if type(body) is bytes else bytes(body)
        self._send(
            partial(
                self._broker._publish, self.server, exchange, routing_key, data, wire, mandatory
            ),
            publish=True,
        )

    def ack(self, tag: int, *, multiple: bool = False) -> None:
        self._usable()
        self._send(partial(self._broker._settle, self.server, tag, multiple, "ack"))

    def nack(self, tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        self._usable()
        outcome: Literal["requeue", "reject"] = "requeue" if requeue else "reject"
        self._send(partial(self._broker._settle, self.server, tag, multiple, outcome))

    def reject(self, tag: int, *, requeue: bool) -> None:
        self.nack(tag, multiple=False, requeue=requeue)

    def close(self) -> None:
        self._connection._check_thread()
        if self._state is not _State.OPEN:
            return
        self._closing()
        self._send(partial(self._broker._close_channel_by_client, self.server))

    # -- the broker's messages (loop thread) -------------------------------------------------------

    def _closing(self) -> None:
        if self._state in (_State.OPENING, _State.OPEN):
            self._state = _State.CLOSING

    def _opened(self, on_open: Callable[[Channel], None]) -> None:
        if self._state is _State.OPENING and self._connection.is_open:
            self._state = _State.OPEN
            on_open(self)

    def _answer(self, fn: Callable[..., None], *args: Any) -> None:
        if self._state in _ANSWERS:
            fn(*args)

    def _deliver(self, delivery: Delivery, auto_ack: bool) -> None:
        if self._state is not _State.OPEN:
            return  # closing: pika has cancelled every consumer (the broker requeues)
        tag = delivery.consumer_tag
        if tag in self._cancelling:
            if not auto_ack:  # pika rejects what comes for a consumer it is cancelling
                self._send(
                    partial(self._broker._settle, self.server, delivery.tag, False, "requeue")
                )
            return
        on_delivery = self._consumers.get(tag)
        if on_delivery is None:
            log.error("unexpected delivery on %r: %r", self, delivery)
            return
        on_delivery(delivery)

    def _cancel_ok(self, tag: str, on_ok: Callable[[], None]) -> None:
        self._consumers.pop(tag, None)
        self._cancelling.discard(tag)
        self._answer(on_ok)

    def _cancelled(self, tag: str) -> None:
        if self._state not in _ANSWERS:
            return
        if tag not in self._cancelling:
            self._consumers.pop(tag, None)
        for fn in self._on_cancel:
            fn(tag)

    def _returned(self, returned: Returned) -> None:
        if self._state in _ANSWERS:
            for fn in self._on_return:
                fn(returned)

    def _confirmed(self, confirm: Confirm) -> None:
        if self._state in _ANSWERS and self._on_confirm is not None:
            self._on_confirm(confirm)

    def _closed(self, failure: Failure) -> None:
        if self._state is _State.CLOSED:
            return
        was_handed_over = self._state is not _State.OPENING
        self._state = _State.CLOSED
        self._consumers.clear()
        self._cancelling.clear()
        self._connection._forget(self)
        if was_handed_over:
            failure = self._connection._scrub(failure)
            for fn in self._on_close:
                fn(self, failure)


# -- the broker's records (under its lock) ---------------------------------------------------------


class _Peer:
    """The broker's side of one connection."""

    __slots__ = ("abandoned", "channels", "client", "closed", "held", "loop", "name", "user")

    def __init__(self, client: MemoryConnection, loop: Loop, user: str, name: str) -> None:
        self.client = client
        self.loop = loop
        self.user = user
        self.name = name
        self.closed = True  # until the broker lets it in
        self.abandoned = False
        self.channels: dict[int, _ServerChannel] = {}
        # What waits while the broker does not read this connection (an alarm): (channel, op).
        self.held: deque[tuple[_ServerChannel | None, Callable[[], None]]] = deque()

    def post(self, fn: Callable[[], None]) -> None:
        """Hand ``fn`` to the connection's loop (any thread; nothing once abandoned)."""
        if not self.abandoned:
            self.loop.call_soon_threadsafe(fn)


class _ServerChannel:
    """The broker's side of one channel."""

    __slots__ = (
        "client",
        "confirming",
        "consumers",
        "next_tag",
        "number",
        "open",
        "peer",
        "prefetch",
        "published",
        "unacked",
    )

    def __init__(self, peer: _Peer, client: MemoryChannel, number: int) -> None:
        self.peer = peer
        self.client = client
        self.number = number
        self.open = False
        self.prefetch = 0
        self.confirming = False
        self.published = 0  # publishes since confirms were turned on: their confirm tags
        self.next_tag = 0  # the last delivery tag given
        self.unacked: dict[int, _Unacked] = {}  # by delivery tag, in tag order
        self.consumers: dict[str, _Consumer] = {}

    def answer(self, fn: Callable[..., None], *args: Any) -> None:
        self.peer.post(partial(self.client._answer, fn, *args))


class _Consumer:
    __slots__ = ("auto_ack", "channel", "limit", "queue", "tag", "unacked")

    def __init__(
        self, tag: str, queue: _Queue, channel: _ServerChannel, *, auto_ack: bool, limit: int
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.channel = channel
        self.auto_ack = auto_ack
        self.limit = limit  # the channel's prefetch when it was made; 0: none
        self.unacked = 0


class _Unacked:
    __slots__ = ("consumer", "message", "queue")

    def __init__(self, queue: _Queue, message: _Message, consumer: _Consumer | None) -> None:
        self.queue = queue
        self.message = message
        self.consumer = consumer  # None: taken with basic.get


class _Message:
    """A message as one queue holds it (each queue a message is routed to has its own)."""

    __slots__ = (
        "body",
        "deadline",
        "exchange",
        "persistent",
        "properties",
        "redelivered",
        "returns",
        "routing_key",
        "seq",
    )

    def __init__(
        self, seq: int, exchange: str, routing_key: str, properties: Properties, body: bytes
    ) -> None:
        self.seq = seq  # publish order: where a requeued message goes back on a classic queue
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties  # as the receiver decodes them; never changed in place
        self.body = body
        self.persistent = properties.delivery_mode == 2
        self.deadline: float | None = None  # time.monotonic() at which it expires
        self.redelivered = False
        self.returns = 0  # deliveries that came back (a quorum queue's delivery count)


class _QueueSettings:
    """What a queue's arguments ask for, checked as RabbitMQ checks them."""

    __slots__ = ("delivery_limit", "dlrk", "dlx", "kind", "max_length", "overflow", "ttl")

    def __init__(self) -> None:
        self.kind = "classic"
        self.dlx: str | None = None
        self.dlrk: str | None = None
        self.max_length: int | None = None
        self.overflow = "drop-head"
        self.ttl: int | None = None
        self.delivery_limit: int | None = None

    @classmethod
    def parse(cls, name: str, vhost: str, arguments: Mapping[Any, Any]) -> _QueueSettings:
        """The settings ``arguments`` ask for; _Refused (406) as RabbitMQ refuses them."""

        def invalid(key: str, why: str) -> _Refused:
            return _Refused(
                406, f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {why}"
            )

        for key in (*_INTEGER_ARGS, "x-expires"):
            value = arguments.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise invalid(key, f'"expected integer, got {_amqp_type(value)}"')
            if value < 0:
                raise invalid(key, f"{{value_negative,{value}}}")
            if value == 0 and key == "x-expires":
                raise invalid(key, "{value_zero,0}")
        for key in _STRING_ARGS:
            value = arguments.get(key)
            if value is not None and not isinstance(value, str | bytes):
                raise _Refused(
                    406,
                    f"invalid type '{_amqp_type(value)}' for arg '{key}' in queue '{name}' in "
                    f"vhost '{vhost}'",
                )
        if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
            raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        overflow = arguments.get("x-overflow", "drop-head")
        if overflow not in _OVERFLOWS:
            raise invalid("x-overflow", "invalid_overflow")
        kind = arguments.get("x-queue-type", "classic")
        if kind not in _QUEUE_TYPES:
            raise invalid("x-queue-type", f"\"unsupported queue type '{_erlang(kind)}'\"")
        made = cls()
        made.kind = kind
        made.overflow = overflow
        made.dlx = _text(arguments.get("x-dead-letter-exchange"))
        made.dlrk = _text(arguments.get("x-dead-letter-routing-key"))
        made.max_length = arguments.get("x-max-length")
        made.ttl = arguments.get("x-message-ttl")
        if kind == "quorum":
            made.delivery_limit = _delivery_limit(arguments.get("x-delivery-limit"))
        return made

    def check_new(
        self, name: str, vhost: str, *, durable: bool, exclusive: bool, auto_delete: bool
    ) -> None:
        """What a new queue of this kind may not be, in RabbitMQ's order and words."""
        where = f"for queue '{name}' in vhost '{vhost}'"
        if self.kind == "quorum":
            if auto_delete:
                raise _Refused(406, f"invalid property 'auto-delete' {where}")
            if exclusive:
                raise _Refused(406, f"invalid property 'exclusive-owner' {where}")
        if self.kind in ("quorum", "stream") and not durable:
            raise _Refused(406, f"invalid property 'non-durable' {where}")
        if self.kind == "stream":
            raise _Refused(540, "stream queues are not implemented by the in-memory broker")


class _Queue:
    __slots__ = (
        "arguments",
        "auto_delete",
        "consumers",
        "deleted",
        "delivery_limit",
        "dlrk",
        "dlx",
        "durable",
        "exclusive_consumer",
        "had_consumer",
        "kind",
        "max_length",
        "name",
        "overflow",
        "owner",
        "ready",
        "returned",
        "rr",
        "ttl",
    )

    def __init__(
        self,
        name: str,
        settings: _QueueSettings,
        arguments: dict[Any, Any],
        *,
        durable: bool,
        auto_delete: bool,
    ) -> None:
        self.name = name
        self.arguments = arguments
        self.durable = durable
        self.auto_delete = auto_delete
        self.owner: _Peer | None = None  # the connection of an exclusive queue
        self.kind = settings.kind
        self.dlx = settings.dlx
        self.dlrk = settings.dlrk
        self.max_length = settings.max_length
        self.overflow = settings.overflow
        self.ttl = settings.ttl
        self.delivery_limit = settings.delivery_limit
        self.ready: deque[_Message] = deque()
        self.returned = 0  # quorum: how many at the head of ``ready`` came back
        self.consumers: list[_Consumer] = []
        self.rr = 0  # where the round-robin goes on
        self.exclusive_consumer: _Consumer | None = None
        self.had_consumer = False
        self.deleted = False

    def info(self) -> QueueInfo:
        return QueueInfo(self.name, len(self.ready), len(self.consumers))

    def check_equivalent(
        self,
        where: str,
        kind: str,
        arguments: Mapping[Any, Any],
        *,
        durable: bool,
        auto_delete: bool,
    ) -> None:
        """406 unless a declaration with these properties and arguments matches this queue."""
        if self.durable != durable:
            raise _Refused(406, _inequivalent_field("durable", where, durable, self.durable))
        if self.auto_delete != auto_delete:
            raise _Refused(
                406, _inequivalent_field("auto_delete", where, auto_delete, self.auto_delete)
            )
        if kind != self.kind:  # 4.x compares the effective type (3.10: the argument)
            raise _Refused(406, _inequivalent_field("x-queue-type", where, kind, self.kind))
        for key in sorted(_COMPARED_ARGS):
            old, new = self.arguments.get(key), arguments.get(key)
            if old is None and new is None:
                continue
            if old is None or new is None:
                raise _Refused(
                    406,
                    f"inequivalent arg '{key}' for {where}: received {_typed(new)} but current "
                    f"is {_typed(old)}",
                )
            numeric = all(isinstance(v, int) and not isinstance(v, bool) for v in (old, new))
            if not ((numeric or _amqp_type(old) == _amqp_type(new)) and old == new):
                raise _Refused(406, _inequivalent_field(key, where, new, old))


class _Exchange:
    __slots__ = ("bindings", "durable", "kind", "name")

    def __init__(self, name: str, kind: str, *, durable: bool) -> None:
        self.name = name
        self.kind = kind
        self.durable = durable
        self.bindings: dict[str, dict[str, None]] = {}  # binding key -> queue names, in order

    def route(self, routing_key: str) -> list[str]:
        if self.kind == "direct":
            return list(self.bindings.get(routing_key, ()))
        found: dict[str, None] = {}
        for key, queues in self.bindings.items():
            if self.kind != "topic" or _topic_matches(key, routing_key):
                found.update(queues)  # fanout and (argument-less) headers: every binding
        return list(found)

    def unbind(self, queue: str) -> None:
        for key, queues in list(self.bindings.items()):
            queues.pop(queue, None)
            if not queues:
                del self.bindings[key]


class _Deadlines:
    """When each queue's head expires, and the broker thread that expires it then.

    Only a queue's head can expire (RabbitMQ's rule), so one deadline per queue is kept, and
    the thread runs only while some queue has one: the cost is a heap entry per change of a
    head's deadline, never a poll. Threads: ``set`` with the broker's lock held; the thread
    takes that lock (its condition is built on it) while it works.
    """

    def __init__(self, lock: threading.Lock, expire: Callable[[_Queue], None]) -> None:
        self._wake = threading.Condition(lock)
        self._expire = expire  # drains the queue, which sets its next deadline
        self._due: dict[_Queue, float] = {}
        self._heap: list[tuple[float, int, _Queue]] = []  # entries not in _due are stale
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def set(self, queue: _Queue, when: float | None) -> None:
        """``queue``'s head expires at ``when`` (time.monotonic()), or never (None)."""
        if self._due.get(queue) == when:
            return
        if when is None:
            del self._due[queue]
            if not self._due:
                self._heap.clear()
                self._wake.notify()  # nothing left to wait for: the thread ends
            return
        self._due[queue] = when
        heapq.heappush(self._heap, (when, next(self._seq), queue))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="reqrep-memory-broker-deadlines", daemon=True
            )
            self._thread.start()
        elif self._heap[0][2] is queue:
            self._wake.notify()  # it may sleep until a later deadline

    def _run(self) -> None:
        with self._wake:
            try:
                while self._due:
                    when, _seq, queue = self._heap[0]
                    if self._due.get(queue) != when:
                        heapq.heappop(self._heap)  # stale: the head changed since
                        continue
                    wait = when - time.monotonic()
                    if wait > 0:
                        self._wake.wait(wait)
                        continue
                    heapq.heappop(self._heap)
                    del self._due[queue]
                    self._expire(queue)
            finally:
                self._thread = None


def _amqp_type(value: Any) -> str:
    """The AMQP type RabbitMQ names for a value pika sent."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    types = {str: "longstr", bytes: "binary", dict: "table", list: "array"}
    for python, amqp in types.items():
        if isinstance(value, python):
            return amqp
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, datetime):
        return "timestamp"
    return "void" if value is None else type(value).__name__


def _erlang(value: Any) -> str:
    """A value as RabbitMQ prints it in an error text (without quotes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _typed(value: Any) -> str:
    return (
        "none" if value is None else f"the value '{_erlang(value)}' of type '{_amqp_type(value)}'"
    )


def _inequivalent_field(field: str, where: str, received: Any, current: Any) -> str:
    return (
        f"inequivalent arg '{field}' for {where}: received '{_erlang(received)}' but current "
        f"is '{_erlang(current)}'"
    )


def _delivery_limit(value: Any) -> int | None:
    """A quorum queue's delivery limit (4.x): 20 when absent (or not a number), none when
    negative. RabbitMQ takes any value here without a word."""
    if not isinstance(value, int) or isinstance(value, bool):
        return DEFAULT_DELIVERY_LIMIT
    return value if value >= 0 else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _expiration(value: Any) -> int | None:
    """A message's ``expiration`` in milliseconds, checked as RabbitMQ checks it."""
    if value is None:
        return None
    text = _erlang(value)
    match = _INTEGER.fullmatch(text)
    if match is None:
        raise _Refused(406, f"invalid expiration '{text}': no_integer")
    number, rest = int(match.group(1)), match.group(2)
    if rest:
        raise _Refused(406, f"invalid expiration '{text}': {{leftover_string,\"{rest}\"}}")
    if number < 0:
        raise _Refused(406, f"invalid expiration '{text}': {{value_negative,{number}}}")
    return number


def _topic_matches(pattern: str, routing_key: str) -> bool:
    """A topic binding key against a routing key: ``*`` one word, ``#`` any number."""
    words = routing_key.split(".") if routing_key else []
    reached = {0}  # how many words the pattern so far can have consumed
    for part in pattern.split(".") if pattern else []:
        if part == "#":
            reached = set(range(min(reached), len(words) + 1))
        else:
            reached = {i + 1 for i in reached if i < len(words) and part in ("*", words[i])}
        if not reached:
            return False
    return len(words) in reached


def _dead_lettered(message: _Message, queue: str, reason: str) -> Properties:
    """The properties of ``message`` dead-lettered from ``queue``: ``x-death`` and the rest."""
    properties = copy_properties(message.properties)
    headers: dict[Any, Any] = properties.headers if isinstance(properties.headers, dict) else {}
    deaths = headers.get("x-death")
    deaths = [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
    same = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == reason), None)
    if same is not None:
        deaths.remove(same)
        count = same.get("count")
        same["count"] = (count if isinstance(count, int) else 0) + 1
        entry = same
    else:
        entry = {}
        if properties.expiration is not None:
            entry["original-expiration"] = properties.expiration
        entry.update(
            {
                "count": 1,
                "reason": reason,
                "queue": queue,
                "time": datetime.now(timezone.utc).replace(microsecond=0),
                "exchange": message.exchange,
                "routing-keys": [message.routing_key],
            }
        )
    headers["x-death"] = [entry, *deaths]
    for field, value in (("exchange", message.exchange), ("queue", queue), ("reason", reason)):
        headers.setdefault(f"x-first-death-{field}", value)
        headers[f"x-last-death-{field}"] = value  # (4.x)
    properties.headers = headers
    properties.expiration = None  # it would expire again in the dead-letter queue
    return properties


def _is_cycle(queue: str, deaths: list[Any]) -> bool:
    """RabbitMQ's test: ``queue`` is in the message's deaths, and no death since it (that
    one included) was a rejection (a client in the loop)."""
    for index, death in enumerate(deaths):
        if isinstance(death, dict) and death.get("queue") == queue:
            return all(
                isinstance(d, dict) and d.get("reason") != "rejected" for d in deaths[: index + 1]
            )
    return False
