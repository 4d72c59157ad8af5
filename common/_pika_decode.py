"""Survive a message whose AMQP properties pika cannot decode, instead of losing the connection.

pika decodes a message's content-header frame (its properties) in ``pika.frame.decode_frame``,
on the connection's I/O thread, before any of our code sees the message. Some properties that
the broker accepts and forwards make that decoding raise:

- headers nested 500 or more tables deep: ``RecursionError`` (pika decodes tables recursively);
- a timestamp field (``T``) in the headers past year 9999: ``ValueError``/``OverflowError``.

The exception escapes pika's frame loop and the connection drops. The broker then redelivers the
message, which drops the connection again, without end (a classic queue: ~290 reconnects in
26 s); on a quorum queue each drop also counts as a delivery of every other request in flight.

This module wraps ``pika.frame.decode_frame``: when decoding a *Basic content header* fails, the
frame is still consumed whole (its length is in the frame header, so the stream stays in step)
and stands in as a ``BasicProperties`` with every field unset and a mark that says why.
``undecodable(properties)`` returns that reason, or None for properties that decoded. The code
that receives the message decides what to do with it: the worker rejects it without requeueing
(dead-lettered), the requestor drops it and counts it. Every other frame, and every other
failure, keeps pika's behaviour.

It is applied once per process (``ConnectionThread`` does it), only if pika 1.x has the function
where this module expects it, and it calls pika's own function for every frame.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

__all__ = ["tolerate_undecodable_properties", "undecodable"]

log = logging.getLogger("reqrep.connection")

_MARK = "_reqrep_undecodable"  # the attribute set on the stand-in properties
_BASIC_CLASS_ID = 60  # AMQP class "basic": the only content class with properties we read

_applied = False


def undecodable(properties: Any) -> str | None:
    """Why pika could not decode these properties, or None if it could."""
    reason = getattr(properties, _MARK, None)
    return reason if isinstance(reason, str) else None


def tolerate_undecodable_properties() -> bool:
    """Install the tolerant ``decode_frame`` once per process; False if pika's internals differ."""
    global _applied  # noqa: PLW0603 - a once-per-process patch
    if _applied:
        return True
    try:
        from pika import frame, spec  # noqa: PLC0415 - only when applying

        original = frame.decode_frame
        header_type, header_size = spec.FRAME_HEADER, spec.FRAME_HEADER_SIZE
        frame_end = bytes([spec.FRAME_END])
        header, properties = frame.Header, spec.BasicProperties
    except (ImportError, AttributeError):
        log.debug("pika internals differ; undecodable properties drop the connection")
        return False

    def decode_frame(data_in: bytes) -> tuple[int, Any]:
        try:
            decoded: tuple[int, Any] = original(data_in)
        except Exception as exc:
            # Only a complete Basic content header whose properties failed to decode.
            try:
                frame_type, channel, size = struct.unpack_from(">BHL", data_in)
                class_id, _weight, body_size = struct.unpack_from(">HHQ", data_in, header_size)
            except struct.error:
                raise exc from None
            end = header_size + size + len(frame_end)
            if (
                frame_type != header_type
                or class_id != _BASIC_CLASS_ID
                or data_in[end - 1 : end] != frame_end
            ):
                raise
            stand_in = properties()
            setattr(stand_in, _MARK, f"{type(exc).__name__}: {exc}"[:200])
            return end, header(channel, body_size, stand_in)
        return decoded

    frame.decode_frame = decode_frame
    _applied = True
    return True
