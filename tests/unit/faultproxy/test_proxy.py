"""Unit tests of bench.faultproxy.FaultProxy against a loopback echo server. No broker.

Every socket has a timeout and every wait has a deadline, so a broken proxy fails a test
instead of hanging it. Construction, forwarding and stopping here; the faults in
test_faults.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from bench.faultproxy import FaultProxy
from tests.unit.faultproxy.support import (
    TIMEOUT,
    EchoServer,
    assert_closed_by_peer,
    assert_refused,
    recv_exactly,
    round_trip,
    wait_until,
)

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
