"""Values as they cross the wire in the memory transport: what pika would make of them.

The in-memory transport has no wire, but code above the seam must not get away with values
pika could not send, nor receive values pika would not hand over. So what is published or
declared goes through ``wire_properties`` / ``wire_table``: a value pika cannot encode raises
``Unencodable`` (the channel turns it into PublishError, nothing sent), and every other comes
back as pika 1.4 decodes it (a short string is ``str`` if it is UTF-8, else ``bytes``; an
integer is ``int``; a ``datetime`` comes back aware, in UTC, to the second; a ``Decimal``
normalised; a tuple or a float cannot be sent). ``tests/unit/transport/test_memory_wire.py``
compares each with the installed pika's own encoder and decoder; pika itself is not imported
here (the memory transport works without it). pika 1.3 differs in two ways, not followed here:
it decodes a timestamp to a naive datetime, and it sends integers up to 2**64 - 1.

Threads: any; pure functions.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from reqrep.common._transport._types import PROPERTY_NAMES, Properties

__all__ = ["Unencodable", "copy_properties", "short_string", "wire_properties", "wire_table"]

_SHORT_FIELDS = tuple(
    n for n in PROPERTY_NAMES if n not in ("headers", "delivery_mode", "priority", "timestamp")
)


class Unencodable(Exception):
    """A value pika could not encode (so it would not be sent)."""


def short_string(value: Any, what: str) -> str | bytes:
    """An AMQP short string as the receiver decodes it (str if UTF-8, else bytes)."""
    if isinstance(value, str):
        raw = _utf8(value)
    elif isinstance(value, bytes):
        raw = value
    else:
        raise Unencodable(f"{what} must be a string, got {type(value).__name__}")
    if len(raw) > 255:
        raise Unencodable(f"{what} is longer than 255 bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise Unencodable(f"{value!r} is not UTF-8 (a lone surrogate)") from None


def wire_properties(properties: Properties) -> Properties:
    """``properties`` as a receiver decodes them after pika encoded them; Unencodable if
    pika could not."""
    made = Properties()
    values = properties.__dict__
    for name in _SHORT_FIELDS:
        value = values[name]
        if value is not None:
            setattr(made, name, short_string(value, name))
    for name, top in (("delivery_mode", 255), ("priority", 255), ("timestamp", 2**64 - 1)):
        value = values[name]
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise Unencodable(f"{name} must be an integer from 0 to {top}, got {value!r}")
            setattr(made, name, int(value))
    if values["headers"] is not None:
        made.headers = wire_table(values["headers"])
    return made


def wire_table(table: Any) -> dict[str | bytes, Any]:
    if not isinstance(table, dict):
        raise Unencodable(f"a table must be a dict, got {type(table).__name__}")
    return {short_string(k, "a table key"): _wire_value(v) for k, v in table.items()}


def _wire_value(value: Any) -> Any:  # noqa: PLR0911 - one return per AMQP field type
    """A field value as pika encodes it and decodes it again."""
    kind = type(value)
    if kind is bytes or value is None or kind is bool:
        return value
    if isinstance(value, str):
        return _utf8(value).decode("utf-8")
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise Unencodable(f"integer {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, Decimal):
        return _wire_decimal(value)
    if isinstance(value, datetime):
        seconds = calendar.timegm(value.utctimetuple())
        if seconds < 0:
            raise Unencodable(f"timestamp before 1970: {value!r}")
        return datetime.fromtimestamp(seconds, timezone.utc)  # pika 1.4's decoding
    if isinstance(value, dict):
        return wire_table(value)
    if isinstance(value, list):
        return [_wire_value(v) for v in value]
    raise Unencodable(f"{kind.__name__} is not an AMQP field value (pika cannot encode it)")


def _wire_decimal(value: Decimal) -> Decimal:
    value = value.normalize()
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise Unencodable(f"decimal {value} is not finite")
    decimals = -exponent if exponent < 0 else 0
    raw = int(value * (Decimal(10) ** decimals))
    if decimals > 255 or not -(2**31) <= raw < 2**31:
        raise Unencodable(f"decimal {value} does not fit AMQP's decimal")
    return Decimal(raw) * (Decimal(10) ** -decimals)


def _copy_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    return value  # every other wire value is immutable


def copy_properties(properties: Properties) -> Properties:
    """A copy a receiver may change without touching the broker's."""
    made = Properties.__new__(Properties)
    made.__dict__ = dict(properties.__dict__)
    if made.headers is not None:
        made.headers = _copy_value(made.headers)
    return made
