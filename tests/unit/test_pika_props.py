"""common/_pika_props.py: a request's properties encode to exactly the bytes pika writes, and
decode back to the same fields."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest

from reqrep.common._pika_props import ReplyProperties, RequestProperties

_BASE: dict[str, Any] = {
    "content_type": "application/json",
    "delivery_mode": 2,
    "reply_to": "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
    "type": "echo",
    "correlation_id": "0123456789abcdef0123456789abcdef",
    "message_id": "0123456789abcdef0123456789abcdef",
    "expiration": "30000",
    "headers": {"x-deadline": 1_800_000_000_123},
}


def _both(**changes: Any) -> tuple[bytes, bytes]:
    fields = {**_BASE, **changes}
    ours = b"".join(RequestProperties(**fields).encode())
    pikas = b"".join(pika.BasicProperties(**fields).encode())
    return ours, pikas


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"delivery_mode": 1},
        {"type": "ümlaut-method", "message_id": "clé-1"},
        {"expiration": "1"},
        {"headers": {}},
        {"headers": {"x-deadline": 5, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}},
        {"headers": {"small": -(2**31), "edge": 2**31 - 1, "big": 2**31, "neg": -(2**31) - 1}},
        {"headers": {"flag": True, "raw": b"\x00\x01", "nested": {"a": [1, "x"]}, "none": None}},
        {"reply_to": "r" * 255},
    ],
)
def test_bytes_are_pikas(changes: dict[str, Any]) -> None:
    ours, pikas = _both(**changes)
    assert ours == pikas


def test_cached_constants_never_leak_between_combinations() -> None:
    for changes in (
        {},
        {"reply_to": "amq.gen-other"},
        {"type": "add"},
        {"delivery_mode": 1},
        {"content_type": "text/plain"},
        {},
    ):
        ours, pikas = _both(**changes)
        assert ours == pikas, changes


def test_decodes_to_the_same_fields() -> None:
    encoded = b"".join(RequestProperties(**_BASE).encode())
    decoded = pika.BasicProperties()
    decoded.decode(encoded)
    for name, value in _BASE.items():
        assert getattr(decoded, name) == value


def test_too_long_short_string_raises_like_pika() -> None:
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        RequestProperties(**{**_BASE, "correlation_id": "c" * 256}).encode()
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        pika.BasicProperties(**{**_BASE, "correlation_id": "c" * 256}).encode()


@pytest.mark.parametrize("user_id", [None, "worker-user", "ümlaut"])
@pytest.mark.parametrize(
    "correlation_id", ["", "0123456789abcdef", "c" * 255, b"fz-\x91\xa7 not utf-8"]
)
def test_reply_bytes_are_pikas(user_id: str | None, correlation_id: str | bytes) -> None:
    fields: dict[str, Any] = {
        "content_type": "application/json",
        "type": "reqrep.reply",
        "correlation_id": correlation_id,
        "user_id": user_id,
    }
    ours = b"".join(ReplyProperties(**fields).encode())
    assert ours == b"".join(pika.BasicProperties(**fields).encode())
    decoded = pika.BasicProperties()
    decoded.decode(ours)
    assert (decoded.correlation_id, decoded.user_id, decoded.type) == (
        correlation_id,
        user_id,
        "reqrep.reply",
    )


def test_reply_constants_follow_the_user_id() -> None:
    signed = ReplyProperties(content_type="a", type="t", correlation_id="c", user_id="u")
    unsigned = ReplyProperties(content_type="a", type="t", correlation_id="c", user_id=None)
    assert b"".join(signed.encode()) != b"".join(unsigned.encode())
    assert b"".join(unsigned.encode()) == b"".join(
        pika.BasicProperties(content_type="a", type="t", correlation_id="c").encode()
    )


def test_the_objects_hold_what_pikas_hold() -> None:
    """Built without pika's __init__, they still carry every property (absent ones None)."""
    request = RequestProperties(**_BASE)
    assert {k: v for k, v in vars(request).items() if k != "_encoded"} == vars(
        pika.BasicProperties(**_BASE)
    )
    reply_fields: dict[str, Any] = {
        "content_type": "a",
        "type": "t",
        "correlation_id": "c",
        "user_id": None,
    }
    reply = ReplyProperties(**reply_fields)
    assert {k: v for k, v in vars(reply).items() if k != "_encoded"} == vars(
        pika.BasicProperties(**reply_fields)
    )
    assert repr(request).startswith("<BasicProperties")


@pytest.mark.parametrize("message_id", ["0123456789abcdef0123456789abcdef", "other-key", b"\xff"])
def test_message_id_equal_to_or_other_than_the_correlation_id(message_id: str | bytes) -> None:
    ours, pikas = _both(message_id=message_id)
    assert ours == pikas


def test_header_names_beyond_the_kept_ones_still_encode_like_pika() -> None:
    headers = {f"x-h{i}": i for i in range(300)}  # more names than _KEYS_MAX
    ours, pikas = _both(headers=headers)
    assert ours == pikas
