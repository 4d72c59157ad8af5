"""Recovery, deadlines and idempotency (size limits, poison requests and hostile replies:
test_hostile_messages.py)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from reqrep.common import (
    CallError,
    CallTimeout,
    ConnectionLost,
    NoSuchService,
    ReqrepError,
    Settings,
)
from reqrep.requestor import Requestor
from reqrep.requestor._calls import ReplyHandler
from reqrep.worker import Service, Worker, current
from tests.integration.gates import Counted
from tests.support import Admin, close_connections


@pytest.fixture
def counted() -> Iterator[Counted]:
    handler = Counted(gated=True)
    yield handler
    handler.release.set()


@pytest.fixture
def counted_worker(settings: Settings, service_name: str, counted: Counted) -> Iterator[Worker]:
    service = Service(service_name)
    service.add("work", counted)
    service.add("echo", lambda payload: payload)
    # Prefetch 2, no spare: with both threads busy, the next request waits in the broker.
    worker = Worker(service, settings=settings, concurrency=2, prefetch=2).start()
    try:
        yield worker
    finally:
        counted.release.set()
        worker.stop(5)


def test_idempotent_call_survives_a_lost_connection_and_runs_once(
    counted_worker: Worker, requestor: Requestor, counted: Counted
) -> None:
    future = requestor.call_async("work", "payload", timeout=30, idempotent=True)
    assert counted.started.acquire(timeout=10)
    assert close_connections(requestor.name) == 1  # the reply can no longer reach this queue
    counted.release.set()
    # Resent on the new connection with the same key: the worker answers from its cache.
    assert future.result(30) == "payload"
    assert counted.runs == 1
    assert counted_worker.stats.deduplicated == 1
    assert requestor.reconnects == 1


def test_call_with_retries_zero_fails_at_once(
    counted_worker: Worker, requestor: Requestor, counted: Counted
) -> None:
    future = requestor.call_async("work", 1, timeout=30)
    assert counted.started.acquire(timeout=10)
    assert close_connections(requestor.name) == 1
    with pytest.raises(ConnectionLost):
        future.result(10)


def test_worker_reconnects_and_a_redelivered_request_is_not_run_twice(
    counted_worker: Worker, requestor: Requestor, counted: Counted
) -> None:
    future = requestor.call_async("work", "once", timeout=30)
    assert counted.started.acquire(timeout=10)
    assert close_connections(counted_worker.name) == 1  # the request goes back to the queue
    counted.release.set()  # the result of the first run is cached, not acked
    assert future.result(30) == "once"  # answered from the cache on redelivery
    assert counted.runs == 1
    assert counted_worker.reconnects == 1
    assert counted_worker.stats.stale == 1


def test_handler_reads_its_deadline(settings: Settings, service_name: str) -> None:
    service = Service(service_name)
    service.add("budget", lambda _p: (current().remaining(), current().method))
    with (
        Worker(service, settings=settings, concurrency=1),
        Requestor(settings=settings, service=service_name) as rq,
    ):
        remaining, method = rq.call("budget", timeout=7)
    assert 5 < remaining <= 7
    assert method == "budget"


def test_request_past_its_deadline_is_not_run(
    counted_worker: Worker, requestor: Requestor, admin: Admin, counted: Counted
) -> None:
    counted.release.set()
    props = pika.BasicProperties(
        type="work",
        content_type="application/json",
        correlation_id="late-1",
        reply_to="amq.rabbitmq.reply-to.nobody",
        headers={"x-deadline": int(time.time() * 1000) - 1000},
    )
    admin.publish(counted_worker.queue, b'"too late"', props)
    assert requestor.call("echo", "after", timeout=10) == "after"
    assert counted_worker.stats.expired == 1
    assert counted.runs == 0


def test_expired_request_is_dropped_by_the_broker(
    counted_worker: Worker, requestor: Requestor, counted: Counted, admin: Admin
) -> None:
    """Both handler threads busy: a short call waits in the queue, expires there, and is
    dead-lettered (reason ``expired``) instead of running after its caller gave up."""
    busy = [requestor.call_async("work", i, timeout=30) for i in range(2)]
    for _ in range(2):
        assert counted.started.acquire(timeout=10)
    with pytest.raises(Exception, match=r"within 0\.3s"):
        requestor.call("work", "short", timeout=0.3)
    dead = f"{counted_worker.queue}.dead"
    method, props, _body = _get_one(admin, dead)
    assert props.headers["x-death"][0]["reason"] == "expired"
    counted.release.set()
    assert [f.result(10) for f in busy] == [0, 1]
    assert counted.runs == 2
    assert method is not None


def _get_one(admin: Admin, queue: str, timeout: float = 10) -> tuple[Any, Any, bytes]:
    """The next message of ``queue``, waiting for it to arrive (at most ``timeout``)."""
    message = admin.get_one(queue, timeout)
    if message is None:
        raise AssertionError(f"no message in {queue} within {timeout}s")
    return message


def test_classic_queues_work_too(amqp_url: str, prefix: str, service_name: str) -> None:
    settings = Settings(url=amqp_url, queue_prefix=prefix, timeout=10, queue_type="classic")
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    with (
        Worker(service, settings=settings, concurrency=2),
        Requestor(settings=settings, service=service_name) as rq,
    ):
        assert rq.call("echo", "classic") == "classic"
    types = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert f"{prefix}{service_name}\tclassic" in types


def test_idempotent_call_made_as_the_connection_drops_succeeds(
    demo_worker: Worker, requestor: Requestor
) -> None:
    """Found by the chaos run: an idempotent call queued for the I/O thread just as the
    connection dropped failed with ConnectionLost. Whichever comes first on the I/O thread, the
    publish or the news of the loss, the call must succeed."""
    assert requestor.call("echo", 0) == 0
    busy, release = threading.Event(), threading.Event()
    io = requestor._core._io  # white box: hold the I/O thread so the loss and the call coincide
    assert io is not None

    def hold() -> None:
        busy.set()
        release.wait(10)

    io.link.submit(hold)
    assert busy.wait(5)
    assert close_connections(requestor.name) == 1  # seen only once the I/O thread is free
    future = requestor.call_async("echo", "queued", timeout=30, idempotent=True)
    release.set()
    assert future.result(30) == "queued"


def test_fast_mode_without_persistence_or_confirms(
    amqp_url: str, prefix: str, service_name: str, admin: Admin
) -> None:
    settings = Settings(
        url=amqp_url, queue_prefix=prefix, timeout=10, queue_type="classic", persistent=False
    )
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    with (
        Worker(service, settings=settings, concurrency=4) as worker,
        Requestor(settings=settings, service=service_name) as rq,
    ):
        futures = [rq.call_async("echo", i) for i in range(200)]
        assert [f.result(10) for f in futures] == list(range(200))
        with pytest.raises(NoSuchService):
            rq.call("echo", 1, service="nobody-here")
    assert worker.stats.replied == 200  # every request acked after its reply
    assert admin.message_count(f"{prefix}{service_name}") == 0


def test_io_thread_crash_fails_pending_and_later_calls(
    counted_worker: Worker, settings: Settings, service_name: str
) -> None:
    """If the I/O thread dies (an exception escapes pika's own loop), no caller is left
    waiting for its timeout."""
    with Requestor(settings=settings, service=service_name, timeout=60) as rq:
        pending = rq.call_async("work", "x")  # held by the gate: still pending at the crash
        link = rq._core._io.link if rq._core._io is not None else None
        assert link is not None
        loop = link._loop
        assert loop is not None

        def crash() -> None:
            raise RuntimeError("bug in pika's loop")

        # White box: a raw timer of the transport's loop, outside reqrep's guards, ends it.
        def plant() -> None:
            loop.call_later(0, crash)

        link.submit(plant)
        with pytest.raises(ReqrepError, match="crashed"):
            pending.result(10)
        with pytest.raises(ReqrepError):
            rq.call("echo", 2)


def test_an_exception_in_the_sweep_does_not_end_the_io_thread(
    counted_worker: Worker,
    settings: Settings,
    service_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timers are guarded like every other callback: a bug in one is logged, the thread goes on."""
    with Requestor(settings=settings, service=service_name, timeout=10) as rq:
        failed = threading.Event()
        original = ReplyHandler.expire_due

        def broken(self: ReplyHandler, now: float, *args: Any) -> list[str]:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("bug in the deadline sweep")
            return original(self, now, *args)

        monkeypatch.setattr(ReplyHandler, "expire_due", broken)
        assert failed.wait(5)
        assert rq.call("echo", 2) == 2
        with pytest.raises(CallTimeout):  # and the sweep still runs: async calls time out
            rq.call_async("work", "never released", timeout=0.3).result(5)


def test_a_broken_reply_path_fails_that_call_not_the_connection(
    counted_worker: Worker,
    counted: Counted,
    settings: Settings,
    service_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception while reqrep handles one reply fails that call at once, naming the cause;
    the connection and the other calls are not touched."""
    from reqrep.requestor import _io  # noqa: PLC0415 - white box: break the reply path on purpose

    original = _io.RequestorIO._on_reply

    def broken(self: Any, delivery: Any) -> None:
        if b"boom" in delivery.body:
            raise RuntimeError("bug in the reply path")
        original(self, delivery)

    monkeypatch.setattr(_io.RequestorIO, "_on_reply", broken)
    with Requestor(settings=settings, service=service_name, timeout=60) as rq:
        pending = rq.call_async("work", "x")
        with pytest.raises(CallError, match="bug in the reply path"):
            rq.call("echo", "boom")
        counted.release.set()
        assert pending.result(10) == "x"
        assert rq.call("echo", 1) == 1
        assert rq.reconnects == 0
