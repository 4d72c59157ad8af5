"""ReplyHandler's deadline heap, its max_pending bound, and the thread its futures' done-callbacks
run on (requestor/_callbacks.py). No broker."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any

import pytest

from reqrep.common._iothread import mark_io_thread
from reqrep.common.envelope import success_body
from reqrep.common.errors import CallError, CallTimeout, TooManyPending
from reqrep.requestor._calls import ReplyHandler
from tests.unit.calls import expect

WAIT = 10.0


def _expect(handler: ReplyHandler, cid: str, deadline: float = 100.0) -> Future[Any]:
    return expect(handler, cid, deadline=deadline, timeout=2.0, what="svc.method")


# -- the deadline heap, max_pending, done-callbacks ---------------------------------------------


def test_the_deadline_index_stays_small_however_many_calls_finished() -> None:
    handler = ReplyHandler()
    for i in range(20_000):
        _expect(handler, f"c{i}", deadline=1000.0 + i)
        handler.resolve(f"c{i}", success_body(i))
    assert len(handler._deadlines) <= 64 + 2  # white box: finished calls are pruned


def test_expire_due_returns_each_expired_id_once() -> None:
    handler = ReplyHandler()
    for d in (1, 2, 3):
        _expect(handler, f"c{d}", deadline=float(d))
    handler.forget("c2")  # its caller gave up: not pending, not expired here
    assert handler.expire_due(now=2.5) == ["c1"]
    assert handler.expire_due(now=2.5) == []
    assert handler._deadlines == [(3.0, "c3")]  # white box: the heap dropped c2 on the way


def test_expire_due_can_explain_a_call() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "held", deadline=1.0)
    handler.expire_due(
        now=2.0, explain=lambda call: f"{call.correlation_id}: the broker blocked publishing"
    )
    with pytest.raises(CallTimeout, match="held: the broker blocked publishing"):
        future.result(WAIT)


def test_max_pending_refuses_one_more_call() -> None:
    handler = ReplyHandler(max_pending=2)
    _expect(handler, "a")
    _expect(handler, "b")
    with pytest.raises(TooManyPending, match="max_pending=2"):
        _expect(handler, "c")
    assert isinstance(TooManyPending("x"), CallError)
    handler.resolve("a", success_body(1))
    _expect(handler, "c")
    assert handler.stats().pending == 2


def test_done_callbacks_of_futures_completed_on_an_io_thread_run_elsewhere() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    ran_on: queue.Queue[str] = queue.Queue()
    future.add_done_callback(lambda _f: ran_on.put(threading.current_thread().name))

    def io_thread() -> None:
        mark_io_thread()
        handler.resolve("c1", success_body("x"))

    thread = threading.Thread(target=io_thread, name="fake-io")
    thread.start()
    thread.join(WAIT)
    assert ran_on.get(timeout=WAIT).startswith("reqrep-callbacks-")


def test_a_callback_added_to_a_done_future_runs_at_once_on_the_caller() -> None:
    handler = ReplyHandler()
    future = _expect(handler, "c1")
    handler.resolve("c1", success_body("x"))
    ran_on: list[str] = []
    future.add_done_callback(lambda _f: ran_on.append(threading.current_thread().name))
    assert ran_on == [threading.current_thread().name]


def test_callbacks_run_in_order_and_one_that_raises_does_not_stop_the_rest() -> None:
    handler = ReplyHandler()
    futures = [_expect(handler, f"c{i}") for i in range(50)]
    seen: queue.Queue[int] = queue.Queue()

    def record(i: int) -> Any:
        def callback(_f: Future[Any]) -> None:
            if i == 10:
                raise RuntimeError("a user's bug")
            seen.put(i)

        return callback

    for i, future in enumerate(futures):
        future.add_done_callback(record(i))

    def io_thread() -> None:
        mark_io_thread()
        for i in range(50):
            handler.resolve(f"c{i}", success_body(i))

    thread = threading.Thread(target=io_thread)
    thread.start()
    thread.join(WAIT)
    assert [seen.get(timeout=WAIT) for _ in range(49)] == [i for i in range(50) if i != 10]


def test_the_callback_thread_ends_when_idle_and_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reqrep.requestor import _callbacks  # noqa: PLC0415 - white box: a short idle time

    monkeypatch.setattr(_callbacks, "_IDLE_EXIT", 0.05)
    runner = _callbacks.CallbackRunner("t")
    ran: queue.Queue[int] = queue.Queue()
    future: Future[Any] = Future()
    runner.run(lambda _f: ran.put(1), future)
    assert ran.get(timeout=WAIT) == 1
    thread = runner._thread
    if thread is not None:
        thread.join(WAIT)
    runner.run(lambda _f: ran.put(2), future)
    assert ran.get(timeout=WAIT) == 2


def test_the_idle_callback_thread_keeps_no_callback_alive() -> None:
    """The last callback (and what it holds, e.g. a load run's results) is freed at once."""
    from reqrep.requestor import _callbacks  # noqa: PLC0415 - white box

    class Held:
        pass

    runner = _callbacks.CallbackRunner("t")
    held = Held()
    ref = weakref.ref(held)
    ran = threading.Event()

    def callback(_future: Future[Any], held: Held = held) -> None:
        ran.set()

    runner.run(callback, Future())
    del held, callback
    assert ran.wait(WAIT)
    deadline = time.monotonic() + _callbacks._IDLE_EXIT / 2  # well before the thread ends
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # the runner is between the callback and its next look at the queue
    assert ref() is None
