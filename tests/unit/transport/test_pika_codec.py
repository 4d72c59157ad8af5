"""common/_transport/_pika_codec.py: properties and frames are byte for byte pika's, both ways,
on the installed pika, and malformed input fails where pika's decoder fails."""

from __future__ import annotations

import decimal
import struct
from typing import Any

import hypothesis
import pika
import pika.data
import pika.exceptions
import pika.frame
import pika.spec
import pytest
from hypothesis import strategies as st

from reqrep.common._transport import PROPERTY_NAMES, Properties
from reqrep.common._transport import _pika_codec as codec

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

REQUEST: dict[str, Any] = {
    "content_type": "application/json",
    "delivery_mode": 2,
    "reply_to": "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
    "type": "echo",
    "correlation_id": "0123456789abcdef0123456789abcdef",
    "message_id": "0123456789abcdef0123456789abcdef",
    "expiration": "30000",
    "headers": {"x-deadline": 1_800_000_000_123},
}


def _pika_bytes(fields: dict[str, Any]) -> bytes:
    return b"".join(pika.BasicProperties(**fields).encode())


# -- encoding -----------------------------------------------------------------------------------


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(fields=_PROPERTIES)
def test_any_properties_encode_to_pikas_bytes(fields: dict[str, Any]) -> None:
    assert codec.encode_properties(Properties(**fields)) == _pika_bytes(fields)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"delivery_mode": 1},
        {"type": "ümlaut-method", "message_id": "clé-1"},
        {"headers": {}},
        {"headers": {"small": -(2**31), "edge": 2**31 - 1, "big": 2**31, "neg": -(2**31) - 1}},
        {"headers": {"max": 2**63 - 1, "min": -(2**63)}},
        {"headers": {"flag": True, "raw": b"\x00\x01", "nested": {"a": [1, "x"]}, "none": None}},
        {"reply_to": "r" * 255},
        {"message_id": "other-key"},
        {"message_id": b"\xff"},
        {"headers": {f"x-h{i}": i for i in range(300)}},
    ],
)
def test_a_request_encodes_to_pikas_bytes(changes: dict[str, Any]) -> None:
    fields = {**REQUEST, **changes}
    assert codec.encode_properties(Properties(**fields)) == _pika_bytes(fields)


def test_kept_encodings_never_leak_between_values() -> None:
    for changes in ({}, {"reply_to": "amq.gen-other"}, {"type": "add"}, {"content_type": "x"}, {}):
        fields = {**REQUEST, **changes}
        assert codec.encode_properties(Properties(**fields)) == _pika_bytes(fields), changes


def test_too_long_short_string_raises_like_pika() -> None:
    fields = {**REQUEST, "correlation_id": "c" * 256}
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        codec.encode_properties(Properties(**fields))
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        _pika_bytes(fields)


def test_the_plain_road_converts_both_ways() -> None:
    ours = Properties(**REQUEST)
    pikas = codec.to_pika(ours)
    assert vars(pikas) == vars(pika.BasicProperties(**REQUEST))
    back = codec.from_pika(pikas)
    assert vars(back) == vars(ours)
    assert codec.from_pika(pika.BasicProperties(), "why").undecodable == "why"
    assert set(PROPERTY_NAMES) == set(vars(pika.BasicProperties()))


# -- decoding -----------------------------------------------------------------------------------


def _pikas(encoded: bytes, at: int = 0) -> dict[str, Any]:
    return dict(vars(pika.BasicProperties().decode(encoded, at)))


def _ours(encoded: bytes, at: int = 0) -> dict[str, Any]:
    decoded = codec.decode_properties(encoded, at)
    assert type(decoded) is Properties
    assert decoded.undecodable is None
    return {k: v for k, v in vars(decoded).items() if k != "undecodable"}


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(fields=_PROPERTIES, before=st.binary(max_size=8), after=st.binary(max_size=8))
def test_any_properties_decode_as_pika_decodes_them(
    fields: dict[str, Any], before: bytes, after: bytes
) -> None:
    encoded = before + _pika_bytes(fields) + after
    assert _ours(encoded, len(before)) == _pikas(encoded, len(before))


def test_a_request_and_a_reply_decode_to_their_fields() -> None:
    reply = {"content_type": "application/json", "correlation_id": "c1", "type": "r"}
    for fields in (REQUEST, reply, {}):
        encoded = _pika_bytes(fields)
        assert _ours(encoded) == _pikas(encoded) == dict(vars(pika.BasicProperties(**fields)))


def test_header_kinds_reqrep_does_not_send_go_to_pika() -> None:
    headers = {"d": decimal.Decimal("1.5"), "b": True, "n": None, "t": {"x": [1, "y"]}}
    encoded = _pika_bytes({"headers": headers})
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
    encoded = _pika_bytes(fields)
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
    monkeypatch.setattr(codec, "_PLANS_MAX", 3)
    monkeypatch.setattr(codec, "_plans", {})
    for flags in range(4, 4 * 10, 4):  # ten flag words, no continuation bit
        encoded = struct.pack(">H", flags << 8) + b"\x00" * 64
        codec.decode_properties(encoded, 0)
        assert len(codec._plans) <= 3


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(value=_SHORT, before=st.binary(max_size=4))
def test_short_strings_read_as_pika_reads_them(value: str | bytes, before: bytes) -> None:
    raw = value.encode() if isinstance(value, str) else value
    encoded = before + bytes((len(raw),)) + raw + b"\xce"
    expected = pika.data.decode_short_string(encoded, len(before))
    assert codec.decode_short_string(encoded, len(before)) == expected


# -- frames -------------------------------------------------------------------------------------


def _pika_publish(
    channel: int, exchange: Any, key: Any, body: bytes, fields: dict[str, Any], **kw: Any
) -> bytes:
    """What pika's Connection._send_message marshals for a basic_publish."""
    props = pika.BasicProperties(**fields)
    frames = [
        pika.frame.Method(
            channel, pika.spec.Basic.Publish(exchange=exchange, routing_key=key, **kw)
        ).marshal(),
        pika.frame.Header(channel, len(body), props).marshal(),
    ]
    return b"".join(frames)


def _body_frames(channel: int, body: bytes, body_max: int) -> bytes:
    return b"".join(
        pika.frame.Body(channel, body[i : i + body_max]).marshal()
        for i in range(0, len(body), body_max)
    )


REPLY = {"content_type": "application/json", "type": "reqrep.reply", "correlation_id": "c1"}
CASES = [
    ("", "reqrep.demo", b'"x"', REQUEST, True, 131064, 1),
    ("", "amq.gen-abc", b'{"ok": true}', REPLY, True, 131064, 2),
    ("", b"reply-\xe6-not-utf8", b"{}", REPLY, True, 131064, 1),
    ("reqrep.dlx", "q", b"", {}, False, 131064, 7),
    ("", "q", b"y" * 1000, {"type": "t"}, True, 100, 3),
    ("", "q", b"z" * 200, REQUEST, False, 100, 1),
]


@pytest.mark.parametrize("case", CASES)
def test_a_publish_is_pikas_bytes(case: tuple[Any, ...]) -> None:
    exchange, key, body, fields, mandatory, body_max, number = case
    ours = codec.publish_frames(
        number, exchange, key, body, Properties(**fields), mandatory=mandatory, body_max=body_max
    )
    expected = _pika_publish(number, exchange, key, body, fields, mandatory=mandatory)
    assert ours == expected + _body_frames(number, body, body_max)


def test_a_routing_key_too_long_raises_as_pika_does() -> None:
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        codec.publish_frames(1, "", "q" * 256, b"{}", Properties(), mandatory=True, body_max=100)


@pytest.mark.parametrize(("tag", "multiple"), [(1, False), (7, True), (2**64 - 1, False)])
@pytest.mark.parametrize("number", [1, 2, 65535])
def test_an_ack_is_pikas_bytes(number: int, tag: int, multiple: bool) -> None:
    pikas = pika.frame.Method(number, pika.spec.Basic.Ack(tag, multiple)).marshal()
    assert codec.ack_frame(number, tag, multiple=multiple) == pikas
