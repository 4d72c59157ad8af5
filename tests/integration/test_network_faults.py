"""Network faults between a requestor and the broker, made with a loopback TCP proxy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from bench.faultproxy import FaultProxy
from reqrep.common import (
    BrokerUnreachable,
    CallTimeout,
    ConnectionLost,
    Settings,
    TooManyPending,
)
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker
from tests.support import wait_until


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[FaultProxy]:
    parts = urlsplit(amqp_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the fault proxy only fronts a broker on loopback")
    with FaultProxy(("127.0.0.1", parts.port or 5672)) as p:
        yield p


def _through(settings: Settings, proxy: FaultProxy, heartbeat: int = 30) -> Settings:
    parts = urlsplit(settings.url)
    url = f"amqp://{parts.username}:{parts.password}@{proxy.url_netloc}{parts.path}"
    return settings.replace(url=f"{url}?heartbeat={heartbeat}")


@pytest.fixture
def held(settings: Settings, service_name: str) -> Iterator[threading.Event]:
    """A worker (connected directly) with ``echo`` and ``hold`` (waits for the event)."""
    release = threading.Event()
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    service.add("hold", lambda payload: release.wait(30) and payload)
    worker = Worker(service, settings=settings, concurrency=4).start()
    try:
        yield release
    finally:
        release.set()
        worker.stop(5)


def test_latency_is_survived_and_timeouts_still_hold(
    settings: Settings, proxy: FaultProxy, service_name: str, held: threading.Event
) -> None:
    with Requestor(settings=_through(settings, proxy), service=service_name) as rq:
        proxy.set_latency(0.1)
        assert rq.call("echo", "slow", timeout=10) == "slow"
        started = time.monotonic()
        with pytest.raises(CallTimeout):
            rq.call("echo", "slower", timeout=0.15)  # a round trip takes >= 0.2 s now
        assert time.monotonic() - started < 1.0  # it ended at its deadline, not later


def test_cut_fails_sent_calls_resends_idempotent_ones(
    settings: Settings, proxy: FaultProxy, service_name: str, held: threading.Event
) -> None:
    with Requestor(settings=_through(settings, proxy), service=service_name) as rq:
        assert rq.call("echo", 0) == 0
        plain = rq.call_async("hold", "plain", timeout=30)
        keyed = rq.call_async("hold", "keyed", timeout=30, idempotent=True)
        assert proxy.cut() == 1  # RST: the requestor's only connection
        with pytest.raises(ConnectionLost):
            plain.result(10)
        held.set()
        assert keyed.result(30) == "keyed"
        assert rq.call("echo", 1, timeout=20) == 1
        assert rq.reconnects == 1


@pytest.mark.slow
def test_blackhole_calls_end_at_their_deadline_then_recover(
    settings: Settings, proxy: FaultProxy, service_name: str, held: threading.Event
) -> None:
    with Requestor(settings=_through(settings, proxy, heartbeat=2), service=service_name) as rq:
        assert rq.call("echo", 0) == 0
        proxy.blackhole(True)
        with pytest.raises(CallTimeout):  # a silent network cannot hold a call past its deadline
            rq.call("echo", "into the void", timeout=2)
        proxy.blackhole(False)  # the proxy resets what it had held open
        assert rq.call("echo", "back", timeout=30) == "back"


def test_broker_down_at_start_is_retried_within_the_connect_timeout(
    settings: Settings,
    proxy: FaultProxy,
    service_name: str,
    held: threading.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.refuse(True)
    down = _through(settings, proxy).replace(connect_timeout=2.0)
    with (
        caplog.at_level(logging.INFO, logger="reqrep.connection"),
        pytest.raises(BrokerUnreachable),
        Requestor(settings=down, service=service_name),
    ):
        pass
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 3, f"retried {len(retries)} times"  # with backoff, until the deadline

    later = _through(settings, proxy).replace(connect_timeout=10.0)
    timer = threading.Timer(1.0, proxy.refuse, args=(False,))
    timer.start()
    try:
        with Requestor(settings=later, service=service_name) as rq:
            assert rq.call("echo", "up") == "up"
    finally:
        timer.cancel()


def test_calls_held_during_an_outage_count_towards_max_pending(
    settings: Settings, proxy: FaultProxy, service_name: str, held: threading.Event
) -> None:
    down = _through(settings, proxy).replace(max_pending=2)
    with Requestor(settings=down, service=service_name) as rq:
        assert rq.call("echo", 0) == 0
        proxy.refuse(True)
        assert proxy.cut() == 1
        wait_until(lambda: not rq.connected, 10, "the requestor to see the cut")
        waiting = [rq.call_async("echo", i, timeout=30) for i in (1, 2)]  # held: no connection
        with pytest.raises(TooManyPending):
            rq.call_async("echo", 3)
        proxy.refuse(False)
        assert [f.result(30) for f in waiting] == [1, 2]
