"""bench.suite: which cases a run selects, and the order each repeat runs them in."""

from __future__ import annotations

from typing import Any

from bench.suite._cli import parse_args, select_cases
from bench.suite._plan import (
    CASES,
    PROTOCOL_PAIR,
    SERIAL_INLINE_PAIR,
    SERIAL_PAIR,
    Options,
    plan_case,
)
from bench.suite._run import run_order, summarize
from reqrep.worker import demo


def _names(argv: list[str]) -> list[str]:
    return [case.name for case in select_cases(parse_args(argv))]


def test_the_default_run_leaves_out_the_tuned_and_floor_cases() -> None:
    names = _names([])
    assert "raw-pika-durable" in names
    assert "reqrep-serial" in names
    assert not [n for n in names if "-tuned" in n or n.startswith("raw-threaded")]


def test_tuned_and_floor_cases_run_when_asked_for() -> None:
    tuned = {"raw-pika-tuned", "raw-pika-durable-tuned", "raw-pika-durable-tuned-props"}
    assert tuned <= set(_names(["--with-tuned"]))
    floors = set(_names(["--with-floors"]))
    assert {"raw-threaded-serial", "raw-threaded-durable"} <= floors
    assert "raw-pika-tuned" not in floors
    assert _names(["--only", "raw-threaded-serial", "tutorial"]) == [
        "tutorial",
        "raw-threaded-serial",
    ]


def test_the_serial_pair_runs_side_by_side() -> None:
    names = [case.name for case in CASES]
    first, second = (names.index(name) for name in SERIAL_PAIR)
    assert abs(first - second) == 1


def test_repeats_run_forwards_then_backwards() -> None:
    cases = list(CASES)
    assert run_order(cases, 1) == cases
    assert run_order(cases, 2) == cases[::-1]
    assert run_order(cases, 3) == cases


def _run(case: str, calls_per_s: float) -> dict[str, Any]:
    latency = {key: 1.0 for key in ("p50", "p90", "p99", "max", "mean")}
    result = {"calls_per_s": calls_per_s, "latency_ms": latency, "outstanding": 64}
    return {"case": case, "repeat": 1, "ok": True, "result": result}


def test_call_async_is_compared_with_bare_pika_carrying_the_same_properties() -> None:
    cases = [case for case in CASES if case.name in PROTOCOL_PAIR]
    mine, theirs = PROTOCOL_PAIR
    summary = summarize(cases, [_run(mine, 900.0), _run(theirs, 1000.0)])
    assert summary["async_vs_tuned_props"] == 0.9
    assert summarize(cases, [_run(mine, 900.0)])["async_vs_tuned_props"] is None
    props = next(case for case in CASES if case.name == theirs)
    assert props.durable
    assert "--reqrep-properties" in props.extra_args


def test_the_inline_case_calls_the_inline_echo_one_at_a_time_beside_the_tutorial() -> None:
    case = next(case for case in CASES if case.name == SERIAL_INLINE_PAIR[0])
    argv = plan_case(case, Options(), "tag").client_argv
    assert argv[argv.index("--mode") + 1] == "serial"
    assert argv[argv.index("--method") + 1] == "echo_inline"
    assert demo.service.is_inline("echo_inline")
    assert "reqrep-serial-inline" in _names([])
    names = [case.name for case in CASES]
    assert abs(names.index(SERIAL_INLINE_PAIR[0]) - names.index(SERIAL_INLINE_PAIR[1])) <= 2
    cases = [case for case in CASES if case.name in SERIAL_INLINE_PAIR]
    summary = summarize(cases, [_run(name, 1000.0) for name in SERIAL_INLINE_PAIR])
    assert summary["serial_inline_p50_ratio"] == 1.0
    plain = next(case for case in CASES if case.name == SERIAL_PAIR[0])
    argv = plan_case(plain, Options(), "tag").client_argv
    assert argv[argv.index("--method") + 1] == "echo"
