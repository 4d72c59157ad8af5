"""Reading, replaying and purging a service's dead-letter queue (``PS.dead``), for ``Admin``.

AMQP 0-9-1 cannot read a queue without taking messages from it: ``peek`` takes up to ``limit``
messages without acknowledging them and hands them all back (``basic.nack``, requeue). A
classic queue puts them back where they were; a quorum queue counts this as a delivery and, on
RabbitMQ 3.10, puts them at its tail. Every function is bounded by its ``limit``.

``replay`` moves a dead letter back to the request queue as a new request: same body, method,
content type, correlation id and idempotency key (``message_id``); a fresh deadline
(``x-deadline`` and ``expiration``); the broker's death headers removed; and ``reply_to`` set to
the replaying session's own exclusive queue, so the operator sees each outcome. The original
caller gave up long ago and is not told. A reply that comes after the session ended is
returned to its worker (its queue is gone) and dropped there: nothing loops. The dead letter is
acknowledged (removed) only once the broker has confirmed the new request; if the request
queue refuses it, it goes back to the dead-letter queue.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
import os
import time
from typing import Any

import pika
import pika.exceptions

from reqrep.common import envelope
from reqrep.common.errors import (
    ConfigError,
    NoSuchService,
    PublishRejected,
    RemoteError,
    ReqrepError,
)

__all__ = ["DEADLINE_HEADER", "MAX_LIMIT", "DeadLetter", "Replayed", "Target"]

DEADLINE_HEADER = "x-deadline"
MAX_LIMIT = 10_000  # no command reads more messages than this in one go
_DEATH_HEADERS = ("x-death", "x-delivery-count")
_DEATH_PREFIXES = ("x-first-death-", "x-last-death-")


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

    @classmethod
    def read(cls, props: Any, body: bytes) -> DeadLetter:
        headers = props.headers or {}
        deaths = headers.get("x-death") or []
        first = deaths[-1] if deaths and isinstance(deaths[-1], dict) else {}
        reason = headers.get("x-first-death-reason") or first.get("reason")
        queue = headers.get("x-first-death-queue") or first.get("queue")
        when = first.get("time")
        return cls(
            correlation_id=props.correlation_id,
            message_id=props.message_id,
            method=props.type,
            reply_to=props.reply_to,
            reason=_text(reason),
            queue=_text(queue),
            died_at=when.isoformat() if isinstance(when, datetime.datetime) else None,
            deaths=sum(int(d.get("count", 1)) for d in deaths if isinstance(d, dict)),
            size=len(body),
            body=body.decode("utf-8", errors="replace"),
            headers=_json_safe(headers),
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
    queue: str
    dead_queue: str
    timeout: float
    persistent: bool


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def peek(channel: Any, queue: str, limit: int) -> list[DeadLetter]:
    """The first ``limit`` messages of ``queue``, handed back to it afterwards."""
    letters: list[DeadLetter] = []
    last_tag = None
    try:
        for _ in range(check_limit(limit)):
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            letters.append(DeadLetter.read(props, body))
            last_tag = method.delivery_tag
    finally:
        if last_tag is not None and channel.is_open:
            channel.basic_nack(last_tag, multiple=True, requeue=True)
    return letters


def purge(channel: Any, queue: str, limit: int | None) -> int:
    """Remove the first ``limit`` messages of ``queue`` (all of them if None)."""
    if limit is None:
        return int(channel.queue_purge(queue).method.message_count)
    removed = 0
    for _ in range(check_limit(limit)):
        method, _props, _body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        removed += 1
    return removed


def replay(connection: Any, channel: Any, target: Target, limit: int) -> list[Replayed]:
    """Move up to ``limit`` dead letters to the request queue and wait for their replies until
    their fresh deadline. See the module docstring for what is kept and what is changed."""
    check_limit(limit)
    channel.confirm_delivery()
    reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    sent: dict[str, str | None] = {}  # correlation id -> method, in the order sent
    outcomes: dict[str, Replayed] = {}

    def on_reply(_channel: Any, _deliver: Any, props: Any, body: bytes) -> None:
        cid = props.correlation_id
        if cid in sent and cid not in outcomes:
            outcomes[cid] = _outcome(cid, sent[cid], body)

    channel.basic_consume(reply_queue, on_reply, auto_ack=True)
    deadline = time.monotonic() + target.timeout
    deadline_ms = int((time.time() + target.timeout) * 1000)
    for _ in range(limit):
        method, props, body = channel.basic_get(target.dead_queue, auto_ack=False)
        if method is None:
            break
        cid = props.correlation_id or f"replay-{os.urandom(8).hex()}"
        fresh = _fresh_properties(props, cid, reply_queue, target, deadline_ms)
        try:
            channel.basic_publish("", target.queue, body, fresh, mandatory=True)
        except pika.exceptions.UnroutableError:
            channel.basic_nack(method.delivery_tag, requeue=True)
            raise NoSuchService(target.service) from None
        except pika.exceptions.NackError:
            channel.basic_nack(method.delivery_tag, requeue=True)
            raise PublishRejected("the broker refused a replayed request (nack)") from None
        channel.basic_ack(method.delivery_tag)
        sent[cid] = props.type
    while len(outcomes) < len(sent) and (left := deadline - time.monotonic()) > 0:
        connection.process_data_events(time_limit=min(left, 0.5))
    return [outcomes.get(cid) or Replayed(cid, m, "no reply") for cid, m in sent.items()]


def _fresh_properties(
    props: Any, cid: str, reply_queue: str, target: Target, deadline_ms: int
) -> Any:
    headers = {
        k: v
        for k, v in (props.headers or {}).items()
        if k not in _DEATH_HEADERS and not k.startswith(_DEATH_PREFIXES)
    }
    headers[DEADLINE_HEADER] = deadline_ms
    return pika.BasicProperties(
        content_type=props.content_type,
        correlation_id=cid,
        reply_to=reply_queue,
        type=props.type,
        message_id=props.message_id,
        delivery_mode=2 if target.persistent else 1,
        expiration=str(max(1, math.ceil(target.timeout * 1000))),
        headers=headers,
    )


def _outcome(cid: str, method: str | None, body: bytes) -> Replayed:
    try:
        return Replayed(cid, method, "ok", result=envelope.decode_reply(body))
    except RemoteError as exc:
        error = {"code": exc.code, "type": exc.type, "message": exc.message}
        return Replayed(cid, method, exc.code, error=error)
    except ReqrepError as exc:
        return Replayed(cid, method, "malformed_reply", error={"message": str(exc)})


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_safe(value: Any) -> Any:
    """AMQP table values as JSON can carry them (timestamps as ISO 8601, bytes as text)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    convert = _CONVERT.get(type(value), str)
    return convert(value)


_CONVERT: dict[type, Any] = {
    datetime.datetime: datetime.datetime.isoformat,
    decimal.Decimal: float,
}
