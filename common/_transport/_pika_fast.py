"""reqrep's own pika connection: the short roads, and a guard, on its connections only.

``ReqrepConnection`` is a ``SelectConnection`` subclass, ``ReqrepAsyncioConnection`` an
``AsyncioConnection`` one (a connection hosted on a caller's asyncio loop), both with the same
overrides (``ShortRoads``: pika's hooks they override are those of ``BaseConnection``, which both
adapters share, as they share the socket transport); ``_pika.py`` makes one per connection
reqrep opens. Nothing here assigns to a pika module or class: a user's own pika connections in
the same process keep pika's behaviour (a test checks it). Which parts are on is decided per
connection (``_pika.py``: only on the pika versions CI tests, and ``REQREP_PIKA_FASTPATH=0``
turns the short roads off):

The guard (``guard``): a message whose properties pika cannot decode must not drop the
connection. pika decodes a content header on the I/O thread before any of our code sees the
message, and some properties the broker accepts and forwards make that raise (headers nested
500 tables deep: ``RecursionError``; a timestamp past year 9999: ``ValueError``). The exception
would escape pika's frame loop, the connection would drop, and the broker would redeliver the
message to do it again, without end. ``_read_frame`` here consumes such a Basic content header
whole (its length is in the frame header, so the stream stays in step) and hands on a stand-in
with every property unset and a mark saying why; the consumer gets ``Properties.undecodable``.

The short roads (``fast``), each measured when it was added (docs/performance.md):

- Deliveries: when the frames of one whole ``basic.deliver`` (method, header, one body frame)
  sit at the front of the read buffer, they are read in one pass and handed to the consumer as a
  ``Delivery`` with properties decoded by ``_pika_codec``; everything else (other frames, a body
  in several frames, an incomplete delivery, an unknown or cancelled consumer, properties the
  fast decoder refuses) goes pika's way, frame by frame. pika's counters (bytes and frames
  received, which its heartbeat checker reads) move as they would.
- Publisher confirms (``basic.ack``/``basic.nack``) of channels that registered for it go
  straight to their handler.
- Writes: the transport joins the frames waiting to go out into one ``send()`` (pika sends each
  frame with its own), and a holder (``hold_writes``) can keep pika from registering the socket
  for writability for every batch: held frames go out in one piece at ``flush_writes``.
- Reads: one ``recv()`` of up to 64 KB per readable event, instead of 4 KB reads until
  ``EAGAIN`` (pika's pollers are level-triggered: bytes still waiting wake the loop again).

TLS connections keep pika's transport; the guard and the delivery road work on them too.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from pika import frame, spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.select_connection import SelectConnection
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

from reqrep.common._transport._pika_codec import decode_properties, decode_short_string, from_pika
from reqrep.common._transport._types import Confirm, Delivery, Properties

__all__ = ["RECV_BYTES", "Consumer", "ReqrepAsyncioConnection", "ReqrepConnection", "ShortRoads"]

log = logging.getLogger("reqrep.connection")

RECV_BYTES = 64 * 1024  # pika's limit per readable event is 100 KB; one read stays under it
_MAX_JOIN = 256 * 1024  # join at most this much at once: beyond it, copying costs more than calls
_MARK = "_reqrep_undecodable"  # set on a stand-in for properties that failed to decode
_BASIC_CLASS_ID = 60
_DELIVER = struct.pack(">HH", 60, 60)  # class basic, method deliver
_ACK, _NACK = struct.pack(">HH", 60, 80), struct.pack(">HH", 60, 120)
_METHOD, _HEADER, _BODY, _END = 1, 2, 3, 0xCE
_frame_head = struct.Struct(">BHL").unpack_from  # type, channel, size
_content_head = struct.Struct(">HHQ").unpack_from  # class, weight, body size
_delivery_tag = struct.Struct(">Q").unpack_from


class Consumer:
    """What reqrep registers with pika as a consumer callback: pika's road calls it with pika's
    objects, the short road hands it a ``Delivery`` directly."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[Delivery], None]) -> None:
        self.deliver = deliver

    def __call__(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        mark = getattr(properties, _MARK, None)
        self.deliver(
            Delivery(
                method.delivery_tag,
                bool(method.redelivered),
                method.exchange,
                method.routing_key,
                from_pika(properties, mark if isinstance(mark, str) else None),
                body,
                method.consumer_tag,
            )
        )


def undecodable_stand_in(properties: Any) -> str | None:
    """Why pika's properties object is a stand-in (see the module docstring), or None."""
    mark = getattr(properties, _MARK, None)
    return mark if isinstance(mark, str) else None


class ShortRoads:
    """The guard and, if ``fast``, the short roads (see the module docstring), over pika's
    ``BaseConnection`` hooks: the first base of ``ReqrepConnection`` and
    ``ReqrepAsyncioConnection``, never used alone. Loop thread only, as any pika connection."""

    # pika's, set by the connection class this is mixed into
    _transport: Any
    _frame_buffer: bytes
    _channels: dict[int, Any]
    frames_received: int

    def __init__(self, *args: Any, guard: bool, fast: bool, **kwargs: Any) -> None:
        self._reqrep_guard = guard
        self._reqrep_fast = fast
        # channel number -> (pika channel, handler) for confirms on the short road
        self._reqrep_confirms: dict[int, tuple[Any, Callable[[Confirm], None]]] = {}
        super().__init__(*args, **kwargs)  # pika's connection class, next in the MRO

    # -- confirms and writes, for the adapter ---------------------------------------------------

    def confirms_on_short_road(self, channel: Any, handler: Callable[[Confirm], None]) -> None:
        if self._reqrep_fast:
            self._reqrep_confirms[channel.channel_number] = (channel, handler)

    def hold_writes(self) -> None:
        transport = self._transport
        if type(transport) is _FastTransport:
            transport.hold()

    def flush_writes(self) -> None:
        transport = self._transport
        if type(transport) is _FastTransport:
            transport.flush()

    # -- pika's hooks, overridden on this class only -------------------------------------------

    def _proto_connection_made(self, transport: Any) -> None:
        if self._reqrep_fast and type(transport) is _AsyncPlaintextTransport:
            # The instance becomes our subclass: pika's class is untouched.
            transport.__class__ = _FastTransport
            transport._reqrep_held = False
        super()._proto_connection_made(transport)  # type: ignore[misc]  # pika's, in the MRO

    def _read_frame(self) -> tuple[int, Any]:
        try:
            decoded: tuple[int, Any] = super()._read_frame()  # type: ignore[misc]  # pika's
        except Exception as exc:
            if not self._reqrep_guard:
                raise
            stand_in = _stand_in(self._frame_buffer, exc)
            if stand_in is None:
                raise
            return stand_in
        return decoded

    def _on_data_available(self, data_in: bytes) -> None:
        if not self._reqrep_fast:
            super()._on_data_available(data_in)  # type: ignore[misc]  # pika's, in the MRO
            return
        self._frame_buffer += data_in
        while self._frame_buffer:
            buf = self._frame_buffer
            if buf[0] == _METHOD:
                taken = _take_delivery(self, buf)
                if taken is not None:
                    end, consumer, delivery = taken
                    self._trim_frame_buffer(end)  # type: ignore[attr-defined]  # pika's
                    self.frames_received += 3
                    consumer.deliver(delivery)
                    continue
                confirm = _take_confirm(self, buf)
                if confirm is not None:
                    end, handler, confirmed = confirm
                    self._trim_frame_buffer(end)  # type: ignore[attr-defined]  # pika's
                    self.frames_received += 1
                    handler(confirmed)
                    continue
            consumed, frame_value = self._read_frame()
            if not frame_value:
                return
            self._trim_frame_buffer(consumed)  # type: ignore[attr-defined]  # pika's
            self._process_frame(frame_value)  # type: ignore[attr-defined]  # pika's


class ReqrepConnection(ShortRoads, SelectConnection):  # type: ignore[misc]  # pika has no stubs
    """A ``SelectConnection`` with the guard and the short roads (``ShortRoads``)."""


class ReqrepAsyncioConnection(ShortRoads, AsyncioConnection):  # type: ignore[misc]  # pika has no stubs
    """An ``AsyncioConnection`` (on a caller's event loop) with the guard and the short roads
    (``ShortRoads``)."""


def _stand_in(data_in: bytes, exc: Exception) -> tuple[int, Any] | None:
    """A complete Basic content header whose properties failed to decode, as a header frame
    with stand-in properties; None for anything else (pika's error then stands)."""
    try:
        frame_type, channel, size = struct.unpack_from(">BHL", data_in)
        class_id, _weight, body_size = struct.unpack_from(">HHQ", data_in, spec.FRAME_HEADER_SIZE)
    except struct.error:
        return None
    end = spec.FRAME_HEADER_SIZE + size + 1
    if (
        frame_type != spec.FRAME_HEADER
        or class_id != _BASIC_CLASS_ID
        or data_in[end - 1 : end] != bytes((spec.FRAME_END,))
    ):
        return None
    stand_in = spec.BasicProperties()
    setattr(stand_in, _MARK, f"{type(exc).__name__}: {exc}"[:200])
    return end, frame.Header(channel, body_size, stand_in)


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
        class_id == _BASIC_CLASS_ID
        and body_size > 0
        and kind == _BODY
        and channel == channel_number
        and size == body_size
        and n > at
        and buf[at] == _END
    )
    return (channel_number, header_at, body_at, at) if whole else None


def _take_delivery(connection: Any, buf: bytes) -> tuple[int, Consumer, Delivery] | None:
    """The delivery at the front of ``buf``, if all of it is there and ours to take."""
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
    if type(consumer) is not Consumer:
        return None  # pika's road: it rejects or logs what it does not know
    try:
        properties: Properties = decode_properties(buf, header_at + 12)  # after class, weight, size
    except Exception:  # noqa: BLE001 - pika's road decodes it again, and the guard marks it
        return None
    (tag,) = _delivery_tag(buf, offset)
    redelivered = bool(buf[offset + 8] & 1)
    exchange, offset = decode_short_string(buf, offset + 9)
    routing_key, _offset = decode_short_string(buf, offset)
    delivery = Delivery(
        tag, redelivered, exchange, routing_key, properties, buf[body_at:end], consumer_tag
    )
    return end + 1, consumer, delivery


def _take_confirm(
    connection: ShortRoads, buf: bytes
) -> tuple[int, Callable[[Confirm], None], Confirm] | None:
    """A whole ``basic.ack``/``basic.nack`` at the front of ``buf`` for a registered channel."""
    confirms = connection._reqrep_confirms
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
    return at + 1, entry[1], Confirm(tag, bool(buf[19] & 1), kind == _ACK)


class _FastTransport(_AsyncPlaintextTransport):  # type: ignore[misc]  # pika has no stubs
    """pika's plaintext transport with joined writes, held writes and single reads; only ever
    the class of a ``ReqrepConnection``'s transport instance (see ``_proto_connection_made``)."""

    _reqrep_held: bool

    def _produce(self) -> None:
        buffers: deque[bytes] = self._tx_buffers
        if len(buffers) > 1:
            joined: list[bytes] = []
            size = 0
            while buffers and size < _MAX_JOIN:
                chunk = buffers.popleft()
                joined.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(joined))
        super()._produce()

    def _consume(self) -> None:
        data = self._sigint_safe_recv(self._sock, RECV_BYTES)
        if not data:
            log.debug("the broker closed the socket")
            raise self.RxEndOfFile()
        self._protocol.data_received(data)

    def write(self, data: bytes) -> None:
        if self._reqrep_held and data and self._state == self._STATE_ACTIVE:
            self._buffer_tx_data(data)  # flush() sends it
            return
        super().write(data)

    def hold(self) -> None:
        """Only buffer what is written until ``flush`` (nothing is held while pika still has
        unsent frames: it is registered for writability then, and its way costs nothing more)."""
        if not self._tx_buffers:
            self._reqrep_held = True

    def flush(self) -> None:
        """Send what is buffered now (through pika's own writable handler), and end a hold."""
        if self._reqrep_held:
            self._reqrep_held = False
            if self._tx_buffers and self._state == self._STATE_ACTIVE:
                try:
                    self._produce()  # returns once everything is sent
                except Exception:  # noqa: BLE001 - pika's writable handler meets it again
                    # EAGAIN keeps the rest queued for the socket to take later; any other error
                    # recurs in pika's handler, which logs it and aborts the connection.
                    self._nbio.set_writer(self._sock.fileno(), self._on_socket_writable)
        elif self._tx_buffers:
            self._on_socket_writable()
