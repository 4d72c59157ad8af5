"""Fuzzing a running worker with arbitrary requests, published with bare pika.

The promise under test: whatever lands in a service's request queue, the worker keeps serving
correct calls; each bad message gets an error reply or is dead-lettered or dropped (rejected,
expired); none is delivered over and over; the worker's connection never dies.

Each example publishes one message straight into ``demo_worker.queue`` and then makes one real
call. The queue is FIFO and the worker judges deliveries in order on its I/O thread, so once the
call returns the message has been judged (its handler, if it got one, may still be running).
After all examples a model replays the messages in order, as docs/protocol.md and the
worker's checks describe them, and everything observed must match it: each reply, each
dead-lettered message and each of the worker's counters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pika
import pytest
from hypothesis import HealthCheck, example, given

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from tests.integration.fuzz_messages import JSON, REQUESTS, Deadline, Spec
from tests.integration.fuzz_model import MAX_BYTES, Sent, build_model, check
from tests.support import Admin, BareReplyQueue

# More for a soak run, e.g. REQREP_FUZZ_EXAMPLES=3000 pytest --timeout 600 ...
EXAMPLES = int(os.environ.get("REQREP_FUZZ_EXAMPLES", "150"))
SETTLE = 20.0  # seconds: the longest the final phase waits for replies and dead letters


def _spec(body: bytes, method: str) -> Spec:
    """A well-formed message with this body: an explicit example for the fuzz test."""
    return Spec(
        body=body,
        method=method,
        content_type=JSON,
        correlation_id="example",
        reply_to="mine",
        headers=None,
        message_id=None,
        expiration=None,
        delivery_mode=None,
    )


@pytest.fixture
def settings(amqp_url: str, prefix: str) -> Settings:
    """tests/conftest.py's settings, with a size limit that fuzzed bodies cross both ways."""
    return Settings(
        url=amqp_url,
        timeout=10.0,
        connect_timeout=5.0,
        queue_prefix=prefix,
        max_message_bytes=MAX_BYTES,
    )


# -- the listener: an exclusive callback queue of our own -------------------------------------


class Listener(BareReplyQueue):
    """A BlockingConnection with an exclusive, server-named queue to point ``reply_to`` at.

    Replies are collected only while ``pump`` runs (on the test thread, bounded in time).
    """

    def __init__(self, url: str) -> None:
        self.replies: list[tuple[Any, bytes]] = []
        super().__init__(url)

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        self.replies.append((properties, body))

    def wait_for(self, count: int, timeout: float) -> list[tuple[Any, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.replies) < count and time.monotonic() < deadline:
            self.pump(0.05)
        return self.replies


@pytest.fixture
def listener(amqp_url: str) -> Iterator[Listener]:
    with Listener(amqp_url) as reply_listener:
        yield reply_listener


def _drain(admin: Admin, queue: str) -> list[tuple[Any, bytes]]:
    """Whatever is in ``queue`` now (basic_get: quorum queue counts lag)."""
    taken: list[tuple[Any, bytes]] = []
    for _ in range(10_000):
        method, properties, body = admin.channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        taken.append((properties, body))
    return taken


def _stats(worker: Worker) -> dict[str, int]:
    return dataclasses.asdict(worker.stats)


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # bounded by EXAMPLES and SETTLE, not by the machine's speed
def test_fuzzed_requests_never_break_the_worker(
    demo_worker: Worker, requestor: Requestor, admin: Admin, listener: Listener
) -> None:
    started = time.monotonic()
    nowhere = f"fuzz-nowhere-{uuid.uuid4().hex}"
    destinations = {
        "none": None,
        "empty": "",
        "mine": listener.queue,
        "nowhere": nowhere,
        "self": demo_worker.queue,
    }
    dead_letter_queue = f"{demo_worker.queue}.dead"
    sent: list[Sent] = []
    calls = 0

    def publish(spec: Spec) -> Sent:
        n = len(sent)
        correlation_id = spec.correlation_id
        if isinstance(correlation_id, str) and correlation_id:
            correlation_id = f"fz{n}-{correlation_id}"
        elif isinstance(correlation_id, bytes):
            correlation_id = f"fz{n}-".encode() + correlation_id
        now_ms = time.time() * 1000
        headers = spec.headers
        if headers is not None:
            headers = {
                k: int(now_ms + v.offset_ms) if isinstance(v, Deadline) else v
                for k, v in headers.items()
            }
        message = Sent(
            app_id=f"fuzz-{n}",
            spec=spec,
            reply_to=destinations[spec.reply_to],
            correlation_id=correlation_id,
            headers=headers,
            published_ms=now_ms,
        )
        properties = pika.BasicProperties(
            content_type=spec.content_type,
            headers=headers,
            delivery_mode=spec.delivery_mode,
            correlation_id=correlation_id,
            reply_to=message.reply_to,
            expiration=spec.expiration,
            message_id=spec.message_id,
            type=spec.method,
            app_id=message.app_id,
        )
        sent.append(message)  # before publishing: a message the broker took must be counted
        admin.publish(demo_worker.queue, spec.body, properties)
        return message

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(spec=REQUESTS)
    @example(spec=_spec(b"1e400", "echo"))  # beyond a double: refused, not read as inf
    @example(spec=_spec(b'{"a": 1e308, "b": 1e308}', "add"))  # a sum no double holds
    def one_message_then_a_real_call(spec: Spec) -> None:
        nonlocal calls
        reconnects = demo_worker.reconnects
        message = publish(spec)
        calls += 1
        assert requestor.call("echo", calls, timeout=10) == calls, message.describe()
        assert demo_worker.reconnects == reconnects, f"worker reconnected: {message.describe()}"
        listener.pump(0)  # keep the listener's connection serviced

    one_message_then_a_real_call()
    examples = time.monotonic() - started

    # Handlers may still be running: wait (bounded) until what was observed matches the model.
    replies, dead = listener.replies, []
    deadline = time.monotonic() + SETTLE
    while True:
        listener.pump(0.05)
        dead += _drain(admin, dead_letter_queue)
        expired = {
            p.app_id
            for p, _ in dead
            if [d.get("reason") for d in (p.headers or {}).get("x-death", [])][:1] == ["expired"]
        }
        model = build_model(sent, expired, calls)
        if not check(model, replies, dead, _stats(demo_worker)) or time.monotonic() > deadline:
            break
    listener.pump(0.5)  # anything more would be a reply or dead letter too many
    dead += _drain(admin, dead_letter_queue)
    problems = check(model, replies, dead, _stats(demo_worker))
    assert not problems, "\n".join(problems[:30])

    # Every delivery was settled exactly once, none was given back, nothing is left over.
    stats = demo_worker.stats
    assert stats.received == stats.replied + stats.rejected + stats.expired + stats.poisoned
    assert (stats.requeued, stats.stale, demo_worker.reconnects) == (0, 0, 0)
    broker_expired = sum(1 for _, e in model.fates if e.outcome == "broker_expired")
    assert stats.received + broker_expired == len(sent) + calls + model.self_replies
    # A finished drain means every delivery was settled before the worker closed: nothing
    # can have gone back to the queue.
    assert demo_worker.stop(5), "the worker did not drain: some delivery was never settled"
    assert _drain(admin, demo_worker.queue) == [], "requests left in the queue"
    outcomes = Counter(e.outcome for _, e in model.fates)
    answers = Counter(e.error_type or "ok" for _, e in model.fates if e.reply)
    print(  # shown with -s: what this run covered
        f"\n{len(sent)} messages, {calls} calls in {examples:.1f}s; outcomes {dict(outcomes)}; "
        f"answers {dict(answers)}; worker {_stats(demo_worker)}; "
        f"{len(replies)} replies, {len(dead)} dead letters"
    )


def test_content_type_that_is_not_utf8_is_refused_not_fatal(
    demo_worker: Worker, requestor: Requestor, admin: Admin, listener: Listener
) -> None:
    properties = pika.BasicProperties(
        type="echo",
        content_type=b"\xffapplication/json",
        correlation_id="not-utf8",
        reply_to=listener.queue,
    )
    admin.publish(demo_worker.queue, b"1", properties)
    replies = listener.wait_for(1, 10)
    assert len(replies) == 1
    reply_properties, body = replies[0]
    assert reply_properties.correlation_id == "not-utf8"
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert demo_worker.reconnects == 0  # the connection survived the message
    assert requestor.call("echo", 1, timeout=10) == 1
