"""ReplyHandler's deliver hooks, the path AsyncRequestor's calls take instead of a Future
(no broker)."""

from __future__ import annotations

from typing import Any

from reqrep.common.envelope import success_body
from reqrep.common.errors import CallTimeout, ClosedError, NoSuchService
from reqrep.requestor._calls import ReplyHandler, ReplyStats
from tests.unit.calls import expect_deliver


def _deliveries(handler: ReplyHandler, cid: str, deadline: float = 100.0) -> list[Any]:
    seen: list[Any] = []
    expect_deliver(
        handler,
        cid,
        lambda result, error: seen.append(error if error is not None else result),
        deadline=deadline,
        timeout=2.0,
        what="svc.method",
    )
    return seen


def test_a_deliver_hook_gets_the_result_or_the_error_once() -> None:
    handler = ReplyHandler()
    ok, bad, late = _deliveries(handler, "a"), _deliveries(handler, "b"), _deliveries(handler, "c")
    handler.resolve("a", success_body(7))
    handler.resolve("a", success_body(8))  # a duplicate: late, not delivered
    handler.fail("b", NoSuchService("svc"))
    assert handler.expire_due(now=1000.0) == ["c"]
    assert ok == [7]
    assert [type(e) for e in bad] == [NoSuchService]
    assert [type(e) for e in late] == [CallTimeout]
    assert handler.stats().late == 1


def test_a_forgotten_call_is_not_delivered_and_its_reply_is_late() -> None:
    handler = ReplyHandler()
    seen = _deliveries(handler, "x")
    handler.forget("x")
    handler.resolve("x", success_body(1))
    assert seen == []
    assert handler.stats() == ReplyStats(pending=0, resolved=0, late=1, unknown=0)


def test_a_failing_deliver_hook_does_not_break_the_others() -> None:
    handler = ReplyHandler()

    def broken(_result: Any, _error: BaseException | None) -> None:
        raise RuntimeError("hand-over failed")

    expect_deliver(handler, "a", broken, deadline=100.0, timeout=1.0, what="s.m")
    seen = _deliveries(handler, "b")
    assert handler.fail_all(ClosedError("closing")) == 2
    assert [type(e) for e in seen] == [ClosedError]
