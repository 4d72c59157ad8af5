"""Replies the broker refuses or returns, by the hundred: bounded work, a few log lines."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pika
import pytest

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from reqrep.worker.replies import REPLY_ATTEMPTS
from tests.support import Admin, wait_until


@pytest.fixture
def full_queue(admin: Admin) -> Iterator[str]:
    """A queue that refuses every message: the broker nacks what is published to it."""
    name = f"test-full-{uuid.uuid4().hex[:10]}"
    admin.channel.queue_declare(name, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    yield name
    admin.delete_queue(name)


@pytest.fixture(params=["classic", "quorum"])
def worker(
    request: pytest.FixtureRequest, settings: Settings, service_name: str
) -> Iterator[Worker]:
    worker = Worker(
        build(service_name), settings=settings.replace(queue_type=request.param), concurrency=2
    ).start()
    try:
        yield worker
    finally:
        worker.stop(5)


@pytest.mark.parametrize("keyed", [True, False], ids=["with-message-id", "without-message-id"])
def test_a_refused_reply_is_tried_a_few_times_then_dead_lettered(
    worker: Worker,
    requestor: Requestor,
    admin: Admin,
    *,
    full_queue: str,
    caplog: pytest.LogCaptureFixture,
    keyed: bool,
) -> None:
    props = pika.BasicProperties(
        type="echo",
        content_type="application/json",
        correlation_id="refused-1",
        reply_to=full_queue,
        message_id="key-refused-1" if keyed else None,
    )
    with caplog.at_level(logging.DEBUG, logger="reqrep.worker"):
        admin.publish(worker.queue, b'"to a full queue"', props)
        wait_until(lambda: worker.stats.refused_dead_lettered == 1, 20, "the request dead-lettered")
        assert requestor.call("echo", "others fine", timeout=10) == "others fine"
    dead = admin.get_one(f"{worker.queue}.dead", timeout=10)
    assert dead is not None
    assert dead[1].correlation_id == "refused-1"
    assert worker.stats.replies_refused == REPLY_ATTEMPTS
    assert worker.stats.requeued == REPLY_ATTEMPTS - 1
    lines = [r for r in caplog.records if "refused" in r.getMessage() and r.levelno >= logging.INFO]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # once per request, not per cycle
    assert worker.reconnects == 0


def test_returned_replies_flood_writes_few_lines(
    settings: Settings, service_name: str, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    """300 requests whose callback queue does not exist: 300 returned replies, one log line."""
    with (
        caplog.at_level(logging.INFO, logger="reqrep.worker"),
        Worker(build(service_name), settings=settings, concurrency=4) as worker,
    ):
        for i in range(300):
            props = pika.BasicProperties(
                type="echo",
                content_type="application/json",
                correlation_id=f"gone-{i}",
                reply_to=f"nowhere-{uuid.uuid4().hex}",
            )
            admin.publish(worker.queue, b"1", props)
        wait_until(lambda: worker.stats.replies_returned == 300, 30, "300 returned replies")
    returned = [r for r in caplog.records if "returned" in r.getMessage()]
    assert 1 <= len(returned) <= 2, len(returned)
