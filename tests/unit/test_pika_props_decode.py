"""common/_pika_props_decode.py: properties decode to exactly what pika's own decoder returns,
and malformed ones fail where pika's fail."""

from __future__ import annotations

import decimal
import struct
from typing import Any

import hypothesis
import pika
import pika.data
import pytest
from hypothesis import strategies as st

from reqrep.common import _pika_props_decode
from reqrep.common._pika_props_decode import decode_properties

_SHORT = st.one_of(st.text(max_size=40), st.binary(max_size=40))  # bytes: often not UTF-8
_VALUES = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=2),
)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "content_type": _SHORT,
    "content_encoding": _SHORT,
    "headers": st.dictionaries(st.text(max_size=20), _VALUES, max_size=5),
    "delivery_mode": st.integers(0, 255),
    "priority": st.integers(0, 255),
    "correlation_id": _SHORT,
    "reply_to": _SHORT,
    "expiration": _SHORT,
    "message_id": _SHORT,
    "timestamp": st.integers(0, 2**64 - 1),
    "type": _SHORT,
    "user_id": _SHORT,
    "app_id": _SHORT,
    "cluster_id": _SHORT,
}
_PROPERTIES = st.fixed_dictionaries({}, optional=_FIELDS)


def _pikas(encoded: bytes, at: int = 0) -> dict[str, Any]:
    return dict(vars(pika.BasicProperties().decode(encoded, at)))


def _ours(encoded: bytes, at: int = 0) -> dict[str, Any]:
    decoded = decode_properties(encoded, at)
    assert type(decoded) is pika.BasicProperties
    return dict(vars(decoded))


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(fields=_PROPERTIES, before=st.binary(max_size=8), after=st.binary(max_size=8))
def test_same_as_pika(fields: dict[str, Any], before: bytes, after: bytes) -> None:
    encoded = before + b"".join(pika.BasicProperties(**fields).encode()) + after
    assert _ours(encoded, len(before)) == _pikas(encoded, len(before))


def test_a_request_and_a_reply() -> None:
    request = pika.BasicProperties(
        content_type="application/json",
        headers={"x-deadline": 1_800_000_000_123, "traceparent": "00-" + "a" * 32 + "-01"},
        delivery_mode=2,
        correlation_id="c1",
        reply_to="amq.gen-x",
        expiration="30000",
        message_id="m1",
        type="echo",
    )
    reply = pika.BasicProperties(content_type="application/json", correlation_id="c1", type="r")
    for properties in (request, reply, pika.BasicProperties()):
        encoded = b"".join(properties.encode())
        assert _ours(encoded) == _pikas(encoded) == dict(vars(properties))


def test_header_kinds_reqrep_does_not_send_go_to_pika() -> None:
    headers = {"d": decimal.Decimal("1.5"), "b": True, "n": None, "t": {"x": [1, "y"]}}
    encoded = b"".join(pika.BasicProperties(headers=headers).encode())
    assert _ours(encoded)["headers"] == _pikas(encoded)["headers"] == headers


@pytest.mark.parametrize("kind", ["l", "I"])
def test_integer_headers_read_as_the_installed_pika_reads_them(kind: str) -> None:
    value = struct.pack(">q", -2) if kind == "l" else struct.pack(">i", -2)
    table = b"\x01n" + kind.encode() + value
    encoded = struct.pack(">H", pika.BasicProperties.FLAG_HEADERS) + struct.pack(">I", len(table))
    encoded += table
    assert _ours(encoded) == _pikas(encoded)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(fields=_PROPERTIES, data=st.data())
def test_truncated_or_damaged_fails_where_pika_fails(fields: dict[str, Any], data: Any) -> None:
    encoded = b"".join(pika.BasicProperties(**fields).encode())
    cut = data.draw(st.integers(0, len(encoded)))
    damaged = bytearray(encoded[:cut])
    if damaged and data.draw(st.booleans()):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    damaged_bytes = bytes(damaged)
    try:
        expected = _pikas(damaged_bytes)
    except Exception:  # noqa: BLE001 - any failure: ours must fail too
        with pytest.raises(Exception):  # noqa: B017, PT011
            _ours(damaged_bytes)
        return
    assert _ours(damaged_bytes) == expected


def test_continued_flags_go_to_pika() -> None:
    encoded = struct.pack(">HH", 1, 0)  # a continuation bit, then an empty second word
    assert _ours(encoded) == _pikas(encoded)


def test_plans_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pika_props_decode, "_PLANS_MAX", 3)
    monkeypatch.setattr(_pika_props_decode, "_plans", {})
    for flags in range(4, 4 * 10, 4):  # ten flag words, no continuation bit
        encoded = struct.pack(">H", flags << 8) + b"\x00" * 64
        decode_properties(encoded, 0)
        assert len(_pika_props_decode._plans) <= 3


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(value=_SHORT, before=st.binary(max_size=4))
def test_short_strings_read_as_pika_reads_them(value: str | bytes, before: bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    encoded = before + bytes((len(raw),)) + raw + b"\xce"
    expected = pika.data.decode_short_string(encoded, len(before))
    assert _pika_props_decode.decode_short_string(encoded, len(before)) == expected
