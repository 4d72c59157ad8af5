"""Queues without a prefix: an empty ``REQREP_QUEUE_PREFIX`` names a service's queue by the
service alone, and reqrep's own exchanges keep the names of the default prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reqrep.common import Settings, TopologyConflict
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin


@pytest.fixture
def bare(admin: Admin, service_name: str) -> Iterator[str]:
    """``service_name``, whose queues are deleted afterwards under no prefix too."""
    yield service_name
    admin.delete_service_queues("", service_name)


def test_an_empty_prefix_serves_the_queue_named_by_the_service(
    amqp_url: str, admin: Admin, bare: str
) -> None:
    settings = Settings.from_env(
        {"REQREP_QUEUE_PREFIX": ""}, url=amqp_url, timeout=10.0, connect_timeout=5.0
    )
    with (
        Worker(build(bare), settings=settings, concurrency=2),
        Requestor(settings=settings, service=bare) as rq,
    ):
        assert rq.call("echo", "no prefix") == "no prefix"
        assert admin.consumer_count(bare) == 1
        assert admin.queue_exists(f"{bare}.dead")
    assert not admin.queue_exists(f"reqrep.{bare}")
    for name in ("reqrep.requests", "reqrep.dlx", "reqrep.control"):
        assert admin.exchange_exists(name), name
    # What an empty prefix used to leave behind: exchanges named by nobody.
    for name in ("requests", "dlx", "control"):
        assert not admin.exchange_exists(name), name


def test_a_queue_another_program_declared_stops_the_worker_naming_the_argument(
    amqp_url: str, admin: Admin, bare: str
) -> None:
    """The RabbitMQ tutorial's server declares its queue durable and quorum, with no other
    argument; a worker of an enveloped service on that name used to die with ConnectionLost."""
    admin.channel.queue_declare(bare, durable=True, arguments={"x-queue-type": "quorum"})
    settings = Settings(url=amqp_url, queue_prefix="", connect_timeout=5.0)
    worker = Worker(build(bare), settings=settings, concurrency=1)
    with pytest.raises(TopologyConflict) as info:
        worker.start()
    error = info.value
    assert (error.kind, error.name) == ("queue", bare)
    # The broker names the first argument it finds different: one of those the worker adds.
    assert error.argument in (
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-delivery-limit",
    )
    assert error.permanent
    assert f"{error.argument!r} differs" in str(error)
