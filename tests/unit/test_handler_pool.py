"""HandlerPool: a worker's handler threads (no broker).

Every wait here is bounded by an event or a join with a timeout; none sleeps to synchronise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from reqrep.worker.pool import HandlerPool

WAIT = 10.0  # seconds: only reached if the pool is broken


def _pool(size: int, run: Callable[[Any], None]) -> tuple[HandlerPool[Any], list[threading.Thread]]:
    pool = HandlerPool(size, run)
    pool.start()
    return pool, list(pool._threads)


def _stop(pool: HandlerPool[Any], threads: list[threading.Thread]) -> None:
    pool.shutdown()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)


def test_every_job_runs_once_on_a_handler_thread() -> None:
    seen: list[tuple[int, str]] = []
    all_done = threading.Event()
    total = 3000

    def run(job: int) -> None:
        seen.append((job, threading.current_thread().name))
        if len(seen) == total:
            all_done.set()

    pool, threads = _pool(8, run)
    try:
        for job in range(total):
            pool.submit(job)
        assert all_done.wait(WAIT)
    finally:
        _stop(pool, threads)
    assert sorted(job for job, _name in seen) == list(range(total))
    assert {name for _job, name in seen} <= {f"reqrep-handler-{i}" for i in range(8)}


def test_blocked_handlers_do_not_hold_up_jobs_while_threads_are_idle() -> None:
    """``size`` handlers that block all run at once: no job waits behind another while a thread
    is free, however fast the jobs came. One more waits for the first to finish."""
    size = 6
    gate = threading.Event()
    started = threading.Semaphore(0)
    ran: list[int] = []

    def run(job: int) -> None:
        ran.append(job)
        started.release()
        if job < size:
            gate.wait(WAIT)

    pool, threads = _pool(size, run)
    try:
        for job in range(size + 1):
            pool.submit(job)
        for _ in range(size):
            assert started.acquire(timeout=WAIT)
        assert sorted(ran) == list(range(size))  # the extra job is still queued
        gate.set()
        assert started.acquire(timeout=WAIT)
        assert ran[-1] == size
    finally:
        gate.set()
        _stop(pool, threads)


def test_jobs_queued_while_every_thread_is_busy_run_oldest_first() -> None:
    gate = threading.Event()
    busy = threading.Event()
    order: list[int] = []
    all_done = threading.Event()

    def run(job: int) -> None:
        if job == -1:
            busy.set()
            gate.wait(WAIT)
            return
        order.append(job)
        if len(order) == 20:
            all_done.set()

    pool, threads = _pool(1, run)
    try:
        pool.submit(-1)
        assert busy.wait(WAIT)
        for job in range(20):
            pool.submit(job)
        gate.set()
        assert all_done.wait(WAIT)
    finally:
        gate.set()
        _stop(pool, threads)
    assert order == list(range(20))


def test_a_failing_job_is_logged_and_its_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()

    class Boom:
        method = "explode"

    def run(job: Any) -> None:
        if getattr(job, "method", None) == "explode":
            raise RuntimeError("handler bug")
        done.set()

    pool, threads = _pool(1, run)
    try:
        pool.submit(Boom())
        pool.submit("after")
        assert done.wait(WAIT)
    finally:
        _stop(pool, threads)
    assert "unexpected error running explode" in caplog.text


def test_shutdown_lets_queued_jobs_finish_then_ends_every_thread() -> None:
    gate = threading.Event()
    busy = threading.Event()
    ran: list[int] = []

    def run(job: int) -> None:
        if job == 0:
            busy.set()
            gate.wait(WAIT)
        ran.append(job)

    pool, threads = _pool(2, run)
    pool.submit(0)
    assert busy.wait(WAIT)
    pool.submit(1)
    pool.submit(2)
    pool.shutdown()
    gate.set()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(ran) == [0, 1, 2]
