"""Cancellation that reaches the worker (``worker/cancel.py``, ``requestor/_cancel.py``), over the
in-memory broker: each place a call can be when its caller cancels it. The twin against RabbitMQ,
with the worker in another process, is tests/integration/test_cancel.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError

import pytest
from prometheus_client import CollectorRegistry

import reqrep.metrics
from reqrep.common import CallTimeout, Settings
from reqrep.common._transport import Delivery, Properties
from reqrep.requestor import Admin, AsyncRequestor, Requestor
from reqrep.testing import MemoryBroker
from reqrep.worker import Service, Worker, current
from reqrep.worker.cancel import Cancellations, CancelSignal
from tests.support import wait_until

URL = "amqp://guest:guest@memory/%2F"
WAIT = 5.0  # seconds any one wait may take before the test fails


class Probe:
    """What the handlers saw, as events a test waits on."""

    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.cancelled: dict[str, threading.Event] = {}
        self.release = threading.Event()
        self.ran: list[str] = []

    def event(self, table: dict[str, threading.Event], key: str) -> threading.Event:
        return table.setdefault(key, threading.Event())


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def service(probe: Probe) -> Service:
    service = Service("cancels")

    @service.handler
    async def nap(key: str) -> str:
        probe.ran.append(key)
        probe.event(probe.started, key).set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.event(probe.cancelled, key).set()
            raise
        return key

    @service.handler
    def echo(key: str) -> str:
        return key

    @service.handler
    def poll(key: str) -> str:
        probe.ran.append(key)
        probe.event(probe.started, key).set()
        while not probe.release.is_set():
            if current().cancelled():
                probe.event(probe.cancelled, key).set()
                return "stopped"
            probe.release.wait(0.01)
        return key

    @service.handler
    def outlast(key: str) -> str:
        """Sees its caller's deadline pass, then holds its reply until released: a reply sent
        the moment the deadline passed would race the caller's own timeout."""
        probe.event(probe.started, key).set()
        while not current().cancelled():
            if probe.release.wait(0.01):
                return key
        probe.event(probe.cancelled, key).set()
        probe.release.wait(WAIT)
        return "stopped"

    return service


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def settings() -> Settings:
    return Settings(url=URL, timeout=WAIT, connect_timeout=2.0)


@pytest.fixture
def worker(
    broker: MemoryBroker, settings: Settings, service: Service, probe: Probe, worker_native: bool
) -> Iterator[Worker]:
    with Worker(
        service,
        settings=settings,
        concurrency=1,
        transport=broker.transport,
        native=worker_native,
    ) as w:
        yield w
        probe.release.set()


@pytest.fixture
def rq(broker: MemoryBroker, settings: Settings, worker: Worker) -> Iterator[Requestor]:
    with Requestor(settings=settings, service="cancels", transport=broker.transport) as r:
        yield r


def _in_flight(broker: MemoryBroker, settings: Settings) -> int:
    with Admin(settings=settings, transport=broker.transport) as admin:
        [info] = admin.ping(["cancels"], timeout=0.2)
        return info.in_flight


def test_cancelling_the_awaiting_task_cancels_the_async_handler(
    broker: MemoryBroker, settings: Settings, worker: Worker, probe: Probe, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(
            settings=settings, service="cancels", transport=broker.transport, native=aio_native
        ) as arq:
            task = asyncio.ensure_future(arq.call("nap", "a", timeout=30))
            while not probe.event(probe.started, "a").is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert arq.stats().pending == 0

    asyncio.run(asyncio.wait_for(main(), 10))
    assert probe.event(probe.cancelled, "a").wait(WAIT)  # CancelledError inside the handler
    wait_until(lambda: worker.stats.cancelled == 1, WAIT, "the call counted as cancelled")
    assert worker.stats.replied == 0  # no reply to a caller that has gone
    assert _in_flight(broker, settings) == 0


def test_a_cancelled_future_stops_a_plain_handler(
    broker: MemoryBroker, settings: Settings, worker: Worker, rq: Requestor, probe: Probe
) -> None:
    future = rq.call_async("poll", "a", timeout=30)
    assert probe.event(probe.started, "a").wait(WAIT)
    assert future.cancel()
    with pytest.raises(CancelledError):
        future.result(0)
    assert probe.event(probe.cancelled, "a").wait(WAIT)  # current().cancelled() turned true
    wait_until(lambda: worker.stats.cancelled == 1, WAIT, "the call counted as cancelled")
    assert (worker.stats.replied, rq.stats().late) == (0, 0)
    assert _in_flight(broker, settings) == 0


def test_a_request_waiting_for_a_handler_is_skipped(
    worker: Worker, rq: Requestor, probe: Probe
) -> None:
    """One handler thread: ``b`` waits behind ``a``, in this worker, and is cancelled there."""
    a = rq.call_async("poll", "a", timeout=30)
    assert probe.event(probe.started, "a").wait(WAIT)
    b = rq.call_async("poll", "b", timeout=30)
    wait_until(lambda: worker.stats.received == 2, WAIT, "b to reach the worker")
    assert b.cancel()
    wait_until(lambda: _cancels_seen(worker) == 1, WAIT, "the cancel to reach the worker")
    probe.release.set()
    assert a.result(WAIT) == "a"
    wait_until(lambda: worker.stats.cancelled == 1, WAIT, "b skipped")
    assert probe.ran == ["a"]


def test_a_request_still_in_the_queue_is_skipped_when_it_arrives(
    broker: MemoryBroker, settings: Settings, service: Service, probe: Probe
) -> None:
    """A prefetch of one: ``b`` is still in the broker's queue when it is cancelled; the
    worker remembers the cancel and skips ``b`` when it is delivered."""
    with (
        Worker(
            service, settings=settings, concurrency=1, prefetch=1, transport=broker.transport
        ) as worker,
        Requestor(settings=settings, service="cancels", transport=broker.transport) as rq,
    ):
        a = rq.call_async("poll", "a", timeout=30)
        assert probe.event(probe.started, "a").wait(WAIT)
        b = rq.call_async("poll", "b", timeout=30)
        wait_until(lambda: _ready(broker) == 1, WAIT, "b to wait in the queue")
        assert b.cancel()
        wait_until(lambda: _cancels_seen(worker) == 1, WAIT, "the cancel to reach the worker")
        assert worker.stats.received == 1
        probe.release.set()
        assert a.result(WAIT) == "a"
        wait_until(lambda: worker.stats.cancelled == 1, WAIT, "b skipped")
        assert (probe.ran, worker.stats.received) == (["a"], 2)


def test_a_plain_handler_sees_its_callers_deadline_pass(rq: Requestor, probe: Probe) -> None:
    try:
        with pytest.raises(CallTimeout):
            rq.call("outlast", "a", timeout=0.3)
        assert probe.event(probe.cancelled, "a").wait(WAIT)
    finally:
        probe.release.set()


def test_a_call_not_sent_yet_is_not_announced(
    broker: MemoryBroker, settings: Settings, worker: Worker
) -> None:
    """Cancelled before its request went out (the broker blocks publishing): nothing to tell."""
    with Requestor(settings=settings, service="cancels", transport=broker.transport) as rq:
        broker.block()
        wait_until(lambda: rq.blocked is not None, WAIT, "the requestor to be blocked")
        future = rq.call_async("poll", "never", timeout=30)
        assert future.cancel()
        broker.unblock()
        assert rq.call("echo", "after", timeout=WAIT) == "after"
    assert _cancels_seen(worker) == 0


def _cancels_seen(worker: Worker) -> int:
    return worker._cancels.received


def _ready(broker: MemoryBroker) -> int:
    info = broker.queue_info("reqrep.cancels")
    return 0 if info is None else info.messages


# -- the parts -------------------------------------------------------------------------------


def test_a_signal_runs_what_waits_on_it_once() -> None:
    signal = CancelSignal()
    seen: list[str] = []
    take_back = signal.on_set(lambda: seen.append("first"))
    signal.on_set(lambda: seen.append("second"))
    take_back()
    signal.set()
    signal.set()
    signal.on_set(lambda: seen.append("late"))  # set already: runs at once
    assert seen == ["second", "late"]
    assert signal.is_set()


def _cancel(reply_to: str, cid: str, deadline_ms: int | None = None) -> Delivery:
    headers = {} if deadline_ms is None else {"x-deadline": deadline_ms}
    props = Properties(type="cancel", reply_to=reply_to, correlation_id=cid, headers=headers)
    return Delivery(1, False, "reqrep.control", "service.s", props, b"null")


def test_cancels_of_calls_not_here_are_remembered_within_bounds() -> None:
    now = [0.0]
    cancels = Cancellations(remember=10.0, limit=2, clock=lambda: now[0])
    live = cancels.start("q", "running")
    cancels.on_message(_cancel("q", "running"))
    assert live.is_set()
    for cid in ("one", "two", "three"):
        cancels.on_message(_cancel("q", cid))
    assert not cancels.taken_back("q", "one")  # the oldest went: at most `limit` are kept
    assert cancels.taken_back("q", "two")
    assert not cancels.taken_back("q", "two")  # taken back once
    assert not cancels.taken_back("other", "three")  # the same id from another requestor
    now[0] = 11.0
    assert not cancels.taken_back("q", "three")  # remembered for `remember` seconds at most
    past = int((time.time() - 1) * 1000)
    cancels.on_message(_cancel("q", "late", past))
    assert not cancels.taken_back("q", "late")  # past its deadline: nothing to remember
    cancels.on_message(_cancel("", "no-reply-to"))
    assert cancels.received == 6


def test_the_in_flight_gauge_returns_to_zero_for_calls_that_leave_without_a_reply(
    broker: MemoryBroker, settings: Settings, service: Service, probe: Probe
) -> None:
    """A dispatched call that gets no reply (cancelled while it ran, or while it waited, or
    past its deadline at pickup) is no longer in flight."""
    registry = CollectorRegistry()
    reqrep.metrics.enable(registry)
    try:
        with (
            Worker(service, settings=settings, concurrency=1, transport=broker.transport) as w,
            Requestor(settings=settings, service="cancels", transport=broker.transport) as rq,
        ):
            running = rq.call_async("poll", "running", timeout=30)
            assert probe.event(probe.started, "running").wait(WAIT)
            waiting = rq.call_async("poll", "waiting", timeout=30)
            wait_until(lambda: w.stats.received == 2, WAIT, "both at the worker")
            assert waiting.cancel()
            wait_until(lambda: _cancels_seen(w) == 1, WAIT, "the first cancel")
            assert running.cancel()
            wait_until(lambda: w.stats.cancelled == 2, WAIT, "both cancelled")
            gauge = registry.get_sample_value(
                "reqrep_worker_requests_in_flight", {"service": "cancels"}
            )
            assert gauge == 0
    finally:
        reqrep.metrics.disable(registry)
