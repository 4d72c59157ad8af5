"""Fewer ``send()`` calls for pika: join the frames waiting to go out into one write.

pika's plaintext transport keeps each frame it is given as its own buffer and sends them one by
one: a publish is three frames (method, header, body), so a worker answering a request made four
``send()`` system calls (reply + ack), and a busy I/O thread spent about 30% of its time in
``send()`` (py-spy, 64 calls in flight). Joining what is waiting into one buffer before sending
changes nothing on the wire but the TCP segmentation, and turns N system calls into one.

This replaces one private method of pika (``_AsyncPlaintextTransport._produce``). It is applied
only if that method is where pika 1.x has it, and it calls pika's own method to do the sending.
TLS connections keep pika's behaviour.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

__all__ = ["coalesce_pika_writes", "flush_pika_writes"]

log = logging.getLogger("reqrep.connection")

_MAX_JOIN = 256 * 1024  # join at most this much at once: beyond it, copying costs more than calls

_applied = False
_plaintext: Any = None  # pika's plaintext transport class, once the patch is applied


def coalesce_pika_writes() -> bool:
    """Install the joining ``_produce`` once per process; False if pika's internals differ."""
    global _applied  # noqa: PLW0603 - a once-per-process patch
    if _applied:
        return True
    try:
        from pika.adapters.utils import io_services_utils  # noqa: PLC0415 - only when applying

        transport = io_services_utils._AsyncPlaintextTransport
        original = transport._produce
    except (ImportError, AttributeError):
        log.debug("pika internals differ; writes are not coalesced")
        return False

    def produce(self: Any) -> None:
        buffers: deque[bytes] = self._tx_buffers
        if len(buffers) > 1:
            joined: list[bytes] = []
            size = 0
            while buffers and size < _MAX_JOIN:
                chunk = buffers.popleft()
                joined.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(joined))
        original(self)

    transport._produce = produce
    global _plaintext  # noqa: PLW0603 - set with the patch, once per process
    _plaintext = transport
    _applied = True
    return True


def flush_pika_writes(connection: Any) -> None:
    """Send what pika has queued for ``connection`` now (its I/O thread only).

    pika only registers for writability when a frame is queued and sends on the next turn of its
    loop: one more ``poll()`` and dispatch per batch of work. Called at the end of a batch of
    tasks, this sends the batch's frames at once, through pika's own handler (which keeps the
    rest queued if the socket would block, and aborts the connection on a socket error, as it
    would have on the next turn). TLS transports are left to pika.
    """
    transport: Any = getattr(connection, "_transport", None)
    if transport is not None and type(transport) is _plaintext and transport._tx_buffers:
        transport._on_socket_writable()
