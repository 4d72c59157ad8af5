"""bench.suite: which cases a run selects, and the order each repeat runs them in."""

from __future__ import annotations

from bench.suite._cli import parse_args, select_cases
from bench.suite._plan import CASES, SERIAL_PAIR
from bench.suite._run import run_order


def _names(argv: list[str]) -> list[str]:
    return [case.name for case in select_cases(parse_args(argv))]


def test_the_default_run_leaves_out_the_tuned_and_floor_cases() -> None:
    names = _names([])
    assert "raw-pika-durable" in names
    assert "reqrep-serial" in names
    assert not [n for n in names if n.endswith("-tuned") or n.startswith("raw-threaded")]


def test_tuned_and_floor_cases_run_when_asked_for() -> None:
    assert {"raw-pika-tuned", "raw-pika-durable-tuned"} <= set(_names(["--with-tuned"]))
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
