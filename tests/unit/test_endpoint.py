"""The worker's HTTP endpoint: health and metrics (no broker)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from reqrep.common.errors import ConfigError
from reqrep.worker.endpoint import Endpoint


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
