"""Unit tests of the operator parts that need no broker: the ping answer, dead letters, limits."""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from reqrep.cli import cli
from reqrep.cli._ops import _duration
from reqrep.common import ConfigError, SerializationError
from reqrep.common._transport import Properties
from reqrep.common.control import ALL, WorkerInfo, service_key
from reqrep.requestor._dead_letters import (
    DeadLetter,
    Target,
    _json_safe,
    check_limit,
    fresh_properties,
)

INFO = WorkerInfo(
    service="billing",
    queue="reqrep.billing",
    host="h",
    pid=12,
    version="0.2.0",
    uptime=3.5,
    in_flight=2,
    concurrency=8,
    prefetch=10,
    draining=False,
    connection="reqrep-worker-billing-12",
    reconnects=1,
    stats={"received": 5},
)


def test_worker_info_round_trips_through_json() -> None:
    assert WorkerInfo.from_wire(json.loads(json.dumps(INFO.to_wire()))) == INFO


def test_worker_info_ignores_unknown_fields_and_fills_missing_ones() -> None:
    info = WorkerInfo.from_wire({"service": "s", "pid": 3, "future": [1], "stats": {"x": "no"}})
    assert (info.service, info.pid, info.host, info.uptime, info.stats) == ("s", 3, "", 0.0, {})


def test_worker_info_must_be_an_object() -> None:
    with pytest.raises(SerializationError):
        WorkerInfo.from_wire([1, 2])


def test_routing_keys_cannot_collide() -> None:
    assert service_key("all") != ALL


def _props(**fields: object) -> SimpleNamespace:
    base = {
        "correlation_id": "c1",
        "message_id": "k1",
        "type": "echo",
        "reply_to": "amq.gen-x",
        "content_type": "application/json",
        "headers": None,
    }
    return SimpleNamespace(**{**base, **fields})


def test_a_dead_letter_reads_why_and_when_it_died() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    headers = {
        "x-death": [{"count": 2, "reason": "expired", "queue": "reqrep.s", "time": when}],
        "x-first-death-reason": "expired",
        "x-first-death-queue": "reqrep.s",
        "x-deadline": 1,
    }
    letter = DeadLetter.read(_props(headers=headers), b'{"a": 1}')
    assert (letter.reason, letter.queue, letter.deaths, letter.size) == (
        "expired",
        "reqrep.s",
        2,
        8,
    )
    assert letter.died_at == "2026-01-02T03:04:05+00:00"
    assert json.loads(json.dumps(letter.to_wire(full=True)))["headers"]["x-death"][0]["time"]
    assert "body" not in letter.to_wire()


def test_a_dead_letter_without_headers() -> None:
    letter = DeadLetter.read(_props(), b"\xff")
    assert (letter.reason, letter.deaths, letter.body) == (None, 0, "\ufffd")


def test_a_replayed_request_gets_a_fresh_deadline_and_loses_the_death_headers() -> None:
    headers = {
        "x-death": [],
        "x-first-death-reason": "expired",
        "x-last-death-queue": "q",
        "x-delivery-count": 3,
        "x-reqrep-refused": 2,  # a replayed request starts its count of refused replies afresh
        "x-deadline": 5,
        "traceparent": "00-abc",
    }
    target = Target(
        service="s",
        exchange="reqrep.requests",
        queue="reqrep.s",
        dead_queue="reqrep.s.dead",
        timeout=2.5,
        persistent=True,
    )
    props = Properties(**vars(_props(headers=headers)))
    fresh = fresh_properties(props, "c1", "amq.gen-mine", target, 999)
    assert fresh.headers == {"x-deadline": 999, "traceparent": "00-abc"}
    assert (fresh.reply_to, fresh.expiration, fresh.delivery_mode) == ("amq.gen-mine", "2500", 2)
    assert (fresh.correlation_id, fresh.message_id, fresh.type) == ("c1", "k1", "echo")


def test_json_safe_converts_amqp_values() -> None:
    value = {"b": b"x", "l": (1, None), "d": datetime.datetime(2026, 1, 1), "o": object}
    safe = _json_safe(value)
    json.dumps(safe)
    assert safe["b"] == "x"
    assert safe["l"] == [1, None]


@pytest.mark.parametrize("bad", [0, -1, 10_001, True, 1.5, "3"])
def test_limits_are_bounded(bad: object) -> None:
    with pytest.raises(ConfigError):
        check_limit(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(2.25, "2.2s"), (61, "1m1s"), (3700, "1h1m"), (90000, "1d1h")]
)
def test_durations(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


@pytest.mark.parametrize(
    "args",
    [["ping", "--help"], ["status", "--help"], ["dlq", "--help"], ["dlq", "replay", "--help"]],
)
def test_the_commands_are_there(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output


def test_dlq_needs_a_service_and_a_sane_limit() -> None:
    assert CliRunner().invoke(cli, ["dlq", "purge"]).exit_code == 2
    assert CliRunner().invoke(cli, ["dlq", "list", "--service", "s", "--limit", "0"]).exit_code == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"x-death": 5},
        {"x-death": [{"count": "many", "reason": "expired"}]},
        {"x-death": [{"count": -3}, "not a table", None]},
        {"x-death": [{"time": "yesterday", "count": 2**70}]},
        {"x-first-death-reason": b"\xff\xfe", "x-death": {"a": 1}},
        "not a table",
    ],
)
def test_a_hostile_dead_letter_reads_without_raising(headers: object) -> None:
    letter = DeadLetter.read(_props(headers=headers), b"{}")
    assert letter.deaths >= 0
    json.dumps(letter.to_wire(full=True))


def test_untrusted_strings_cannot_steer_the_terminal() -> None:
    from reqrep.cli._output import safe  # noqa: PLC0415 - the function under test

    evil = "echo\x1b[2J\x1b]0;owned\x07\r\x9b31m\u202edlrow"
    shown = safe(evil)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown
    assert shown.startswith("echo\\u001b[2J")
    assert safe("plain ümlaut-method") == "plain ümlaut-method"


def test_a_table_of_hostile_names_prints_them_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from reqrep.cli._output import emit_json, table  # noqa: PLC0415 - the functions under test

    letter = DeadLetter.read(_props(correlation_id="c\x1b[31m", type="m\x1b]0;x\x07"), b"{}")
    table(["CORRELATION-ID", "METHOD"], [[letter.correlation_id, letter.method]])
    emit_json(letter.to_wire())
    out = capsys.readouterr().out
    assert not any(ord(c) < 0x20 and c != "\n" for c in out)
    assert "c\\u001b[31m" in out
    assert json.loads(out[out.index("{") :])["method"] == "m\x1b]0;x\x07"  # the JSON is still true
