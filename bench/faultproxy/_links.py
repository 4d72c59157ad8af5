"""A proxied connection (``Link``), its two ends (``End``) and its two directions (``Pipe``).

All of it belongs to the proxy's loop thread.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from collections import deque

CONNECT_TIMEOUT = 5.0
"""Seconds the upstream TCP connect may take before the client is reset."""

LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends RST, not FIN


def close_socket(sock: socket.socket, *, rst: bool) -> None:
    """Close ``sock``; with ``rst`` the peer gets a TCP RST instead of a FIN. Loop thread."""
    with contextlib.suppress(OSError):
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


class Pipe:
    """One direction of a link: bytes read from one end, held until due, then written to the
    other end. Used by the loop thread only.

    ``delayed`` holds ``(due, chunk)`` in arrival order; due times never decrease, so lowering
    the latency cannot let a later chunk overtake an earlier one. ``out`` holds due bytes not
    yet accepted by the destination socket (partial writes leave the rest here).
    """

    __slots__ = ("delayed", "delayed_bytes", "last_due", "out")

    def __init__(self) -> None:
        self.delayed: deque[tuple[float, bytes]] = deque()
        self.delayed_bytes = 0
        self.last_due = 0.0
        self.out = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held in this direction, delayed or unwritten."""
        return self.delayed_bytes + len(self.out)

    def push(self, data: bytes, due: float) -> None:
        """Queue ``data`` for delivery at ``due`` (or later, to keep order)."""
        due = max(due, self.last_due)
        self.last_due = due
        self.delayed.append((due, data))
        self.delayed_bytes += len(data)

    def release(self, now: float, *, drop: bool) -> None:
        """Move chunks due by ``now`` to ``out``, or discard them if ``drop``."""
        while self.delayed and self.delayed[0][0] <= now:
            _, data = self.delayed.popleft()
            self.delayed_bytes -= len(data)
            if not drop:
                self.out += data

    def next_due(self) -> float | None:
        """When the oldest delayed chunk is due, or None if nothing is delayed."""
        return self.delayed[0][0] if self.delayed else None

    def clear(self) -> None:
        """Discard everything held."""
        self.delayed.clear()
        self.delayed_bytes = 0
        self.out.clear()


class End:
    """One socket of a link (the client's or the upstream one). Loop thread only.

    ``rx`` carries what this end sends toward its peer; ``tx`` what is waiting to be written to
    this end. ``sock`` is None once this end is closed.
    """

    __slots__ = ("link", "rx", "sock", "tx")

    def __init__(self, link: Link, sock: socket.socket, rx: Pipe, tx: Pipe) -> None:
        self.link = link
        self.sock: socket.socket | None = sock
        self.rx = rx
        self.tx = tx

    @property
    def peer(self) -> End:
        """The other end of the same link."""
        return self.link.upstream if self is self.link.client else self.link.client


class Link:
    """A proxied connection: the accepted client socket and our socket to the upstream.
    Loop thread only."""

    __slots__ = (
        "client",
        "closing",
        "connect_deadline",
        "connecting",
        "drain_deadline",
        "removed",
        "upstream",
    )

    def __init__(self, client: socket.socket, upstream: socket.socket, now: float) -> None:
        to_upstream, to_client = Pipe(), Pipe()
        self.client = End(self, client, rx=to_upstream, tx=to_client)
        self.upstream = End(self, upstream, rx=to_client, tx=to_upstream)
        self.connecting = True  # until the non-blocking connect to the upstream completes
        self.connect_deadline = now + CONNECT_TIMEOUT
        self.closing = False  # one end closed in an orderly way: flush to the other, then close
        self.drain_deadline = math.inf
        self.removed = False

    @property
    def half_dead(self) -> bool:
        """One end vanished while blackholed and the other is still open."""
        return (self.client.sock is None) != (self.upstream.sock is None) and not self.closing
