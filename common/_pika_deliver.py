"""A shorter road from the socket to a consumer, for the message every call receives.

pika turns each frame it reads into objects and routes it on its own: a ``basic.deliver`` is a
method frame (looked up among pending RPC callbacks, then handed to its channel), a header frame
(properties) and a body frame, put back together by the channel's assembler and given to the
consumer; the buffer is copied once per frame as it is trimmed. On a requestor's I/O thread that
is about a third of its time with 64 calls in flight (py-spy), more than reqrep's own work on
the reply.

When the frames of one whole delivery sit together at the front of the buffer (a method frame
``basic.deliver``, its header frame and a single body frame, the common case), ``_take`` reads
them in one pass and calls the channel's consumer with what pika would have given it: the same
``Basic.Deliver`` method, the ``BasicProperties`` pika would decode (decoded faster, by
``common/_pika_props_decode.py``), and the body. Anything
else goes the usual way, frame by frame: other frames, a body split into several frames, a
delivery not complete yet, an empty body, an unknown channel, a consumer that is cancelled or
unknown (pika rejects or logs those), and properties pika's decoder fails on (so that
``common/_pika_decode.py`` marks them). pika's counters (bytes and frames received, which its
heartbeat checker reads) move as they would.

Publisher confirms (``basic.ack``/``basic.nack``, one per reply or per batch of them) take a
short road too, on channels set up with ``confirm_delivery`` from here: their handler is called
with the frame pika's callback registry would have passed, as long as the channel is the one
registered (pika drops a closed channel and its callbacks together).

It replaces one method of pika (``Connection._on_data_available``), once per process, and acts
only on connections marked with ``use_fast_deliveries``: a user's own pika connections in the
same process keep pika's behaviour.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from reqrep.common._pika_props_decode import decode_properties, decode_short_string

__all__ = ["MARK", "confirm_delivery", "install_fast_deliveries", "use_fast_deliveries"]

log = logging.getLogger("reqrep.connection")

MARK = "_reqrep_fast_deliveries"
_CONFIRMS = "_reqrep_confirms"  # channel number -> (channel, handler)
_DELIVER = struct.pack(">HH", 60, 60)  # class basic, method deliver
_ACK, _NACK = struct.pack(">HH", 60, 80), struct.pack(">HH", 60, 120)
_METHOD, _HEADER, _BODY, _END = 1, 2, 3, 0xCE
_frame_head = struct.Struct(">BHL").unpack_from  # type, channel, size
_content_head = struct.Struct(">HHQ").unpack_from  # class, weight, body size
_delivery_tag = struct.Struct(">Q").unpack_from

_applied = False
_Deliver: Any = None  # pika's classes, set by install_fast_deliveries
_Ack: Any = None
_Nack: Any = None
_MethodFrame: Any = None

# (bytes taken, consumer, channel, Basic.Deliver, BasicProperties, body)
Taken = tuple[int, Callable[..., None], Any, Any, Any, bytes]


def use_fast_deliveries(connection: Any) -> None:
    """Mark a pika connection for the short road (its I/O thread, before it reads)."""
    setattr(connection, MARK, True)


def confirm_delivery(channel: Any, handler: Callable[[Any], None], callback: Any) -> None:
    """``channel.confirm_delivery(handler, callback=callback)``, with the channel's confirms
    taking the short road (the channel's I/O thread)."""
    channel.confirm_delivery(handler, callback=callback)
    connection = channel.connection
    confirms = getattr(connection, _CONFIRMS, None)
    if confirms is None:
        confirms = {}
        setattr(connection, _CONFIRMS, confirms)
    confirms[channel.channel_number] = (channel, handler)


def install_fast_deliveries() -> bool:
    """Install the short road once per process; False if pika's internals differ."""
    global _applied, _Deliver, _Ack, _Nack, _MethodFrame  # noqa: PLW0603
    if _applied:
        return True
    try:
        from pika import connection as pika_connection  # noqa: PLC0415 - only when applying
        from pika import frame, spec  # noqa: PLC0415

        cls = pika_connection.Connection
        original = cls._on_data_available
        for name in ("_trim_frame_buffer", "_read_frame", "_process_frame"):
            getattr(cls, name)  # what the replacement calls: pika 1.x has them
        _Deliver = spec.Basic.Deliver
        _Ack, _Nack, _MethodFrame = spec.Basic.Ack, spec.Basic.Nack, frame.Method
    except (ImportError, AttributeError):
        log.debug("pika internals differ; deliveries take pika's road")
        return False

    def on_data_available(self: Any, data_in: bytes) -> None:
        if not getattr(self, MARK, False):
            original(self, data_in)
            return
        self._frame_buffer += data_in
        while self._frame_buffer:
            buf = self._frame_buffer
            if buf[0] == _METHOD:
                taken = _take(self, buf)
                if taken is not None:
                    end, consumer, channel, method, props, body = taken
                    self._trim_frame_buffer(end)
                    self.frames_received += 3
                    consumer(channel, method, props, body)
                    continue
                confirm = _take_confirm(self, buf)
                if confirm is not None:
                    end, handler, method_frame = confirm
                    self._trim_frame_buffer(end)
                    self.frames_received += 1
                    handler(method_frame)
                    continue
            consumed, frame_value = self._read_frame()
            if not frame_value:
                return
            self._trim_frame_buffer(consumed)
            self._process_frame(frame_value)

    cls._on_data_available = on_data_available
    _applied = True
    return True


def _bounds(buf: bytes) -> tuple[int, int, int, int] | None:
    """(channel, header payload, body payload, end byte) of a whole single-body
    ``basic.deliver`` at the front of ``buf``; None if there is not one."""
    n = len(buf)
    if n < 12 or buf[7:11] != _DELIVER:
        return None
    _kind, channel_number, size = _frame_head(buf, 0)
    at = 7 + size  # the method frame's end byte
    if n < at + 8 or buf[at] != _END:
        return None
    kind, channel, size = _frame_head(buf, at + 1)
    header_at = at + 8
    at = header_at + size  # the header frame's end byte
    if kind != _HEADER or channel != channel_number or n < at + 8 or buf[at] != _END:
        return None
    class_id, _weight, body_size = _content_head(buf, header_at)
    kind, channel, size = _frame_head(buf, at + 1)
    body_at = at + 8
    at = body_at + size  # the body frame's end byte
    whole = (
        class_id == 60
        and body_size > 0
        and kind == _BODY
        and channel == channel_number
        and size == body_size
        and n > at
        and buf[at] == _END
    )
    return (channel_number, header_at, body_at, at) if whole else None


def _take(connection: Any, buf: bytes) -> Taken | None:
    """The delivery at the front of ``buf``, decoded, if all of it is there and ours to take."""
    bounds = _bounds(buf)
    if bounds is None:
        return None
    channel_number, header_at, body_at, end = bounds
    channel = connection._channels.get(channel_number)
    consumer_tag, offset = decode_short_string(buf, 11)
    consumer = (
        None
        if channel is None or consumer_tag in channel._cancelled
        else channel._consumers.get(consumer_tag)
    )
    if consumer is None:
        return None
    try:
        props = decode_properties(buf, header_at + 12)  # after class, weight and body size
    except Exception:  # noqa: BLE001 - pika's road decodes it again, and marks it
        return None
    (tag,) = _delivery_tag(buf, offset)
    redelivered = bool(buf[offset + 8] & 1)
    exchange, offset = decode_short_string(buf, offset + 9)
    routing_key, _offset = decode_short_string(buf, offset)
    method = _Deliver(consumer_tag, tag, redelivered, exchange, routing_key)
    return end + 1, consumer, channel, method, props, buf[body_at:end]


def _take_confirm(connection: Any, buf: bytes) -> tuple[int, Callable[[Any], None], Any] | None:
    """A whole ``basic.ack``/``basic.nack`` at the front of ``buf`` for a registered channel."""
    confirms = getattr(connection, _CONFIRMS, None)
    if not confirms or len(buf) < 21:
        return None
    kind = buf[7:11]
    if kind not in (_ACK, _NACK):
        return None
    _kind, channel_number, size = _frame_head(buf, 0)
    at = 7 + size  # the frame's end byte
    entry = confirms.get(channel_number)
    if (
        entry is None
        or size != 13
        or len(buf) <= at
        or buf[at] != _END
        or connection._channels.get(channel_number) is not entry[0]
    ):
        return None
    (tag,) = _delivery_tag(buf, 11)
    bits = buf[19]
    if kind == _ACK:
        method = _Ack(tag, bool(bits & 1))
    else:
        method = _Nack(tag, bool(bits & 1), bool(bits & 2))
    return at + 1, entry[1], _MethodFrame(channel_number, method)
