"""A stalled consumer heals without a restart of the worker (the watchdog of
``worker/consumer.py``).

The stall is made the way RabbitMQ 3.10 made it after a quorum queue lost its quorum: the
broker thinks it delivered a prefetch's worth of requests, the worker never saw them, and
nothing more comes. Here the worker's first consumer swallows what it is given (white box), so
that its prefetch fills with requests it will never answer while more wait in the queue.
"""

from __future__ import annotations

import threading

from reqrep.common import Settings
from reqrep.common._transport import Delivery
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import wait_until


def test_a_stalled_consumer_consumes_again_and_its_requests_are_answered(
    settings: Settings, service_name: str
) -> None:
    worker = Worker(build(service_name), settings=settings, concurrency=1, prefetch=2, watchdog=1.0)
    consumer = worker._consumer  # white box: its first consumer loses what it is given
    swallowed: list[int] = []
    real = consumer._on_request
    lost = threading.Event()

    def swallow(delivery: Delivery) -> None:
        if lost.is_set():
            real(delivery)
            return
        swallowed.append(delivery.tag)  # never settled, never answered: a stall
        if len(swallowed) == 2:
            consumer._on_request = real  # type: ignore[method-assign]  # the next consumer is well
            lost.set()

    consumer._on_request = swallow  # type: ignore[method-assign,assignment]
    worker.start()
    try:
        with Requestor(settings=settings, service=service_name, timeout=30) as rq:
            futures = [rq.call_async("echo", i) for i in range(6)]
            # All six are answered: the two swallowed ones too, redelivered to the new consumer.
            assert sorted(f.result(30) for f in futures) == list(range(6))
        assert swallowed == [1, 2]
        wait_until(lambda: worker.stats.consumer_restarts == 1, 5, "the restart to be counted")
    finally:
        worker.stop(5)
