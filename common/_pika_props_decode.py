"""A message's properties decoded in about 60% of pika's time, into pika's own ``BasicProperties``.

pika decodes the properties of every message field by field, all fourteen of them: a flag test
per field, and a call through ``decode_short_string`` (``struct.unpack_from``, a slice, a UTF-8
decode) for each string, then ``decode_table`` and ``decode_value`` for the headers. That is
about 15 us for a request's properties on a worker's I/O thread, and 5 us for a reply's on a
requestor's, on one of our slower machines: for every call, before anything of reqrep runs.

``decode_properties`` reads the flags word once, and keeps for each flags word it has seen the
list of the fields present, each with its decoder; the absent ones start as ``None`` from a
ready dict. The values are exactly pika's: a short string is ``str`` if it is UTF-8 and
``bytes`` if not; a header is decoded here if it is one of the three kinds reqrep itself sends
(long string, 32- and 64-bit integer, the latter signed or not as the installed pika reads
it), and by pika's ``decode_value`` otherwise.
Malformed input raises where pika's decoder raises, so the caller can hand the message to
pika's road (which marks it, see ``common/_pika_decode.py``).
``tests/unit/test_pika_props_decode.py`` compares the two on generated properties.

Threads: any. The plan cache is a dict whose reads and writes the GIL keeps whole.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pika.data
import pika.spec

__all__ = ["decode_properties", "decode_short_string"]

_Properties = pika.spec.BasicProperties
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


def _table(buf: bytes, at: int) -> tuple[dict[str | bytes, Any], int]:
    (size,) = _u32(buf, at)
    at += 4
    limit = at + size
    table: dict[str | bytes, Any] = {}
    while at < limit:
        key, at = decode_short_string(buf, at)
        table[key], at = _value(buf, at)
    return table, at


_B = _Properties
# Every property, in the order of the flag bits (and of the fields on the wire).
_FIELDS: tuple[tuple[str, int, Decoder], ...] = (
    ("content_type", _B.FLAG_CONTENT_TYPE, decode_short_string),
    ("content_encoding", _B.FLAG_CONTENT_ENCODING, decode_short_string),
    ("headers", _B.FLAG_HEADERS, _table),
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
_ABSENT = dict.fromkeys(name for name, _flag, _decoder in _FIELDS)
_PLANS_MAX = 1024  # flags words remembered; there are at most 2**14 (with one bit unused)
_plans: dict[int, tuple[tuple[str, Decoder], ...]] = {}


def _plan(flags: int) -> tuple[tuple[str, Decoder], ...]:
    plan = tuple((name, decoder) for name, flag, decoder in _FIELDS if flags & flag)
    if len(_plans) >= _PLANS_MAX:
        _plans.clear()
    _plans[flags] = plan
    return plan


def decode_properties(buf: bytes, at: int) -> Any:
    """The ``BasicProperties`` encoded at ``buf[at:]`` (after a content header's class, weight
    and body size), as pika's ``BasicProperties().decode(buf, at)`` would return them."""
    (flags,) = _u16(buf, at)
    if flags & _CONTINUED:
        return _Properties().decode(buf, at)
    plan = _plans.get(flags)
    if plan is None:
        plan = _plan(flags)
    at += 2
    values = _ABSENT.copy()
    for name, decoder in plan:
        values[name], at = decoder(buf, at)
    properties = _Properties.__new__(_Properties)
    properties.__dict__ = values
    return properties
