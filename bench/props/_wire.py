"""The bytes each property adds to a request and a reply, from pika's own encoder."""

from __future__ import annotations

from collections.abc import Collection

import pika.spec

from bench.cases.raw_props import new_correlation_id, reply_properties, request_properties

__all__ = ["REQREP_EXCHANGE", "added_bytes", "encoded"]

# reqrep's request exchange under the default namespace (topology.request_exchange("")); the
# benchmark's own exchange has a longer, unique name.
REQREP_EXCHANGE = "reqrep.requests"
_REPLY_TO = "amq.gen-" + "x" * 22  # a server-named callback queue's length
_NOW = 1_800_000_000.0  # a fixed clock: x-deadline's value, so its size, is a Unix time in ms
_COUNTER = 100_000  # a flipped correlation_id is the raw cases' counter, here six digits
_REQUIRED = {"reply_to": "reply_to", "reply.correlation_id": "correlation_id"}


def encoded(properties: pika.spec.BasicProperties) -> int:
    """Bytes of the properties in the content header frame (flags and values)."""
    return len(b"".join(properties.encode()))


def _sizes(flipped: Collection[str], user_id: str) -> tuple[int, int]:
    correlation_id = new_correlation_id(flipped, _COUNTER)
    request = request_properties(
        flipped, correlation_id=correlation_id, reply_to=_REPLY_TO, durable=True, now=_NOW
    )
    reply = reply_properties(flipped, correlation_id=correlation_id, user_id=user_id)
    exchange = REQREP_EXCHANGE if "exchange" not in flipped else ""
    return encoded(request) + len(exchange), encoded(reply)


def added_bytes(name: str, usual: bool, user_id: str = "guest") -> tuple[int, int]:
    """What having ``name`` adds to (request, reply), in bytes as published: the usual set
    against the set with ``name`` flipped (for a property usually off, the other way round).
    The exchange counts its name in ``basic.publish``; ``mandatory`` is a flag bit (0)."""
    if name in _REQUIRED:  # never run without: count it on the usual message alone
        correlation_id = new_correlation_id((), _COUNTER)
        request = request_properties(
            (), correlation_id=correlation_id, reply_to=_REPLY_TO, durable=True, now=_NOW
        )
        reply = reply_properties((), correlation_id=correlation_id, user_id=user_id)
        message, side = (request, 0) if name == "reply_to" else (reply, 1)
        full = encoded(message)
        setattr(message, _REQUIRED[name], None)
        sizes = [0, 0]
        sizes[side] = full - encoded(message)
        return sizes[0], sizes[1]
    usual_set = _sizes((), user_id)
    flipped_set = _sizes((name,), user_id)
    with_it, without = (usual_set, flipped_set) if usual else (flipped_set, usual_set)
    return with_it[0] - without[0], with_it[1] - without[1]
