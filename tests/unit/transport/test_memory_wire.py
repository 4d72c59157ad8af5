"""The memory transport's wire values against the installed pika's encoder and decoder.

``_memory_wire`` must let through exactly what pika can send, and hand over what pika would
decode: each case here is encoded and decoded by pika and by the memory transport.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pika.data
import pika.spec
import pytest

from reqrep.common._transport import PROPERTY_NAMES, Properties
from reqrep.common._transport._memory_wire import (
    Unencodable,
    copy_properties,
    wire_properties,
    wire_table,
)

# pika 1.3 decodes a timestamp to a naive datetime and sends integers up to 2**64 - 1 (as an
# unsigned "l"); the memory transport follows pika 1.4, the newest CI runs on.
PIKA_1_4 = tuple(int(part) for part in pika.__version__.split(".")[:2]) >= (1, 4)
AS_PIKA_1_4 = pytest.mark.skipif(not PIKA_1_4, reason="pika 1.3 differs: see PIKA_1_4")

VALUES: list[Any] = [
    "text",
    "é and ☃",
    "",
    b"\xff\x00 raw",
    b"utf-8 bytes",
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**63 - 1,
    -(2**63),
    True,
    False,
    None,
    Decimal("1.50"),
    Decimal("-0.001"),
    Decimal("1E+3"),
    Decimal(0),
    pytest.param(datetime(2024, 5, 6, 7, 8, 9, 999999), marks=AS_PIKA_1_4),
    pytest.param(
        datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))), marks=AS_PIKA_1_4
    ),
    [1, "two", [b"three"], {"four": 4}],
    [],
    {"nested": {"deeper": {"deepest": [None]}}},
    {},
]

UNENCODABLE: list[Any] = [
    (1, 2),
    1.5,
    pytest.param(2**63, marks=AS_PIKA_1_4),
    -(2**63) - 1,
    {1, 2},
    bytearray(b"x"),
    object(),
    Decimal("NaN"),
    Decimal("1E-300"),
    Decimal(2**40),
    "\udc80",  # a lone surrogate
]


def shape(value: Any) -> Any:
    """``value`` with every type spelled out (pika's ``long`` counts as ``int``), so that
    equal values of other types (``1.5`` and ``1.50``, naive and aware times) differ."""
    if isinstance(value, dict):
        return ("dict", [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [shape(v) for v in value])
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", int(value))
    return (type(value).__name__, repr(value))


def pika_round_trip(table: dict[Any, Any]) -> dict[Any, Any]:
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, table)
    decoded, _end = pika.data.decode_table(b"".join(pieces), 0)
    return dict(decoded)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_header_value_arrives_as_pika_decodes_it(value: Any) -> None:
    table = {"key": value, b"bytes key": value}
    assert shape(wire_table(table)) == shape(pika_round_trip(table))


@pytest.mark.parametrize("value", UNENCODABLE, ids=repr)
def test_a_value_pika_cannot_encode_is_refused(value: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - pika raises assorted types
        pika_round_trip({"key": value})
    with pytest.raises(Unencodable):
        wire_table({"key": value})


def test_a_table_key_longer_than_a_short_string_is_refused() -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - pika raises assorted types
        pika_round_trip({"k" * 256: 1})
    with pytest.raises(Unencodable):
        wire_table({"k" * 256: 1})


def pika_properties(properties: Properties) -> Properties:
    fields = {n: getattr(properties, n) for n in PROPERTY_NAMES}
    encoded = b"".join(pika.spec.BasicProperties(**fields).encode())
    decoded = pika.spec.BasicProperties()
    decoded.decode(encoded)
    return Properties(**{n: getattr(decoded, n) for n in PROPERTY_NAMES})


@pytest.mark.parametrize(
    "properties",
    [
        Properties(),
        Properties(
            content_type="application/json",
            content_encoding="utf-8",
            headers={"a": 1, "b": [b"\xff"]},
            delivery_mode=2,
            priority=9,
            correlation_id=b"\xfe\xff not utf-8",
            reply_to=b"amq.gen-utf8",
            expiration="1000",
            message_id="m" * 255,
            timestamp=2**40,
            type="call",
            user_id="guest",
            app_id="reqrep",
            cluster_id="",
        ),
    ],
    ids=["empty", "every field"],
)
def test_properties_arrive_as_pika_decodes_them(properties: Properties) -> None:
    ours, pikas = wire_properties(properties), pika_properties(properties)
    assert [shape(getattr(ours, n)) for n in PROPERTY_NAMES] == [
        shape(getattr(pikas, n)) for n in PROPERTY_NAMES
    ]


@pytest.mark.parametrize(
    "properties",
    [
        Properties(correlation_id="x" * 256),
        Properties(delivery_mode=256),
        Properties(priority=-1),
        Properties(timestamp=2**64),
        Properties(headers={"t": (1,)}),
    ],
    ids=["long short string", "delivery mode", "priority", "timestamp", "tuple header"],
)
def test_properties_pika_cannot_encode_are_refused(properties: Properties) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - pika raises assorted types
        pika_properties(properties)
    with pytest.raises(Unencodable):
        wire_properties(properties)


def test_a_copy_shares_nothing_that_can_change() -> None:
    original = wire_properties(Properties(headers={"list": [1, {"d": [2]}]}, reply_to="r"))
    copy = copy_properties(original)
    copy.headers["list"][1]["d"].append(3)
    copy.reply_to = "other"
    assert original.headers == {"list": [1, {"d": [2]}]}
    assert original.reply_to == "r"
