"""Unit tests of bench.faultproxy.FaultProxy against a loopback echo server. No broker.

Every socket has a timeout and every wait has a deadline, so a broken proxy fails a test
instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

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


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.address) as started:
        yield started


@pytest.fixture
def connect(proxy: FaultProxy) -> Iterator[Callable[[], socket.socket]]:
    """Open a client connection to the proxy; all are closed after the test."""
    opened: list[socket.socket] = []

    def _connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
        opened.append(sock)
        return sock

    yield _connect
    for sock in opened:
        sock.close()


# -- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upstream",
    [("192.0.2.1", 5672), ("localhost", 5672), ("::1", 5672), ("127.0.0.1", 0)],
)
def test_rejects_non_loopback_or_bad_upstream(upstream: tuple[str, int]) -> None:
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy(upstream)


def test_rejects_non_loopback_listen_host() -> None:
    with pytest.raises(ValueError, match="listen_host"):
        FaultProxy(("127.0.0.1", 5672), listen_host="0.0.0.0")  # noqa: S104 - must be refused


def test_port_needs_start() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FaultProxy(("127.0.0.1", 5672)).port


def test_url_netloc(proxy: FaultProxy) -> None:
    assert proxy.url_netloc == f"127.0.0.1:{proxy.port}"
    assert proxy.port > 0


@pytest.mark.parametrize("seconds", [-0.1, float("nan"), float("inf"), 31.0])
def test_set_latency_validates(proxy: FaultProxy, seconds: float) -> None:
    with pytest.raises(ValueError, match="latency"):
        proxy.set_latency(seconds)


def test_start_twice_fails(proxy: FaultProxy) -> None:
    with pytest.raises(RuntimeError, match="twice"):
        proxy.start()


# -- forwarding --------------------------------------------------------------------------------


def test_bytes_pass_both_ways(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"hello") == b"hello"
    assert round_trip(sock, b"world" * 100) == b"world" * 100
    assert echo.received == b"hello" + b"world" * 100


def test_large_transfer_is_intact(connect: Callable[[], socket.socket]) -> None:
    payload = os.urandom(4 * 1024 * 1024)  # several times the proxy's per-direction buffer
    sock = connect()
    sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    sender.start()
    try:
        assert recv_exactly(sock, len(payload)) == payload
    finally:
        sender.join(10)
    assert not sender.is_alive()


def test_connections_counts(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    assert proxy.connections == 0
    socks = [connect() for _ in range(3)]
    wait_until(lambda: proxy.connections == 3, "3 connections")
    socks[0].close()
    wait_until(lambda: proxy.connections == 2, "2 connections")


def test_client_close_closes_upstream(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"x") == b"x"
    sock.close()
    wait_until(lambda: echo.open == 0, "upstream side to close")
    wait_until(lambda: proxy.connections == 0, "proxy to forget the connection")


def test_upstream_close_closes_client(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"x") == b"x"
    echo.close_all()
    assert_closed_by_peer(sock)
    wait_until(lambda: proxy.connections == 0, "proxy to forget the connection")


def test_bytes_sent_before_close_still_arrive(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    proxy.set_latency(0.2)  # the bytes are still in the proxy when the client's FIN arrives
    sock = connect()
    sock.sendall(b"last words")
    sock.close()
    wait_until(lambda: echo.received == b"last words", "delayed bytes to be delivered")
    wait_until(lambda: echo.open == 0, "upstream side to close")


def test_unreachable_upstream_resets_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free_port = int(probe.getsockname()[1])  # nothing listens here once closed
    with FaultProxy(("127.0.0.1", free_port)) as proxy:
        assert_refused(proxy)
        wait_until(lambda: proxy.connections == 0, "proxy to drop the connection")


# -- latency -----------------------------------------------------------------------------------


def test_latency_delays_round_trip(proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    assert round_trip(sock, b"warm") == b"warm"
    proxy.set_latency(0.2)
    started = time.monotonic()
    assert round_trip(sock, b"ping") == b"ping"
    assert time.monotonic() - started >= 0.39  # 0.2 s each way
    proxy.set_latency(0)
    assert round_trip(sock, b"fast again") == b"fast again"


def test_lowering_latency_keeps_order(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"warm") == b"warm"
    proxy.set_latency(0.3)
    sock.sendall(b"first,")
    time.sleep(0.1)  # the proxy has read "first," with 0.3 s latency by now
    proxy.set_latency(0)
    sock.sendall(b"second")
    assert recv_exactly(sock, 12) == b"first,second"


# -- cut ---------------------------------------------------------------------------------------


def test_cut_resets_every_connection(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    socks = [connect(), connect()]
    for sock in socks:
        assert round_trip(sock, b"x") == b"x"
    assert proxy.connections == 2
    assert proxy.cut() == 2
    for sock in socks:
        assert_closed_by_peer(sock)
    assert proxy.connections == 0
    wait_until(lambda: echo.open == 0, "upstream sides to be reset")


def test_new_connection_works_after_cut(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    assert round_trip(connect(), b"x") == b"x"
    assert proxy.cut() == 1
    assert round_trip(connect(), b"again") == b"again"
    assert proxy.cut() == 1
    assert proxy.cut() == 0


# -- blackhole ---------------------------------------------------------------------------------


def test_blackhole_hangs_then_restores(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"before") == b"before"
    proxy.blackhole()
    sock.sendall(b"lost")
    assert_hangs(sock)
    assert proxy.connections == 1
    assert echo.open == 1
    proxy.blackhole(False)
    assert round_trip(sock, b"after") == b"after"
    assert echo.received == b"beforeafter"  # "lost" never reached the upstream


def test_blackhole_accepts_new_connections_but_drops_bytes(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    proxy.blackhole()
    sock = connect()
    sock.sendall(b"lost")
    assert_hangs(sock)
    wait_until(lambda: proxy.connections == 1, "the connection to be accepted")
    proxy.blackhole(False)
    assert round_trip(sock, b"found") == b"found"


def test_blackhole_hides_upstream_close_until_healed(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"x") == b"x"
    proxy.blackhole()
    echo.close_all()  # the broker side goes away during the partition...
    assert_hangs(sock)  # ...and the client cannot tell
    assert proxy.connections == 1
    proxy.blackhole(False)
    assert_closed_by_peer(sock)
    wait_until(lambda: proxy.connections == 0, "proxy to drop the connection")


# -- refuse ------------------------------------------------------------------------------------


def test_refuse_resets_new_connections_only(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[], socket.socket]
) -> None:
    existing = connect()
    assert round_trip(existing, b"x") == b"x"
    proxy.refuse()
    assert_refused(proxy)
    assert echo.accepted == 1  # no upstream connection was made for it
    assert round_trip(existing, b"still here") == b"still here"
    proxy.refuse(False)
    assert round_trip(connect(), b"welcome back") == b"welcome back"


# -- stop --------------------------------------------------------------------------------------


def test_stop_closes_client_sockets(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    sock = connect()
    assert round_trip(sock, b"x") == b"x"
    port = proxy.port
    proxy.stop()
    assert_closed_by_peer(sock)
    assert proxy.connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    proxy.stop()  # idempotent
    assert proxy.cut() == 0  # control methods still answer


def test_stop_does_not_wait_for_delayed_bytes(
    proxy: FaultProxy, connect: Callable[[], socket.socket]
) -> None:
    proxy.set_latency(10)
    connect().sendall(b"slow")
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5  # loose: only "does not hang"


def test_control_before_start() -> None:
    proxy = FaultProxy(("127.0.0.1", 5672))
    proxy.set_latency(0.1)
    proxy.blackhole()
    proxy.refuse(False)
    assert proxy.cut() == 0
    assert proxy.connections == 0
    proxy.stop()  # never started: nothing to do
