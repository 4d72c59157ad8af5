"""Whether and how a worker serves a delivered request, decided from its properties alone.

Pure functions over plain values (no pika, no state), in the order the worker applies them:

1. ``screen``: unanswerable (no ``reply_to``/``correlation_id``: dead-lettered, no reply); past
   its deadline (acked, not run, no reply); poison (delivered too often: error reply, then
   dead-lettered); otherwise it passes.
2. (the worker's reply cache: a duplicate of a request answered or running here)
3. ``classify``: no method, wrong content type, too large, unknown method (an error reply at
   once); otherwise the handler to run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from reqrep.common import envelope
from reqrep.common.config import Settings
from reqrep.worker.service import Handler, Service

__all__ = [
    "DEADLINE_HEADER",
    "DELIVERY_COUNT_HEADER",
    "Delivery",
    "Expired",
    "Passed",
    "Poison",
    "Unanswerable",
    "classify",
    "deadline_of",
    "screen",
    "too_large",
]

DEADLINE_HEADER = "x-deadline"  # the caller's deadline, Unix time in milliseconds
DELIVERY_COUNT_HEADER = "x-delivery-count"  # set by quorum queues on redeliveries


@dataclasses.dataclass(frozen=True)
class Delivery:
    """The parts of a delivered request the decisions need, as the broker handed them over
    (pika gives a property that is not UTF-8 as bytes, so nothing here is trusted to be str)."""

    method: Any
    correlation_id: Any
    reply_to: Any
    content_type: Any
    message_id: Any
    headers: Any
    redelivered: bool
    size: int


@dataclasses.dataclass(frozen=True)
class Unanswerable:
    missing: str  # "reply_to" or "correlation_id"


@dataclasses.dataclass(frozen=True)
class Expired:
    deadline_ms: int


@dataclasses.dataclass(frozen=True)
class Poison:
    deliveries: int
    error: envelope.ErrorInfo


@dataclasses.dataclass(frozen=True)
class Passed:
    deadline_ms: int | None
    delivery_count: int


def screen(
    delivery: Delivery, settings: Settings, now_ms: float
) -> Unanswerable | Expired | Poison | Passed:
    """The checks that come before the reply cache."""
    if not isinstance(delivery.reply_to, str) or not delivery.reply_to:
        return Unanswerable("reply_to")
    if not delivery.correlation_id:
        return Unanswerable("correlation_id")
    headers = delivery.headers if isinstance(delivery.headers, dict) else {}
    deadline_ms = _int_header(headers, DEADLINE_HEADER)
    if deadline_ms is not None and now_ms > deadline_ms:
        return Expired(deadline_ms)  # its caller has given up: running it helps nobody
    # The broker sets x-delivery-count on redeliveries; on a first delivery the header, if any,
    # came from the publisher and proves nothing.
    # x-delivery-count counts the earlier deliveries: those whose worker died (or gave the
    # request back). Delivery max_redeliveries + 1, after max_redeliveries deaths, is refused.
    count = (_int_header(headers, DELIVERY_COUNT_HEADER) or 0) if delivery.redelivered else 0
    if count >= settings.max_redeliveries:
        deliveries = count + 1
        error = envelope.ErrorInfo(
            envelope.POISON_REQUEST,
            "PoisonRequest",
            f"the request was delivered {deliveries} times and its worker died on each of the "
            f"{count} before this one; it was dead-lettered instead of being run again",
            {"delivery_count": deliveries},
        )
        return Poison(deliveries, error)
    return Passed(deadline_ms, count)


def classify(
    delivery: Delivery, service: Service, settings: Settings
) -> Handler | envelope.ErrorInfo:
    """The handler for a request, or why it has none (answered at once, off the pool)."""
    problem = envelope.check_request(delivery.method, delivery.content_type) or too_large(
        delivery, settings
    )
    if problem is not None:
        return problem
    handler = service.get(delivery.method)
    if handler is None:
        return envelope.ErrorInfo(
            envelope.METHOD_NOT_FOUND,
            "MethodNotFound",
            f"service {service.name!r} has no method {delivery.method!r}",
            {"methods": service.methods},
        )
    return handler


def too_large(delivery: Delivery, settings: Settings) -> envelope.ErrorInfo | None:
    """Why a request is refused for its size, if it is."""
    limit = settings.max_message_bytes
    if delivery.size <= limit:
        return None
    return envelope.ErrorInfo(
        envelope.BAD_REQUEST,
        "MessageTooLarge",
        f"request body of {delivery.size} bytes exceeds max_message_bytes={limit}",
    )


def deadline_of(headers: Any) -> int | None:
    """The deadline (``x-deadline``, Unix time in milliseconds) a message carries, if usable."""
    return _int_header(headers, DEADLINE_HEADER) if isinstance(headers, dict) else None


def _int_header(headers: dict[str, Any], name: str) -> int | None:
    """An AMQP integer, or a finite float (rounded down); anything else counts as absent."""
    value = headers.get(name)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return math.floor(value)
    return None
