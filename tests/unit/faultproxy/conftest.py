"""Fixtures of the proxy tests: an echo server, a started proxy in front of it, and client
connections to the proxy that are closed after each test."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from bench.faultproxy import FaultProxy
from tests.unit.faultproxy.support import TIMEOUT, EchoServer


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
