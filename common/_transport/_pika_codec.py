"""Bytes on the wire, written and read without pika's generic marshalling: pure functions.

The short roads of ``_pika_fast.py`` use these on reqrep's own connections:

- ``encode_properties``: a message's properties, byte for byte what pika's
  ``BasicProperties.encode`` writes. pika encodes field by field through generic helpers (an
  ``isinstance`` chain, a ``struct.pack`` and an assert per field). Here the fields that repeat
  from message to message (content type, ``reply_to``, ``type``, ``user_id``...) keep their
  encoded bytes in a small cache, and header values of the kinds reqrep itself sends (strings,
  integers) are written inline; anything else goes through pika's own encoder.
- ``decode_properties``: the other way, into reqrep's ``Properties``, with exactly pika's values
  (a short string is ``str`` if it is UTF-8 and ``bytes`` if not; 64-bit header integers signed
  or not as the installed pika reads them). Malformed input raises where pika's decoder raises.
- ``publish_frames`` / ``ack_frame``: a ``basic.publish`` (method, header and body frames) and a
  ``basic.ack``, as one piece of bytes each.

``tests/unit/transport/test_pika_codec.py`` compares every one with pika's own on the installed
pika. Threads: any; the caches are dicts whose reads and writes the GIL keeps whole.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pika.data
import pika.spec
from pika.exceptions import ShortStringTooLong

from reqrep.common._transport._types import Properties

__all__ = [
    "ack_frame",
    "decode_properties",
    "decode_short_string",
    "encode_properties",
    "from_pika",
    "publish_frames",
    "short_string",
    "to_pika",
]

_B = pika.spec.BasicProperties
_pack_flags = struct.Struct(">H").pack
_pack_int = struct.Struct(">i").pack
_pack_long = struct.Struct(">q").pack
_pack_len = struct.Struct(">I").pack
_pack_octet = struct.Struct(">B").pack
_pack_timestamp = struct.Struct(">Q").pack
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT63_MAX = 2**63 - 1
_LENGTHS = tuple(bytes((n,)) for n in range(256))  # a short string's length byte
_CACHE_MAX = 4096  # encoded short strings kept (values that repeat: queues, methods, keys)
_cached: dict[str | bytes, bytes] = {}


def short_string(value: str | bytes) -> bytes:
    """An AMQP short string, as pika writes it (``str`` as UTF-8, ``bytes`` as they are)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    try:
        return _LENGTHS[len(raw)] + raw
    except IndexError:
        raise ShortStringTooLong(raw) from None


def _repeated(value: str | bytes) -> bytes:
    """``short_string(value)`` for a value that repeats across messages: kept encoded."""
    encoded = _cached.get(value)
    if encoded is None:
        encoded = short_string(value)
        if len(_cached) >= _CACHE_MAX:
            _cached.clear()
        _cached[value] = encoded
    return encoded


def _table(table: dict[Any, Any]) -> bytes:
    """An AMQP field table, as pika writes it: strings and integers inline, the rest by pika."""
    parts: list[bytes] = []
    for key, value in table.items():
        parts.append(_repeated(key) if isinstance(key, str | bytes) else short_string(key))
        kind = type(value)
        if kind is str:
            raw = value.encode("utf-8")
            parts.append(b"S" + _pack_len(len(raw)) + raw)
        elif kind is int and _INT32_MIN <= value <= _INT32_MAX:
            parts.append(b"I" + _pack_int(value))
        elif kind is int and 0 <= value <= _INT63_MAX:
            # Every pika writes a non-negative 64-bit integer as "l" and these eight bytes
            # (1.3 packs it unsigned, 1.4 signed: the same bytes below 2**63). Negative ones
            # differ between versions: pika writes those below.
            parts.append(b"l" + _pack_long(value))
        else:
            pieces: list[bytes] = []
            pika.data.encode_value(pieces, value)
            parts.append(b"".join(pieces))
    body = b"".join(parts)
    return _pack_len(len(body)) + body


def encode_properties(properties: Properties) -> bytes:  # noqa: PLR0912 - one branch per field
    """The properties as pika's ``BasicProperties.encode`` writes them (joined)."""
    p = properties.__dict__
    flags = 0
    parts = [b""]  # the flags word goes here
    if (value := p["content_type"]) is not None:
        flags |= _B.FLAG_CONTENT_TYPE
        parts.append(_repeated(value))
    if (value := p["content_encoding"]) is not None:
        flags |= _B.FLAG_CONTENT_ENCODING
        parts.append(_repeated(value))
    if (value := p["headers"]) is not None:
        flags |= _B.FLAG_HEADERS
        parts.append(_table(value))
    if (value := p["delivery_mode"]) is not None:
        flags |= _B.FLAG_DELIVERY_MODE
        parts.append(_pack_octet(value))
    if (value := p["priority"]) is not None:
        flags |= _B.FLAG_PRIORITY
        parts.append(_pack_octet(value))
    correlation_id = p["correlation_id"]
    if correlation_id is not None:
        flags |= _B.FLAG_CORRELATION_ID
        correlation_bytes = short_string(correlation_id)
        parts.append(correlation_bytes)
    if (value := p["reply_to"]) is not None:
        flags |= _B.FLAG_REPLY_TO
        parts.append(_repeated(value))
    if (value := p["expiration"]) is not None:
        flags |= _B.FLAG_EXPIRATION
        parts.append(short_string(value))
    if (value := p["message_id"]) is not None:
        flags |= _B.FLAG_MESSAGE_ID
        # Without an idempotency key, a request's message id is its correlation id.
        parts.append(correlation_bytes if value == correlation_id else short_string(value))
    if (value := p["timestamp"]) is not None:
        flags |= _B.FLAG_TIMESTAMP
        parts.append(_pack_timestamp(value))
    if (value := p["type"]) is not None:
        flags |= _B.FLAG_TYPE
        parts.append(_repeated(value))
    if (value := p["user_id"]) is not None:
        flags |= _B.FLAG_USER_ID
        parts.append(_repeated(value))
    if (value := p["app_id"]) is not None:
        flags |= _B.FLAG_APP_ID
        parts.append(_repeated(value))
    if (value := p["cluster_id"]) is not None:
        flags |= _B.FLAG_CLUSTER_ID
        parts.append(_repeated(value))
    parts[0] = _pack_flags(flags)
    return b"".join(parts)


def to_pika(properties: Properties) -> Any:
    """pika's ``BasicProperties`` with the same fields (the plain road)."""
    fields = properties.__dict__
    return pika.spec.BasicProperties(**{k: v for k, v in fields.items() if k != "undecodable"})


def from_pika(properties: Any, undecodable: str | None = None) -> Properties:
    """reqrep's ``Properties`` with the fields of pika's ``BasicProperties`` (the plain road)."""
    made = Properties.__new__(Properties)
    made.__dict__ = {name: getattr(properties, name, None) for name in _ABSENT}
    made.undecodable = undecodable
    return made


# -- reading --------------------------------------------------------------------------------

_pika_value = pika.data.decode_value
_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from
# A 64-bit header value ("l"): signed in pika 1.4, unsigned in 1.3. Whichever pika is installed.
_minus_one = struct.pack(">q", -1)
_i64 = struct.Struct(">q" if _pika_value(b"l" + _minus_one, 0)[0] == -1 else ">Q").unpack_from
_LONG_STRING, _INT32, _INT64 = ord("S"), ord("I"), ord("l")
_CONTINUED = 1  # the flags continue in another word: no such property exists in 0-9-1

Decoder = Callable[[bytes, int], tuple[Any, int]]


def decode_short_string(buf: bytes, at: int) -> tuple[str | bytes, int]:
    """pika's ``data.decode_short_string``: ``str`` if UTF-8, else ``bytes``; and the end."""
    end = at + 1 + buf[at]
    raw = buf[at + 1 : end]
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return raw, end


def _octet(buf: bytes, at: int) -> tuple[int, int]:
    return buf[at], at + 1


def _timestamp(buf: bytes, at: int) -> tuple[int, int]:
    return _u64(buf, at)[0], at + 8


def _value(buf: bytes, at: int) -> tuple[Any, int]:
    kind = buf[at]
    if kind == _LONG_STRING:
        (size,) = _u32(buf, at + 1)
        end = at + 5 + size
        raw = buf[at + 5 : end]
        try:
            return raw.decode(), end
        except UnicodeDecodeError:
            return raw, end
    if kind == _INT64:
        return _i64(buf, at + 1)[0], at + 9
    if kind == _INT32:
        return _i32(buf, at + 1)[0], at + 5
    decoded: tuple[Any, int] = _pika_value(buf, at)
    return decoded


def _decode_table(buf: bytes, at: int) -> tuple[dict[str | bytes, Any], int]:
    (size,) = _u32(buf, at)
    at += 4
    limit = at + size
    table: dict[str | bytes, Any] = {}
    while at < limit:
        key, at = decode_short_string(buf, at)
        table[key], at = _value(buf, at)
    return table, at


# Every property, in the order of the flag bits (and of the fields on the wire).
_FIELDS: tuple[tuple[str, int, Decoder], ...] = (
    ("content_type", _B.FLAG_CONTENT_TYPE, decode_short_string),
    ("content_encoding", _B.FLAG_CONTENT_ENCODING, decode_short_string),
    ("headers", _B.FLAG_HEADERS, _decode_table),
    ("delivery_mode", _B.FLAG_DELIVERY_MODE, _octet),
    ("priority", _B.FLAG_PRIORITY, _octet),
    ("correlation_id", _B.FLAG_CORRELATION_ID, decode_short_string),
    ("reply_to", _B.FLAG_REPLY_TO, decode_short_string),
    ("expiration", _B.FLAG_EXPIRATION, decode_short_string),
    ("message_id", _B.FLAG_MESSAGE_ID, decode_short_string),
    ("timestamp", _B.FLAG_TIMESTAMP, _timestamp),
    ("type", _B.FLAG_TYPE, decode_short_string),
    ("user_id", _B.FLAG_USER_ID, decode_short_string),
    ("app_id", _B.FLAG_APP_ID, decode_short_string),
    ("cluster_id", _B.FLAG_CLUSTER_ID, decode_short_string),
)
_ABSENT: dict[str, Any] = dict.fromkeys(name for name, _flag, _decoder in _FIELDS)
_PLANS_MAX = 1024  # flags words remembered; there are at most 2**14 (with one bit unused)
_plans: dict[int, tuple[tuple[str, Decoder], ...]] = {}


def _plan(flags: int) -> tuple[tuple[str, Decoder], ...]:
    plan = tuple((name, decoder) for name, flag, decoder in _FIELDS if flags & flag)
    if len(_plans) >= _PLANS_MAX:
        _plans.clear()
    _plans[flags] = plan
    return plan


def decode_properties(buf: bytes, at: int) -> Properties:
    """The properties encoded at ``buf[at:]`` (after a content header's class, weight and body
    size), with the values pika's ``BasicProperties().decode(buf, at)`` would give."""
    (flags,) = _u16(buf, at)
    if flags & _CONTINUED:
        pikas = pika.spec.BasicProperties()
        pikas.decode(buf, at)
        return from_pika(pikas)
    plan = _plans.get(flags)
    if plan is None:
        plan = _plan(flags)
    at += 2
    values = _ABSENT.copy()
    for name, decoder in plan:
        values[name], at = decoder(buf, at)
    values["undecodable"] = None
    made = Properties.__new__(Properties)
    made.__dict__ = values
    return made


# -- frames -----------------------------------------------------------------------------------

_END = b"\xce"
_frame_head = struct.Struct(">BHL").pack
_content_head = struct.Struct(">HHQ").pack
_ack = struct.Struct(">BHLHHQ?").pack  # method frame head, then Basic.Ack's fields
_METHODS_MAX = 1024  # method frames kept: (channel, exchange, routing key, mandatory)
_methods: dict[tuple[int, str | bytes, str | bytes, bool], bytes] = {}


def _publish_method(
    channel: int, exchange: str | bytes, routing_key: str | bytes, mandatory: bool
) -> bytes:
    key = (channel, exchange, routing_key, mandatory)
    frame = _methods.get(key)
    if frame is None:
        # Basic.Publish: class 60, method 40, ticket 0, exchange, routing key, bits (mandatory).
        payload = (
            struct.pack(">HHH", 60, 40, 0)
            + short_string(exchange)
            + short_string(routing_key)
            + bytes((1 if mandatory else 0,))
        )
        frame = _frame_head(1, channel, len(payload)) + payload + _END
        if len(_methods) >= _METHODS_MAX:
            _methods.clear()
        _methods[key] = frame
    return frame


def publish_frames(
    channel: int,
    exchange: str | bytes,
    routing_key: str | bytes,
    body: bytes,
    properties: Properties,
    *,
    mandatory: bool,
    body_max: int,
) -> bytes:
    """A ``basic.publish`` with its header and body frames (the body cut into frames of at most
    ``body_max`` bytes), as pika would write them."""
    header = _content_head(60, 0, len(body)) + encode_properties(properties)
    parts = [
        _publish_method(channel, exchange, routing_key, mandatory),
        _frame_head(2, channel, len(header)),
        header,
        _END,
    ]
    for start in range(0, len(body), body_max):
        chunk = body[start : start + body_max]
        parts += (_frame_head(3, channel, len(chunk)), chunk, _END)
    return b"".join(parts)


def ack_frame(channel: int, delivery_tag: int, *, multiple: bool) -> bytes:
    """A ``basic.ack`` method frame: class 60, method 80, delivery tag, bits."""
    return _ack(1, channel, 13, 60, 80, delivery_tag, multiple) + _END
