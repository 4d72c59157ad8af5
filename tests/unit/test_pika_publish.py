"""common/_pika_publish.py: a publish written in one piece is byte for byte what pika writes,
with pika's checks and counters."""

from __future__ import annotations

from typing import Any

import pika
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec
import pytest

from reqrep.common._pika_props import ReplyProperties, RequestProperties
from reqrep.common._pika_publish import ack, publish


class _Bare(pika.connection.Connection):  # type: ignore[misc]  # pika has no stubs
    """pika's Connection with no adapter: what it would send is recorded."""

    _adapter_add_callback_threadsafe = _adapter_call_later = _adapter_connect_stream = None
    _adapter_disconnect_stream = _adapter_remove_timeout = None

    def _adapter_emit_data(self, data: bytes) -> None:
        self.sent.append(data)


class _Channel:
    def __init__(self, connection: Any, number: int = 1, *, open_: bool = True) -> None:
        self.connection = connection
        self.channel_number = number
        self._open = open_

    def _raise_if_not_open(self) -> None:
        if not self._open:
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")


def _connection(body_max: int = 131072 - 8) -> Any:
    connection: Any = object.__new__(_Bare)
    connection.sent = []
    connection.bytes_sent = connection.frames_sent = 0
    connection._body_max_length = body_max
    return connection


def _pikas(channel: int, exchange: Any, key: Any, body: bytes, props: Any, **kw: Any) -> bytes:
    """What pika's Connection._send_message marshals for a basic_publish."""
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


REQUEST = RequestProperties(
    content_type="application/json",
    delivery_mode=2,
    reply_to="amq.gen-abc",
    type="echo",
    correlation_id="c1",
    message_id="m1",
    expiration="3000",
    headers={"x-deadline": 1_800_000_000_123},
)
REPLY = ReplyProperties(
    content_type="application/json", type="reqrep.reply", correlation_id="c1", user_id=None
)


CASES = [
    ("", "reqrep.demo", b'"x"', REQUEST, True, 131064, 1),
    ("", "amq.gen-abc", b'{"ok": true}', REPLY, True, 131064, 2),
    ("", b"reply-\xe6-not-utf8", b"{}", REPLY, True, 131064, 1),
    ("reqrep.dlx", "q", b"", pika.BasicProperties(), False, 131064, 7),
    ("", "q", b"y" * 1000, pika.BasicProperties(type="t"), True, 100, 3),
    ("", "q", b"z" * 200, REQUEST, False, 100, 1),
]


@pytest.mark.parametrize("case", CASES)
def test_the_bytes_are_pikas(case: tuple[Any, ...]) -> None:
    exchange, key, body, props, mandatory, body_max, number = case
    connection = _connection(body_max)
    publish(_Channel(connection, number), exchange, key, body, props, mandatory=mandatory)

    expected = _pikas(number, exchange, key, body, props, mandatory=mandatory)
    expected += _body_frames(number, body, body_max)
    assert connection.sent == [expected]
    assert connection.bytes_sent == len(expected)
    assert connection.frames_sent == 1  # one write; pika counted one per frame


def test_a_closed_channel_raises_pikas_error_and_sends_nothing() -> None:
    connection = _connection()
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        publish(_Channel(connection, open_=False), "", "q", b"{}", REPLY, mandatory=True)
    assert connection.sent == []


def test_a_routing_key_too_long_raises_as_pika_does() -> None:
    connection = _connection()
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        publish(_Channel(connection), "", "q" * 256, b"{}", REPLY, mandatory=True)
    assert connection.sent == []


def test_without_pikas_internals_it_is_basic_publish() -> None:
    calls: list[tuple[Any, ...]] = []

    class Plain:
        def basic_publish(self, *args: Any, **kwargs: Any) -> None:
            calls.append((*args, kwargs))

    publish(Plain(), "", "q", b"{}", REPLY, mandatory=True)
    assert calls == [("", "q", b"{}", REPLY, {"mandatory": True})]


@pytest.mark.parametrize(("tag", "multiple"), [(1, False), (7, True), (2**64 - 1, False)])
@pytest.mark.parametrize("number", [1, 2, 65535])
def test_an_ack_is_pikas_bytes(number: int, tag: int, multiple: bool) -> None:
    connection = _connection()
    ack(_Channel(connection, number), tag, multiple=multiple)
    pikas = pika.frame.Method(number, pika.spec.Basic.Ack(tag, multiple)).marshal()
    assert connection.sent == [pikas]
    assert (connection.bytes_sent, connection.frames_sent) == (len(pikas), 1)


def test_an_ack_on_a_closed_channel_raises_pikas_error_and_sends_nothing() -> None:
    connection = _connection()
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ack(_Channel(connection, open_=False), 3, multiple=False)
    assert connection.sent == []


def test_without_pikas_internals_an_ack_is_basic_ack() -> None:
    acked: list[tuple[int, bool]] = []

    class Plain:
        def basic_ack(self, tag: int, multiple: bool) -> None:
            acked.append((tag, multiple))

    ack(Plain(), 5, multiple=True)
    assert acked == [(5, True)]
