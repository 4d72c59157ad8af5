"""``reqrep ping`` and ``reqrep status``: live workers answer on their control queues."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

import reqrep
from reqrep.common import Settings, exitcodes
from reqrep.requestor import Admin, Requestor
from reqrep.worker import Service, Worker
from reqrep.worker.demo import build
from tests.support import Admin as BareAdmin
from tests.support import WorkerProcess, wait_until

REQREP = str(Path(sys.executable).with_name("reqrep"))


@pytest.fixture
def other_service(admin: BareAdmin, prefix: str) -> Iterator[str]:
    name = f"other{uuid.uuid4().hex[:8]}"
    yield name
    admin.delete_service_queues(prefix, name)


@pytest.fixture
def ops(settings: Settings) -> Iterator[Admin]:
    with Admin(settings=settings) as session:
        yield session


def _env(settings: Settings) -> dict[str, str]:
    return {"AMQP_URL": settings.url, "REQREP_QUEUE_PREFIX": settings.queue_prefix}


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REQREP, *args],
        env={**os.environ, **_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ping_sees_every_worker_with_its_fields(
    settings: Settings, service_name: str, other_service: str, ops: Admin
) -> None:
    process = WorkerProcess(["reqrep.worker.demo:service", "--concurrency", "3"], _env(settings))
    try:
        process.wait_for("worker ready")
        with (
            Worker(build(service_name), settings=settings, concurrency=2),
            Worker(build(other_service), settings=settings, concurrency=5, prefetch=7),
        ):
            workers = ops.ping(timeout=1.0)
            by_service = {w.service: w for w in workers}
            assert sorted(by_service) == sorted(["demo", service_name, other_service])
            assert len(workers) == 3
            mine, other, child = (
                by_service[service_name],
                by_service[other_service],
                by_service["demo"],
            )
            assert (mine.pid, other.pid, child.pid) == (os.getpid(), os.getpid(), process.proc.pid)
            assert {w.host for w in workers} == {socket.gethostname()}
            assert {w.version for w in workers} == {reqrep.__version__}
            assert (mine.concurrency, other.concurrency, child.concurrency) == (2, 5, 3)
            assert (other.prefetch, other.queue) == (7, settings.request_queue(other_service))
            assert all(w.uptime > 0 and w.in_flight == 0 and not w.draining for w in workers)
            assert mine.connection != other.connection

            only = ops.ping([service_name], timeout=0.5)
            assert [w.service for w in only] == [service_name]
            two = ops.ping([service_name, "demo"], timeout=0.5)
            assert sorted(w.service for w in two) == sorted([service_name, "demo"])
            assert ops.ping(["nobody"], timeout=0.3) == []
    finally:
        assert process.stop() == 0


def test_ping_is_answered_while_busy_and_leaves_the_request_queue_alone(
    settings: Settings, service_name: str, ops: Admin, admin: BareAdmin
) -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[object] = []

    def work(payload: object) -> object:
        if payload == "first":
            started.set()
            release.wait(30)
        ran.append(payload)
        return payload

    service = Service(service_name)
    service.add("work", work)
    with (
        Worker(service, settings=settings, concurrency=1, prefetch=1) as worker,
        Requestor(settings=settings, service=service_name, timeout=30) as rq,
    ):
        first = rq.call_async("work", "first")
        assert started.wait(10)
        rest = [rq.call_async("work", i) for i in range(5)]
        wait_until(lambda: admin.message_count(worker.queue) == 5, 10, "5 requests queued")
        [info] = ops.ping([service_name], timeout=0.5)
        assert info.in_flight == 1  # the running call; the other five wait in the queue
        assert admin.message_count(worker.queue) == 5  # the ping took nothing from it
        release.set()
        assert first.result(10) == "first"
        assert [f.result(10) for f in rest] == list(range(5))
    assert ran == ["first", 0, 1, 2, 3, 4]  # in the order they were sent


def test_status_numbers_match_the_broker(
    settings: Settings, service_name: str, ops: Admin, admin: BareAdmin
) -> None:
    queue = settings.request_queue(service_name)
    dead = f"{queue}.dead"
    with Worker(build(service_name), settings=settings, concurrency=2):
        [live] = ops.status(timeout=0.5)
        assert (live.service, live.exists, live.consumers, live.workers) == (
            service_name,
            True,
            1,
            1,
        )
        assert (live.depth, live.dead_letters) == (0, 0)
    props = pika.BasicProperties(type="echo", content_type="application/json")
    for i in range(3):  # requests waiting for a worker
        admin.publish(queue, json.dumps(i).encode(), props)
    for _ in range(2):  # dead letters, sent the way the broker dead-letters
        admin.channel.basic_publish(f"{settings.queue_prefix}dlx", dead, b"null", props)
    wait_until(lambda: admin.message_count(queue) == 3, 10, "3 queued")
    wait_until(lambda: admin.message_count(dead) == 2, 10, "2 dead letters")
    assert ops.status(timeout=0.3) == []  # no live worker: nothing discovered
    [named, ghost] = ops.status([service_name, "ghost"], timeout=0.3)
    assert (named.depth, named.consumers, named.workers, named.dead_letters) == (3, 0, 0, 2)
    assert (ghost.exists, ghost.depth, ghost.consumers, ghost.dead_letters) == (
        False,
        None,
        None,
        None,
    )


def test_cli_json_outputs_parse(settings: Settings, service_name: str) -> None:
    with Worker(build(service_name), settings=settings, concurrency=4):
        ping = _cli(settings, "ping", "--json", "--timeout", "0.5")
        assert ping.returncode == 0, ping.stderr
        [worker] = json.loads(ping.stdout)
        assert (worker["service"], worker["pid"], worker["concurrency"]) == (
            service_name,
            os.getpid(),
            4,
        )
        status = _cli(settings, "status", "--json", "--timeout", "0.5")
        assert status.returncode == 0, status.stderr
        [row] = json.loads(status.stdout)
        assert (row["service"], row["consumers"], row["workers"]) == (service_name, 1, 1)
        text = _cli(settings, "ping", "--timeout", "0.5")
        assert text.returncode == 0
        assert service_name in text.stdout
        assert "SERVICE" in text.stdout
    none = _cli(settings, "ping", "--json", "--timeout", "0.3")
    assert (none.returncode, json.loads(none.stdout)) == (exitcodes.NO_WORKERS, [])


def test_the_control_protocol_with_bare_pika(settings: Settings, service_name: str) -> None:
    """A foreign client pings by docs/protocol.md's rules alone."""
    replies: list[tuple[str, dict[str, object]]] = []
    connection = pika.BlockingConnection(pika.URLParameters(settings.url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_consume(
            queue,
            lambda _c, _d, props, body: replies.append((props.correlation_id, json.loads(body))),
            auto_ack=True,
        )
        with Worker(build(service_name), settings=settings, concurrency=1):
            exchange = f"{settings.queue_prefix}control"
            for cid, kind in (("p1", "ping"), ("s1", "stats")):
                props = pika.BasicProperties(
                    type=kind, reply_to=queue, correlation_id=cid, expiration="5000"
                )
                channel.basic_publish(exchange, f"service.{service_name}", b"null", props)
            deadline = time.monotonic() + 10
            while len(replies) < 2 and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.1)
    finally:
        connection.close()
    answers = dict(replies)
    assert answers["p1"]["ok"] is True
    assert answers["p1"]["result"]["service"] == service_name  # type: ignore[index]
    assert answers["s1"]["ok"] is False
    assert answers["s1"]["error"]["code"] == "method_not_found"  # type: ignore[index]
