"""Which of reqrep's pika parts are on: the guard and the short roads only on the pika versions
CI tests, and the short roads off with REQREP_PIKA_FASTPATH=0."""

from __future__ import annotations

import logging

import pika
import pytest

from reqrep.common._transport import _pika
from reqrep.common._transport._pika import TESTED_PIKA, PikaTransport


def test_this_pika_is_one_ci_tests() -> None:
    # CI installs the lowest pika pyproject allows and the newest: both must be listed, or the
    # suite would run them without the parts it tests.
    assert pika.__version__ in TESTED_PIKA


@pytest.mark.parametrize(("value", "fast"), [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_switch_turns_the_short_roads_off_not_the_guard(value: str, fast: bool) -> None:
    transport = PikaTransport(environ={"REQREP_PIKA_FASTPATH": value})
    assert (transport.guard, transport.fast) == (True, fast)


def test_an_untested_pika_gets_plain_pika_and_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pika, "__version__", "1.9.9")
    monkeypatch.setattr(_pika, "_warned_untested", False)
    with caplog.at_level(logging.INFO, logger="reqrep.connection"):
        first, second = PikaTransport(environ={}), PikaTransport(environ={})
    assert (first.guard, first.fast, second.guard, second.fast) == (False,) * 4
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "1.9.9" in caplog.text


def test_fast_may_be_asked_for_only_with_the_guard() -> None:
    assert PikaTransport(fast=False, environ={}).fast is False
    assert PikaTransport(fast=True, environ={"REQREP_PIKA_FASTPATH": "0"}).fast is True
