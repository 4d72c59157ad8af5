"""Fixtures for tests against the real broker: running workers and requestors, and a private
RabbitMQ node (``node``, marked ``extra_node``) for faults that must not touch the shared one:
resource alarms, TLS, broker limits."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.extra_node import Alarm, ExtraNode, TlsFiles, why_no_extra_node
from tests.support import rabbitmqctl


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def broker_restart() -> Iterator[threading.Event]:
    """Set the event once the test stopped the broker app (``rabbitmqctl stop_app``): it is
    always started again afterwards."""
    stopped = threading.Event()
    yield stopped
    if stopped.is_set():
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


@pytest.fixture
def demo_worker(settings: Settings, service_name: str) -> Iterator[Worker]:
    """A running in-process Worker serving the demo handlers as ``service_name``."""
    worker = Worker(build(service_name), settings=settings, concurrency=4).start()
    try:
        yield worker
    finally:
        worker.stop(5)


@pytest.fixture
def requestor(settings: Settings, service_name: str) -> Iterator[Requestor]:
    """An open Requestor whose default service is ``service_name``."""
    with Requestor(settings=settings, service=service_name) as rq:
        yield rq


# -- a private node ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files() -> Iterator[TlsFiles]:
    # A directory of its own with open modes: the broker runs as the rabbitmq user.
    directory = Path(tempfile.mkdtemp(prefix="reqrep-tls-"))
    try:
        yield TlsFiles(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def node(tls_files: TlsFiles) -> Iterator[ExtraNode]:
    reason = why_no_extra_node()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no private RabbitMQ node: {reason}", pytrace=False)
        pytest.skip(reason)
    extra = ExtraNode(tls_files)
    try:
        yield extra
    finally:
        extra.stop()


@pytest.fixture
def node_settings(node: ExtraNode) -> Settings:
    return Settings(
        url=node.url, timeout=10.0, connect_timeout=5.0, queue_prefix=f"x{uuid.uuid4().hex[:8]}."
    )


@pytest.fixture
def alarm(node: ExtraNode) -> Iterator[Alarm]:
    switch = Alarm(node)
    try:
        yield switch
    finally:
        switch.off()
