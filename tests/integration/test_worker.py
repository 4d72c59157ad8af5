"""Worker behaviour: malformed input, concurrency, draining, and several processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from reqrep.common import RemoteError, Settings, exitcodes
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker
from tests.support import Admin, WorkerProcess


def test_request_without_reply_to_is_rejected(
    demo_worker: Worker, requestor: Requestor, admin: Admin
) -> None:
    props = pika.BasicProperties(type="echo", content_type="application/json", correlation_id="c1")
    admin.publish(demo_worker.queue, b"1", props)
    # The bad message is queued first, so the worker has judged it before it serves this call.
    assert requestor.call("echo", "still serving", timeout=10) == "still serving"
    assert demo_worker.stats.rejected == 1
    assert admin.message_count(demo_worker.queue) == 0  # not requeued


def test_request_without_correlation_id_is_rejected(
    demo_worker: Worker, requestor: Requestor, admin: Admin
) -> None:
    props = pika.BasicProperties(type="echo", content_type="application/json", reply_to="x")
    admin.publish(demo_worker.queue, b"1", props)
    assert requestor.call("echo", 2, timeout=10) == 2
    assert demo_worker.stats.rejected == 1
    assert admin.message_count(demo_worker.queue) == 0


def test_result_that_is_not_json(settings: Settings, service_name: str) -> None:
    service = Service(service_name)
    service.add("bad", lambda _payload: {1, 2})
    with (
        Worker(service, settings=settings, concurrency=1),
        Requestor(settings=settings, service=service_name) as rq,
        pytest.raises(RemoteError) as info,
    ):
        rq.call("bad", timeout=10)
    assert info.value.type == "SerializationError"


def test_long_handler_does_not_block_others(demo_worker: Worker, requestor: Requestor) -> None:
    slow = requestor.call_async("sleep", {"seconds": 3}, timeout=20)
    for i in range(20):
        assert requestor.call("echo", i, timeout=10) == i
    assert not slow.done()  # the quick calls overtook the slow one
    assert slow.result(20) == {"slept": 3.0}


class Started:
    """A handler that counts its starts, then sleeps ``payload`` seconds."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)

    def __call__(self, seconds: float) -> float:
        self.started.release()
        threading.Event().wait(seconds)
        return seconds


def test_stop_drains_in_flight_calls(settings: Settings, service_name: str) -> None:
    handler = Started()
    service = Service(service_name)
    service.add("work", handler)
    worker = Worker(service, settings=settings, concurrency=4).start()
    with Requestor(settings=settings, service=service_name) as rq:
        futures = [rq.call_async("work", 1.0, timeout=20) for _ in range(4)]
        for _ in range(4):
            assert handler.started.acquire(timeout=10)
        assert worker.stop(timeout=20) is True
        assert [f.result(5) for f in futures] == [1.0] * 4
    assert worker.stats.replied == 4


@pytest.fixture
def worker_env(amqp_url: str, prefix: str) -> dict[str, str]:
    """Environment for child processes: the broker, and this test's private queue prefix."""
    return {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix, "REQREP_LOG_LEVEL": "INFO"}


@pytest.fixture
def demo_requestor(settings: Settings) -> Iterator[Requestor]:
    with Requestor(settings=settings, service="demo") as rq:
        yield rq


def test_sigterm_drains_calls_in_flight(
    worker_env: dict[str, str], demo_requestor: Requestor
) -> None:
    env = {**worker_env, "REQREP_LOG_LEVEL": "DEBUG"}  # to see each request arrive
    proc = WorkerProcess(["reqrep.worker.demo:service", "--concurrency", "4"], env)
    try:
        proc.wait_for("worker ready")
        futures = [demo_requestor.call_async("sleep", {"seconds": 1}, timeout=30) for _ in range(4)]
        # All four must be in the worker before the signal, or the test would not be about
        # in-flight calls.
        proc.wait_for("'sleep' (tag", count=4)
        proc.signal(signal.SIGTERM)
        assert [f.result(30) for f in futures] == [{"slept": 1.0}] * 4
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
    assert any("draining" in line for line in proc.log)


def test_two_processes_share_one_queue(
    worker_env: dict[str, str], demo_requestor: Requestor
) -> None:
    proc = WorkerProcess(
        ["reqrep.worker.demo:service", "--processes", "2", "--concurrency", "1"], worker_env
    )
    try:
        proc.wait_for("worker ready", count=2)
        # Prefetch 1 per process: while one process holds a call, the next goes to the other.
        futures = [
            demo_requestor.call_async("whoami", {"seconds": 0.5}, timeout=30) for _ in range(4)
        ]
        pids = {f.result(30)["pid"] for f in futures}
        assert len(pids) == 2
        assert proc.proc.pid not in pids  # served by the children, not the supervisor

        # A child that dies is replaced, and the service keeps answering.
        os.kill(pids.pop(), signal.SIGKILL)
        proc.wait_for("restarting")
        proc.wait_for("worker ready")
        assert demo_requestor.call("echo", "ok", timeout=10) == "ok"
    finally:
        code = proc.stop()
    assert code == 0


def test_supervisor_stops_when_the_broker_refuses_the_login(
    amqp_url: str, worker_env: dict[str, str]
) -> None:
    """A wrong password cannot be fixed by a restart: the supervisor stops, it does not loop."""
    parts = urlsplit(amqp_url)
    netloc = f"guest:not-the-password@{parts.hostname}:{parts.port or 5672}"
    wrong = urlunsplit(parts._replace(netloc=netloc))
    proc = WorkerProcess(
        ["reqrep.worker.demo:service", "--processes", "2"], {**worker_env, "AMQP_URL": wrong}
    )
    try:
        code = proc.proc.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        proc.stop()
    log = "".join(proc.log)
    assert code == exitcodes.REFUSED, log
    assert "restarting in" not in log
    assert "a restart cannot fix that" in log
    assert "not-the-password" not in log
