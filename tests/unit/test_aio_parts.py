"""The asyncio parts without a broker: LoopInbox hand-overs and the worker's HandlerLoop."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Iterator
from unittest import mock

import pytest

from reqrep.common.aio import LoopInbox
from reqrep.worker.aio import HandlerLoop


def test_inbox_runs_callables_in_order_on_the_loop_with_one_wake_up_per_batch() -> None:
    ran: list[tuple[int, str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox = LoopInbox(loop)
        wraps = loop.call_soon_threadsafe
        with mock.patch.object(loop, "call_soon_threadsafe", wraps=wraps) as wake:

            def record(i: int) -> None:
                ran.append((i, threading.current_thread().name))

            def producer() -> None:
                for i in range(100):
                    inbox.put(functools.partial(record, i))

            thread = threading.Thread(target=producer, name="io")
            thread.start()
            thread.join()
            while len(ran) < 100:
                await asyncio.sleep(0.001)
            assert wake.call_count == 1  # the loop was busy in join(): one batch

    asyncio.run(main())
    assert [i for i, _ in ran] == list(range(100))
    assert {name for _, name in ran} == {"MainThread"}


def test_inbox_of_a_closed_loop_drops_work() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    assert LoopInbox(loop).put(lambda: None) is False


@pytest.fixture
def handler_loop() -> Iterator[HandlerLoop]:
    runner = HandlerLoop(2, name="test-aio", block_warning=0.2)
    runner.start()
    yield runner
    runner.stop()


def test_handler_loop_runs_at_most_concurrency_coroutines(handler_loop: HandlerLoop) -> None:
    running, most, done = [0], [0], threading.Semaphore(0)

    async def job() -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        done.release()

    for _ in range(6):
        handler_loop.spawn(job)
    for _ in range(6):
        assert done.acquire(timeout=5)
    assert most[0] == 2


def test_handler_loop_logs_a_blocked_loop_once_per_stall(
    handler_loop: HandlerLoop, caplog: pytest.LogCaptureFixture
) -> None:
    finished = threading.Event()

    async def blocker() -> None:
        time.sleep(0.6)
        finished.set()

    with caplog.at_level(logging.WARNING, logger="reqrep.worker"):
        handler_loop.spawn(blocker)
        assert finished.wait(5)
        time.sleep(0.2)  # one more watchdog round: it must not warn again
    warnings = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert len(warnings) == 1
    assert "in blocker" in warnings[0]
    assert handler_loop.blocked == 1


def test_stop_cancels_what_still_runs(handler_loop: HandlerLoop) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handler_loop.spawn(forever)
    assert started.wait(5)
    handler_loop.stop()
    assert cancelled.is_set()
    assert handler_loop.loop.is_closed()
