"""Requestor behaviour against a live broker and an in-process worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from reqrep.common import (
    BrokerUnreachable,
    CallTimeout,
    ClosedError,
    ConnectionLost,
    MethodNotFound,
    NoSuchService,
    RemoteError,
    SerializationError,
    Settings,
)
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker
from tests.support import close_connections


class Gate:
    """A handler that blocks until the test opens the gate, and says when it has started."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, payload: object) -> object:
        self.started.release()
        if not self.release.wait(30):
            raise TimeoutError("gate never opened")
        return payload


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()  # never leave a handler thread blocked


@pytest.fixture
def gated_worker(settings: Settings, service_name: str, gate: Gate) -> Iterator[Worker]:
    """One handler thread: requests are served strictly in order."""
    service = Service(service_name)
    service.add("gate", gate)
    service.add("echo", lambda payload: payload)
    worker = Worker(service, settings=settings, concurrency=1).start()
    try:
        yield worker
    finally:
        gate.release.set()
        worker.stop(5)


def test_threads_share_one_requestor(demo_worker: Worker, requestor: Requestor) -> None:
    """100 threads call at once over one connection; each gets its own answer."""

    def one(i: int) -> tuple[int, object]:
        return i, requestor.call("echo", {"i": i, "pad": "x" * (i % 7)}, timeout=30)

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    assert results == [(i, {"i": i, "pad": "x" * (i % 7)}) for i in range(100)]
    assert requestor.stats().pending == 0


def test_fifty_threads_twenty_calls_each(demo_worker: Worker, requestor: Requestor) -> None:
    def twenty(t: int) -> list[object]:
        return [requestor.call("add", {"a": t, "b": k}, timeout=30) for k in range(20)]

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(twenty, range(50)))
    assert results == [[t + k for k in range(20)] for t in range(50)]
    assert requestor.stats().resolved == 1000


def test_many_async_calls_in_flight(demo_worker: Worker, requestor: Requestor) -> None:
    futures = [requestor.call_async("echo", i, timeout=30) for i in range(500)]
    assert [f.result(30) for f in futures] == list(range(500))


def test_timeout_then_late_reply_is_discarded(
    gated_worker: Worker, requestor: Requestor, gate: Gate
) -> None:
    with pytest.raises(CallTimeout, match=r"within 0\.3s") as info:
        requestor.call("gate", "slow", timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert gate.started.acquire(timeout=5)
    gate.release.set()
    # One handler thread: the late reply is published before this call's reply, on the same
    # channel to the same queue, so by the time this returns the late one has been handled.
    assert requestor.call("echo", "after", timeout=10) == "after"
    stats = requestor.stats()
    assert (stats.late, stats.unknown, stats.pending) == (1, 0, 0)


def test_async_call_times_out(gated_worker: Worker, requestor: Requestor, gate: Gate) -> None:
    future = requestor.call_async("gate", None, timeout=0.2)
    with pytest.raises(CallTimeout):
        future.result(10)
    assert not future.cancel()  # it ended: too late to cancel it


def test_remote_error_carries_type_and_message(demo_worker: Worker, requestor: Requestor) -> None:
    with pytest.raises(RemoteError) as info:
        requestor.call("fail", {"message": "card declined"})
    assert (info.value.type, info.value.message, info.value.code) == (
        "DemoError",
        "card declined",
        "handler_error",
    )


def test_unknown_method(demo_worker: Worker, requestor: Requestor) -> None:
    with pytest.raises(MethodNotFound) as info:
        requestor.call("nope", timeout=20)
    assert "echo" in info.value.details["methods"]


def test_no_such_service_fails_at_once(requestor: Requestor) -> None:
    """No queue: the broker returns the request. With a 20 s timeout, a NoSuchService (not a
    CallTimeout) proves the call did not wait for its deadline."""
    with pytest.raises(NoSuchService) as info:
        requestor.call("echo", 1, service="no-such-service-here", timeout=20)
    assert info.value.service == "no-such-service-here"
    assert requestor.stats().pending == 0


def test_payload_that_is_not_json(demo_worker: Worker, requestor: Requestor) -> None:
    with pytest.raises(SerializationError):
        requestor.call("echo", {1, 2})
    assert requestor.stats().pending == 0


def test_connection_lost_fails_pending_calls_at_once(
    gated_worker: Worker, requestor: Requestor, gate: Gate
) -> None:
    future = requestor.call_async("gate", None, timeout=60)
    assert gate.started.acquire(timeout=5)
    assert close_connections(requestor.name) == 1
    with pytest.raises(ConnectionLost, match="may or may not have been run"):
        future.result(20)
    gate.release.set()  # free the worker's only handler thread
    # The requestor reconnects by itself, with a new callback queue.
    assert requestor.call("echo", "again", timeout=20) == "again"


def test_use_after_close(settings: Settings, service_name: str) -> None:
    rq = Requestor(settings=settings, service=service_name)
    rq.close()
    with pytest.raises(ClosedError):
        rq.call("echo", 1)
    with pytest.raises(ClosedError):
        rq.open()


def test_first_call_opens(demo_worker: Worker, settings: Settings, service_name: str) -> None:
    rq = Requestor(settings=settings, service=service_name)
    try:
        assert rq.call("echo", "lazy") == "lazy"
    finally:
        rq.close()


def test_close_fails_pending_calls(
    gated_worker: Worker, settings: Settings, gate: Gate, service_name: str
) -> None:
    rq = Requestor(settings=settings, service=service_name).open()
    future = rq.call_async("gate", None, timeout=60)
    assert gate.started.acquire(timeout=5)
    rq.close()
    with pytest.raises(ClosedError):
        future.result(5)


def test_unreachable_broker(settings: Settings) -> None:
    bad = settings.replace(url="amqp://guest:s3cret-pw@127.0.0.1:1/%2F", connect_timeout=2.0)
    with pytest.raises(BrokerUnreachable) as info, Requestor(settings=bad, service="x"):
        pass
    assert "s3cret-pw" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_repr_hides_password(settings: Settings) -> None:
    rq = Requestor("amqp://guest:hunter2@127.0.0.1:5672/%2F", service="x", settings=settings)
    assert "hunter2" not in repr(rq)
    assert "hunter2" not in repr(rq.settings)
