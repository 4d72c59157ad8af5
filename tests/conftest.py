"""Shared fixtures: the broker to test against, and queue hygiene.

Integration tests use, in order: ``AMQP_URL`` if set, else a RabbitMQ on 127.0.0.1:5672 if it
answers, else a testcontainers RabbitMQ when a Docker engine is available. With ``CI=true`` a
missing broker fails the run; elsewhere the integration tests are skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from reqrep.common import DEFAULT_URL, Settings
from tests.support import Admin, WorkerProcess

DEFAULT_PREFIX = Settings().queue_prefix


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


def _no_broker(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no RabbitMQ broker: {reason}", pytrace=False)
    pytest.skip(f"no RabbitMQ broker: {reason}")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of a live broker (see the module docstring for how it is found)."""
    url = os.environ.get("AMQP_URL")
    if url:
        if not _answers(url):
            _no_broker(f"AMQP_URL is set but {urlsplit(url).hostname} does not answer")
        yield url
        return
    if _answers(DEFAULT_URL):
        yield DEFAULT_URL
        return
    yield from _container_url()


def _container_url() -> Iterator[str]:
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - optional, Docker hosts only
        from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415

        docker.from_env().ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "no Docker engine"
        _no_broker(f"nothing on 127.0.0.1:5672 and no Docker engine for testcontainers ({exc})")
        return
    with RabbitMqContainer("rabbitmq:3.13-management") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/%2F"


@pytest.fixture(scope="session")
def reqrep_url(amqp_url: str) -> str:
    """The broker of reqrep's pytest plugin (``reqrep_worker`` ...): the one found above."""
    return amqp_url


@pytest.fixture(scope="session", autouse=True)
def no_stray_workers() -> Iterator[None]:
    """Whatever a failing test left running is killed when the session ends."""
    yield
    WorkerProcess.kill_leftovers()


@pytest.fixture(scope="session")
def admin(amqp_url: str) -> Iterator[Admin]:
    """A plain pika connection for setting up and inspecting queues."""
    with Admin(amqp_url) as adm:
        yield adm


@pytest.fixture
def prefix(admin: Admin) -> Iterator[str]:
    """A private queue prefix; its ``demo`` queues and dead-letter exchange go after the test."""
    value = f"test-{uuid.uuid4().hex[:10]}."
    yield value
    admin.delete_service_queues(value, "demo")
    admin.delete_exchange(f"{value}dlx")
    admin.delete_exchange(f"{value}control")
    admin.delete_exchange(f"{value}requests")


@pytest.fixture
def settings(amqp_url: str, prefix: str) -> Settings:
    """Settings for this test: its own queue prefix, short timeouts."""
    return Settings(url=amqp_url, timeout=10.0, connect_timeout=5.0, queue_prefix=prefix)


@pytest.fixture
def service_name(admin: Admin, prefix: str) -> Iterator[str]:
    """A fresh service name; its request queues are deleted after the test, under the test's
    prefix and under the default one (``reqrep.``), which tests of subprocesses and of the
    installed wheel use."""
    name = f"svc{uuid.uuid4().hex[:8]}"
    yield name
    admin.delete_service_queues(prefix, name)
    admin.delete_service_queues(DEFAULT_PREFIX, name)


@pytest.fixture(params=[False, True], ids=["threaded", "native"])
def worker_native(request: pytest.FixtureRequest) -> bool:
    """Where a Worker's connection lives (its ``native`` argument): on an I/O thread, or on the
    event loop of its async handlers. A test that takes it runs on both."""
    return bool(request.param)


@pytest.fixture(params=[False, True], ids=["threaded", "native"])
def aio_native(request: pytest.FixtureRequest) -> bool:
    """The path an AsyncRequestor takes (its ``native`` argument): its own I/O thread, or a
    connection hosted on the caller's event loop. A test that takes it runs on both."""
    return bool(request.param)
