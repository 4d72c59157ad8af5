"""CallWaiter, where a blocking ``Requestor.call`` waits for its outcome (no broker)."""

from __future__ import annotations

import threading

import pytest

from reqrep.common.envelope import success_body
from reqrep.common.errors import CallTimeout, ClosedError, NoSuchService
from reqrep.requestor._calls import ReplyHandler
from reqrep.requestor._waiter import CallWaiter
from tests.unit.calls import expect_deliver


def _waiting(handler: ReplyHandler, cid: str, deadline: float = 100.0) -> CallWaiter:
    waiter = CallWaiter()
    expect_deliver(handler, cid, waiter.deliver, deadline=deadline, timeout=2.0, what="svc.m")
    return waiter


def test_a_waiter_returns_the_result_a_reply_brings() -> None:
    handler = ReplyHandler()
    waiter = _waiting(handler, "a")
    assert handler.resolve("a", success_body({"n": 7}))
    assert waiter.wait(5.0)
    assert waiter.outcome() == {"n": 7}


def test_a_waiter_raises_the_error_its_call_ended_with() -> None:
    handler = ReplyHandler()
    failed, expired, closed = (
        _waiting(handler, "f"),
        _waiting(handler, "e", 1.0),
        _waiting(handler, "c"),
    )
    handler.fail("f", NoSuchService("no queue"))
    assert handler.expire_due(now=50.0) == ["e"]
    handler.fail_all(ClosedError("closed"))
    for waiter, kind in ((failed, NoSuchService), (expired, CallTimeout), (closed, ClosedError)):
        assert waiter.wait(5.0)
        with pytest.raises(kind):
            waiter.outcome()


def test_a_waiter_with_no_outcome_yet_reports_it_and_a_late_reply_wakes_nobody() -> None:
    handler = ReplyHandler()
    waiter = _waiting(handler, "x")
    assert not waiter.wait(0)
    handler.forget("x", CallTimeout("gave up"))  # what call() does at its timeout
    assert handler.resolve("x", success_body(1)) is False  # late: not delivered again
    assert handler.stats().late == 1
    assert waiter.wait(0)
    with pytest.raises(CallTimeout, match="gave up"):
        waiter.outcome()


def test_a_waiter_blocked_on_one_thread_is_woken_by_another() -> None:
    handler = ReplyHandler()
    waiters = [_waiting(handler, str(i)) for i in range(50)]
    results: list[object] = [None] * len(waiters)

    def wait(i: int) -> None:
        if waiters[i].wait(10.0):
            results[i] = waiters[i].outcome()

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(waiters))]
    for thread in threads:
        thread.start()
    for i in range(len(waiters)):  # as the I/O thread would, while the callers block
        handler.resolve(str(i), success_body(i))
    for thread in threads:
        thread.join(10.0)
    assert results == list(range(len(waiters)))
