"""The transport seam: everything reqrep does with a broker connection goes through here.

``Transport`` makes loops and connections; ``Connection`` and ``Channel`` are AMQP's, in
reqrep's own types (``Properties``, ``Delivery``, ``Returned``, ``Confirm``, ``QueueInfo``,
``Failure``). Two transports implement it:

- ``pika_transport()``: RabbitMQ through pika (``_pika.py``), the default. pika is imported
  nowhere else in reqrep, and only when a pika transport is made.
- ``MemoryBroker().transport`` (``_memory.py``): a broker in this process, for tests without
  RabbitMQ (``reqrep.testing``).

Either transport also runs a connection hosted on a caller's asyncio event loop
(``AsyncioLoop``: no I/O thread; pika's ``AsyncioConnection``) instead of a loop of its own.

Internal to reqrep: the protocols may change between releases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reqrep.common._transport._api import Address, Channel, Connection, Loop, Transport
from reqrep.common._transport._asyncio_loop import AsyncioLoop
from reqrep.common._transport._types import (
    PROPERTY_NAMES,
    Confirm,
    Delivery,
    Failure,
    Properties,
    PublishError,
    QueueInfo,
    Returned,
)

if TYPE_CHECKING:
    from reqrep.common._transport._pika import PikaTransport

__all__ = [
    "PROPERTY_NAMES",
    "Address",
    "AsyncioLoop",
    "Channel",
    "Confirm",
    "Connection",
    "Delivery",
    "Failure",
    "Loop",
    "Properties",
    "PublishError",
    "QueueInfo",
    "Returned",
    "Transport",
    "pika_transport",
]


def pika_transport() -> PikaTransport:
    """The transport to RabbitMQ through pika, with what this pika and the environment allow."""
    from reqrep.common._transport._pika import PikaTransport  # noqa: PLC0415 - pika on demand

    return PikaTransport()
