"""What the proxy's loop thread does with bytes and sockets: accept a client and connect it to
the upstream, read, delay, drop or write what each side sends, pass closes and resets on.

``Forwarder`` holds every link and the faults in force; only the loop thread uses it (or the
control caller, under the proxy's lock, while no loop runs).
"""

from __future__ import annotations

import contextlib
import errno
import math
import selectors
import socket
from collections.abc import Callable

from bench.faultproxy._links import End, Link, close_socket

RECV_SIZE = 64 * 1024
"""Bytes read per ``recv``."""
MAX_PENDING = 1024 * 1024
"""Per direction: once this many bytes wait (delayed or unwritten), stop reading that side."""
MAX_CONNECTIONS = 64
"""Client connections beyond this are reset on accept."""
ACCEPTS_PER_WAKE = 16
"""Connections accepted per loop iteration, so accepting cannot starve forwarding."""
DRAIN_GRACE = 2.0
"""After one side closes, seconds (beyond pending latency) to flush its bytes to the other."""

CONNECT_STARTED = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN})


class Forwarder:
    """Every proxied link and the faults in force. Loop thread only.

    ``latency``, ``blackhole`` and ``refuse`` are set by the proxy's control commands (on the
    loop thread); ``on_client`` hears +1/-1 as client sockets open and close.
    """

    def __init__(self, upstream: tuple[str, int], on_client: Callable[[int], None]) -> None:
        self._upstream = upstream
        self._on_client = on_client
        self.sel: selectors.BaseSelector | None = None  # set by FaultProxy.start()
        self.latency = 0.0
        self.blackhole = False
        self.refuse = False
        self.links: set[Link] = set()
        self._masks: dict[socket.socket, int] = {}

    def next_deadline(self) -> float:
        """The next delayed chunk, connect or drain deadline (monotonic); inf if none."""
        deadline = math.inf
        for link in self.links:
            for pipe in (link.client.rx, link.upstream.rx):
                due = pipe.next_due()
                if due is not None:
                    deadline = min(deadline, due)
            if link.connecting:
                deadline = min(deadline, link.connect_deadline)
            if link.closing:
                deadline = min(deadline, link.drain_deadline)
        return deadline

    def accept(self, listener: socket.socket, now: float) -> None:
        """Accept new clients on ``listener``; connect each to the upstream, or reset it if
        refusing."""
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                client, _ = listener.accept()
            except OSError:  # BlockingIOError: none left (or a transient accept error)
                return
            client.setblocking(False)
            if self.refuse or len(self.links) >= MAX_CONNECTIONS:
                close_socket(client, rst=True)
                continue
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if upstream.connect_ex(self._upstream) not in CONNECT_STARTED:
                close_socket(upstream, rst=False)
                close_socket(client, rst=True)  # like the connection refused
                continue
            link = Link(client, upstream, now)
            self.links.add(link)
            self._on_client(+1)
            self._update_interest(link)

    def on_event(self, end: End, mask: int, now: float) -> None:
        """Handle readiness of one end's socket."""
        link = end.link
        if end.sock is None or link.removed:
            return  # closed earlier in this iteration
        if mask & selectors.EVENT_WRITE:
            if link.connecting and end is link.upstream:
                self._finish_connect(link, now)
            else:
                self._flush(end, now)
        if mask & selectors.EVENT_READ and end.sock is not None and not link.removed:
            self._read(end, now)

    def _finish_connect(self, link: Link, now: float) -> None:
        """The upstream connect finished: go on forwarding, or treat a failure like the
        upstream resetting (the client is reset, or left hanging while blackholed)."""
        assert link.upstream.sock is not None
        failed = link.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        link.connecting = False
        if failed:
            self._lost(link.upstream, now, reset=True)

    def _read(self, end: End, now: float) -> None:
        """Read one chunk from ``end`` and queue it for the peer (or drop it)."""
        assert end.sock is not None
        try:
            data = end.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost(end, now, reset=True)
            return
        if not data:
            self._lost(end, now, reset=False)
            return
        if self.blackhole or end.peer.sock is None or end.link.closing:
            return  # dropped
        end.rx.push(data, now + self.latency)

    def _flush(self, end: End, now: float) -> None:
        """Write as much of ``end.tx.out`` to ``end`` as its socket takes now."""
        sock, out = end.sock, end.tx.out
        if sock is None or not out or (end.link.connecting and end is end.link.upstream):
            return
        try:
            sent = sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost(end, now, reset=True)
            return
        del out[:sent]

    def _lost(self, end: End, now: float, *, reset: bool) -> None:
        """``end`` closed (``reset``: with an error/RST; else orderly EOF). Decide what the
        other side sees."""
        link = end.link
        if link.closing:  # already closing and now this side failed too: give up
            self._remove(link, rst=reset)
        elif self.blackhole:
            # A partition hides this from the other side: keep the peer open, drop its bytes.
            self._close_end(end, rst=False)
            end.rx.clear()
            end.tx.clear()
            if end.peer.sock is None:
                self._remove(link, rst=False)
        elif reset:
            self._remove(link, rst=True)  # pass the reset on
        else:
            # Orderly close (half-close counts as full): deliver what this end already sent,
            # then close the peer. Bytes still heading to this end are dropped.
            link.closing = True
            link.drain_deadline = max(now, end.rx.last_due) + DRAIN_GRACE
            self._close_end(end, rst=False)
            end.tx.clear()

    def housekeeping(self, now: float) -> None:
        """Per link: enforce deadlines, release due chunks, write, finish closes, and set
        which events each socket waits for."""
        blackhole = self.blackhole
        for link in list(self.links):
            if link.removed:
                continue
            if link.connecting and now >= link.connect_deadline:
                link.connecting = False
                self._lost(link.upstream, now, reset=True)  # as if the connect failed
                if link.removed:
                    continue
            if link.half_dead and not blackhole:
                self._remove(link, rst=True)  # the partition healed: the survivor learns
                continue
            for end in (link.client, link.upstream):
                end.tx.release(now, drop=blackhole)
                self._flush(end, now)
                if link.removed:
                    break
            if link.removed:
                continue
            if link.closing:
                target = link.client if link.client.sock is not None else link.upstream
                drained = target.tx.pending == 0 and not link.connecting
                if target.sock is None or drained or now >= link.drain_deadline:
                    self._remove(link, rst=False)
                    continue
            self._update_interest(link)

    def _update_interest(self, link: Link) -> None:
        """Register each open socket for what it needs: read unless its direction is full
        (or closing), write while bytes wait for it (or its connect is in progress)."""
        for end in (link.client, link.upstream):
            if end.sock is None:
                continue
            connecting = link.connecting and end is link.upstream
            mask = 0
            if not (link.closing or connecting) and end.rx.pending < MAX_PENDING:
                mask |= selectors.EVENT_READ
            if connecting or end.tx.out:
                mask |= selectors.EVENT_WRITE
            self._set_interest(end.sock, mask, end)

    def _set_interest(self, sock: socket.socket, mask: int, data: object) -> None:
        """Make the selector watch ``sock`` for ``mask`` (0: not at all)."""
        assert self.sel is not None
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if mask == 0:
            self.sel.unregister(sock)
            del self._masks[sock]
        elif old == 0:
            self.sel.register(sock, mask, data)
            self._masks[sock] = mask
        else:
            self.sel.modify(sock, mask, data)
            self._masks[sock] = mask

    def _close_end(self, end: End, *, rst: bool) -> None:
        """Stop watching and close one end's socket."""
        sock = end.sock
        if sock is None:
            return
        end.sock = None
        self._set_interest(sock, 0, None)
        close_socket(sock, rst=rst)
        if end is end.link.client:
            self._on_client(-1)

    def _remove(self, link: Link, *, rst: bool) -> None:
        """Close both ends of ``link`` (``rst``: with RST) and forget it."""
        self._close_end(link.client, rst=rst)
        self._close_end(link.upstream, rst=rst)
        link.client.rx.clear()
        link.upstream.rx.clear()
        link.removed = True
        self.links.discard(link)

    def cut_all(self) -> int:
        """Reset every link; return how many client sockets were open. Loop thread (command)."""
        cut = 0
        for link in list(self.links):
            if link.client.sock is not None:
                cut += 1
            self._remove(link, rst=True)
        return cut

    def close_all(self) -> None:
        """Close every socket of every link (a FIN, not a RST) and forget them all."""
        for link in list(self.links):
            for end in (link.client, link.upstream):
                if end.sock is not None:
                    close_socket(end.sock, rst=False)
                    end.sock = None
            link.removed = True
        self.links.clear()
        self._masks.clear()
