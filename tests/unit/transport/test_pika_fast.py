"""common/_transport/_pika_fast.py: the guard and the short roads of reqrep's own pika connection.

White box, without a broker:

- frames in: a ``ReqrepConnection`` without a socket, whose frame processing (pika's road after
  decoding) is recorded instead of run: a whole delivery goes straight to its consumer with
  exactly what pika's own road would give it, everything else takes pika's road, frame by frame,
  in order; a content header pika cannot decode becomes marked stand-in properties instead of an
  exception that would drop the connection;
- bytes out and in: pika's own plaintext transport, turned into reqrep's for one instance, and
  pika's selector I/O loop, over a local socket pair: what reaches the other end, in which
  order, and when pika is asked to watch for writability.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
import pytest
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

from reqrep.common._transport import Confirm, Delivery
from reqrep.common._transport._pika_fast import (
    RECV_BYTES,
    Consumer,
    ReqrepConnection,
    _FastTransport,
    undecodable_stand_in,
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


# -- frames in ----------------------------------------------------------------------------------


class _Channel:
    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        deliver = lambda delivery: seen.append(("fast", delivery))  # noqa: E731 - a recorder
        self._consumers = {"ctag": Consumer(deliver), "other": Consumer(deliver)}
        self._cancelled: set[str] = set()


def _connection(
    *, fast: bool = True, guard: bool = True
) -> tuple[Any, list[tuple[str, Any]], _Channel]:
    """A ReqrepConnection with no socket: only its frame handling is used."""
    seen: list[tuple[str, Any]] = []
    connection: Any = object.__new__(ReqrepConnection)
    connection._reqrep_fast = fast
    connection._reqrep_guard = guard
    connection._reqrep_confirms = {}
    connection._frame_buffer = b""
    connection.bytes_received = 0
    connection.frames_received = 0
    channel = _Channel(seen)
    connection._channels = {1: channel}
    connection._process_frame = lambda frame: seen.append(("pika", frame))  # pika's road
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

    [(road, delivery)] = seen
    assert road == "fast"
    assert isinstance(delivery, Delivery)
    assert (delivery.consumer_tag, delivery.tag, delivery.redelivered) == ("ctag", 7, True)
    assert (delivery.exchange, delivery.routing_key) == ("", "reqrep.demo")
    assert {k: v for k, v in vars(delivery.properties).items() if k != "undecodable"} == vars(PROPS)
    assert delivery.properties.undecodable is None
    assert delivery.body == b'{"ok": true, "result": 1}'
    assert (connection.bytes_received, connection.frames_received) == (len(data), 3)
    assert connection._frame_buffer == b""


def test_pikas_road_gives_the_consumer_the_same_delivery() -> None:
    slow: list[Delivery] = []
    method = pika.spec.Basic.Deliver("ctag", 7, True, "", "reqrep.demo")
    Consumer(slow.append)(None, method, PROPS, b"{}")
    connection, seen, _channel = _connection()
    connection._on_data_available(_delivery(b"{}"))
    fast = [delivery for _road, delivery in seen]
    for a, b in zip(fast, slow, strict=True):
        assert (a.tag, a.redelivered, a.exchange, a.routing_key, a.body, a.consumer_tag) == (
            b.tag,
            b.redelivered,
            b.exchange,
            b.routing_key,
            b.body,
            b.consumer_tag,
        )
        assert vars(a.properties) == vars(b.properties)


def test_deliveries_and_other_frames_keep_their_order() -> None:
    connection, seen, _channel = _connection()
    data = _delivery(tag=1) + HEARTBEAT + _delivery(tag=2) + _delivery(tag=3)

    connection._on_data_available(data)

    assert [road for road, _ in seen] == ["fast", "pika", "fast", "fast"]
    assert [item.tag for road, item in seen if road == "fast"] == [1, 2, 3]
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
            deliveries.append(item.tag)
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


def _undecodable_delivery() -> bytes:
    far_timestamp = b"\x01t" + b"T" + struct.pack(">Q", 300_000_000_000)
    pieces = pika.BasicProperties(content_type="application/json", headers={}).encode()
    pieces[2] = struct.pack(">I", len(far_timestamp)) + far_timestamp
    header = struct.pack(">HHQ", 60, 0, 2) + b"".join(pieces)
    method: bytes = pika.frame.Method(
        1, pika.spec.Basic.Deliver("ctag", 1, False, "", "q")
    ).marshal()
    body: bytes = pika.frame.Body(1, b"{}").marshal()
    return method + struct.pack(">BHL", 2, 1, len(header)) + header + b"\xce" + body


def test_properties_pika_cannot_decode_take_pikas_road_and_are_marked() -> None:
    connection, seen, _channel = _connection()

    connection._on_data_available(_undecodable_delivery())

    assert [road for road, _ in seen] == ["pika", "pika", "pika"]
    assert undecodable_stand_in(seen[1][1].properties) is not None


def test_without_the_guard_an_undecodable_header_raises_as_in_pika() -> None:
    connection, _seen, _channel = _connection(fast=False, guard=False)
    with pytest.raises((ValueError, OverflowError, struct.error)):
        connection._on_data_available(_undecodable_delivery())


def test_a_connection_without_the_short_road_keeps_pikas_road() -> None:
    connection, seen, _channel = _connection(fast=False)
    connection._on_data_available(_delivery())
    assert [road for road, _ in seen] == ["pika", "pika", "pika"]


class _ConfirmChannel:
    channel_number = 3


def _confirms(connection: Any, seen: list[tuple[str, Any]]) -> _ConfirmChannel:
    channel = _ConfirmChannel()
    connection._channels[3] = channel
    connection.confirms_on_short_road(channel, lambda confirm: seen.append(("confirm", confirm)))
    return channel


def _ack(tag: int, multiple: bool, *, nack: bool = False, requeue: bool = False) -> bytes:
    method: Any = (
        pika.spec.Basic.Nack(tag, multiple, requeue) if nack else pika.spec.Basic.Ack(tag, multiple)
    )
    marshalled: bytes = pika.frame.Method(3, method).marshal()
    return marshalled


def test_confirms_reach_their_handler() -> None:
    connection, seen, _channel = _connection()
    _confirms(connection, seen)
    data = _ack(5, True) + _delivery(tag=1) + _ack(6, False, nack=True, requeue=True)

    connection._on_data_available(data)

    assert [road for road, _ in seen] == ["confirm", "fast", "confirm"]
    assert seen[0][1] == Confirm(5, multiple=True, ack=True)
    assert seen[2][1] == Confirm(6, multiple=False, ack=False)
    assert (connection.bytes_received, connection.frames_received) == (len(data), 5)


@pytest.mark.parametrize("cut", range(1, 21))
def test_a_confirm_cut_between_reads_is_seen_once(cut: int) -> None:
    connection, seen, _channel = _connection()
    _confirms(connection, seen)
    data = _ack(9, True)
    connection._on_data_available(data[:cut])
    connection._on_data_available(data[cut:])
    assert seen == [("confirm", Confirm(9, multiple=True, ack=True))]


def test_confirms_of_a_channel_not_registered_or_replaced_take_pikas_road() -> None:
    connection, seen, _channel = _connection()
    registered = _confirms(connection, seen)
    connection._channels[3] = object()  # the registered channel is gone; another has its number
    connection._on_data_available(_ack(1, False))
    connection._channels[3] = registered
    connection._channels[4] = object()
    connection._on_data_available(pika.frame.Method(4, pika.spec.Basic.Ack(2, False)).marshal())

    assert [road for road, _ in seen] == ["pika", "pika"]


def test_confirms_are_not_registered_without_the_short_road() -> None:
    connection, seen, _channel = _connection(fast=False)
    _confirms(connection, seen)
    assert connection._reqrep_confirms == {}


# -- the guard ----------------------------------------------------------------------------------


def _header_frame(table: bytes, *, channel: int = 1, body_size: int = 7) -> bytes:
    """A Basic content-header frame with content_type, correlation_id and a raw headers table."""
    props = pika.BasicProperties(content_type="application/json", headers={}, correlation_id="c")
    pieces = props.encode()
    assert pieces[3] == b"\x00\x00\x00\x00"
    pieces[3] = struct.pack(">I", len(table)) + table
    payload = struct.pack(">HHQ", 60, 0, body_size) + b"".join(pieces)
    return struct.pack(">BHL", 2, channel, len(payload)) + payload + b"\xce"


def _deep(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = b"\x01d" + b"F" + struct.pack(">I", len(inner)) + inner
    return inner


FAR_TIMESTAMP = b"\x01t" + b"T" + struct.pack(">Q", 300_000_000_000)


def _read(data: bytes) -> tuple[int, Any]:
    connection, _seen, _channel = _connection()
    connection._frame_buffer = data
    result: tuple[int, Any] = connection._read_frame()
    return result


@pytest.mark.parametrize("table", [_deep(1000), FAR_TIMESTAMP], ids=["deep", "timestamp"])
def test_an_undecodable_header_frame_is_consumed_whole_and_marked(table: bytes) -> None:
    data = _header_frame(table, channel=3, body_size=42)
    following = HEARTBEAT  # a frame right behind it
    consumed, frame = _read(data + following)
    assert consumed == len(data)  # the stream stays in step: the next frame starts here
    assert isinstance(frame, pika.frame.Header)
    assert (frame.channel_number, frame.body_size) == (3, 42)
    reason = undecodable_stand_in(frame.properties)
    assert reason is not None
    assert reason.startswith(("RecursionError", "ValueError", "OverflowError"))
    assert frame.properties.correlation_id is None  # nothing half-decoded is trusted
    assert isinstance(_read(following)[1], pika.frame.Heartbeat)


def test_a_decodable_header_frame_is_untouched() -> None:
    table = b"\x01n" + b"I" + struct.pack(">i", 5)
    consumed, frame = _read(_header_frame(table))
    assert consumed > 0
    assert undecodable_stand_in(frame.properties) is None
    assert frame.properties.headers == {"n": 5}
    assert frame.properties.correlation_id == "c"


def test_an_incomplete_frame_still_waits_for_more_data() -> None:
    data = _header_frame(FAR_TIMESTAMP)
    assert _read(data[:-5]) == (0, None)


def test_other_broken_frames_keep_pikas_behaviour() -> None:
    data = bytearray(_header_frame(FAR_TIMESTAMP))
    data[-1] = 0  # a wrong frame-end marker: the stream is broken, not one message
    with pytest.raises(pika.exceptions.InvalidFrameError):
        _read(bytes(data))
    with pytest.raises(pika.exceptions.InvalidFrameError):
        _read(b"\x09\x00\x00\x00\x00\x00\x00\xce")  # unknown frame type


def test_properties_that_decoded_are_not_marked() -> None:
    assert undecodable_stand_in(pika.BasicProperties()) is None
    assert undecodable_stand_in(None) is None


# -- bytes out and in ---------------------------------------------------------------------------

LIMIT = 10.0  # seconds any loop below may run


class _Protocol:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: list[BaseException | None] = []

    def connection_made(self, _transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, error: BaseException | None) -> None:
        self.lost.append(error)


class _Pair:
    """A pika transport on one end of a socket pair; ``peer`` is the other end."""

    def __init__(self, *, marked: bool) -> None:
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.ours = ours
        self.loop = IOLoop()
        self.nbio = SelectorIOServicesAdapter(self.loop)
        self.watch: list[str] = []  # set_writer / remove_writer calls, in order
        self._spy("set_writer")
        self._spy("remove_writer")
        self.protocol = _Protocol()
        self.transport: Any = _AsyncPlaintextTransport(ours, self.protocol, self.nbio)
        if marked:  # as ReqrepConnection makes its own transport reqrep's
            self.transport.__class__ = _FastTransport
            self.transport._reqrep_held = False

    def _spy(self, name: str) -> None:
        original = getattr(self.nbio, name)

        def spy(*args: Any) -> Any:
            self.watch.append(name)
            return original(*args)

        setattr(self.nbio, name, spy)

    def peer_reads(self, size: int) -> bytes:
        """Everything the peer has received, up to ``size`` bytes (waits at most LIMIT)."""
        got = bytearray()
        self.peer.settimeout(LIMIT)
        while len(got) < size:
            chunk = self.peer.recv(size - len(got))
            if not chunk:
                break
            got += chunk
        return bytes(got)

    def peer_has_nothing(self) -> bool:
        self.peer.setblocking(False)
        try:
            self.peer.recv(1)
        except BlockingIOError:
            return True
        return False

    def run_until(self, done: Any) -> None:
        """Turn pika's loop until ``done()`` (checked every millisecond), at most LIMIT."""
        deadline = time.monotonic() + LIMIT

        def check() -> None:
            if done() or time.monotonic() > deadline:
                self.loop.stop()
            else:
                self.loop.call_later(0.001, check)

        self.loop.call_later(0, check)
        self.loop.start()
        assert done(), "the loop ran out of time"

    def close(self) -> None:
        if self.transport._state != self.transport._STATE_COMPLETED:  # not aborted by a test
            self.transport.abort()
        self.ours.close()
        self.peer.close()
        self.loop.close()


@pytest.fixture
def pair() -> Iterator[_Pair]:
    made = _Pair(marked=True)
    yield made
    made.close()


def test_held_writes_wait_for_the_flush_then_go_out_in_one_piece(pair: _Pair) -> None:
    pair.transport.hold()
    for frame in (b"method", b"header", b"body"):
        pair.transport.write(frame)
    assert pair.peer_has_nothing()
    pair.transport.flush()
    assert pair.peer_reads(16) == b"methodheaderbody"
    assert pair.watch == []  # no writability watcher was set, none removed
    assert not pair.transport._tx_buffers


def test_pikas_class_is_not_touched() -> None:
    assert _AsyncPlaintextTransport._produce is not _FastTransport._produce
    assert "hold" not in vars(_AsyncPlaintextTransport)


def test_writes_nobody_holds_go_pikas_way(pair: _Pair) -> None:
    pair.transport.write(b"frame")
    assert pair.watch == ["set_writer"]  # pika waits for writability, as it always did
    pair.transport.flush()
    assert pair.peer_reads(5) == b"frame"
    assert pair.watch == ["set_writer", "remove_writer"]


def test_a_flush_ends_the_hold(pair: _Pair) -> None:
    pair.transport.hold()
    pair.transport.flush()  # nothing was written
    pair.transport.write(b"later")  # a heartbeat, say: not held, so pika sends it by itself
    assert pair.watch == ["set_writer"]
    pair.run_until(lambda: not pair.transport._tx_buffers)
    assert pair.peer_reads(5) == b"later"


def test_nothing_is_held_while_pika_still_has_frames_to_send(pair: _Pair) -> None:
    pair.transport.write(b"first")  # unsent, with pika watching for writability
    pair.transport.hold()
    pair.transport.write(b"second")
    assert not pair.transport._reqrep_held
    pair.run_until(lambda: not pair.transport._tx_buffers)
    assert pair.peer_reads(11) == b"firstsecond"
    assert pair.watch == ["set_writer", "remove_writer"]


def test_what_the_socket_cannot_take_goes_out_when_it_can(pair: _Pair) -> None:
    size = 8 * 1024 * 1024  # far more than a socket pair buffers
    payload = bytes(range(256)) * (size // 256)
    pair.transport.hold()
    pair.transport.write(payload[: size // 2])
    pair.transport.write(payload[size // 2 :])
    pair.transport.flush()
    assert pair.transport._tx_buffers  # the socket took only part of it
    assert pair.watch == ["set_writer"]  # the rest waits for writability, pika's way
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(pair.peer_reads(size)))
    reader.start()
    pair.run_until(lambda: not pair.transport._tx_buffers)
    reader.join(LIMIT)
    assert bytes(got) == payload  # whole and in order
    assert pair.watch == ["set_writer", "remove_writer"]


def test_a_socket_error_at_the_flush_aborts_the_connection_as_pika_would(pair: _Pair) -> None:
    pair.peer.close()
    pair.transport.hold()
    pair.transport.write(b"into the void")
    pair.transport.flush()  # raises nothing: pika's handler meets the error
    pair.run_until(lambda: bool(pair.protocol.lost))
    assert isinstance(pair.protocol.lost[0], OSError)


def test_reqreps_transport_reads_once_per_readable_event(pair: _Pair) -> None:
    data = bytes(range(256)) * 40  # 10 KB: pika reads 4 KB at a time
    pair.peer.sendall(data)
    pair.transport._consume()
    assert pair.protocol.received == [data]
    with pytest.raises(BlockingIOError):  # nothing more: pika's handler treats it as always
        pair.transport._consume()


def test_reqreps_transport_loses_nothing_beyond_one_read(pair: _Pair) -> None:
    data = bytes(range(256)) * (3 * RECV_BYTES // 256 + 7)
    sender = threading.Thread(target=pair.peer.sendall, args=(data,))
    sender.start()
    pair.run_until(lambda: sum(map(len, pair.protocol.received)) >= len(data))
    sender.join(LIMIT)
    assert b"".join(pair.protocol.received) == data
    assert len(pair.protocol.received) >= 4  # one read per turn of the loop, at most 64 KB


def test_reqreps_transport_sees_the_end_of_the_stream(pair: _Pair) -> None:
    pair.peer.shutdown(socket.SHUT_WR)
    with pytest.raises(_AsyncPlaintextTransport.RxEndOfFile):
        pair.transport._consume()


def test_pikas_own_transport_keeps_pikas_reads() -> None:
    pair = _Pair(marked=False)
    try:
        data = bytes(range(256)) * 40
        pair.peer.sendall(data)
        with pytest.raises(BlockingIOError):  # pika reads until the socket is empty
            pair.transport._consume()
        assert b"".join(pair.protocol.received) == data
        assert len(pair.protocol.received) == 3  # 4 KB at a time
    finally:
        pair.close()
