"""Unit tests of requestor.reply_handler.ReplyHandler: correlation ids to futures."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from reqrep.common.envelope import (
    BAD_REQUEST,
    HANDLER_ERROR,
    METHOD_NOT_FOUND,
    ErrorInfo,
    error_body,
    success_body,
)
from reqrep.common.errors import (
    BadRequest,
    CallTimeout,
    ClosedError,
    ConnectionLost,
    MethodNotFound,
    NoSuchService,
    RemoteError,
    SerializationError,
)
from reqrep.requestor._calls import ReplyHandler, ReplyStats
from tests.unit.calls import expect

WAIT = 10.0  # upper bound for any wait in these tests; they never come close


def _expect(handler: ReplyHandler, cid: str, deadline: float = 100.0) -> Future[Any]:
    return expect(handler, cid, deadline=deadline, timeout=2.0, what="svc.method")


# -- resolve -----------------------------------------------------------------------------------


def test_resolve_delivers_the_result() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    assert not future.done()
    assert handler.resolve("c1", success_body({"sum": 3})) is True
    assert future.result(WAIT) == {"sum": 3}


def test_each_reply_goes_to_its_own_future() -> None:
    handler = ReplyHandler()
    first, second = _expect(handler, "a"), _expect(handler, "b")
    handler.resolve("b", success_body("for b"))
    assert not first.done()
    handler.resolve("a", success_body("for a"))
    assert (first.result(WAIT), second.result(WAIT)) == ("for a", "for b")


@pytest.mark.parametrize(
    ("code", "cls"),
    [(HANDLER_ERROR, RemoteError), (METHOD_NOT_FOUND, MethodNotFound), (BAD_REQUEST, BadRequest)],
)
def test_error_reply_raises_the_typed_error(code: str, cls: type[RemoteError]) -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    assert handler.resolve("c1", error_body(ErrorInfo(code, "ZeroDivisionError", "div by 0")))
    with pytest.raises(cls) as info:
        future.result(WAIT)
    assert type(info.value) is cls
    assert info.value.type == "ZeroDivisionError"
    assert info.value.message == "div by 0"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"ok": false, "error": 1}', b"\xff"])
def test_malformed_body_completes_the_future_with_serialization_error(body: bytes) -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    assert handler.resolve("c1", body) is True
    with pytest.raises(SerializationError):
        future.result(WAIT)
    assert handler.stats().resolved == 1


def test_resolve_removes_the_call() -> None:
    handler = ReplyHandler()
    _expect(handler, "c1")
    handler.resolve("c1", success_body(1))
    assert handler.stats().pending == 0


# -- unknown and late replies ------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["never-issued", "", None])
def test_unknown_correlation_id_is_counted_and_returns_false(cid: str | None) -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    assert handler.resolve(cid, success_body(1)) is False
    assert handler.stats() == ReplyStats(pending=1, resolved=0, late=0, unknown=1)
    assert not future.done()


def test_duplicate_reply_is_discarded() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    handler.resolve("c1", success_body("first"))
    assert handler.resolve("c1", success_body("second")) is False
    assert future.result(WAIT) == "first"
    assert handler.stats().resolved == 1


def test_reply_after_forget_is_late() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    handler.forget("c1")
    assert handler.resolve("c1", success_body(1)) is False
    assert handler.stats() == ReplyStats(pending=0, resolved=0, late=1, unknown=0)
    assert not future.done()


def test_forget_of_an_unknown_id_is_harmless() -> None:
    handler = ReplyHandler()
    handler.forget("never-issued")
    assert handler.resolve("never-issued", success_body(1)) is False
    assert handler.stats() == ReplyStats(pending=0, resolved=0, late=0, unknown=1)


def test_reply_after_expire_due_is_late() -> None:
    handler = ReplyHandler()
    _expect(handler, "c1", deadline=5.0)
    handler.expire_due(now=10.0)
    assert handler.resolve("c1", success_body(1)) is False
    assert handler.stats().late == 1
    assert handler.stats().unknown == 0


def test_only_the_most_recent_expired_ids_are_remembered() -> None:
    handler = ReplyHandler(remember=2)
    for cid in ("c1", "c2", "c3"):
        _expect(handler, cid)
        handler.forget(cid)
    for cid in ("c1", "c2", "c3"):
        handler.resolve(cid, success_body(1))
    assert handler.stats() == ReplyStats(pending=0, resolved=0, late=2, unknown=1)


# -- fail, fail_all ----------------------------------------------------------------------------


def test_fail_completes_one_call_with_the_error() -> None:
    handler = ReplyHandler()
    failed, other = _expect(handler, "c1"), _expect(handler, "c2")
    error = NoSuchService("svc")
    assert handler.fail("c1", error) is True
    with pytest.raises(NoSuchService) as info:
        failed.result(WAIT)
    assert info.value is error
    assert not other.done()
    assert handler.stats().pending == 1


def test_fail_of_a_call_no_longer_pending_returns_false() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    handler.resolve("c1", success_body("done"))
    assert handler.fail("c1", ConnectionLost("x")) is False
    assert handler.fail("never-issued", ConnectionLost("x")) is False
    assert future.result(WAIT) == "done"


def test_fail_all_fails_every_pending_call() -> None:
    handler = ReplyHandler()
    futures = [_expect(handler, f"c{i}") for i in range(5)]
    error = ConnectionLost("broker went away")
    assert handler.fail_all(error) == 5
    for future in futures:
        with pytest.raises(ConnectionLost):
            future.result(WAIT)
    assert handler.stats().pending == 0
    assert handler.fail_all(ClosedError("again")) == 0


def test_fail_all_leaves_completed_calls_alone() -> None:
    handler = ReplyHandler()
    done = _expect(handler, "done")
    handler.resolve("done", success_body(1))
    pending = _expect(handler, "pending")
    assert handler.fail_all(ClosedError("closed")) == 1
    assert done.result(WAIT) == 1
    with pytest.raises(ClosedError):
        pending.result(WAIT)


# -- expire_due --------------------------------------------------------------------------------


def test_expire_due_expires_only_calls_past_their_deadline() -> None:
    handler = ReplyHandler()
    past = expect(handler, "past", deadline=5.0, timeout=1.5, what="svc.slow")
    future = _expect(handler, "future", deadline=15.0)
    assert len(handler.expire_due(now=10.0)) == 1
    with pytest.raises(CallTimeout, match=r"svc\.slow.*1\.5s"):
        past.result(WAIT)
    assert not future.done()
    assert handler.stats().pending == 1


def test_expire_due_with_nothing_due() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1", deadline=50.0)
    assert len(handler.expire_due(now=10.0)) == 0
    assert not future.done()


def test_expired_call_raises_a_timeout_error() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1", deadline=1.0)
    handler.expire_due(now=2.0)
    with pytest.raises(TimeoutError):
        future.result(WAIT)


def test_expire_due_then_later_deadlines() -> None:
    handler = ReplyHandler()
    futures = {d: _expect(handler, f"c{d}", deadline=float(d)) for d in (1, 2, 3)}
    assert len(handler.expire_due(now=2.5)) == 2
    assert [futures[d].done() for d in (1, 2, 3)] == [True, True, False]
    assert len(handler.expire_due(now=3.5)) == 1
    assert futures[3].done()


# -- futures -----------------------------------------------------------------------------------


def test_a_cancelled_future_forgets_its_call() -> None:
    """As call_async's futures do: the call leaves the table at once; its reply is late."""
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    assert future.cancel() is True
    assert future.cancelled()
    assert handler.stats().pending == 0
    assert handler.resolve("c1", success_body("too late")) is False
    assert handler.stats().late == 1
    assert future.cancel() is True  # cancelled already: still cancelled, nothing more happens


def test_first_completion_wins() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1", deadline=1.0)
    handler.expire_due(now=2.0)
    handler.fail_all(ConnectionLost("later"))
    with pytest.raises(CallTimeout):
        future.result(WAIT)


# -- stats -------------------------------------------------------------------------------------


def test_stats_count_everything() -> None:
    handler = ReplyHandler()
    assert handler.stats() == ReplyStats(pending=0, resolved=0, late=0, unknown=0)
    for cid in ("ok", "err", "gone", "waiting"):
        _expect(handler, cid)
    handler.resolve("ok", success_body(1))
    handler.resolve("err", error_body(ErrorInfo(HANDLER_ERROR, "E", "m")))
    handler.forget("gone")
    handler.resolve("gone", success_body(1))
    handler.resolve("stranger", success_body(1))
    handler.resolve("stranger", success_body(1))
    assert handler.stats() == ReplyStats(pending=1, resolved=2, late=1, unknown=2)
