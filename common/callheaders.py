"""Call metadata: the application's own headers, from ``call(..., headers=...)`` to
``current().headers``.

They travel in one AMQP header, ``x-reqrep-headers``, whose value is a table of string values
under the application's names. One table rather than a header each: the application's names
then never meet reqrep's own headers (``x-deadline``, ``traceparent``...) nor the broker's
(``x-death``, ``x-delivery-count``), so no user header can overwrite or forge one of them, and
its names need no prefix rule. The body stays the payload alone, as untyped workers and other
languages' clients read it.

Pure functions over plain values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reqrep.common.errors import ConfigError

__all__ = ["HEADERS_HEADER", "MAX_HEADERS", "MAX_VALUE_CHARS", "check", "extract"]

HEADERS_HEADER = "x-reqrep-headers"
MAX_HEADERS = 32
MAX_VALUE_CHARS = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check(headers: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of a call's ``headers``; ConfigError if one is not a name (1-64 letters, digits,
    ``_``, ``.`` or ``-``) with a string value of at most ``MAX_VALUE_CHARS``, or if there are
    more than ``MAX_HEADERS``."""
    if not headers:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigError(f"headers must be a mapping of names to strings, got {headers!r}")
    if len(headers) > MAX_HEADERS:
        raise ConfigError(f"at most {MAX_HEADERS} headers may go with a call, got {len(headers)}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"header name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
            raise ConfigError(
                f"header {name!r}: the value must be a string of at most {MAX_VALUE_CHARS} "
                "characters"
            )
        checked[name] = value
    return checked


def extract(amqp_headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The application's headers of a delivered request: its ``x-reqrep-headers`` table,
    keeping only what ``check`` would have let through (anyone may publish a request)."""
    table = amqp_headers.get(HEADERS_HEADER) if isinstance(amqp_headers, Mapping) else None
    if not isinstance(table, Mapping):
        return {}
    found: dict[str, str] = {}
    for name, value in table.items():
        if len(found) >= MAX_HEADERS:
            break
        named = isinstance(name, str) and _NAME.fullmatch(name) is not None
        if named and isinstance(value, str) and len(value) <= MAX_VALUE_CHARS:
            found[name] = value
    return found
