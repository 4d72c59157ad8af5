"""A service's dead letters (``PS.dead``) as data: reading one, replaying one, for ``Admin``.

AMQP 0-9-1 cannot read a queue without taking messages from it: ``Admin.dead_letters`` takes up
to ``limit`` messages without acknowledging them and hands them all back (``basic.nack``,
requeue). A classic queue puts them back where they were; a quorum queue counts this as a
delivery and, on RabbitMQ 3.10, puts them at its tail. Every operation is bounded by its
``limit``.

``Admin.replay`` moves a dead letter back to the request queue as a new request: same body,
method, content type, correlation id and idempotency key (``message_id``); a fresh deadline
(``x-deadline`` and ``expiration``); the broker's death headers removed; and ``reply_to`` set to
the replaying session's own exclusive queue, so the operator sees each outcome (two dead letters
with the same correlation id each get theirs). The original caller gave up long ago and is not
told. A reply that comes after the session ended is returned to its worker (its queue is gone)
and dropped there: nothing loops. The dead letter is acknowledged (removed) only once the
broker has confirmed the new request; if the request queue refuses it, it goes back to the
dead-letter queue.

Anything may sit in a dead-letter queue (whoever can publish to the default exchange can put a
message there), so reading one never fails: headers of the wrong shape read as absent.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
from typing import Any

from reqrep.common import envelope
from reqrep.common._transport import Properties
from reqrep.common.errors import ConfigError, RemoteError, ReqrepError

__all__ = [
    "DEADLINE_HEADER",
    "MAX_LIMIT",
    "DeadLetter",
    "Replayed",
    "Target",
    "check_limit",
    "fresh_properties",
    "outcome",
]

DEADLINE_HEADER = "x-deadline"
MAX_LIMIT = 10_000  # no command reads more messages than this in one go
# What a replay removes: the broker's account of the deaths, and reqrep's count of refused
# replies (the replayed request starts afresh).
_DEATH_HEADERS = ("x-death", "x-delivery-count", "x-reqrep-refused")
_DEATH_PREFIXES = ("x-first-death-", "x-last-death-")
_MAX_DEATHS = 1_000_000_000  # a count beyond this is not the broker's


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered request: why and when it died, and what it was.

    ``reason`` is the broker's: ``expired`` (its caller's deadline passed in the queue),
    ``rejected`` (poison, or unanswerable: no reply_to or correlation id), ``delivery_limit``
    (the broker's backstop on quorum queues) or ``maxlen``.
    """

    correlation_id: str | None
    message_id: str | None
    method: str | None
    reply_to: str | None
    reason: str | None
    queue: str | None  # the queue it died in
    died_at: str | None  # ISO 8601, UTC, of its first death
    deaths: int  # how often it was dead-lettered
    size: int
    body: str  # UTF-8 text (undecodable bytes replaced)
    headers: dict[str, Any]  # JSON-safe
    undecodable: str | None = None  # why its properties could not be read (then all None)

    @classmethod
    def read(cls, props: Any, body: bytes) -> DeadLetter:
        headers = props.headers if isinstance(props.headers, dict) else {}
        deaths = headers.get("x-death")
        deaths = [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
        first = deaths[-1] if deaths else {}
        reason = headers.get("x-first-death-reason") or first.get("reason")
        queue = headers.get("x-first-death-queue") or first.get("queue")
        when = first.get("time")
        return cls(
            correlation_id=_text(props.correlation_id),
            message_id=_text(props.message_id),
            method=_text(props.type),
            reply_to=_text(props.reply_to),
            reason=_text(reason),
            queue=_text(queue),
            died_at=when.isoformat() if isinstance(when, datetime.datetime) else None,
            deaths=sum(_count(d.get("count", 1)) for d in deaths),
            size=len(body),
            body=body.decode("utf-8", errors="replace"),
            headers=_json_safe(headers),
            undecodable=getattr(props, "undecodable", None),
        )

    def to_wire(self, *, full: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not full:
            del data["body"], data["headers"]
        return data


@dataclasses.dataclass(frozen=True)
class Replayed:
    """What became of one replayed request: ``ok``, an error code, or ``no reply`` (its
    deadline passed first, or the session stopped waiting)."""

    correlation_id: str
    method: str | None
    outcome: str
    result: Any = None
    error: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Target:
    service: str
    exchange: str  # the requests exchange
    queue: str
    dead_queue: str
    timeout: float
    persistent: bool


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def fresh_properties(
    props: Properties, cid: str, reply_queue: str, target: Target, deadline_ms: int
) -> Properties:
    """A dead letter's properties as a new request (see the module docstring)."""
    headers = {
        k: v
        for k, v in (props.headers if isinstance(props.headers, dict) else {}).items()
        if k not in _DEATH_HEADERS and not (isinstance(k, str) and k.startswith(_DEATH_PREFIXES))
    }
    headers[DEADLINE_HEADER] = deadline_ms
    return Properties(
        content_type=props.content_type,
        correlation_id=cid,
        reply_to=reply_queue,
        type=props.type,
        message_id=props.message_id,
        delivery_mode=2 if target.persistent else 1,
        expiration=str(max(1, math.ceil(target.timeout * 1000))),
        headers=headers,
    )


def outcome(cid: str, method: str | None, body: bytes) -> Replayed:
    """The outcome a reply body tells."""
    try:
        return Replayed(cid, method, "ok", result=envelope.decode_reply(body))
    except RemoteError as exc:
        error = {"code": exc.code, "type": exc.type, "message": exc.message}
        return Replayed(cid, method, exc.code, error=error)
    except ReqrepError as exc:
        return Replayed(cid, method, "malformed_reply", error={"message": str(exc)})


def _count(value: object) -> int:
    """An ``x-death`` count: a whole number the broker could have written, else 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_DEATHS:
        return 1
    return value


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """AMQP table values as JSON can carry them (timestamps as ISO 8601, bytes as text)."""
    if depth > 32:
        return "..."
    if isinstance(value, dict):
        return {_text(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, bool)):
        return value
    convert = _CONVERT.get(type(value), str)
    return convert(value)


_CONVERT: dict[type, Any] = {
    datetime.datetime: datetime.datetime.isoformat,
    decimal.Decimal: str,
    float: lambda v: v if math.isfinite(v) else str(v),  # JSON has no NaN or infinity
}
