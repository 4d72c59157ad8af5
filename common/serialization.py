"""JSON in and out: the only body format on the wire (never pickle).

One place to encode and decode, so that a faster codec can replace the standard library's without
touching callers, and so that every failure is a ``SerializationError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from reqrep.common.errors import SerializationError

__all__ = ["CONTENT_TYPE", "dumps", "is_json_content_type", "loads"]

CONTENT_TYPE = "application/json"

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large for a double")
    return value


# Python's decoder accepts NaN and Infinity by default, and reads 1e400 as infinity; none is
# JSON that other languages' parsers accept, so neither side of the wire may use them.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; NaN and infinity are refused (not JSON)."""
    try:
        return _encoder.encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from exc


def loads(body: bytes) -> Any:
    """Decode a UTF-8 JSON document."""
    try:
        text = body.decode("utf-8")
        return _decoder.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"body is not UTF-8 JSON: {exc}") from exc


def is_json_content_type(content_type: object) -> bool:
    """True for ``application/json``, with or without parameters such as a charset.

    Anything but a ``str`` is not (pika hands over a property that is not UTF-8 as bytes).
    """
    if not isinstance(content_type, str) or not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == CONTENT_TYPE
