"""Cancellation reaches the worker, in another process: a caller's cancel stops its call there
(``worker/cancel.py``). The worker runs ``tests.services:sleepy`` and tells on stderr when a
handler sees its cancel, with the time: the test compares it with the time it cancelled."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest

from reqrep.common import CallTimeout, Settings
from reqrep.requestor import Admin, AsyncRequestor, Requestor
from tests.support import Admin as BareAdmin
from tests.support import WorkerProcess, wait_until

# The bound: the handler is cancelled within 0.5 s of its caller's cancel. A cancel is
# one message through the broker and a hop to the handler (milliseconds here): 0.5 s holds
# under any load this shared machine sees, and a cancel that did not arrive fails it.
CANCEL_BOUND = 0.5


@dataclasses.dataclass(frozen=True)
class Sleepy:
    proc: WorkerProcess
    prefetch: int


@pytest.fixture(params=[2], ids=["prefetch-2"])
def sleepy(
    request: pytest.FixtureRequest, amqp_url: str, prefix: str, admin: BareAdmin
) -> Iterator[Sleepy]:
    """A worker process serving ``sleepy`` with one handler thread, and the prefetch the
    test's parameter says (2: a request can wait at the worker; 1: only in the queue)."""
    env = {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix, "REQREP_LOG_LEVEL": "INFO"}
    prefetch: int = request.param
    args = ["tests.services:sleepy", "--concurrency", "1", "--prefetch", str(prefetch)]
    proc = WorkerProcess(args, env)
    try:
        proc.wait_for("worker ready")
        yield Sleepy(proc, prefetch)
    finally:
        try:
            proc.stop()
        finally:
            admin.delete_service_queues(prefix, "sleepy")


def _seen_at(proc: WorkerProcess, what: str) -> float:
    [line] = proc.wait_for(what, timeout=10)
    return float(line.rsplit(" ", 1)[1])


def _settled(settings: Settings, cancelled: int) -> None:
    """The worker counted the cancelled calls, holds no request, and logged no error."""

    def counted() -> bool:
        with Admin(settings=settings) as admin:
            [info] = admin.ping(["sleepy"], timeout=0.5)
        return info.stats.get("cancelled") == cancelled and info.in_flight == 0

    wait_until(counted, 10, f"{cancelled} cancelled calls and none in flight")


def _no_warnings(proc: WorkerProcess) -> None:
    noisy = [line for line in proc.log if " ERROR " in line or " WARNING " in line]
    assert noisy == []


def test_an_async_handler_is_cancelled_when_its_callers_task_is(
    settings: Settings, sleepy: Sleepy, aio_native: bool
) -> None:
    async def main() -> float:
        async with AsyncRequestor(native=aio_native, settings=settings, service="sleepy") as rq:
            task = asyncio.ensure_future(rq.call("nap", 10, timeout=30))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: sleepy.proc.wait_for("nap started at"))
            cancelled_at = time.time()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return cancelled_at

    cancelled_at = asyncio.run(asyncio.wait_for(main(), 30))
    latency = _seen_at(sleepy.proc, "nap cancelled at") - cancelled_at
    print(f"async handler: CancelledError {latency * 1000:.1f} ms after the caller's cancel")
    assert latency < CANCEL_BOUND
    _settled(settings, cancelled=1)
    _no_warnings(sleepy.proc)


def test_a_plain_handler_sees_its_callers_cancel(settings: Settings, sleepy: Sleepy) -> None:
    with Requestor(settings=settings, service="sleepy") as rq:
        future = rq.call_async("poll", 10, timeout=30)
        sleepy.proc.wait_for("poll started at")
        cancelled_at = time.time()
        assert future.cancel()
        latency = _seen_at(sleepy.proc, "poll cancelled at") - cancelled_at
        print(f"plain handler: cancelled() true {latency * 1000:.1f} ms after the cancel")
        assert latency < CANCEL_BOUND
        _settled(settings, cancelled=1)
        assert rq.stats().late == 0  # no reply was sent
    _no_warnings(sleepy.proc)


@pytest.mark.parametrize("sleepy", [2, 1], ids=["at-the-worker", "in-the-queue"], indirect=True)
def test_a_queued_request_is_skipped(
    settings: Settings, sleepy: Sleepy, admin: BareAdmin, prefix: str
) -> None:
    """One handler thread: ``second`` waits behind ``first`` when it is cancelled, at the
    worker (prefetched) or still in the queue; it never runs."""
    with Requestor(settings=settings, service="sleepy") as rq:
        first = rq.call_async("poll", 10, timeout=30)
        sleepy.proc.wait_for("poll started at")
        second = rq.call_async("poll", 10, timeout=30)
        if sleepy.prefetch == 2:
            wait_until(lambda: _in_flight(settings) == 2, 10, "second to reach the worker")
        else:
            queue = f"{prefix}sleepy"
            wait_until(lambda: admin.message_count(queue) == 1, 10, "second in the queue")
        assert second.cancel()
        assert first.cancel()
        sleepy.proc.wait_for("poll cancelled at")
        _settled(settings, cancelled=2)
    assert sum("poll started at" in line for line in sleepy.proc.log) == 1  # never the second
    _no_warnings(sleepy.proc)


def test_a_plain_handler_sees_its_callers_deadline_pass(settings: Settings, sleepy: Sleepy) -> None:
    """A deadline needs no message: the request carries it."""
    with Requestor(settings=settings, service="sleepy") as rq, pytest.raises(CallTimeout):
        rq.call("poll", 10, timeout=1)
    sleepy.proc.wait_for("poll cancelled at")
    _no_warnings(sleepy.proc)


def _in_flight(settings: Settings) -> int:
    with Admin(settings=settings) as admin:
        [info] = admin.ping(["sleepy"], timeout=0.5)
    return info.in_flight
