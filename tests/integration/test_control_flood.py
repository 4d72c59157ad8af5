"""Whoever can publish to the control exchange can send pings: a flood of them must never cost
the requests their worker's I/O thread, and a ping can only be answered to an asker's queue."""

from __future__ import annotations

import threading

import pika

from reqrep.common import Settings
from reqrep.requestor import Admin, Requestor
from reqrep.worker import Worker
from reqrep.worker.control import PER_ASKER
from reqrep.worker.demo import build
from tests.support import Admin as BareAdmin
from tests.support import wait_until

PINGS = 20_000


def _flood(url: str, exchange: str, reply_to: str, done: threading.Event) -> None:
    """Publish PINGS pings as fast as one connection goes (no confirms: a flood)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        props = pika.BasicProperties(type="ping", reply_to=reply_to, correlation_id="flood")
        for _ in range(PINGS):
            channel.basic_publish(exchange, "all", b"null", props)
    finally:
        connection.close()
        done.set()


def test_a_ping_flood_stalls_no_call(settings: Settings, service_name: str) -> None:
    with (
        Worker(build(service_name), settings=settings, concurrency=4) as worker,
        Requestor(settings=settings, service=service_name, timeout=5) as rq,
    ):
        flooded = threading.Event()
        flooder = threading.Thread(
            target=_flood,
            args=(settings.url, f"{settings.queue_prefix}control", rq.reply_queue, flooded),
        )
        flooder.start()
        calls = 0
        while not flooded.is_set() and calls < 5000:  # calls all through the flood
            assert rq.call("echo", calls) == calls  # a CallTimeout here is the stall
            calls += 1
        flooder.join(60)
        assert calls > 0
        answered, dropped = worker._control.answered, worker._control.dropped
        assert answered + dropped < PINGS  # the broker dropped most of the flood, not the worker
        assert answered <= PER_ASKER * 60  # the flood's one reply queue: its rate, at most
        with Admin(settings=settings) as ops:  # pings still answered afterwards
            assert [w.service for w in ops.ping([service_name], timeout=1.0)] == [service_name]


def test_a_ping_is_not_answered_into_a_request_queue(
    settings: Settings, service_name: str, admin: BareAdmin
) -> None:
    with Worker(build(service_name), settings=settings, concurrency=1) as worker:
        props = pika.BasicProperties(type="ping", reply_to=worker.queue, correlation_id="x")
        for _ in range(10):
            admin.channel.basic_publish(f"{settings.queue_prefix}control", "all", b"null", props)
        wait_until(lambda: worker._control.dropped == 10, 10, "the pings to be dropped")
        assert worker.stats.received == 0  # no bogus request was made of them
        assert admin.message_count(f"{worker.queue}.dead") == 0
