"""The worker's HTTP endpoint: health and metrics (no broker)."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import urllib.error
import urllib.request

import pytest

from reqrep.common.errors import ConfigError
from reqrep.worker.endpoint import MAX_CONNECTIONS, MAX_HEAD, Endpoint
from tests.support import wait_until


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_endpoint_answers_health_and_metrics() -> None:
    healthy = [False]
    endpoint = Endpoint(
        0,
        host="127.0.0.1",
        health=lambda: healthy[0],
        metrics=lambda: (b"m 1\n", "text/plain"),
    ).start()
    try:
        assert _get(endpoint.port, "/healthz") == (503, b"not consuming\n")
        healthy[0] = True
        assert _get(endpoint.port, "/healthz?verbose=1") == (200, b"consuming\n")
        assert _get(endpoint.port, "/metrics") == (200, b"m 1\n")
        assert _get(endpoint.port, "/other")[0] == 404
    finally:
        endpoint.stop()


def test_endpoint_without_metrics_and_a_busy_port() -> None:
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: True).start()
    try:
        assert _get(endpoint.port, "/metrics")[0] == 404
        with pytest.raises(ConfigError, match="cannot serve HTTP"):
            Endpoint(endpoint.port, host="127.0.0.1")
    finally:
        endpoint.stop()
    with socket.socket() as sock:  # the port is free again (past TIME_WAIT, as servers bind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", endpoint.port))


def test_clients_that_reset_or_stall_cost_a_counted_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: True).start()
    try:
        with caplog.at_level(logging.INFO, logger="reqrep.worker"):
            for _ in range(50):  # each resets before its answer
                with socket.create_connection(("127.0.0.1", endpoint.port)) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.sendall(b"GET /hea")
            wait_until(lambda: endpoint.dropped >= 50, 10, "the resets to be counted")
            assert _get(endpoint.port, "/healthz") == (200, b"consuming\n")
        assert "Traceback" not in caplog.text
        assert len([r for r in caplog.records if "went away" in r.getMessage()]) == 1
    finally:
        endpoint.stop()


def test_many_idle_connections_hold_no_thread_and_healthz_still_answers() -> None:
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: True).start()
    idle: list[socket.socket] = []
    try:
        threads = threading.active_count()
        for _ in range(200):  # slowloris: connect, say nothing
            idle.append(socket.create_connection(("127.0.0.1", endpoint.port)))
        assert _get(endpoint.port, "/healthz") == (200, b"consuming\n")
        assert threading.active_count() == threads  # one thread serves them all
    finally:
        for sock in idle:
            sock.close()
        endpoint.stop()


def test_too_many_connections_are_closed_and_a_head_too_large_is_refused() -> None:
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: True).start()
    idle: list[socket.socket] = []
    try:
        idle = [
            socket.create_connection(("127.0.0.1", endpoint.port))
            for _ in range(MAX_CONNECTIONS + 20)
        ]
        wait_until(lambda: endpoint.dropped >= 20, 10, "the connections beyond the cap closed")
        for sock in idle:
            sock.close()
        idle = []
        with socket.create_connection(("127.0.0.1", endpoint.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX: " + b"x" * (MAX_HEAD + 10) + b"\r\n\r\n")
            sock.settimeout(10)
            assert sock.recv(100) == b""  # closed without an answer
    finally:
        for sock in idle:
            sock.close()
        endpoint.stop()


def test_the_default_address_is_loopback_only() -> None:
    endpoint = Endpoint(0, health=lambda: True)
    try:
        assert endpoint._socket.getsockname()[0] == "127.0.0.1"
    finally:
        endpoint.stop()
