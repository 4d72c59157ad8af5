"""Faults on one machine: worker processes killed or frozen under load, the broker restarted.

Each test holds the promise: every call ends in time with a result or a typed error, none is
lost, and no keyed call runs its side effect twice within a worker's dedupe window.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from reqrep.common import ConnectionLost, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker
from tests.support import WorkerProcess, rabbitmqctl


@pytest.fixture
def worker_env(amqp_url: str, prefix: str) -> dict[str, str]:
    return {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix, "REQREP_LOG_LEVEL": "INFO"}


@pytest.fixture
def demo(settings: Settings) -> Iterator[Requestor]:
    with Requestor(settings=settings, service="demo", timeout=60) as rq:
        yield rq


def _start(env: dict[str, str], *extra: str) -> WorkerProcess:
    proc = WorkerProcess(["reqrep.worker.demo:service", "--concurrency", "4", *extra], env)
    try:
        proc.wait_for("worker ready")
    except BaseException:
        proc.proc.kill()
        raise
    return proc


def test_sigkill_a_worker_under_load(worker_env: dict[str, str], demo: Requestor) -> None:
    a, b = _start(worker_env), _start(worker_env)
    try:
        futures = [demo.call_async("whoami", {"seconds": 0.01}) for _ in range(400)]
        # Once a has answered one, it holds more (prefetch 4 of 400 queued): kill it then.
        for future in futures:
            if future.result(60)["pid"] == a.proc.pid:
                break
        a.proc.kill()  # SIGKILL with requests in flight: the broker redelivers them to b
        pids = [f.result(60)["pid"] for f in futures]
        assert set(pids) == {a.proc.pid, b.proc.pid}
        assert pids[-1] == b.proc.pid
        stats = demo.stats()
        assert (stats.resolved, stats.pending, stats.unknown) == (400, 0, 0)
        # Each caller got exactly one result. A request whose reply a had sent but not yet
        # acked when it died is run again by b; that second reply is discarded as late. Only
        # requests a held can be affected: at most its prefetch (4).
        assert stats.late <= 4
    finally:
        try:
            a.stop()
        finally:
            b.stop()


def test_sigstop_a_worker_holding_requests(
    amqp_url: str, worker_env: dict[str, str], demo: Requestor
) -> None:
    """A frozen worker keeps its TCP connection: its requests come back only when the broker
    misses its heartbeats (2 s here), then the other worker serves them."""
    env = {**worker_env, "AMQP_URL": f"{amqp_url}?heartbeat=2"}
    frozen = _start(env)
    other: WorkerProcess | None = None
    try:
        futures = [demo.call_async("sleep", {"seconds": 0.5}) for _ in range(4)]
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        other = _start(env)
        assert [f.result(60) for f in futures] == [{"slept": 0.5}] * 4
        assert demo.stats().late == 0
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
        try:
            frozen.stop()
        finally:
            if other is not None:
                other.stop()


@pytest.mark.broker_restart
def test_broker_restart(
    settings: Settings, service_name: str, broker_restart: threading.Event
) -> None:
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    hold = threading.Event()
    service.add("hold", lambda payload: hold.wait(30) and payload)
    worker = Worker(service, settings=settings.replace(timeout=60), concurrency=2).start()
    try:
        with Requestor(settings=settings.replace(timeout=60), service=service_name) as rq:
            assert rq.call("echo", "before") == "before"
            pending = rq.call_async("hold", "x")
            rabbitmqctl("stop_app")
            broker_restart.set()
            with pytest.raises(ConnectionLost):
                pending.result(30)
            # Calls made while the broker is down wait for the reconnection.
            during: list[Future[object]] = [
                rq.call_async("echo", i, idempotent=True) for i in range(10)
            ]
            hold.set()
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            broker_restart.clear()
            assert [f.result(60) for f in during] == list(range(10))
            assert rq.call("echo", "after") == "after"
            assert rq.reconnects >= 1
            assert worker.reconnects >= 1
    finally:
        worker.stop(5)
