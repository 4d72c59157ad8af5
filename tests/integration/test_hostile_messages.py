"""Hostile and oversized traffic: size limits, forged replies, poison requests, trusted repliers."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from reqrep.common import BadRequest, MessageTooLarge, PoisonRequest, RemoteError, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker, current
from tests.integration.gates import Counted
from tests.support import Admin, WorkerProcess


def _get_one(admin: Admin, queue: str, timeout: float = 10) -> tuple[Any, Any, bytes]:
    """The next message of ``queue``, waiting for it to arrive (at most ``timeout``)."""
    message = admin.get_one(queue, timeout)
    if message is None:
        raise AssertionError(f"no message in {queue} within {timeout}s")
    return message


def test_size_limits_on_both_sides(amqp_url: str, prefix: str, service_name: str) -> None:
    settings = Settings(url=amqp_url, timeout=10, queue_prefix=prefix, max_message_bytes=1000)
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    service.add("grow", lambda n: "x" * n)
    with (
        Worker(service, settings=settings, concurrency=1),
        Requestor(settings=settings, service=service_name) as rq,
    ):
        with pytest.raises(MessageTooLarge):
            rq.call("echo", "x" * 2000)
        with pytest.raises(RemoteError) as info:
            rq.call("grow", 2000)
        assert info.value.type == "MessageTooLarge"
        big = Settings(url=amqp_url, timeout=10, queue_prefix=prefix, max_message_bytes=10_000)
        with (
            Requestor(settings=big, service=service_name) as unlimited,
            pytest.raises(BadRequest, match="exceeds max_message_bytes=1000"),
        ):
            unlimited.call("echo", "x" * 2000)
        assert rq.call("echo", "small") == "small"


def test_forged_replies_are_counted_and_never_wake_a_caller(
    demo_worker: Worker, requestor: Requestor, admin: Admin
) -> None:
    assert requestor.call("echo", 1) == 1  # connected; the callback queue exists
    forged = pika.BasicProperties(correlation_id="not-a-call", content_type="application/json")
    admin.publish(requestor.reply_queue, b'{"ok": true, "result": "forged"}', forged)
    admin.publish(requestor.reply_queue, b"\xff garbage", pika.BasicProperties())
    # The replies are queued before this call's reply, so they have been judged when it returns.
    assert requestor.call("echo", 2) == 2
    stats = requestor.stats()
    assert (stats.unknown, stats.pending) == (2, 0)


def test_poison_request_is_dead_lettered_and_its_caller_told(
    amqp_url: str, prefix: str, admin: Admin, worker_native: bool
) -> None:
    env = {
        "AMQP_URL": amqp_url,
        "REQREP_QUEUE_PREFIX": prefix,
        "REQREP_MAX_REDELIVERIES": "1",
    }
    # Prefetch 1: a worker holding the poison request holds nothing else, so no bystander is
    # redelivered (and counted) each time it dies.
    proc = WorkerProcess(
        [
            *("tests.services:crashy", "--processes", "2", "--concurrency", "1"),
            *("--prefetch", "1", "--native" if worker_native else "--no-native"),
        ],
        env,
    )
    settings = Settings(url=amqp_url, queue_prefix=prefix, timeout=60)
    try:
        proc.wait_for("worker ready", count=2)
        with Requestor(settings=settings, service="crashy") as rq:
            poison = rq.call_async("crash", None)
            # Other traffic keeps flowing while the poison request kills workers.
            for i in range(20):
                assert rq.call("echo", i, timeout=30) == i
            with pytest.raises(PoisonRequest) as info:
                poison.result(60)
            # REQREP_MAX_REDELIVERIES=1: the worker died once, delivery 2 is refused.
            assert info.value.details["delivery_count"] == 2
        _method, props, _body = _get_one(admin, f"{prefix}crashy.dead")
        assert props.headers["x-death"][0]["reason"] == "rejected"
        assert props.type == "crash"
    finally:
        proc.stop()
        admin.delete_service_queues(prefix, "crashy")


def test_trusted_repliers(amqp_url: str, prefix: str, service_name: str, admin: Admin) -> None:
    """Signed replies carry the worker's broker-verified user; a requestor that trusts only that
    user ignores a forged reply even when it carries the right correlation id."""
    settings = Settings(url=amqp_url, queue_prefix=prefix, timeout=10, sign_replies=True)
    gate = Counted(gated=True)
    seen: list[str] = []

    def work(payload: object) -> object:
        seen.append(current().correlation_id)
        return gate(payload)

    service = Service(service_name)
    service.add("work", work)
    with (
        Worker(service, settings=settings, concurrency=1),
        Requestor(
            settings=settings, service=service_name, trusted_repliers={settings.username}
        ) as rq,
        Requestor(
            settings=settings, service=service_name, trusted_repliers={"someone-else"}
        ) as suspicious,
    ):
        future = rq.call_async("work", "real")
        assert gate.started.acquire(timeout=10)
        # Forge the answer to the pending call (the admin's connection has no user_id stamp).
        forged = pika.BasicProperties(correlation_id=seen[0], content_type="application/json")
        admin.publish(rq.reply_queue, b'{"ok": true, "result": "forged"}', forged)
        gate.release.set()
        assert future.result(10) == "real"
        assert rq.stats().untrusted == 1
        with pytest.raises(Exception, match="within 1s"):
            suspicious.call("work", "x", timeout=1)
        assert suspicious.stats().untrusted == 1
