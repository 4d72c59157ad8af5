"""/healthz: 200 only while the worker is consuming its request queue, 503 otherwise."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bench.faultproxy import FaultProxy
from reqrep.common import Settings
from reqrep.worker import Worker
from reqrep.worker.demo import build
from reqrep.worker.endpoint import Endpoint
from tests.support import Admin, WorkerProcess, close_connections, wait_until

ROOT = Path(__file__).resolve().parents[2]


def status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[FaultProxy]:
    parts = urlsplit(amqp_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the fault proxy only fronts a broker on loopback")
    with FaultProxy(("127.0.0.1", parts.port or 5672)) as p:
        yield p


def _through(settings: Settings, proxy: FaultProxy) -> Settings:
    parts = urlsplit(settings.url)
    return settings.replace(
        url=f"amqp://{parts.username}:{parts.password}@{proxy.url_netloc}{parts.path}",
        reconnect_max=0.5,
    )


def test_health_follows_the_consumer(
    settings: Settings, service_name: str, proxy: FaultProxy, admin: Admin
) -> None:
    worker = Worker(build(service_name), settings=_through(settings, proxy), concurrency=2)
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: worker.consuming).start()
    try:
        assert status(endpoint.port) == 503  # not started
        worker.start()
        assert status(endpoint.port) == 200  # consuming

        # The broker closes our connection and, for now, no new one gets through.
        proxy.refuse(True)
        assert close_connections(worker.name) == 1
        wait_until(lambda: status(endpoint.port) == 503, 10, "503 while disconnected")
        assert status(endpoint.port) == 503
        proxy.refuse(False)
        wait_until(lambda: status(endpoint.port) == 200, 20, "200 after reconnecting")
        assert worker.reconnects == 1

        # The broker cancels the consumer (its queue was deleted): the worker declares the
        # queue again and consumes again, and says so.
        admin.delete_queue(worker.queue)
        wait_until(
            lambda: admin.queue_exists(worker.queue) and status(endpoint.port) == 200,
            20,
            "consuming again after the broker cancelled the consumer",
        )
    finally:
        worker.stop(5)
    assert status(endpoint.port) == 503  # stopped
    endpoint.stop()


def test_health_is_503_while_draining(settings: Settings, service_name: str) -> None:
    worker = Worker(build(service_name), settings=settings, concurrency=1).start()
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: worker.consuming).start()
    try:
        assert status(endpoint.port) == 200
        worker.stop(5)  # cancels the consumer, drains, closes
        assert status(endpoint.port) == 503
    finally:
        worker.stop(5)
        endpoint.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _compose_healthcheck_command(port: int) -> subprocess.CompletedProcess[str]:
    """The worker's healthcheck from docker-compose.yml, run here against ``port``."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    argv = [sys.executable, *(arg.replace(":8080/", f":{port}/") for arg in test[2:])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_cli_health_port_and_the_compose_healthcheck(amqp_url: str, prefix: str) -> None:
    port = _free_port()
    worker = WorkerProcess(
        ["reqrep.worker.demo:service", "--health-port", str(port), "--http-host", "127.0.0.1"],
        {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix},
    )
    try:
        worker.wait_for("worker ready")
        assert status(port) == 200
        # The compose healthcheck's own command, as the image runs it.
        check = _compose_healthcheck_command(port)
        assert check.returncode == 0, check.stderr
    finally:
        assert worker.stop() == 0
    wait_until(lambda: _compose_healthcheck_command(port).returncode != 0, 10, "check fails")
