"""FaultProxy's faults against a loopback echo server: latency, cut, blackhole, refuse."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from bench.faultproxy import FaultProxy
from tests.unit.faultproxy.support import (
    EchoServer,
    assert_closed_by_peer,
    assert_hangs,
    assert_refused,
    recv_exactly,
    round_trip,
    wait_until,
)

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
