"""bench.suite: which cases a run selects, and the order each repeat runs them in."""

from __future__ import annotations

from typing import Any

from bench.cases import case_parser
from bench.suite._cli import parse_args, select_cases
from bench.suite._plan import (
    CASES,
    NATIVE_DURABLE,
    NATIVE_PROTOCOL_PAIR,
    PROTOCOL_PAIR,
    SERIAL_INLINE_PAIR,
    SERIAL_NATIVE_PAIR,
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


def test_faststream_runs_beside_aio_pika_and_async_requestor_with_reqrep_durability() -> None:
    """Both of FastStream's documented flows, N in flight and one at a time, each saying in its
    summary what it does and how durable it is; AsyncRequestor with the same durability sits
    with them."""
    names = [case.name for case in CASES]
    flows = ("faststream-reply-to", "faststream-request")
    serial = tuple(f"{name}-serial" for name in reversed(flows))
    group = ("aio-pika-rpc", *flows, "reqrep-asyncio-durable", *serial)
    start = names.index(group[0])
    assert tuple(names[start : start + len(group)]) == group
    assert set(group) <= set(_names([]))  # in the default run
    by_name = {case.name: case for case in CASES}
    for name in (*flows, *serial):
        case = by_name[name]
        assert case.module == "bench.cases.faststream_rpc"
        assert case.durable
        assert "quorum, persistent, confirms" in case.summary
        pattern = case.extra_args[case.extra_args.index("--pattern") + 1]
        assert pattern in name
        assert ("--outstanding" in case.extra_args) == name.endswith("-serial")
    assert by_name["reqrep-asyncio-durable"].durable
    assert by_name["reqrep-asyncio-durable"].mode == "asyncio"


def test_a_serial_case_overrides_the_calls_in_flight() -> None:
    case = next(case for case in CASES if case.name == "faststream-request-serial")
    plan = plan_case(case, Options(outstanding=64), "bench.t.faststream-request-serial.r1")
    parser = case_parser("")
    parser.add_argument("--pattern")
    args = parser.parse_args(plan.client_argv[3:])  # after "python -m MODULE"
    assert (args.role, args.outstanding, args.pattern) == ("client", 1, "request")
    assert args.durable


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


def test_the_native_cases_run_async_echo_on_a_native_worker_end_to_end() -> None:
    """The asyncio-native path on both sides: AsyncRequestor(native=True) and a worker whose
    connection lives on its handler loop, calling an ``async def`` echo; one of them with
    reqrep's durable defaults, compared with the tuned client carrying the same properties."""
    by_name = {case.name: case for case in CASES}
    for name in ("reqrep-asyncio-native", "reqrep-asyncio-native-serial", NATIVE_DURABLE):
        plan = plan_case(by_name[name], Options(), "tag")
        assert "--native" in plan.server_argv
        argv = plan.client_argv
        assert argv[argv.index("--method") + 1] == "echo_async"
        assert argv[argv.index("--mode") + 1].startswith("asyncio-native")
    assert by_name[NATIVE_DURABLE].durable
    assert demo.service.is_async("echo_async")
    assert NATIVE_PROTOCOL_PAIR == (NATIVE_DURABLE, "raw-pika-durable-tuned-props")
    assert SERIAL_NATIVE_PAIR == ("reqrep-asyncio-native-serial", "tutorial")
    plain = plan_case(by_name["reqrep-asyncio"], Options(), "tag")
    assert "--native" not in plain.server_argv


def test_the_paths_cases_take_the_native_path_apart_and_run_only_when_named() -> None:
    """Between AsyncRequestor's default path and the native path end to end, each ``paths-``
    case changes one thing: the requestor, the handler, or the worker."""
    by_name = {case.name: case for case in CASES}

    def shape(name: str) -> tuple[str, str, bool]:
        plan = plan_case(by_name[name], Options(), "tag")
        argv = plan.client_argv
        return (
            argv[argv.index("--mode") + 1],
            argv[argv.index("--method") + 1],
            "--native" in plan.server_argv,
        )

    assert shape("reqrep-asyncio-durable") == ("asyncio", "echo", False)
    assert shape("paths-native-requestor") == ("asyncio-native", "echo", False)
    assert shape("paths-async-handler") == ("asyncio", "echo_async", False)
    assert shape("paths-native-worker") == ("asyncio", "echo_async", True)
    assert shape(NATIVE_DURABLE) == ("asyncio-native", "echo_async", True)
    paths = {name for name in by_name if name.startswith("paths-")}
    assert all(by_name[name].durable for name in paths)
    assert not paths & set(_names(["--with-tuned", "--with-floors"]))
    assert paths <= set(_names(["--only", *sorted(paths)]))
