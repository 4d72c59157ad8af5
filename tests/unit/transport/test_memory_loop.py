"""MemoryLoop: the in-memory transport's event loop (pika's IOLoop contract, no sockets)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from reqrep.common._transport._memory_loop import MemoryLoop

WAIT = 5.0


def steps(*fns: Callable[[], object]) -> Callable[[], None]:
    """One callback that calls ``fns`` in turn (and returns None, as a callback must)."""

    def run() -> None:
        for fn in fns:
            fn()

    return run


class Runner:
    """A loop run by a thread of its own; ``errors`` keeps what propagated out of ``run``."""

    def __init__(self) -> None:
        self.loop = MemoryLoop()
        self.errors: list[BaseException] = []
        self.runs = 0
        self.returned = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.runs += 1
            self.loop.run()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.errors.append(exc)
        finally:
            self.returned.set()

    def start(self) -> Runner:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def runner() -> Iterator[Runner]:
    made = Runner().start()
    yield made
    if made.thread.is_alive():
        made.finish()


def test_callbacks_run_on_the_loop_thread_in_the_order_posted(runner: Runner) -> None:
    seen: list[tuple[int, int | None]] = []
    done = threading.Event()
    for n in range(100):
        runner.loop.call_soon_threadsafe(
            partial(lambda n: seen.append((n, threading.get_ident())), n)
        )
    runner.loop.call_soon_threadsafe(done.set)
    assert done.wait(WAIT)
    assert [n for n, _ in seen] == list(range(100))
    assert {ident for _, ident in seen} == {runner.thread.ident}


def test_posts_from_many_threads_all_run(runner: Runner) -> None:
    count = 0
    done = threading.Event()

    def bump() -> None:
        nonlocal count
        count += 1
        if count == 800:
            done.set()

    def post() -> None:
        for _ in range(100):
            runner.loop.call_soon_threadsafe(bump)

    posters = [threading.Thread(target=post) for _ in range(8)]
    for thread in posters:
        thread.start()
    for thread in posters:
        thread.join(WAIT)
    assert done.wait(WAIT)


def test_timers_run_in_deadline_order_and_cancel_works(runner: Runner) -> None:
    order: list[str] = []
    done = threading.Event()

    def schedule() -> None:
        loop = runner.loop
        loop.call_later(0.06, lambda: order.append("late"))
        loop.call_later(0.02, lambda: order.append("early"))
        cancelled = loop.call_later(0.04, lambda: order.append("cancelled"))
        loop.call_later(0.0, lambda: order.append("now"))
        loop.call_later(0.08, done.set)
        loop.cancel(cancelled)
        loop.cancel(object())  # not a handle of this loop: ignored

    runner.loop.call_soon_threadsafe(schedule)
    assert done.wait(WAIT)
    assert order == ["now", "early", "late"]


def test_a_timer_cancelled_after_it_fell_due_does_not_run(runner: Runner) -> None:
    ran: list[str] = []
    done = threading.Event()

    def schedule() -> None:
        loop = runner.loop
        first = loop.call_later(0, lambda: loop.cancel(second))
        second = loop.call_later(0, lambda: ran.append("second"))
        assert first is not second
        loop.call_later(0.01, done.set)

    runner.loop.call_soon_threadsafe(schedule)
    assert done.wait(WAIT)
    assert ran == []


def test_cancelling_a_timer_that_ran_is_a_no_op(runner: Runner) -> None:
    handles: list[object] = []
    ran = threading.Event()
    done = threading.Event()
    runner.loop.call_soon_threadsafe(lambda: handles.append(runner.loop.call_later(0, ran.set)))
    assert ran.wait(WAIT)
    runner.loop.call_soon_threadsafe(steps(lambda: runner.loop.cancel(handles[0]), done.set))
    assert done.wait(WAIT)
    assert not runner.errors


def test_many_cancelled_timers_do_not_pile_up(runner: Runner) -> None:
    done = threading.Event()
    sizes: list[str] = []

    def churn() -> None:
        loop = runner.loop
        for _ in range(5000):
            loop.cancel(loop.call_later(3600, lambda: None))
        sizes.append(repr(loop))
        done.set()

    runner.loop.call_soon_threadsafe(churn)
    assert done.wait(WAIT)
    timers = int(sizes[0].split("timers=")[1].rstrip(">"))
    assert timers <= 600  # rebuilt once the cancelled outnumber the live


def test_an_exception_propagates_out_of_run_and_later_callbacks_wait_for_the_next_run() -> None:
    runner = Runner()
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("callback failed")

    runner.loop.call_soon_threadsafe(boom)
    runner.loop.call_soon_threadsafe(lambda: ran.append("after"))
    runner.start()
    assert runner.returned.wait(WAIT)
    runner.thread.join(WAIT)
    assert [type(e) for e in runner.errors] == [ValueError]
    assert ran == []
    again = Runner()
    again.loop = runner.loop
    again.start()
    done = threading.Event()
    runner.loop.call_soon_threadsafe(done.set)
    assert done.wait(WAIT)
    assert ran == ["after"]
    again.finish()


def test_stop_returns_after_the_current_callback_and_keeps_the_rest() -> None:
    runner = Runner()
    ran: list[int] = []
    loop = runner.loop
    loop.call_soon_threadsafe(steps(lambda: ran.append(1), loop.stop))
    loop.call_soon_threadsafe(lambda: ran.append(2))
    runner.start()
    assert runner.returned.wait(WAIT)
    assert ran == [1]
    again = Runner()
    again.loop = loop
    again.start()
    done = threading.Event()
    loop.call_soon_threadsafe(done.set)
    assert done.wait(WAIT)
    assert ran == [1, 2]
    again.finish()


def test_stop_before_run_makes_run_return_at_once() -> None:
    loop = MemoryLoop()
    loop.stop()
    loop.run()  # returns: pika's IOLoop does the same
    loop.close()


def test_run_is_not_reentrant(runner: Runner) -> None:
    caught: list[BaseException] = []
    done = threading.Event()

    def nested() -> None:
        try:
            runner.loop.run()
        except RuntimeError as exc:
            caught.append(exc)
        done.set()

    runner.loop.call_soon_threadsafe(nested)
    assert done.wait(WAIT)
    assert "not reentrant" in str(caught[0])


def test_close_drops_what_is_posted_and_refuses_to_run() -> None:
    runner = Runner().start()
    loop = runner.loop
    with pytest.raises(RuntimeError, match="stop it first"):
        loop.close()
    runner.finish()
    loop.call_later(0, lambda: None)
    loop.close()
    loop.call_soon_threadsafe(lambda: None)  # dropped silently, as pika's IOLoop drops it
    assert "closed ready=0 timers=0" in repr(loop)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run()


def test_in_loop_thread_knows_the_thread_that_runs_it(runner: Runner) -> None:
    answers: list[bool] = []
    done = threading.Event()
    runner.loop.call_soon_threadsafe(
        steps(lambda: answers.append(runner.loop.in_loop_thread()), done.set)
    )
    assert done.wait(WAIT)
    assert answers == [True]
    assert not runner.loop.in_loop_thread()
    assert MemoryLoop().in_loop_thread()  # no thread has run it yet


def test_an_idle_loop_sleeps_instead_of_polling(runner: Runner) -> None:
    woke = threading.Event()
    runner.loop.call_soon_threadsafe(steps(lambda: runner.loop.call_later(0.3, woke.set)))
    cpu = time.process_time()
    assert woke.wait(WAIT)
    # A loop that polled would burn most of the 0.3 s of waiting; a sleeping one next to none.
    assert time.process_time() - cpu < 0.1


def test_a_post_wakes_a_loop_sleeping_until_a_far_timer(runner: Runner) -> None:
    woke = threading.Event()
    runner.loop.call_soon_threadsafe(steps(lambda: runner.loop.call_later(3600, lambda: None)))
    started = time.monotonic()
    runner.loop.call_soon_threadsafe(woke.set)
    assert woke.wait(WAIT)
    assert time.monotonic() - started < 1.0


def test_a_nearer_timer_from_another_thread_wakes_the_loop(runner: Runner) -> None:
    woke = threading.Event()
    ready = threading.Event()
    runner.loop.call_soon_threadsafe(
        steps(lambda: runner.loop.call_later(3600, lambda: None), ready.set)
    )
    assert ready.wait(WAIT)
    runner.loop.call_later(0.01, woke.set)  # allowed from any thread, as a courtesy
    assert woke.wait(WAIT)
