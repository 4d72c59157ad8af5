"""reqrep's own words for what crosses the transport seam: no pika type leaves the seam.

What the broker hands over and what reqrep hands to the broker: a message's ``Properties``, a
``Delivery``, a ``Returned`` message, a publisher ``Confirm``, a queue's ``QueueInfo``, and a
``Failure`` (why a connection attempt failed, or why a connection or channel closed). Both
transports (pika's and the in-memory one) speak only these.

Values as they arrive are not trusted: a short string that is not UTF-8 arrives as ``bytes``
(pika's rule, kept so that a hostile correlation id can still be echoed), and header values are
whatever AMQP field values the sender chose. Consumers check types before use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "PROPERTY_NAMES",
    "Confirm",
    "Delivery",
    "Failure",
    "Properties",
    "PublishError",
    "QueueInfo",
    "Returned",
]


@dataclasses.dataclass(repr=False)
class Properties:
    """The AMQP 0-9-1 basic properties of a message; None where absent.

    ``undecodable`` is set (to why) on a stand-in for properties the transport could not decode
    (e.g. headers nested deeper than the decoder goes): every other field is then None, and the
    receiver decides what to do with the message (a worker dead-letters it, a requestor drops it).
    """

    content_type: Any = None
    content_encoding: Any = None
    headers: Any = None  # dict of field values when present
    delivery_mode: int | None = None  # 2: persistent
    priority: int | None = None
    correlation_id: Any = None
    reply_to: Any = None
    expiration: Any = None  # milliseconds, as a string
    message_id: Any = None
    timestamp: int | None = None
    type: Any = None
    user_id: Any = None
    app_id: Any = None
    cluster_id: Any = None
    undecodable: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v is not None)
        return f"Properties({shown})"


PROPERTY_NAMES = tuple(f.name for f in dataclasses.fields(Properties) if f.name != "undecodable")


class Delivery:
    """A message the broker delivered to a consumer (or handed over for ``basic.get``).

    ``tag`` is the delivery tag, which belongs to the channel it came on; ``redelivered`` is the
    broker's flag (the message was delivered before and not acknowledged).
    """

    __slots__ = (
        "body",
        "consumer_tag",
        "exchange",
        "properties",
        "redelivered",
        "routing_key",
        "tag",
    )

    def __init__(  # noqa: PLR0917 - one per message: positional is the cheapest call
        self,
        tag: int,
        redelivered: bool,
        exchange: Any,
        routing_key: Any,
        properties: Properties,
        body: bytes,
        consumer_tag: Any = None,
    ) -> None:
        self.tag = tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.consumer_tag = consumer_tag

    def __repr__(self) -> str:
        return (
            f"<Delivery tag={self.tag} redelivered={self.redelivered} "
            f"routing_key={self.routing_key!r} bytes={len(self.body)}>"
        )


@dataclasses.dataclass(frozen=True)
class Returned:
    """A message published with ``mandatory`` that no queue took (``basic.return``)."""

    reply_code: int  # 312 NO_ROUTE
    reply_text: str
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes


@dataclasses.dataclass(frozen=True)
class Confirm:
    """A publisher confirm: the broker took (``ack``) or refused (not ``ack``: a nack) the
    publishes up to ``tag`` (``multiple``) or just ``tag``. Tags count a channel's publishes
    from 1, in order, from the moment confirms were enabled. RabbitMQ keeps confirms in order
    per queue only: an unroutable publish may be confirmed before an earlier routed one."""

    tag: int
    multiple: bool
    ack: bool


@dataclasses.dataclass(frozen=True)
class QueueInfo:
    """A queue's answer to ``queue.declare``: its name (server-named queues get one here), the
    messages ready in it and its consumers."""

    queue: str
    messages: int
    consumers: int


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a connection attempt failed, or a connection or channel closed.

    ``text`` is one line with every secret scrubbed; ``code`` the AMQP reply code when the broker
    sent one (404 NOT_FOUND, 406 PRECONDITION_FAILED, 320 CONNECTION_FORCED...); ``refused``
    means retrying the same address cannot help (a login, vhost or TLS certificate refused);
    ``by_broker`` that the broker closed it (not us); ``with_connection`` (channels only) that
    the channel went because its whole connection did: the connection's own event says why.
    """

    text: str
    code: int | None = None
    refused: bool = False
    by_broker: bool = False
    with_connection: bool = False

    def __str__(self) -> str:
        return self.text


class PublishError(Exception):
    """A publish was not written: the channel is closed or closing (nothing was sent)."""
