"""The real Requestor, Worker, Link and Admin over the in-memory broker: the requestor's and the
worker's logic under faults, without RabbitMQ and without poking at private attributes.

Each behaviour here has a twin against RabbitMQ in tests/integration; these run in a fraction of
the time, deterministically, on every machine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from reqrep.common import (
    BrokerUnreachable,
    CallTimeout,
    ConnectionLost,
    MessageTooLarge,
    NoSuchService,
    NoWorkers,
    PublishRejected,
    Settings,
)
from reqrep.requestor import Admin, Requestor
from reqrep.testing import MemoryBroker
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import wait_until
from tests.transport_harness import Client

URL = "amqp://guest:guest@memory/%2F"


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def settings() -> Settings:
    return Settings(url=URL, timeout=5.0, connect_timeout=2.0, reconnect_max=0.2)


@pytest.fixture
def worker(broker: MemoryBroker, settings: Settings) -> Iterator[Worker]:
    with Worker(build("demo"), settings=settings, concurrency=4, transport=broker.transport) as w:
        yield w


def _requestor(broker: MemoryBroker, settings: Settings, **options: Any) -> Requestor:
    return Requestor(settings=settings, service="demo", transport=broker.transport, **options)


def test_a_round_trip_and_the_typed_errors(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    with _requestor(broker, settings) as rq:
        assert rq.call("add", {"a": 1, "b": 2}) == 3
        with pytest.raises(NoSuchService):
            rq.call("echo", service="nobody")
    worker.stop()
    with _requestor(broker, settings) as rq, pytest.raises(NoWorkers):
        rq.call("echo", 1)


def test_a_lost_connection_fails_what_it_stranded_and_resends_what_may_be_resent(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    with _requestor(broker, settings) as rq:
        assert rq.call("echo", 0) == 0
        plain = rq.call_async("sleep", {"seconds": 0.5})
        retryable = rq.call_async("sleep", {"seconds": 0.5}, idempotent=True)
        wait_until(lambda: worker.stats.received >= 3, 5, "both calls at the worker")
        broker.close_connections("test")
        with pytest.raises(ConnectionLost, match="may or may not have been run"):
            plain.result(10)
        assert retryable.result(10) == {"slept": 0.5}
        assert rq.reconnects >= 1
        assert rq.call("echo", "after") == "after"


def test_calls_made_while_the_broker_is_down_go_out_when_it_is_back(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    with _requestor(broker, settings) as rq:
        assert rq.call("echo", 0) == 0
        broker.stop()
        wait_until(lambda: not rq.connected, 5, "the requestor to see it")
        held = rq.call_async("echo", "held", timeout=10)
        broker.start()
        assert held.result(10) == "held"
        broker.stop()
        try:
            with pytest.raises(CallTimeout, match="broker connection was down"):
                rq.call("echo", "too late", timeout=0.3)
        finally:
            broker.start()


def test_a_blocked_connection_holds_calls_and_says_why_at_the_deadline(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    with _requestor(broker, settings) as rq:
        assert rq.call("echo", 0) == 0
        broker.block("low on memory")
        wait_until(lambda: rq.blocked is not None, 5, "the requestor to be blocked")
        with pytest.raises(CallTimeout, match="blocked publishing"):
            rq.call("echo", 1, timeout=0.3)
        held = rq.call_async("echo", "held", timeout=10)
        broker.unblock()
        assert held.result(10) == "held"


def test_a_queue_that_refuses_publishes_fails_the_call_with_publish_rejected(
    broker: MemoryBroker, settings: Settings
) -> None:
    # A queue someone declared to hold one request and refuse more, bound as a worker binds.
    client = Client(broker.transport, URL, settings, "declarer")
    try:
        chan = client.channel()
        chan.declare_queue(
            "reqrep.full",
            durable=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
        chan.declare_exchange("reqrep.requests", durable=True)
        chan.bind("reqrep.full", "reqrep.requests", "reqrep.full")
    finally:
        client.close()
    waiting = settings.replace(wait_for_workers=True)  # nobody consumes: the queue fills
    with Requestor(settings=waiting, service="full", transport=broker.transport) as rq:
        first = rq.call_async("x", None, timeout=2)
        with pytest.raises(PublishRejected):
            rq.call("x", None, timeout=2)
        with pytest.raises(CallTimeout):
            first.result(5)  # queued, and nobody answers it


def test_a_message_over_the_brokers_limit_fails_alone(settings: Settings) -> None:
    broker = MemoryBroker(max_message_size=10_000)
    with (
        Worker(build("demo"), settings=settings, concurrency=4, transport=broker.transport),
        _requestor(broker, settings) as rq,
    ):
        others = [rq.call_async("sleep", {"seconds": 0.1}) for _ in range(5)]
        with pytest.raises(MessageTooLarge, match="max_message_size=10000"):
            rq.call("echo", "x" * 20_000)
        assert [f.result(10) for f in others] == [{"slept": 0.1}] * 5
        assert rq.call("echo", "small") == "small"


def test_a_refused_address_in_a_list_is_skipped(settings: Settings) -> None:
    broker = MemoryBroker(users={"guest": "guest"})
    urls = ["amqp://guest:wrong@node1/%2F", "amqp://guest:guest@node2/%2F"]
    for _ in range(6):  # the start order is shuffled: whichever comes first
        with Requestor(urls, settings=settings, service="demo", transport=broker.transport) as rq:
            assert rq.connected
    with pytest.raises(BrokerUnreachable, match="login refused") as info:
        Requestor(
            ["amqp://guest:wrong@node1/%2F", "amqp://guest:bad@node2/%2F"],
            settings=settings,
            transport=broker.transport,
        ).open()
    assert info.value.permanent


def test_the_worker_watchdog_consumes_again_when_nothing_arrives(
    broker: MemoryBroker, settings: Settings
) -> None:
    worker = Worker(
        build("demo"),
        settings=settings,
        concurrency=1,
        prefetch=1,
        watchdog=0.3,
        transport=broker.transport,
    )
    real = worker._consumer._on_request  # white box: its first consumer loses a delivery
    lost = threading.Event()

    def lose_one(delivery: Any) -> None:
        if lost.is_set():
            real(delivery)
        else:
            lost.set()  # never settled: the prefetch of 1 stays full

    worker._consumer._on_request = lose_one  # type: ignore[method-assign,assignment]
    with worker, _requestor(broker, settings) as rq:
        futures = [rq.call_async("echo", i) for i in range(3)]
        worker._consumer._on_request = real  # type: ignore[method-assign]
        assert sorted(f.result(10) for f in futures) == [0, 1, 2]
        assert worker.stats.consumer_restarts == 1


def test_admin_pings_and_reads_dead_letters(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    with Admin(settings=settings, transport=broker.transport) as ops:
        [info] = ops.ping(["demo"], timeout=0.3)
        assert (info.service, info.concurrency) == ("demo", 4)
        [status] = ops.status(["demo"], timeout=0.2)
        assert (status.consumers, status.dead_letters) == (1, 0)
        assert ops.dead_letters("demo") == []


def test_a_fail_fast_call_raises_at_once_while_no_connection_is_up(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    """Its twin against RabbitMQ (the broker app stopped) is tests/integration/test_fail_fast.py."""
    with _requestor(broker, settings) as rq, _requestor(broker, settings, fail_fast=True) as fast:
        assert fast.call("echo", "up") == "up"
        broker.stop()
        wait_until(lambda: not (rq.connected or fast.connected), 5, "the requestors to notice")
        with pytest.raises(BrokerUnreachable, match="fail-fast call was not sent"):
            rq.call("echo", 1, fail_fast=True)
        with pytest.raises(BrokerUnreachable):
            fast.call("echo", 1)
        held = rq.call_async("echo", "held", timeout=30)  # the default: held, then sent
        broker.start()
        assert held.result(10) == "held"
        wait_until(lambda: fast.connected, 5, "the fail-fast requestor to reconnect")
        assert fast.call("echo", "back") == "back"
