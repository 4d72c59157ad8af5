"""pytest fixtures for services built on reqrep (the ``reqrep`` plugin, loaded by entry point).

Override ``reqrep_service`` to return your ``Service``; then

- ``reqrep_local``: a ``LocalRequestor`` for it (no RabbitMQ: the real Worker and Requestor
  over an in-memory broker, ``reqrep_memory_broker``);
- ``reqrep_worker``: a real ``Worker`` serving it from a broker, on its own threads, with a
  queue prefix private to the test (its queues are deleted afterwards);
- ``reqrep_requestor``: a ``Requestor`` connected to that worker's service.

The broker is ``--reqrep-url``, else ``$AMQP_URL``, else ``amqp://guest:guest@127.0.0.1:5672/%2F``
(fixture ``reqrep_url``). ``reqrep_worker_options`` (a dict, default ``{"concurrency": 8}``)
is passed to ``Worker``. Override ``reqrep_resources`` (a dict, default empty) to hand the
handlers fakes in place of what the service's ``on_startup`` hooks add under the same names.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from reqrep.common import DEFAULT_URL
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.requestor.admin import Admin
from reqrep.requestor.client import Requestor
from reqrep.testing._local import LocalRequestor, MemoryBroker
from reqrep.worker.server import Worker
from reqrep.worker.service import Service

__all__ = [
    "pytest_addoption",
    "reqrep_local",
    "reqrep_memory_broker",
    "reqrep_requestor",
    "reqrep_resources",
    "reqrep_service",
    "reqrep_settings",
    "reqrep_url",
    "reqrep_worker",
    "reqrep_worker_options",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reqrep")
    group.addoption(
        "--reqrep-url",
        default=None,
        help="broker URL for the reqrep_worker fixture (default: $AMQP_URL, else localhost)",
    )


@pytest.fixture(scope="session")
def reqrep_url(request: pytest.FixtureRequest) -> str:
    """The broker the ``reqrep_worker`` fixture uses."""
    option = request.config.getoption("--reqrep-url", default=None)
    return str(option or os.environ.get("AMQP_URL") or DEFAULT_URL)


@pytest.fixture
def reqrep_service() -> Service:
    """The Service under test: override this fixture in your conftest.py or test module."""
    pytest.fail("override the reqrep_service fixture to return the Service to test", pytrace=False)


@pytest.fixture
def reqrep_settings(reqrep_url: str) -> Settings:
    """Settings for one test: the broker, and a queue prefix of its own."""
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    return Settings.from_env(url=reqrep_url, queue_prefix=prefix)


@pytest.fixture
def reqrep_worker_options() -> dict[str, Any]:
    """Keyword arguments for ``Worker`` (concurrency, prefetch, ...)."""
    return {"concurrency": 8}


@pytest.fixture
def reqrep_resources() -> dict[str, Any]:
    """Resources handed to the handlers in place of the service's own, by name (fakes)."""
    return {}


@pytest.fixture
def reqrep_worker(
    reqrep_service: Service,
    reqrep_settings: Settings,
    reqrep_worker_options: dict[str, Any],
    reqrep_resources: dict[str, Any],
) -> Iterator[Worker]:
    """A running Worker for ``reqrep_service``; stopped (drained) and its queues deleted after."""
    options = {"resources": reqrep_resources, **reqrep_worker_options}
    worker = Worker(reqrep_service, settings=reqrep_settings, **options)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop(5)
        _delete_queues(reqrep_settings, reqrep_service.name)


@pytest.fixture
def reqrep_requestor(reqrep_worker: Worker) -> Iterator[Requestor]:
    """A Requestor whose default service is the one ``reqrep_worker`` serves."""
    with Requestor(settings=reqrep_worker.settings, service=reqrep_worker.service.name) as rq:
        yield rq


@pytest.fixture
def reqrep_memory_broker() -> MemoryBroker:
    """An in-memory broker for this test: pass ``reqrep_memory_broker.transport`` to a
    Requestor, AsyncRequestor, Worker or Admin (``transport=``)."""
    return MemoryBroker()


@pytest.fixture
def reqrep_local(
    reqrep_service: Service,
    reqrep_memory_broker: MemoryBroker,
    reqrep_resources: dict[str, Any],
) -> Iterator[LocalRequestor]:
    """A LocalRequestor for ``reqrep_service``: its handlers in a real Worker, no RabbitMQ."""
    with LocalRequestor(
        reqrep_service, broker=reqrep_memory_broker, resources=reqrep_resources
    ) as local:
        yield local


def _delete_queues(settings: Settings, service: str) -> None:
    """The request queue, dead-letter queue and exchanges the worker declared under the test's
    private prefix (a short session of its own; a broker that is gone is not an error)."""
    with (
        contextlib.suppress(ReqrepError),
        Admin(settings=settings.replace(connect_timeout=5.0)) as admin,
    ):
        admin.delete_service(service)
