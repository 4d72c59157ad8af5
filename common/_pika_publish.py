"""A publish (and an ack) written as bytes in one piece, instead of frame objects marshalled apart.

``channel.basic_publish`` builds a ``Basic.Publish`` method object, a method frame, a header
frame and a body frame, marshals each through pika's generic encoders and hands them to the
transport one by one: about 14% of a requestor's I/O thread with 64 calls in flight (py-spy). A
request or a reply goes to one of a few queues, so ``publish`` keeps the method frame's bytes per
(channel, exchange, routing key, mandatory) and writes header and body frames around the
properties' own encoding (``common/_pika_props.py`` keeps most of that ready too). The bytes on
the wire are pika's (``tests/unit/test_pika_publish.py`` compares them), and so are the checks
(a closed channel raises pika's error) and the counters (bytes and frames sent).

A worker acks every request it answered: ``ack`` writes ``basic.ack``'s 21 bytes directly
instead of building a ``Basic.Ack`` object and a method frame and marshalling them (about 5 us
on the worker's I/O thread, ahead of the reply's send when it goes out in the same write).

If pika's internals are not where this module expects them, ``publish`` is
``channel.basic_publish`` and ``ack`` is ``channel.basic_ack``.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from reqrep.common._pika_props import short_string as _short

__all__ = ["ack", "publish"]

log = logging.getLogger("reqrep.connection")

_END = b"\xce"
_frame_head = struct.Struct(">BHL").pack
_content_head = struct.Struct(">HHQ").pack
_ack_frame = struct.Struct(">BHLHHQ?").pack  # method frame head, then Basic.Ack's fields
_CACHE_MAX = 1024  # method frames kept: (channel, exchange, routing key, mandatory)
_methods: dict[tuple[int, str | bytes, str | bytes, bool], bytes] = {}


def _method_frame(
    channel: int, exchange: str | bytes, routing_key: str | bytes, mandatory: bool
) -> bytes:
    key = (channel, exchange, routing_key, mandatory)
    frame = _methods.get(key)
    if frame is None:
        # Basic.Publish: class 60, method 40, ticket 0, exchange, routing key, bits (mandatory).
        payload = (
            struct.pack(">HHH", 60, 40, 0)
            + _short(exchange)
            + _short(routing_key)
            + bytes((1 if mandatory else 0,))
        )
        frame = _frame_head(1, channel, len(payload)) + payload + _END
        if len(_methods) >= _CACHE_MAX:
            _methods.clear()
        _methods[key] = frame
    return frame


def publish(
    channel: Any,
    exchange: str | bytes,
    routing_key: str | bytes,
    body: bytes,
    properties: Any,
    *,
    mandatory: bool,
) -> None:
    """``channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)``,
    written in one piece (the channel's I/O thread)."""
    connection = getattr(channel, "connection", None)
    output = getattr(connection, "_output_marshaled_frames", None)
    body_max = getattr(connection, "_body_max_length", None)
    check_open = getattr(channel, "_raise_if_not_open", None)
    if output is None or check_open is None or not isinstance(body_max, int) or body_max <= 0:
        channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
        return
    check_open()
    number = channel.channel_number
    header = _content_head(60, 0, len(body)) + b"".join(properties.encode())
    parts = [
        _method_frame(number, exchange, routing_key, mandatory),
        _frame_head(2, number, len(header)),
        header,
        _END,
    ]
    for start in range(0, len(body), body_max):
        chunk = body[start : start + body_max]
        parts += (_frame_head(3, number, len(chunk)), chunk, _END)
    output([b"".join(parts)])


def ack(channel: Any, delivery_tag: int, *, multiple: bool) -> None:
    """``channel.basic_ack(delivery_tag, multiple)``, written as bytes (the channel's I/O
    thread), with pika's open-channel check and counters."""
    connection = getattr(channel, "connection", None)
    output = getattr(connection, "_output_marshaled_frames", None)
    check_open = getattr(channel, "_raise_if_not_open", None)
    if output is None or check_open is None:
        channel.basic_ack(delivery_tag, multiple)
        return
    check_open()
    # A method frame of 13 bytes: class 60, method 80 (Basic.Ack), delivery tag, bits.
    frame = _ack_frame(1, channel.channel_number, 13, 60, 80, delivery_tag, multiple)
    output([frame + _END])
