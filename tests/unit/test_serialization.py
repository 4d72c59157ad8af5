"""Unit tests of common.serialization: the one JSON codec of the wire."""

from __future__ import annotations

import math
from typing import Any

import pytest

from reqrep.common.errors import SerializationError
from reqrep.common.serialization import CONTENT_TYPE, dumps, is_json_content_type, loads


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -17,
        2**70,
        1.5,
        "",
        "text",
        [],
        {},
        [1, "a", None, [2.5]],
        {"a": {"b": [1, 2, {"c": None}]}},
    ],
)
def test_round_trip(value: Any) -> None:
    assert loads(dumps(value)) == value


def test_dumps_returns_compact_bytes() -> None:
    assert dumps({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}'


def test_tuples_encode_as_arrays() -> None:
    assert loads(dumps((1, 2))) == [1, 2]


def test_unicode_is_raw_utf8_not_escaped() -> None:
    text = "héllo wörld ✓ 😀 日本"
    body = dumps(text)
    assert body == f'"{text}"'.encode()
    assert b"\\u" not in body
    assert loads(body) == text


def test_unicode_keys_round_trip() -> None:
    value = {"ключ": "значение", "😀": ["é"]}
    assert loads(dumps(value)) == value


def test_loads_accepts_escaped_unicode() -> None:
    assert loads(b'"\\u00e9\\ud83d\\ude00"') == "é😀"


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, [1.0, math.nan], {"x": math.inf}],
)
def test_dumps_refuses_nan_and_infinity(value: Any) -> None:
    with pytest.raises(SerializationError, match="not JSON-serializable"):
        dumps(value)


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", {(1, 2): "tuple key"}, 1 + 2j, "\ud800", print],
    ids=["object", "set", "bytes", "tuple-key", "complex", "lone-surrogate", "function"],
)
def test_dumps_refuses_values_that_are_not_json(value: Any) -> None:
    with pytest.raises(SerializationError):
        dumps(value)


def test_dumps_refuses_circular_structures() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        dumps(loop)


def test_serialization_error_is_a_value_error_with_cause() -> None:
    with pytest.raises(ValueError, match="not JSON-serializable") as info:
        dumps(object())
    assert isinstance(info.value, SerializationError)
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe", b'"\xc3"', b'{"a": "\xed\xa0\x80"}', "é".encode("latin-1")],
    ids=["bom-like", "truncated", "encoded-surrogate", "latin-1"],
)
def test_loads_refuses_invalid_utf8(body: bytes) -> None:
    with pytest.raises(SerializationError, match="not UTF-8 JSON"):
        loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{",
        b"[1,]",
        b"{'a': 1}",
        b"{a: 1}",
        b"undefined",
        b"1 2",
        b'"unterminated',
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"[1.0, NaN]",
    ],
)
def test_loads_refuses_invalid_json(body: bytes) -> None:
    with pytest.raises(SerializationError):
        loads(body)


def test_loads_refuses_absurd_nesting_without_crashing() -> None:
    with pytest.raises(SerializationError):
        loads(b"[" * 100_000 + b"]" * 100_000)


def test_loads_accepts_surrounding_whitespace() -> None:
    assert loads(b' \n{"a": 1}\t ') == {"a": 1}


def test_content_type_constant() -> None:
    assert CONTENT_TYPE == "application/json"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        " application/json ",
    ],
)
def test_is_json_content_type_true(content_type: str) -> None:
    assert is_json_content_type(content_type) is True


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/json",
        "application/jsonx",
        "application/json-patch+json",
        "application/x-json",
        "application/octet-stream; application/json",
    ],
)
def test_is_json_content_type_false(content_type: str | None) -> None:
    assert is_json_content_type(content_type) is False
