"""worker/inline.py: InlineWatch runs inline handlers and reports those over their budget."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from reqrep.worker import inline
from reqrep.worker.inline import InlineWatch
from tests.support import wait_until


class Overruns:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.event = threading.Event()

    def __call__(self, method: str, seconds: float) -> None:
        self.seen.append((method, seconds))
        self.event.set()


@pytest.fixture
def overruns() -> Overruns:
    return Overruns()


@pytest.fixture
def watch(overruns: Overruns) -> Iterator[InlineWatch]:
    watch = InlineWatch("reqrep-inline-test", 0.002, overruns)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


def spin_until(event: threading.Event) -> str:
    until = time.monotonic() + 5
    while not event.is_set() and time.monotonic() < until:
        pass
    return "spun"


def test_a_run_returns_what_its_function_returns_and_passes_on_what_it_raises(
    watch: InlineWatch, overruns: Overruns
) -> None:
    assert watch.run("echo", lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        watch.run("boom", lambda: 1 // 0)
    assert watch.run("echo", lambda: "again") == "again"
    assert overruns.seen == []
    assert watch.overruns == 0


def test_a_run_over_its_budget_is_reported_once_with_its_stack(
    watch: InlineWatch, overruns: Overruns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reqrep.worker")
    assert watch.run("spin", lambda: spin_until(overruns.event)) == "spun"
    assert [method for method, _ in overruns.seen] == ["spin"]
    assert overruns.seen[0][1] >= 0.002
    assert watch.overruns == 1
    [record] = [r for r in caplog.records if "over its budget" in r.getMessage()]
    assert "spin_until" in record.getMessage()
    assert "test_inline_watch.py" in record.getMessage()


def test_the_watchdog_sleeps_when_no_inline_handler_runs_and_wakes_for_the_next(
    monkeypatch: pytest.MonkeyPatch, overruns: Overruns
) -> None:
    monkeypatch.setattr(inline, "IDLE_AFTER", 0.01)
    watch = InlineWatch("reqrep-inline-test", 0.002, overruns)
    watch.start()
    try:
        watch.run("quick", lambda: None)
        wait_until(lambda: watch._idle, 5, "the watchdog asleep")
        assert watch.run("spin", lambda: spin_until(overruns.event)) == "spun"
        assert [method for method, _ in overruns.seen] == ["spin"]
    finally:
        watch.stop()
    assert watch._thread is None


def test_overrun_warnings_are_throttled_but_every_overrun_is_counted(
    watch: InlineWatch, overruns: Overruns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reqrep.worker")
    for _ in range(3):
        overruns.event.clear()
        watch.run("spin", lambda: spin_until(overruns.event))
    assert watch.overruns == 3
    assert len([r for r in caplog.records if "over its budget" in r.getMessage()]) == 1


def test_a_run_that_overran_between_two_looks_is_still_counted_once(
    overruns: Overruns, caplog: pytest.LogCaptureFixture
) -> None:
    """The watchdog is not looking (not started yet): the I/O thread's own timing of the run
    leaves it to be counted when the watchdog does look."""
    watch = InlineWatch("reqrep-inline-test", 0.002, overruns)
    took = watch.run("slow", lambda: time.sleep(0.01))  # the handler's own work, over 2 ms
    assert took is None
    assert overruns.seen == []
    with caplog.at_level(logging.WARNING, logger="reqrep.worker"):
        watch.start()
        try:
            assert overruns.event.wait(5)
            assert watch.run("echo", lambda: 1) == 1
        finally:
            watch.stop()
    assert [method for method, _ in overruns.seen] == ["slow"]
    assert overruns.seen[0][1] >= 0.01
    assert watch.overruns == 1
    [record] = [r for r in caplog.records if "inline handler 'slow'" in r.getMessage()]
    assert "returned before its stack was taken" in record.getMessage()
