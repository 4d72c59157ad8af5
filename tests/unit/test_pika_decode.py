"""common/_pika_decode.py: a content header pika cannot decode becomes marked stand-in
properties instead of an exception that would drop the connection."""

from __future__ import annotations

import struct

import pika
import pika.exceptions
import pika.frame
import pytest

from reqrep.common._pika_decode import tolerate_undecodable_properties, undecodable


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


@pytest.fixture(autouse=True)
def _applied() -> None:
    assert tolerate_undecodable_properties() is True
    assert tolerate_undecodable_properties() is True  # once per process; a second call is a no-op


@pytest.mark.parametrize("table", [_deep(1000), FAR_TIMESTAMP], ids=["deep", "timestamp"])
def test_an_undecodable_header_frame_is_consumed_whole_and_marked(table: bytes) -> None:
    data = _header_frame(table, channel=3, body_size=42)
    following = b"\x08\x00\x00\x00\x00\x00\x00\xce"  # a heartbeat frame right behind it
    consumed, frame = pika.frame.decode_frame(data + following)
    assert consumed == len(data)  # the stream stays in step: the next frame starts here
    assert isinstance(frame, pika.frame.Header)
    assert (frame.channel_number, frame.body_size) == (3, 42)
    reason = undecodable(frame.properties)
    assert reason is not None
    assert reason.startswith(("RecursionError", "ValueError", "OverflowError"))
    assert frame.properties.correlation_id is None  # nothing half-decoded is trusted
    assert isinstance(pika.frame.decode_frame(following)[1], pika.frame.Heartbeat)


def test_a_decodable_header_frame_is_untouched() -> None:
    table = b"\x01n" + b"I" + struct.pack(">i", 5)
    consumed, frame = pika.frame.decode_frame(_header_frame(table))
    assert consumed > 0
    assert undecodable(frame.properties) is None
    assert frame.properties.headers == {"n": 5}
    assert frame.properties.correlation_id == "c"


def test_an_incomplete_frame_still_waits_for_more_data() -> None:
    data = _header_frame(FAR_TIMESTAMP)
    assert pika.frame.decode_frame(data[:-5]) == (0, None)


def test_other_broken_frames_keep_pikas_behaviour() -> None:
    data = bytearray(_header_frame(FAR_TIMESTAMP))
    data[-1] = 0  # a wrong frame-end marker: the stream is broken, not one message
    with pytest.raises(pika.exceptions.InvalidFrameError):
        pika.frame.decode_frame(bytes(data))
    with pytest.raises(pika.exceptions.InvalidFrameError):
        pika.frame.decode_frame(b"\x09\x00\x00\x00\x00\x00\x00\xce")  # unknown frame type


def test_properties_that_decoded_are_not_marked() -> None:
    assert undecodable(pika.BasicProperties()) is None
    assert undecodable(None) is None
