"""A request prefetched behind slow handlers is not run once its deadline has passed."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest

from reqrep.common import CallTimeout, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker, current
from tests.support import wait_until


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_requests_past_their_deadline_at_pickup_are_acked_not_run(
    settings: Settings, service_name: str, kind: str
) -> None:
    service = Service(service_name)
    lock = threading.Lock()
    late_starts: list[float] = []  # how late each late handler started, seconds
    ran: list[int] = []

    def started(payload: Any) -> None:
        deadline = current().deadline
        with lock:
            ran.append(payload)
            if deadline is not None and time.time() > deadline:
                late_starts.append(time.time() - deadline)

    if kind == "thread":

        @service.handler("slow")
        def slow(payload: Any) -> Any:
            started(payload)
            time.sleep(0.4)
            return payload

    else:

        @service.handler("slow")
        async def slow_async(payload: Any) -> Any:
            started(payload)
            await asyncio.sleep(0.4)
            return payload

    with (
        Worker(service, settings=settings, concurrency=2, prefetch=20) as worker,
        Requestor(settings=settings, service=service_name) as rq,
    ):
        # 20 calls of 1 s each, 2 handler threads of 0.4 s each: most wait past their deadline.
        futures: list[Future[Any]] = [rq.call_async("slow", i, timeout=1.0) for i in range(20)]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(10))
            except CallTimeout:
                outcomes.append("timeout")
        wait_until(
            lambda: worker.stats.replied + worker.stats.expired == 20, 20, "every request settled"
        )
        assert rq.call("slow", "after", timeout=10) == "after"  # the worker is not stuck
    # Checked at pickup: a handler may start at most the few microseconds after it.
    late = [d for d in late_starts if d > 0.05]
    assert late == [], f"{len(late)} handlers started after their deadline, up to {max(late)}s"
    assert worker.stats.expired >= 8  # ~5 fit into one second with two threads
    assert len(ran) == 21 - worker.stats.expired
    assert outcomes.count("timeout") >= worker.stats.expired
