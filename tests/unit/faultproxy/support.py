"""The proxy tests' upstream (a loopback echo server) and their socket helpers.

Every socket has a timeout and every wait has a deadline, so a broken proxy fails a test
instead of hanging it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable

import pytest

from bench.faultproxy import FaultProxy

TIMEOUT = 2.0  # seconds any single socket operation in these tests may take


class EchoServer:
    """A loopback echo server on one background thread (the proxy's upstream here).

    The test thread calls ``start``, ``close_all``, ``close`` and reads the properties; the
    server thread runs ``_serve``.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._buffers: dict[socket.socket, bytearray] = {}
        self._lock = threading.Lock()
        self._accepted = 0
        self._received = bytearray()
        self._stop = False
        self._drop = False
        self._thread = threading.Thread(target=self._serve, name="echo", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._accepted

    @property
    def open(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._buffers)

    @property
    def received(self) -> bytes:
        """Every byte received, all connections together."""
        with self._lock:
            return bytes(self._received)

    def start(self) -> EchoServer:
        self._thread.start()
        return self

    def close_all(self) -> None:
        """Close every accepted connection (an orderly close: FIN)."""
        with self._lock:
            self._drop = True
        self._wake_w.send(b"\0")
        wait_until(lambda: self.open == 0, "echo server to close its connections")

    def close(self) -> None:
        with self._lock:
            self._stop = True
        self._wake_w.send(b"\0")
        self._thread.join(5)
        assert not self._thread.is_alive(), "echo server thread did not stop"
        for sock in [*self._buffers, self._listener, self._wake_r, self._wake_w]:
            sock.close()
        self._sel.close()

    def _serve(self) -> None:
        while True:
            events = self._sel.select(1.0)
            if any(key.fileobj is self._wake_r for key, _ in events):
                with contextlib.suppress(BlockingIOError):  # drain before reading the flags
                    self._wake_r.recv(1024)
            with self._lock:
                if self._stop:
                    return
                drop, self._drop = self._drop, False
            if drop:
                for conn in list(self._buffers):
                    self._forget(conn)
            for key, mask in events:
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj in self._buffers:
                    assert isinstance(key.fileobj, socket.socket)
                    self._service(key.fileobj, mask)

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._sel.register(conn, selectors.EVENT_READ)
        with self._lock:
            self._buffers[conn] = bytearray()
            self._accepted += 1

    def _service(self, sock: socket.socket, mask: int) -> None:
        buffer = self._buffers[sock]
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(65536)
                if not data:
                    self._forget(sock)
                    return
                with self._lock:
                    self._received += data
                buffer += data
            if buffer:
                del buffer[: sock.send(buffer)]
        except BlockingIOError:
            pass
        except OSError:
            self._forget(sock)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if buffer else 0)
        self._sel.modify(sock, events)

    def _forget(self, sock: socket.socket) -> None:
        self._sel.unregister(sock)
        sock.close()
        with self._lock:
            del self._buffers[sock]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` (state changes on another thread) until true, at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes (each recv bounded by the socket's timeout)."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return recv_exactly(sock, len(data))


def assert_closed_by_peer(sock: socket.socket) -> None:
    """The next recv sees the connection end: b"" (FIN) or ConnectionResetError (RST)."""
    sock.settimeout(TIMEOUT)
    try:
        data = sock.recv(1024)
    except ConnectionResetError:
        return
    assert data == b""


def assert_refused(proxy: FaultProxy) -> None:
    """A new connection is reset at once: during connect (the proxy's RST can beat the
    client's connect() returning), or at the first recv."""
    try:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    except ConnectionResetError:
        return
    with sock:
        assert_closed_by_peer(sock)


def assert_hangs(sock: socket.socket) -> None:
    """Nothing arrives within 0.3 s, and the connection is not closed either."""
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(1024)
    sock.settimeout(TIMEOUT)
