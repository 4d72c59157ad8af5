"""Messages whose AMQP properties pika cannot decode: neither side loses its connection.

The broker accepts and forwards headers nested 1,000 tables deep and a header timestamp past year
9999, but pika raises while decoding them (RecursionError, ValueError), which used to drop the
connection, again and again as the broker redelivered the message. Now (the guard of
``common/_transport/_pika_fast.py``) the worker dead-letters such a request and the requestor
drops such a reply; both count it, and nothing else is disturbed.

pika refuses to *encode* these headers too, so the test writes the headers table itself and
hands pika properties that encode to those bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from reqrep.common import Settings
from reqrep.requestor import Admin as ReqrepAdmin
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, wait_until


def _deep_table(depth: int) -> bytes:
    """The bytes of a headers table nested ``depth`` tables deep: {"d": {"d": {...}}}."""
    inner = b""
    for _ in range(depth):
        inner = b"\x01d" + b"F" + struct.pack(">I", len(inner)) + inner
    return inner


def _far_timestamp() -> bytes:
    """A headers table holding one timestamp in the year 11476."""
    return b"\x01t" + b"T" + struct.pack(">Q", 300_000_000_000)


HEADERS = {"nested-1000-deep": _deep_table(1000), "timestamp-past-9999": _far_timestamp()}


class _RawHeaders(pika.BasicProperties):  # type: ignore[misc]  # pika is untyped here
    """Properties that pika encodes with a headers table given as raw bytes."""

    def __init__(self, table: bytes, **fields: Any) -> None:
        super().__init__(content_type="application/json", headers={}, **fields)
        self._table = table

    def encode(self) -> list[bytes]:
        pieces: list[bytes] = super().encode()
        # [flags, len(content_type), content_type, the empty headers table, ...]
        assert pieces[3] == b"\x00\x00\x00\x00"
        pieces[3] = struct.pack(">I", len(self._table)) + self._table
        return pieces


def _publish_hostile(admin: Admin, queue: str, table: bytes, reply_to: str) -> None:
    properties = _RawHeaders(table, type="echo", correlation_id="hostile", reply_to=reply_to)
    admin.publish(queue, b'"hostile"', properties)


@pytest.fixture(params=["classic", "quorum"])
def worker(
    request: pytest.FixtureRequest, settings: Settings, service_name: str
) -> Iterator[Worker]:
    worker = Worker(
        build(service_name), settings=settings.replace(queue_type=request.param), concurrency=4
    ).start()
    try:
        yield worker
    finally:
        worker.stop(5)


@pytest.mark.parametrize("headers", list(HEADERS), ids=list(HEADERS))
def test_worker_dead_letters_a_request_it_cannot_decode(
    worker: Worker, requestor: Requestor, admin: Admin, headers: str
) -> None:
    in_flight = [requestor.call_async("sleep", {"seconds": 0.3}, timeout=20) for _ in range(4)]
    _publish_hostile(admin, worker.queue, HEADERS[headers], requestor.reply_queue)
    after = [requestor.call_async("echo", i, timeout=20) for i in range(20)]

    assert [f.result(20) for f in in_flight] == [{"slept": 0.3}] * 4
    assert [f.result(20) for f in after] == list(range(20))
    wait_until(lambda: worker.stats.undecodable == 1, 10, "the request to be counted")
    assert worker.reconnects == 0
    assert requestor.reconnects == 0
    assert worker.stats.poisoned == 0
    assert requestor.stats().unknown == 0  # the worker did not answer it
    wait_until(
        lambda: admin.message_count(f"{worker.queue}.dead") == 1, 10, "the dead-lettered request"
    )
    with ReqrepAdmin(settings=worker.settings) as ops:  # reqrep's operator session reads it too
        [letter] = ops.dead_letters(worker.service.name)
    assert letter.undecodable is not None
    assert requestor.call("echo", "still fine", timeout=10) == "still fine"


@pytest.mark.parametrize("headers", list(HEADERS), ids=list(HEADERS))
@pytest.mark.parametrize("trusted", [False, True], ids=["any-replier", "trusted-repliers"])
def test_requestor_drops_a_reply_it_cannot_decode(
    settings: Settings, service_name: str, admin: Admin, headers: str, trusted: bool
) -> None:
    signing = settings.replace(sign_replies=True)
    with (
        Worker(build(service_name), settings=signing, concurrency=4),
        Requestor(
            settings=signing,
            service=service_name,
            trusted_repliers=["guest"] if trusted else None,
        ) as rq,
    ):
        in_flight = [rq.call_async("sleep", {"seconds": 0.3}, timeout=20) for _ in range(4)]
        _publish_hostile(admin, rq.reply_queue, HEADERS[headers], "")
        assert [f.result(20) for f in in_flight] == [{"slept": 0.3}] * 4
        wait_until(lambda: rq.stats().undecodable == 1, 10, "the reply to be counted")
        assert rq.call("echo", "after", timeout=10) == "after"
        assert rq.reconnects == 0
        assert rq.stats().unknown == 0
