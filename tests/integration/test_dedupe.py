"""The worker's reply cache: scoped by method, within its byte budget, handler replies only."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest

from reqrep.common import BadRequest, Settings, envelope
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, BareReplyQueue


class _Replies(BareReplyQueue):
    def __init__(self, url: str) -> None:
        self.got: dict[str, bytes] = {}
        super().__init__(url)

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        self.got[properties.correlation_id] = body

    def wait(self, correlation_id: str, seconds: float = 10) -> bytes:
        for _ in range(int(seconds / 0.05)):
            if correlation_id in self.got:
                return self.got[correlation_id]
            self.pump(0.05)
        raise AssertionError(f"no reply to {correlation_id}")


def test_a_reused_key_for_another_method_is_another_request(
    demo_worker: Worker, requestor: Requestor
) -> None:
    key = f"key-{uuid.uuid4().hex}"
    assert requestor.call("add", {"a": 1, "b": 2}, idempotency_key=key) == 3
    assert requestor.call("echo", "mine", idempotency_key=key) == "mine"
    assert requestor.call("add", {"a": 5, "b": 5}, idempotency_key=key) == 3  # same method: cached
    assert demo_worker.stats.deduplicated == 1


def test_a_request_refused_before_its_handler_ran_is_not_cached(
    demo_worker: Worker, admin: Admin, amqp_url: str
) -> None:
    key = f"key-{uuid.uuid4().hex}"
    with _Replies(amqp_url) as replies:

        def send(correlation_id: str, body: bytes) -> bytes:
            props = pika.BasicProperties(
                type="echo",
                content_type="application/json",
                correlation_id=correlation_id,
                reply_to=replies.queue,
                message_id=key,
            )
            admin.publish(demo_worker.queue, body, props)
            return replies.wait(correlation_id)

        with pytest.raises(BadRequest):
            envelope.decode_reply(send("first", b"{not json"))
        assert envelope.decode_reply(send("corrected", b'"fixed"')) == "fixed"
        assert envelope.decode_reply(send("again", b'"other"')) == "fixed"  # now it is cached


def test_the_cache_stays_within_its_byte_budget(settings: Settings, service_name: str) -> None:

    budget = 1024 * 1024
    with (
        Worker(build(service_name), settings=settings.replace(dedupe_bytes=budget)) as worker,
        Requestor(settings=settings, service=service_name) as rq,
    ):
        big = "x" * 300_000
        for _ in range(10):
            assert rq.call("echo", big, idempotent=True) == big
        cache = worker._consumer._cache  # what the budget bounds
        assert 0 < cache.size_bytes <= budget
        assert len(cache) == 3
