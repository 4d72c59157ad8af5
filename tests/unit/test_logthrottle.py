"""common/logthrottle.py: floods of one kind of event write one line per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from reqrep.common.logthrottle import LogThrottle
from reqrep.requestor._calls import ReplyHandler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_flood_writes_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t.flood"), interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.flood"):
        written = [throttle.warning("reply %s returned", i) for i in range(10_000)]
        clock.now += 10.0
        throttle.warning("reply %s returned", "last")
    assert written.count(True) == 1
    assert _lines(caplog, "returned") == [
        "reply 0 returned",
        "reply last returned [and 9999 more like this in 10s]",
    ]


def test_each_kind_of_event_has_its_own_interval(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("t.kinds"), interval=10.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger="t.kinds"):
        for _ in range(100):
            throttle.warning("forged reply %s", "x")
            throttle.info("returned reply %s", "y")
    assert len(caplog.records) == 2
    assert {r.levelno for r in caplog.records} == {logging.WARNING, logging.INFO}


def test_nothing_is_counted_when_the_level_is_off(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("t.off"), interval=10.0, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="t.off"):
        assert throttle.warning("quiet %s", 1) is False
    assert caplog.records == []


def test_forged_replies_flood_writes_one_line(caplog: pytest.LogCaptureFixture) -> None:
    replies = ReplyHandler()
    with caplog.at_level(logging.DEBUG, logger="reqrep.requestor"):
        for i in range(1_000):
            replies.discard_untrusted(f"cid-{i}", "mallory")
            replies.discard_undecodable("RecursionError: deep")
    assert replies.stats().untrusted == 1_000
    assert replies.stats().undecodable == 1_000
    assert len(_lines(caplog, "untrusted user")) == 1
    assert len(_lines(caplog, "cannot be decoded")) == 1
