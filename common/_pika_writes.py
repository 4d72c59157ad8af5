"""Fewer ``send()`` calls for pika: join the frames waiting to go out into one write.

pika's plaintext transport keeps each frame it is given as its own buffer and sends them one by
one: a publish is three frames (method, header, body), so a worker answering a request made four
``send()`` system calls (reply + ack), and a busy I/O thread spent about 30% of its time in
``send()`` (py-spy, 64 calls in flight). Joining what is waiting into one buffer before sending
changes nothing on the wire but the TCP segmentation, and turns N system calls into one.

This replaces one private method of pika (``_AsyncPlaintextTransport._produce``). It is applied
only if that method is where pika 1.x has it, and it calls pika's own method to do the sending.
TLS connections keep pika's behaviour.

Held writes. pika's ``write`` registers the socket for writability when its buffer was empty
(an ``epoll_ctl`` system call and a few pika layers), and sending it all unregisters it again
(another): two system calls per batch, about 8 us on the requestor's and the worker's I/O
threads for every call of a serial run, all of it before the request or reply leaves. An I/O
thread that will send at the end of a stretch of work anyway (a batch of tasks, a run of acks)
calls ``hold_pika_writes`` first: pika's writes are then only buffered, and
``flush_pika_writes`` sends them, registering for writability only if the socket cannot take
them all (the rest then goes pika's way). Connections that nobody holds, a user's own among
them, keep pika's behaviour.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

__all__ = ["coalesce_pika_writes", "flush_pika_writes", "hold_pika_writes"]

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

    original_write = transport.write

    def write(self: Any, data: bytes) -> None:
        if self._reqrep_held and data and self._state == self._STATE_ACTIVE:
            self._buffer_tx_data(data)  # flush_pika_writes sends it
            return
        original_write(self, data)

    transport._produce = produce
    transport._reqrep_held = False
    transport.write = write
    global _plaintext  # noqa: PLW0603 - set with the patch, once per process
    _plaintext = transport
    _applied = True
    return True


def hold_pika_writes(connection: Any) -> None:
    """Until ``flush_pika_writes``, only buffer what pika writes to ``connection`` (I/O thread).

    The caller must flush (``try``/``finally``): held frames, heartbeats included, wait for it.
    Nothing is held while pika still has unsent frames: it is then registered for
    writability already, and its own way costs no system call more.
    """
    transport: Any = getattr(connection, "_transport", None)
    if transport is not None and type(transport) is _plaintext and not transport._tx_buffers:
        transport._reqrep_held = True


def flush_pika_writes(connection: Any) -> None:
    """Send what pika has queued for ``connection`` now (its I/O thread only), and end a hold.

    pika only registers for writability when a frame is queued and sends on the next turn of its
    loop: one more ``poll()`` and dispatch per batch of work. Called at the end of a batch of
    tasks, this sends the batch's frames at once, through pika's own handler (which keeps the
    rest queued if the socket would block, and aborts the connection on a socket error, as it
    would have on the next turn). TLS transports are left to pika.
    """
    transport: Any = getattr(connection, "_transport", None)
    if transport is None or type(transport) is not _plaintext:
        return
    if transport._reqrep_held:
        transport._reqrep_held = False
        if transport._tx_buffers and transport._state == transport._STATE_ACTIVE:
            _send_held(transport)
    elif transport._tx_buffers:
        transport._on_socket_writable()


def _send_held(transport: Any) -> None:
    """Send held frames; what the socket does not take waits for writability, as in pika."""
    try:
        transport._produce()  # returns only once everything is sent
    except Exception:  # noqa: BLE001 - handed to pika's writable handler, which meets it again
        # EAGAIN keeps the rest queued for the socket to take later. Any other error recurs
        # when pika's handler sends on the next turn of the loop: it logs it and aborts the
        # connection, as it would have without the hold.
        transport._nbio.set_writer(transport._sock.fileno(), transport._on_socket_writable)
