"""Fixtures for tests against the real broker: running workers and requestors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


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
