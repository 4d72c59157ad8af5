"""ReplyHandler under threads: many callers, and expiry racing resolution (no broker)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from reqrep.common.envelope import success_body
from reqrep.requestor._calls import ReplyHandler, ReplyStats
from tests.unit.calls import expect

WAIT = 10.0  # upper bound for any wait in these tests; they never come close


def _expect(handler: ReplyHandler, cid: str, deadline: float = 100.0) -> Future[Any]:
    return expect(handler, cid, deadline=deadline, timeout=2.0, what="svc.method")


def test_concurrent_expect_and_resolve_give_every_caller_its_own_value() -> None:
    callers, calls_each = 16, 50
    handler = ReplyHandler()
    registered: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    start = threading.Barrier(callers + 1)
    results: dict[str, Any] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        try:
            start.wait(WAIT)
            futures = {}
            for i in range(calls_each):
                cid = f"{n}-{i}"
                futures[cid] = _expect(handler, cid)
                registered.put(cid)
            for cid, future in futures.items():
                value = future.result(WAIT)
                with lock:
                    results[cid] = value
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            with lock:
                failures.append(exc)

    def resolver() -> None:
        start.wait(WAIT)
        while (cid := registered.get(timeout=WAIT)) is not None:
            handler.resolve(cid, success_body({"for": cid}))
            handler.resolve(f"stray-{cid}", success_body("noise"))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    io = threading.Thread(target=resolver)
    for thread in [*threads, io]:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    registered.put(None)
    io.join(WAIT)

    assert not io.is_alive()
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    total = callers * calls_each
    assert len(results) == total
    assert all(value == {"for": cid} for cid, value in results.items())
    assert handler.stats() == ReplyStats(pending=0, resolved=total, late=0, unknown=total)


def test_concurrent_expiry_and_resolution_settle_each_call_once() -> None:
    count = 400
    handler = ReplyHandler()
    futures = [_expect(handler, f"c{i}", deadline=float(i % 2)) for i in range(count)]
    start = threading.Barrier(2)

    def expire() -> None:
        start.wait(WAIT)
        handler.expire_due(now=0.5)

    def resolve() -> None:
        start.wait(WAIT)
        for i in range(count):
            handler.resolve(f"c{i}", success_body(i))

    threads = [threading.Thread(target=expire), threading.Thread(target=resolve)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)

    for i, future in enumerate(futures):
        if i % 2:  # deadline 1.0: never due, so always resolved
            assert future.result(WAIT) == i
        else:  # deadline 0.0: resolved or expired, whichever came first, never both
            assert future.done()
    stats = handler.stats()
    assert stats.pending == 0
    assert stats.resolved + stats.late == count
