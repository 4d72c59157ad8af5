"""The requestor's I/O thread: deadlines that do not depend on the connection's history, user
code kept off the thread, and a bound on what a requestor holds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from reqrep.common import CallTimeout, Settings, TooManyPending
from reqrep.requestor import Requestor
from reqrep.requestor._io import RequestorIO
from reqrep.worker import Service, Worker
from tests.support import Admin

WAIT = 10


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def worker(settings: Settings, service_name: str, gate: threading.Event) -> Iterator[Worker]:
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    service.add("held", lambda payload: payload if gate.wait(30) else None)
    w = Worker(service, settings=settings, concurrency=4).start()
    try:
        yield w
    finally:
        gate.set()
        w.stop(5)


def test_async_calls_time_out_when_the_first_connection_dropped_before_consume_ok(
    settings: Settings, service_name: str, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep used to start on the first consume-ok of channel 1 only: a first connection
    that dropped before it left every call_async future waiting for ever."""
    queue, requests = f"{settings.queue_prefix}{service_name}", f"{settings.queue_prefix}requests"
    admin.channel.queue_declare(queue)  # nobody consumes it; bound as a worker binds it
    admin.channel.exchange_declare(requests, exchange_type="direct", durable=True)
    admin.channel.queue_bind(queue, requests, routing_key=queue)
    original = RequestorIO._on_declared
    dropped = threading.Event()

    def drop_the_first(self: RequestorIO, info: Any) -> None:
        if not dropped.is_set():
            dropped.set()
            connection: Any = self.link.connection  # white box: pika's, under the seam
            connection.pika._transport._sock.shutdown(socket.SHUT_RDWR)  # cut the TCP stream
            return
        original(self, info)

    monkeypatch.setattr(RequestorIO, "_on_declared", drop_the_first)
    # Nobody consumes the queue, on purpose: the calls must wait, not fail with NoWorkers.
    with Requestor(settings=settings, service=service_name, wait_for_workers=True) as rq:
        assert dropped.is_set()
        future = rq.call_async("echo", 1, timeout=0.3)
        with pytest.raises(CallTimeout):
            future.result(WAIT)


def test_a_slow_done_callback_stalls_no_other_call(worker: Worker, requestor: Requestor) -> None:
    """Done-callbacks run off the I/O thread: while one blocks, calls and replies go on."""
    release = threading.Event()
    entered = threading.Event()

    def slow(_future: Future[Any]) -> None:
        entered.set()
        release.wait(WAIT)

    try:
        requestor.call_async("echo", "first", timeout=5).add_done_callback(slow)
        assert entered.wait(WAIT)
        # With the callback on the I/O thread these replies could not be read: CallTimeout.
        assert [requestor.call("echo", i, timeout=3) for i in range(5)] == list(range(5))
        assert requestor.call_async("echo", "async", timeout=3).result(WAIT) == "async"
    finally:
        release.set()


def test_a_call_inside_a_done_callback_works(worker: Worker, requestor: Requestor) -> None:
    results: list[Any] = []
    done = threading.Event()

    def chain(future: Future[Any]) -> None:
        try:
            results.append(requestor.call("echo", future.result() + 1, timeout=5))
        except Exception as exc:  # noqa: BLE001 - reported to the test thread
            results.append(exc)
        finally:
            done.set()

    requestor.call_async("echo", 1, timeout=5).add_done_callback(chain)
    assert done.wait(WAIT)
    assert results == [2]


def test_done_callbacks_never_run_on_the_io_thread(worker: Worker, requestor: Requestor) -> None:
    threads: list[str] = []
    done = threading.Event()

    def where(_future: Future[Any]) -> None:
        threads.append(threading.current_thread().name)
        done.set()

    requestor.call_async("echo", 1, timeout=5).add_done_callback(where)
    assert done.wait(WAIT)
    assert threads
    assert not threads[0].startswith("reqrep-requestor-")


def test_max_pending_fails_the_next_call_at_once(
    worker: Worker, settings: Settings, service_name: str, gate: threading.Event
) -> None:
    with Requestor(settings=settings.replace(max_pending=3), service=service_name) as rq:
        held = [rq.call_async("held", i, timeout=20) for i in range(3)]
        with pytest.raises(TooManyPending, match="max_pending=3"):
            rq.call_async("echo", "one too many")
        with pytest.raises(TooManyPending):
            rq.call("echo", "one too many")
        assert rq.stats().pending == 3
        gate.set()
        assert [f.result(WAIT) for f in held] == [0, 1, 2]
        assert rq.call("echo", "room again") == "room again"


@pytest.mark.slow
def test_a_done_callback_that_blocks_for_heartbeats_costs_no_connection(
    worker: Worker, settings: Settings, service_name: str
) -> None:
    """Heartbeat 1 s, a callback blocking 4 s: on the I/O thread the broker would have closed
    the connection (missed heartbeats); off it, calls go on over the same connection."""
    release = threading.Event()
    entered = threading.Event()

    def slow(_future: Future[Any]) -> None:
        entered.set()
        release.wait(WAIT)

    with Requestor(settings=settings.replace(heartbeat=1), service=service_name) as rq:
        try:
            rq.call_async("echo", "first", timeout=5).add_done_callback(slow)
            assert entered.wait(WAIT)
            until = time.monotonic() + 4  # a bounded loop: calls while the callback blocks
            count = 0
            while time.monotonic() < until and count < 10_000:
                assert rq.call("echo", count, timeout=3) == count
                count += 1
        finally:
            release.set()
        assert rq.reconnects == 0
