"""A loopback TCP proxy that breaks the network on purpose, for fault-injection tests.

``FaultProxy`` sits between AMQP clients and the broker on one machine. Tests point a client at
``proxy.url_netloc`` instead of the broker, then add latency, cut (RST) every connection,
blackhole the traffic (a silent partition), or refuse new connections (a broker that is down).

Safety: it binds an IPv4 loopback address only, and it only ever connects to the one upstream
address it was given, which must also be an IPv4 loopback literal (no name resolution).

Threads: one background *loop thread* (started by ``start()``) owns every socket and all
forwarding state; it runs a ``selectors`` event loop over non-blocking sockets (no thread per
connection). The *test thread* (any thread, really) calls the control methods; they hand their
change to the loop thread through a lock-protected queue plus a wake-up socketpair and return
once the loop has applied it, so a change is in force for every byte read after the call
returns. Everything is bounded: connections, buffered bytes per direction (the proxy stops
reading from a side whose bytes are not being delivered), latency, connect and drain times,
and how long a control call or ``stop()`` waits for the loop.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

__all__ = ["FaultProxy"]

T = TypeVar("T")

RECV_SIZE = 64 * 1024
"""Bytes read per ``recv``."""
MAX_PENDING = 1024 * 1024
"""Per direction: once this many bytes wait (delayed or unwritten), stop reading that side."""
MAX_CONNECTIONS = 64
"""Client connections beyond this are reset on accept."""
MAX_LATENCY = 30.0
"""Upper limit for ``set_latency`` (seconds)."""
ACCEPTS_PER_WAKE = 16
"""Connections accepted per loop iteration, so accepting cannot starve forwarding."""
CONNECT_TIMEOUT = 5.0
"""Seconds the upstream TCP connect may take before the client is reset."""
DRAIN_GRACE = 2.0
"""After one side closes, seconds (beyond pending latency) to flush its bytes to the other."""
CONTROL_TIMEOUT = 5.0
"""Seconds a control method waits for the loop thread to apply it."""
STOP_TIMEOUT = 5.0
"""Seconds ``stop()`` waits for the loop thread to finish."""
LISTEN_BACKLOG = 64

_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends RST, not FIN
_LISTENER = "listener"
_WAKE = "wake"
_CONNECT_STARTED = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN})


def _loopback_ipv4(host: str, what: str) -> str:
    """Return ``host`` if it is an IPv4 loopback literal such as ``127.0.0.1``, else raise."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 loopback address, got {host!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"{what} must be an IPv4 loopback address, got {host!r}")
    return host


def _close_socket(sock: socket.socket, *, rst: bool) -> None:
    """Close ``sock``; with ``rst`` the peer gets a TCP RST instead of a FIN. Loop thread."""
    with contextlib.suppress(OSError):
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


class _Pipe:
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


class _End:
    """One socket of a link (the client's or the upstream one). Loop thread only.

    ``rx`` carries what this end sends toward its peer; ``tx`` what is waiting to be written to
    this end. ``sock`` is None once this end is closed.
    """

    __slots__ = ("link", "rx", "sock", "tx")

    def __init__(self, link: _Link, sock: socket.socket, rx: _Pipe, tx: _Pipe) -> None:
        self.link = link
        self.sock: socket.socket | None = sock
        self.rx = rx
        self.tx = tx

    @property
    def peer(self) -> _End:
        """The other end of the same link."""
        return self.link.upstream if self is self.link.client else self.link.client


class _Link:
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
        to_upstream, to_client = _Pipe(), _Pipe()
        self.client = _End(self, client, rx=to_upstream, tx=to_client)
        self.upstream = _End(self, upstream, rx=to_client, tx=to_upstream)
        self.connecting = True  # until the non-blocking connect to the upstream completes
        self.connect_deadline = now + CONNECT_TIMEOUT
        self.closing = False  # one end closed in an orderly way: flush to the other, then close
        self.drain_deadline = math.inf
        self.removed = False

    @property
    def half_dead(self) -> bool:
        """One end vanished while blackholed and the other is still open."""
        return (self.client.sock is None) != (self.upstream.sock is None) and not self.closing


class _Command(Generic[T]):
    """A control change for the loop thread to apply; the caller waits on ``done``."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Apply the change (loop thread, or the caller when no loop is running)."""
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the waiting caller
            self.error = exc
        finally:
            self.done.set()


class FaultProxy:
    """A loopback TCP proxy with switchable faults. See the module docstring for the threads.

    Usage::

        with FaultProxy(("127.0.0.1", 5672)) as proxy:
            url = f"amqp://guest:guest@{proxy.url_netloc}/%2F"
            ...
            proxy.cut()

    Control methods (``set_latency``, ``cut``, ``blackhole``, ``refuse``) and the properties
    are thread-safe; call them from the test thread. They may also be called before
    ``start()`` or after ``stop()``, when they apply directly.
    """

    def __init__(self, upstream: tuple[str, int], *, listen_host: str = "127.0.0.1") -> None:
        """Configure, without any socket yet. Called by the test thread."""
        host, port = upstream
        _loopback_ipv4(host, "upstream host")
        if not 0 < port < 65536:
            raise ValueError(f"upstream port must be 1-65535, got {port!r}")
        self._upstream = (host, port)
        self._listen_host = _loopback_ipv4(listen_host, "listen_host")

        # Guarded by _lock (shared between the test thread and the loop thread).
        self._lock = threading.RLock()
        self._commands: list[_Command[Any]] = []
        self._live = 0  # client sockets currently open
        self._running = False  # the loop thread accepts commands
        self._stopping = False
        self._started = False
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None

        # Set once by start() before the loop thread exists; read-only afterwards.
        self._port: int | None = None
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None

        # Owned by the loop thread while it runs (by the caller, under _lock, otherwise).
        self._latency = 0.0
        self._blackhole = False
        self._refuse = False
        self._links: set[_Link] = set()
        self._masks: dict[socket.socket, int] = {}
        self._error: BaseException | None = None

    # -- lifecycle (test thread) -------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind an ephemeral loopback port and start the loop thread. Called by the test thread.

        Returns self, so ``with FaultProxy(...).start() as proxy`` works. One start per proxy.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("FaultProxy.start() called twice")
            self._started = True
        with contextlib.ExitStack() as undo:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            undo.callback(listener.close)
            listener.bind((self._listen_host, 0))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
            wake_r, wake_w = socket.socketpair()
            undo.callback(wake_r.close)
            undo.callback(wake_w.close)
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            sel = selectors.DefaultSelector()
            undo.callback(sel.close)
            sel.register(listener, selectors.EVENT_READ, _LISTENER)
            sel.register(wake_r, selectors.EVENT_READ, _WAKE)
            self._port = int(listener.getsockname()[1])
            thread = threading.Thread(
                target=self._run, name=f"FaultProxy-{self._port}", daemon=True
            )
            undo.pop_all()
        self._listener, self._wake_r, self._sel = listener, wake_r, sel
        with self._lock:
            self._wake_w = wake_w
            self._thread = thread
            self._running = True
        thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and join the loop thread (at most
        ``STOP_TIMEOUT`` seconds). Called by the test thread; safe to call more than once.

        Raises RuntimeError if the loop thread does not finish in time, or if it had failed.
        """
        with self._lock:
            thread = self._thread
            if self._running:
                self._stopping = True
                self._wake_locked()
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"FaultProxy loop did not stop within {STOP_TIMEOUT}s")
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("FaultProxy loop thread failed") from error

    def __enter__(self) -> FaultProxy:
        """Start the proxy unless already started. Called by the test thread."""
        with self._lock:
            started = self._started
        return self if started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy. Called by the test thread."""
        self.stop()

    # -- properties (any thread) -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (after ``start()``). Any thread."""
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def url_netloc(self) -> str:
        """``host:port`` to put in a client URL, e.g. ``127.0.0.1:40123``. Any thread."""
        return f"{self._listen_host}:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy. Any thread.

        A client connection counts from when the loop thread accepts it, which can be a moment
        after the client's ``connect()`` returns.
        """
        with self._lock:
            return self._live

    # -- faults (test thread; applied by the loop thread) ------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk forwarded, in both directions, by ``seconds`` (0 = none).

        Called by the test thread. Applies to bytes the proxy reads after this returns; chunks
        already delayed keep their time, and order within each direction is always kept.
        """
        value = float(seconds)
        if not (math.isfinite(value) and 0.0 <= value <= MAX_LATENCY):
            raise ValueError(f"latency must be between 0 and {MAX_LATENCY} s, got {seconds!r}")

        def apply() -> None:
            self._latency = value

        self._call(apply)

    def cut(self) -> int:
        """Reset (RST) both sides of every current connection. Called by the test thread.

        Returns how many client connections were cut. New connections are still accepted.
        When this returns, the client sockets have already been reset.
        """
        return self._call(self._cut_all)

    def blackhole(self, on: bool = True) -> None:
        """While on, keep connections open but silently drop all bytes both ways.

        Called by the test thread. New connections are accepted (and connected upstream) but
        their bytes are dropped too. Like a real partition, a close or reset by one side is
        not passed on while on; when turned off, the surviving side of such a connection is
        reset (as a peer that forgot the connection would).
        """

        def apply() -> None:
            self._blackhole = bool(on)

        self._call(apply)

    def refuse(self, on: bool = True) -> None:
        """While on, accept new connections and reset them at once (a broker that is down).

        Called by the test thread. Existing connections are not affected.
        """

        def apply() -> None:
            self._refuse = bool(on)

        self._call(apply)

    # -- control plumbing (test thread) ------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and wait (bounded) for it. Called by the test thread.

        Without a running loop (before start, after stop) ``fn`` runs here, under the lock.
        """
        command = _Command(fn)
        with self._lock:
            queued = self._running
            if queued:
                self._commands.append(command)
                self._wake_locked()
            else:
                command.run()
        if queued and not command.done.wait(CONTROL_TIMEOUT):
            raise TimeoutError(f"FaultProxy loop did not apply a change within {CONTROL_TIMEOUT}s")
        if command.error is not None:
            raise command.error
        return cast(T, command.result)  # run() set it, as it raised nothing

    def _wake_locked(self) -> None:
        """Wake the loop thread. Caller holds ``_lock`` (so the socket cannot close under it)."""
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is already pending) or closed
                self._wake_w.send(b"\0")

    # -- the loop (loop thread) --------------------------------------------------------------

    def _run(self) -> None:
        """Body of the loop thread: run until stopped; record any failure for ``stop()``."""
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported by stop(), not lost in a thread
            self._error = exc
        finally:
            self._shutdown()

    def _loop(self) -> None:
        """Wait for I/O, control changes or the next due chunk; handle them; repeat."""
        assert self._sel is not None
        sel = self._sel
        while True:
            events = sel.select(self._next_timeout())
            now = time.monotonic()
            # Drain wake-ups *before* taking the command queue: a command queued after the
            # drain either is taken below or leaves a fresh wake-up byte for the next select.
            if any(key.data is _WAKE for key, _ in events):
                self._drain_wake()
            if self._apply_commands():
                return
            for key, mask in events:
                if key.data is _LISTENER:
                    self._accept(now)
                elif key.data is not _WAKE:
                    self._on_event(key.data, mask, now)
            self._housekeeping(now)

    def _apply_commands(self) -> bool:
        """Apply queued control changes; return True if the loop should stop."""
        with self._lock:
            commands, self._commands = self._commands, []
            stopping = self._stopping
        for command in commands:
            command.run()
        return stopping

    def _next_timeout(self) -> float | None:
        """Seconds until the next delayed chunk, connect or drain deadline; None if none."""
        deadline = math.inf
        for link in self._links:
            for pipe in (link.client.rx, link.upstream.rx):
                due = pipe.next_due()
                if due is not None:
                    deadline = min(deadline, due)
            if link.connecting:
                deadline = min(deadline, link.connect_deadline)
            if link.closing:
                deadline = min(deadline, link.drain_deadline)
        if deadline == math.inf:
            return None  # nothing timed: sleep until I/O or a wake-up
        return max(0.0, deadline - time.monotonic())

    def _drain_wake(self) -> None:
        """Empty the wake-up socket (the bytes only mean "look at the command queue")."""
        assert self._wake_r is not None
        for _ in range(64):
            try:
                if not self._wake_r.recv(4096):
                    return
            except OSError:  # BlockingIOError: drained
                return

    def _accept(self, now: float) -> None:
        """Accept new clients; connect each to the upstream, or reset it if refusing."""
        assert self._listener is not None
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                client, _ = self._listener.accept()
            except OSError:  # BlockingIOError: none left (or a transient accept error)
                return
            client.setblocking(False)
            if self._refuse or len(self._links) >= MAX_CONNECTIONS:
                _close_socket(client, rst=True)
                continue
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if upstream.connect_ex(self._upstream) not in _CONNECT_STARTED:
                _close_socket(upstream, rst=False)
                _close_socket(client, rst=True)  # like the connection refused
                continue
            link = _Link(client, upstream, now)
            self._links.add(link)
            self._count_client(+1)
            self._update_interest(link)

    def _on_event(self, end: _End, mask: int, now: float) -> None:
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

    def _finish_connect(self, link: _Link, now: float) -> None:
        """The upstream connect finished: go on forwarding, or treat a failure like the
        upstream resetting (the client is reset, or left hanging while blackholed)."""
        assert link.upstream.sock is not None
        failed = link.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        link.connecting = False
        if failed:
            self._lost(link.upstream, now, reset=True)

    def _read(self, end: _End, now: float) -> None:
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
        if self._blackhole or end.peer.sock is None or end.link.closing:
            return  # dropped
        end.rx.push(data, now + self._latency)

    def _flush(self, end: _End, now: float) -> None:
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

    def _lost(self, end: _End, now: float, *, reset: bool) -> None:
        """``end`` closed (``reset``: with an error/RST; else orderly EOF). Decide what the
        other side sees."""
        link = end.link
        if link.closing:  # already closing and now this side failed too: give up
            self._remove(link, rst=reset)
        elif self._blackhole:
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

    def _housekeeping(self, now: float) -> None:
        """Per link: enforce deadlines, release due chunks, write, finish closes, and set
        which events each socket waits for."""
        blackhole = self._blackhole
        for link in list(self._links):
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

    def _update_interest(self, link: _Link) -> None:
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
        assert self._sel is not None
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if mask == 0:
            self._sel.unregister(sock)
            del self._masks[sock]
        elif old == 0:
            self._sel.register(sock, mask, data)
            self._masks[sock] = mask
        else:
            self._sel.modify(sock, mask, data)
            self._masks[sock] = mask

    def _close_end(self, end: _End, *, rst: bool) -> None:
        """Stop watching and close one end's socket."""
        sock = end.sock
        if sock is None:
            return
        end.sock = None
        self._set_interest(sock, 0, None)
        _close_socket(sock, rst=rst)
        if end is end.link.client:
            self._count_client(-1)

    def _remove(self, link: _Link, *, rst: bool) -> None:
        """Close both ends of ``link`` (``rst``: with RST) and forget it."""
        self._close_end(link.client, rst=rst)
        self._close_end(link.upstream, rst=rst)
        link.client.rx.clear()
        link.upstream.rx.clear()
        link.removed = True
        self._links.discard(link)

    def _cut_all(self) -> int:
        """Reset every link; return how many client sockets were open. Loop thread (command)."""
        cut = 0
        for link in list(self._links):
            if link.client.sock is not None:
                cut += 1
            self._remove(link, rst=True)
        return cut

    def _count_client(self, delta: int) -> None:
        """Adjust the open-client count read by ``connections``."""
        with self._lock:
            self._live += delta

    def _shutdown(self) -> None:
        """Last thing the loop thread does: close every socket, answer queued commands."""
        with self._lock:
            self._running = False
            commands, self._commands = self._commands, []
            wake_w, self._wake_w = self._wake_w, None
        for link in list(self._links):
            for end in (link.client, link.upstream):
                if end.sock is not None:
                    _close_socket(end.sock, rst=False)
                    end.sock = None
            link.removed = True
        self._links.clear()
        self._masks.clear()
        with self._lock:
            self._live = 0
        for sock in (self._listener, self._wake_r, wake_w):
            if sock is not None:
                _close_socket(sock, rst=False)
        if self._sel is not None:
            with contextlib.suppress(OSError):
                self._sel.close()
        for command in commands:  # nothing left to change; let the callers return
            command.run()
