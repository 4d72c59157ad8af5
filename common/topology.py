"""Queue and exchange names and their arguments: the broker-side layout, in one place.

For a service ``S`` with prefix ``P`` (default ``reqrep.``; it may be empty: then queues are named
by the service alone, and reqrep's exchanges and control queues keep ``reqrep.``, see
``namespace``):

- ``Nrequests``: a durable direct exchange through which requestors publish requests; each
  worker binds its request queue to it with the queue's own name as the routing key. Requestors
  need write permission on it alone, not on the default exchange, through which they could
  publish into any queue (a dead-letter queue, another requestor's callback queue). A request
  published to the queue through the default exchange is served the same way.
- ``PS``: the request queue, durable; quorum by default. Dead-letters to ``Ndlx`` with routing key
  ``PS.dead``. On quorum queues ``x-delivery-limit`` is a backstop above the workers' own limit:
  workers refuse a poison request first (so its caller gets an error), the broker only if a
  request kills its worker before the worker can even look at it.
- ``Ndlx``: a durable direct exchange shared by the services under ``P``; ``N`` is
  ``namespace(P)``: ``P``, or ``reqrep.`` when ``P`` is empty.
- ``PS.dead``: the dead-letter queue, durable, bounded to ``dlq_max_length`` messages (default
  ``DEAD_LETTER_MAX_LENGTH``; the oldest are dropped), for inspection (``reqrep dlq``).
- ``Ncontrol``: a durable direct exchange for control requests (``reqrep ping``); each worker
  connection binds one exclusive, auto-delete queue ``Ncontrol.S.<id>`` to it (see
  ``common/control.py``).

Every argument here is accepted by RabbitMQ 3.10 and 4.x. Queue arguments cannot change once a
queue exists: changing them means deleting the queue (or setting them by policy instead).
"""

from __future__ import annotations

import re
from typing import Any

from reqrep.common.errors import ConfigError

__all__ = [
    "DEAD_LETTER_MAX_LENGTH",
    "NAMESPACE",
    "check_name",
    "check_queue_name",
    "control_exchange",
    "control_queue",
    "dead_letter_exchange",
    "dead_letter_queue",
    "dead_letter_queue_arguments",
    "namespace",
    "request_exchange",
    "request_queue",
    "request_queue_arguments",
]

DEAD_LETTER_MAX_LENGTH = 10_000
# Where reqrep's own names live when queues have no prefix: bare "dlx" or "control" exchanges
# would say nothing of whose they are, and could be anybody's.
NAMESPACE = "reqrep."
_BACKSTOP_MARGIN = 2  # the broker's delivery limit sits this far above the workers'


_MAX_NAME = 255  # bytes: AMQP short strings, which queue and exchange names are
# Service and method names become parts of queue names, routing keys and short strings.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")


def check_name(kind: str, name: object) -> str:
    """``name`` if it is a valid service or method name (``kind`` says which); else a
    ConfigError: 1-200 letters, digits, '_', '.', ':' or '-', starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise ConfigError(
            f"invalid {kind} name {shown}: use 1-200 letters, digits, '_', '.', ':' or '-'"
        )
    return name


def check_queue_name(name: str) -> str:
    """``name`` if the broker can take it as a queue name; else a ConfigError that says why."""
    size = len(name.encode("utf-8", "surrogatepass"))
    # The longest is the dead-letter queue's: the request queue's name and ".dead".
    if size + len(".dead") > _MAX_NAME:
        raise ConfigError(
            f"queue name {name[:40]!r}... is {size} bytes: with its dead-letter queue's suffix "
            f"it must fit in {_MAX_NAME} (use a shorter service name or prefix)"
        )
    return name


def request_queue(prefix: str, service: str) -> str:
    return f"{prefix}{service}"


def namespace(prefix: str) -> str:
    """What reqrep's exchanges and control queues are named under: the queue prefix, or
    ``NAMESPACE`` when the prefix is empty (queues named by the service alone)."""
    return prefix or NAMESPACE


def request_exchange(prefix: str) -> str:
    return f"{namespace(prefix)}requests"


def dead_letter_exchange(prefix: str) -> str:
    return f"{namespace(prefix)}dlx"


def control_exchange(prefix: str) -> str:
    return f"{namespace(prefix)}control"


def control_queue(prefix: str, service: str, instance: str) -> str:
    """One worker connection's control queue: in the namespace, so worker permissions cover it."""
    return f"{namespace(prefix)}control.{service}.{instance}"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


def request_queue_arguments(
    *, prefix: str, queue: str, queue_type: str, max_redeliveries: int
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": dead_letter_exchange(prefix),
        "x-dead-letter-routing-key": dead_letter_queue(queue),
    }
    if queue_type == "quorum":
        arguments["x-delivery-limit"] = max_redeliveries + _BACKSTOP_MARGIN
    return arguments


def dead_letter_queue_arguments(
    queue_type: str, max_length: int = DEAD_LETTER_MAX_LENGTH
) -> dict[str, Any]:
    return {"x-queue-type": queue_type, "x-max-length": max_length}
