"""common/_pika_deliver.py: a whole delivery goes straight to its consumer with exactly what
pika's own road would give it; everything else takes pika's road, frame by frame, in order.

White box: a pika ``Connection`` without a socket, whose frame processing (pika's road after
decoding) is recorded instead of run."""

from __future__ import annotations

import struct
from typing import Any

import pika
import pika.connection
import pika.frame
import pika.spec
import pytest

from reqrep.common._pika_decode import tolerate_undecodable_properties, undecodable
from reqrep.common._pika_deliver import (
    confirm_delivery,
    install_fast_deliveries,
    use_fast_deliveries,
)

HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
PROPS = pika.BasicProperties(
    content_type="application/json",
    correlation_id="cid-1",
    reply_to="amq.gen-abc",
    type="echo",
    message_id="m-1",
    expiration="3000",
    delivery_mode=2,
    user_id="worker",
    headers={
        "x-deadline": 1_800_000_000_123,
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    },
)


class _Bare(pika.connection.Connection):  # type: ignore[misc]  # pika has no stubs
    """pika's Connection with no adapter: only its frame handling is used."""

    _adapter_add_callback_threadsafe = _adapter_call_later = _adapter_connect_stream = None
    _adapter_disconnect_stream = _adapter_emit_data = _adapter_remove_timeout = None


class _Channel:
    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        self._consumers = {"ctag": self._consume, "other": self._consume}
        self._cancelled: set[str] = set()
        self._seen = seen

    def _consume(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        assert channel is self
        self._seen.append(("fast", (method, properties, body)))


def _connection(*, fast: bool = True) -> tuple[Any, list[tuple[str, Any]], _Channel]:
    assert install_fast_deliveries() is True
    assert install_fast_deliveries() is True  # once per process; a second call is a no-op
    seen: list[tuple[str, Any]] = []
    connection: Any = object.__new__(_Bare)
    connection._frame_buffer = b""
    connection.bytes_received = 0
    connection.frames_received = 0
    channel = _Channel(seen)
    connection._channels = {1: channel}
    connection._process_frame = lambda frame: seen.append(("pika", frame))  # pika's road
    if fast:
        use_fast_deliveries(connection)
    return connection, seen, channel


def _delivery(
    body: bytes = b'{"ok": true, "result": 1}',
    *,
    channel: int = 1,
    tag: int = 7,
    consumer_tag: str = "ctag",
    props: Any = PROPS,
    frame_max: int = 131072,
) -> bytes:
    method = pika.spec.Basic.Deliver(consumer_tag, tag, True, "", "reqrep.demo")
    frames = [pika.frame.Method(channel, method).marshal()]
    frames.append(pika.frame.Header(channel, len(body), props).marshal())
    for start in range(0, len(body), frame_max - 8):
        frames.append(pika.frame.Body(channel, body[start : start + frame_max - 8]).marshal())
    return b"".join(frames)


def test_a_whole_delivery_reaches_its_consumer_as_pika_would_give_it() -> None:
    connection, seen, _channel = _connection()
    data = _delivery()

    connection._on_data_available(data)

    [(road, (method, properties, body))] = seen
    assert road == "fast"
    assert isinstance(method, pika.spec.Basic.Deliver)
    assert (method.consumer_tag, method.delivery_tag, method.redelivered) == ("ctag", 7, True)
    assert (method.exchange, method.routing_key) == ("", "reqrep.demo")
    assert properties.__dict__ == PROPS.__dict__
    assert body == b'{"ok": true, "result": 1}'
    assert (connection.bytes_received, connection.frames_received) == (len(data), 3)
    assert connection._frame_buffer == b""


def test_deliveries_and_other_frames_keep_their_order() -> None:
    connection, seen, _channel = _connection()
    data = _delivery(tag=1) + HEARTBEAT + _delivery(tag=2) + _delivery(tag=3)

    connection._on_data_available(data)

    assert [road for road, _ in seen] == ["fast", "pika", "fast", "fast"]
    assert [item[0].delivery_tag for road, item in seen if road == "fast"] == [1, 2, 3]
    assert connection.bytes_received == len(data)


@pytest.mark.parametrize("cut", range(1, 120))
def test_a_delivery_cut_anywhere_between_reads_is_seen_once_whole(cut: int) -> None:
    """Either the short road takes it whole, or pika's road gets its three frames in order."""
    connection, seen, _channel = _connection()
    data = _delivery(tag=1) + _delivery(tag=2)
    connection._on_data_available(data[:cut])
    connection._on_data_available(data[cut:])

    deliveries = []
    frames: list[Any] = []
    for road, item in seen:
        if road == "fast":
            assert not frames  # never in the middle of pika's frames of a delivery
            deliveries.append(item[0].delivery_tag)
        else:
            frames.append(item)
            if isinstance(item, pika.frame.Body):
                assert [type(f) for f in frames] == [
                    pika.frame.Method,
                    pika.frame.Header,
                    pika.frame.Body,
                ]
                deliveries.append(frames[0].method.delivery_tag)
                frames = []
    assert deliveries == [1, 2]
    assert connection.bytes_received == len(data)
    assert connection._frame_buffer == b""


@pytest.mark.parametrize(
    "case",
    ["body in two frames", "empty body", "unknown channel", "cancelled", "unknown consumer"],
)
def test_what_the_short_road_does_not_take_goes_pikas_road(case: str) -> None:
    connection, seen, channel = _connection()
    data = {
        "body in two frames": lambda: _delivery(b"x" * 100, frame_max=58),
        "empty body": lambda: _delivery(b""),
        "unknown channel": lambda: _delivery(channel=2),
        "cancelled": lambda: _delivery(consumer_tag="other"),
        "unknown consumer": lambda: _delivery(consumer_tag="nobody"),
    }[case]()
    channel._cancelled.add("other")

    connection._on_data_available(data)

    assert seen
    assert all(road == "pika" for road, _ in seen)
    assert connection.bytes_received == len(data)


def test_properties_pika_cannot_decode_take_pikas_road_and_are_marked() -> None:
    assert tolerate_undecodable_properties() is True
    connection, seen, _channel = _connection()
    far_timestamp = b"\x01t" + b"T" + struct.pack(">Q", 300_000_000_000)
    pieces = pika.BasicProperties(content_type="application/json", headers={}).encode()
    pieces[2] = struct.pack(">I", len(far_timestamp)) + far_timestamp
    header = struct.pack(">HHQ", 60, 0, 2) + b"".join(pieces)
    data = (
        pika.frame.Method(1, pika.spec.Basic.Deliver("ctag", 1, False, "", "q")).marshal()
        + struct.pack(">BHL", 2, 1, len(header))
        + header
        + b"\xce"
        + pika.frame.Body(1, b"{}").marshal()
    )

    connection._on_data_available(data)

    assert [road for road, _ in seen] == ["pika", "pika", "pika"]
    assert undecodable(seen[1][1].properties) is not None


def test_a_connection_not_marked_keeps_pikas_road() -> None:
    connection, seen, _channel = _connection(fast=False)
    connection._on_data_available(_delivery())
    assert [road for road, _ in seen] == ["pika", "pika", "pika"]


class _ConfirmChannel:
    def __init__(self, connection: Any, number: int) -> None:
        self.connection = connection
        self.channel_number = number
        self.selected: list[Any] = []

    def confirm_delivery(self, handler: Any, callback: Any) -> None:
        self.selected.append((handler, callback))


def _confirms(connection: Any, seen: list[tuple[str, Any]]) -> _ConfirmChannel:
    channel = _ConfirmChannel(connection, 3)
    connection._channels[3] = channel
    confirm_delivery(channel, lambda frame: seen.append(("confirm", frame)), "done")
    assert channel.selected[0][1] == "done"  # pika's confirm_delivery ran, with the callback
    return channel


def _ack(tag: int, multiple: bool, *, nack: bool = False, requeue: bool = False) -> bytes:
    method: Any = (
        pika.spec.Basic.Nack(tag, multiple, requeue) if nack else pika.spec.Basic.Ack(tag, multiple)
    )
    marshalled: bytes = pika.frame.Method(3, method).marshal()
    return marshalled


def test_confirms_reach_their_handler_as_pika_would_pass_them() -> None:
    connection, seen, _channel = _connection()
    _confirms(connection, seen)
    data = _ack(5, True) + _delivery(tag=1) + _ack(6, False, nack=True, requeue=True)

    connection._on_data_available(data)

    assert [road for road, _ in seen] == ["confirm", "fast", "confirm"]
    ack, nack = seen[0][1], seen[2][1]
    assert isinstance(ack, pika.frame.Method)
    assert ack.channel_number == 3
    assert isinstance(ack.method, pika.spec.Basic.Ack)
    assert (ack.method.delivery_tag, ack.method.multiple) == (5, True)
    assert isinstance(nack.method, pika.spec.Basic.Nack)
    assert (nack.method.delivery_tag, nack.method.multiple, nack.method.requeue) == (6, False, True)
    assert (connection.bytes_received, connection.frames_received) == (len(data), 5)


@pytest.mark.parametrize("cut", range(1, 21))
def test_a_confirm_cut_between_reads_is_seen_once(cut: int) -> None:
    connection, seen, _channel = _connection()
    _confirms(connection, seen)
    data = _ack(9, True)
    connection._on_data_available(data[:cut])
    connection._on_data_available(data[cut:])
    assert len(seen) == 1
    assert seen[0][1].method.delivery_tag == 9


def test_confirms_of_a_channel_not_registered_or_replaced_take_pikas_road() -> None:
    connection, seen, _channel = _connection()
    registered = _confirms(connection, seen)
    connection._channels[3] = object()  # the registered channel is gone; another has its number
    connection._on_data_available(_ack(1, False))
    connection._channels[3] = registered
    connection._channels[4] = object()
    connection._on_data_available(pika.frame.Method(4, pika.spec.Basic.Ack(2, False)).marshal())

    assert [road for road, _ in seen] == ["pika", "pika"]
