"""Queue and exchange names and their arguments: the broker-side layout, in one place.

For a service ``S`` with prefix ``P`` (default ``reqrep.``):

- ``PS``: the request queue, durable; quorum by default. Dead-letters to ``Pdlx`` with routing key
  ``PS.dead``. On quorum queues ``x-delivery-limit`` is a backstop above the workers' own limit:
  workers refuse a poison request first (so its caller gets an error), the broker only if a
  request kills its worker before the worker can even look at it.
- ``Pdlx``: a durable direct exchange shared by the services under ``P``.
- ``PS.dead``: the dead-letter queue, durable, bounded to ``dlq_max_length`` messages (default
  ``DEAD_LETTER_MAX_LENGTH``; the oldest are dropped), for inspection (``reqrep dlq``).
- ``Pcontrol``: a durable direct exchange for control requests (``reqrep ping``); each worker
  binds one exclusive queue to it (see ``common/control.py``).

Every argument here is accepted by RabbitMQ 3.10 and 4.x. Queue arguments cannot change once a
queue exists: changing them means deleting the queue (or setting them by policy instead).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEAD_LETTER_MAX_LENGTH",
    "control_exchange",
    "dead_letter_exchange",
    "dead_letter_queue",
    "dead_letter_queue_arguments",
    "request_queue",
    "request_queue_arguments",
]

DEAD_LETTER_MAX_LENGTH = 10_000
_BACKSTOP_MARGIN = 2  # the broker's delivery limit sits this far above the workers'


def request_queue(prefix: str, service: str) -> str:
    return f"{prefix}{service}"


def dead_letter_exchange(prefix: str) -> str:
    return f"{prefix}dlx"


def control_exchange(prefix: str) -> str:
    return f"{prefix}control"


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
