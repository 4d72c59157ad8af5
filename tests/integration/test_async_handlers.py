"""``async def`` handlers: on the worker's event loop, bounded, with deadlines and a watchdog."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from reqrep import CallTimeout, Requestor, Service, Settings, Worker, current
from reqrep.worker.demo import build
from tests.support import close_connections, wait_until


class Probe:
    """What the async handlers saw, written on the worker's loop thread."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self.cancelled = threading.Event()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def reqrep_service(service_name: str, probe: Probe) -> Service:
    """Sync and async handlers in one service (run by the reqrep plugin's reqrep_worker)."""
    service = Service(service_name)

    @service.handler
    def plain(payload: Any) -> Any:
        return {"sync": payload, "thread": threading.current_thread().name}

    @service.handler
    async def whoami(_payload: Any) -> dict[str, Any]:
        ctx = current()
        await asyncio.sleep(0)
        return {"method": current().method, "cid": ctx.correlation_id, "left": ctx.remaining()}

    @service.handler
    async def hold(seconds: float) -> float:
        probe.running += 1
        probe.most = max(probe.most, probe.running)
        probe.threads.add(threading.current_thread().name)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise
        finally:
            probe.running -= 1
        return seconds

    @service.handler
    async def block(seconds: float) -> str:
        time.sleep(seconds)  # what an async handler must not do
        return "done"

    @service.handler
    async def boom(_payload: Any) -> None:
        raise ValueError("async failure")

    return service


@pytest.fixture(params=[False, True], ids=["threaded", "native"])
def reqrep_worker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each test of the ``mixed`` worker runs with its connection on an I/O thread, and on the
    handler loop (``native``)."""
    return {"concurrency": 3, "native": request.param}


@pytest.fixture
def mixed(reqrep_worker: Worker) -> Worker:
    return reqrep_worker


@pytest.fixture
def rq(reqrep_requestor: Requestor) -> Requestor:
    return reqrep_requestor


def test_sync_and_async_handlers_in_one_service(mixed: Worker, rq: Requestor) -> None:
    assert rq.call("plain", 1)["sync"] == 1
    assert rq.call("plain", 1)["thread"].startswith("reqrep-handler-")
    seen = rq.call("whoami", timeout=5)
    assert seen["method"] == "whoami"
    assert len(seen["cid"]) == 32
    assert 0 < seen["left"] <= 5
    with pytest.raises(Exception, match="async failure") as info:
        rq.call("boom")
    assert info.value.type == "ValueError"  # type: ignore[attr-defined]


def test_concurrency_bounds_the_coroutines(mixed: Worker, rq: Requestor, probe: Probe) -> None:
    futures = [rq.call_async("hold", 0.3) for _ in range(9)]
    assert [f.result(20) for f in futures] == [0.3] * 9
    assert probe.most == 3
    assert probe.threads == {f"reqrep-aio-{mixed.service.name}"}  # one loop thread for all


def test_the_callers_deadline_cancels_an_async_handler(
    mixed: Worker, rq: Requestor, probe: Probe
) -> None:
    with pytest.raises(CallTimeout):
        rq.call("hold", 20, timeout=0.5)
    assert probe.cancelled.wait(5)
    assert rq.call("plain", "next")["sync"] == "next"


def test_a_handler_that_blocks_the_loop_is_logged(
    mixed: Worker, rq: Requestor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="reqrep.worker"):
        assert rq.call("block", 1.2) == "done"
    messages = [record.getMessage() for record in caplog.records]
    warnings = [m for m in messages if "event loop has been blocked" in m]
    assert len(warnings) == 1, warnings
    assert "time.sleep(seconds)" in warnings[0]  # the stack shows where it is stuck
    assert mixed._handler_loop.blocked == 1


def test_stop_drains_async_handlers(
    settings: Settings, service_name: str, worker_native: bool
) -> None:
    worker = Worker(
        build(service_name), settings=settings, concurrency=4, native=worker_native
    ).start()
    try:
        with Requestor(settings=settings, service=service_name) as requestor:
            futures = [requestor.call_async("nap", {"seconds": 0.5}) for _ in range(4)]
            wait_until(lambda: worker.stats.received == 4, 10, "the calls to reach the worker")
            assert worker.stop(10) is True
            assert [f.result(10) for f in futures] == [{"slept": 0.5}] * 4
    finally:
        worker.stop(1)


def test_two_hundred_async_handlers_run_at_once_on_one_worker(
    settings: Settings, service_name: str, worker_native: bool
) -> None:
    """Each handler waits until all 200 have started: with fewer running at once, none would
    finish before its deadline."""
    service = Service(service_name)
    started = 0
    everyone: asyncio.Event | None = None

    @service.handler
    async def gather(_payload: Any) -> int:
        nonlocal started, everyone
        everyone = everyone or asyncio.Event()  # made on the worker's event loop
        started += 1
        if started == 200:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 20)
        return started

    with (
        Worker(service, settings=settings, concurrency=200, native=worker_native),
        Requestor(settings=settings, service=service_name) as requestor,
    ):
        futures = [requestor.call_async("gather", None, timeout=30) for _ in range(200)]
        assert [f.result(30) for f in futures] == [200] * 200


def test_a_worker_that_loses_its_connection_answers_the_redelivery_from_its_cache(
    settings: Settings, service_name: str, worker_native: bool
) -> None:
    """Confirms before acks, and dedupe, whichever thread holds the connection: the reply made
    while the connection was down is cached, not acked; the redelivered request gets it."""
    service = Service(service_name)
    runs, started, release = [0], threading.Event(), threading.Event()

    @service.handler
    async def work(payload: Any) -> Any:
        runs[0] += 1
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return payload

    with (
        Worker(service, settings=settings, concurrency=2, native=worker_native) as worker,
        Requestor(settings=settings, service=service_name) as rq,
    ):
        if worker_native:
            assert not [t for t in threading.enumerate() if t.name == worker.name]  # no I/O thread
        future = rq.call_async("work", "once", timeout=30)
        assert started.wait(10)
        assert close_connections(worker.name) == 1  # the request goes back to the queue
        release.set()
        assert future.result(30) == "once"  # answered from the cache on redelivery
        assert runs[0] == 1
        assert worker.reconnects == 1
        assert worker.stats.stale == 1
        assert rq.call("work", "again", timeout=10) == "again"
