"""Running the suite: each case's server and client, round robin over repeats, then the medians
and ratios."""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bench.harness import (
    BROKER_WAIT,
    READY_TIMEOUT,
    Child,
    CpuSampler,
    broker_info,
    delete_broker_objects,
    find_broker_pid,
    judge,
    machine_info,
    median,
    reqrep_fingerprint,
    retry_cleanup,
    wait_for_broker,
)
from bench.suite._output import fmt_ms
from bench.suite._plan import (
    BASELINE,
    DURABLE_BASELINE,
    NATIVE_PROTOCOL_PAIR,
    PROTOCOL_PAIR,
    SERIAL_INLINE_PAIR,
    SERIAL_NATIVE_PAIR,
    SERIAL_PAIR,
    TUNED_BASELINE,
    TUNED_DURABLE_BASELINE,
    Case,
    Options,
    plan_case,
)

RUN_OVERHEAD = 6.0
"""Estimated seconds of start-up and teardown per run, for the --max-minutes budget."""


def run_case(
    case: Case, repeat: int, opts: Options, run_id: str, attempt: int = 1
) -> dict[str, Any]:
    """Start the server, then the client; return the client's result and CPU samples."""
    suffix = "" if attempt == 1 else f".a{attempt}"
    plan = plan_case(case, opts, f"bench.{run_id}.{case.name}.r{repeat}{suffix}")
    record: dict[str, Any] = {"case": case.name, "repeat": repeat, "ok": False}
    sampler = CpuSampler()
    broker_pid = find_broker_pid()
    if broker_pid is not None:
        sampler.pids["broker"] = broker_pid
    server: Child | None = None
    client: Child | None = None
    try:
        server = Child(
            f"{case.name} server", plan.server_argv, plan.server_env, ready_text=plan.server_ready
        )
        if not server.wait_ready(READY_TIMEOUT):
            why = "exited before it was ready" if not server.alive() else "not ready in time"
            record["error"] = f"server {why}\n{server.describe()}"
            return record
        sampler.pids["server"] = server.pid
        client = Child(
            f"{case.name} client", plan.client_argv, plan.client_env, on_line=sampler.on_line
        )
        code = client.wait(plan.client_limit + 5.0)
        result = client.result_line()
        if code is None or result is None:
            record["error"] = (
                f"client {'timed out' if code is None else f'exited {code}'} without a result\n"
                f"{client.describe()}"
            )
            return record
        record.update(ok=True, result=result)
        calls = result.get("calls") or 0
        cpu = sampler.used()
        cpu["client"] = result.get("client_cpu_s")
        record["cpu_s"] = cpu
        record["cpu_us_per_call"] = {
            side: (used / calls * 1e6 if used is not None and calls else None)
            for side, used in cpu.items()
        }
        judge(record)
        return record
    finally:
        for child in (client, server):
            if child is not None:
                child.stop()
        problems = delete_broker_objects(opts.url, plan.queues, plan.exchanges)
        if problems:
            record["cleanup_problems"] = problems
            record["leftovers"] = {"queues": plan.queues, "exchanges": plan.exchanges}


def run_order(cases: Sequence[Case], repeat: int) -> list[Case]:
    """The cases of repeat ``repeat`` (from 1) in the order they run: forwards, backwards,
    forwards... so that neighbours run in both orders and a steady drift in the machine's speed
    favours neither side of a ratio."""
    return list(cases) if repeat % 2 else list(reversed(cases))


def run_suite(
    cases: Sequence[Case],
    opts: Options,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    budget = opts.max_minutes * 60.0
    per_run = opts.warmup + opts.seconds + RUN_OVERHEAD
    runs: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "url"},
        "machine": machine_info(),
        "broker": broker_info(opts.url),
        "loadavg_start": os.getloadavg(),
        "reqrep_source_start": reqrep_fingerprint(),
    }
    total = len(cases) * opts.repeats
    for repeat in range(1, opts.repeats + 1):
        for position, case in enumerate(run_order(cases, repeat), start=1):
            index = (repeat - 1) * len(cases) + position
            if time.monotonic() - started + per_run > budget:
                progress(f"[{index}/{total}] {case.name} #{repeat}: skipped (--max-minutes)")
                runs.append({"case": case.name, "repeat": repeat, "ok": False, "error": "skipped"})
                continue
            record = run_case(case, repeat, opts, run_id)
            if not record["ok"] and time.monotonic() - started + per_run <= budget:
                progress(
                    f"[{index}/{total}] {case.name} #{repeat}: failed, once more: "
                    f"{record.get('error')}"
                )
                record["retried"] = True
                runs.append(record)  # kept in the JSON, out of the medians
                wait_for_broker(opts.url, BROKER_WAIT)
                record = run_case(case, repeat, opts, run_id, attempt=2)
            runs.append(record)
            if record["ok"]:
                result = record["result"]
                lat = result["latency_ms"]
                progress(
                    f"[{index}/{total}] {case.name} #{repeat}: "
                    f"{result['calls_per_s']:,.0f} calls/s, p50 {fmt_ms(lat['p50'])} ms"
                )
            else:
                progress(f"[{index}/{total}] {case.name} #{repeat}: FAILED {record['error']}")
    retry_cleanup(opts.url, runs, progress)
    info["loadavg_end"] = os.getloadavg()
    info["reqrep_source_end"] = reqrep_fingerprint()
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    return {**info, "runs": runs, "summary": summarize(cases, runs)}


def summarize(cases: Sequence[Case], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats, per case; ratios to the baselines; the serial comparison."""
    by_case: dict[str, dict[str, Any]] = {}
    for case in cases:
        ok = [r for r in runs if r["case"] == case.name and r.get("ok")]
        results = [r["result"] for r in ok]
        latency = {
            key: median(res["latency_ms"].get(key) for res in results)
            for key in ("p50", "p90", "p99", "max", "mean")
        }
        cpu = {
            side: median((r.get("cpu_us_per_call") or {}).get(side) for r in ok)
            for side in ("client", "server", "broker")
        }
        by_case[case.name] = {
            "summary": case.summary,
            "durable": case.durable,
            "repeats_ok": len(ok),
            "in_flight": median(res.get("outstanding") for res in results),
            "calls_per_s": median(res["calls_per_s"] for res in results),
            "calls_per_s_runs": [round(res["calls_per_s"], 1) for res in results],
            "latency_ms": latency,
            "errors": sum(
                int(r["result"].get("errors") or 0)
                for r in runs
                if r["case"] == case.name and "result" in r
            ),
            "failed_runs": sum(
                1 for r in runs if r["case"] == case.name and not r.get("ok") and "result" in r
            ),
            "cpu_us_per_call": cpu,
        }
    for entry in by_case.values():
        for key, base in (("vs_raw_pika", BASELINE), ("vs_raw_pika_durable", DURABLE_BASELINE)):
            ref = by_case.get(base, {}).get("calls_per_s")
            mine = entry["calls_per_s"]
            entry[key] = mine / ref if mine is not None and ref else None
        if not entry["durable"]:
            entry["vs_raw_pika_durable"] = None
        tuned = TUNED_DURABLE_BASELINE if entry["durable"] else TUNED_BASELINE
        ref = by_case.get(tuned, {}).get("calls_per_s")
        mine = entry["calls_per_s"]
        entry["vs_tuned"] = mine / ref if mine is not None and ref else None
    serial, serial_inline, serial_native = (
        _p50_ratio(by_case, pair) for pair in (SERIAL_PAIR, SERIAL_INLINE_PAIR, SERIAL_NATIVE_PAIR)
    )
    # call_async against bare pika carrying the same properties: the library's cost alone.
    mine, ref = (by_case.get(name, {}).get("calls_per_s") for name in PROTOCOL_PAIR)
    protocol = mine / ref if mine is not None and ref else None
    mine, ref = (by_case.get(name, {}).get("calls_per_s") for name in NATIVE_PROTOCOL_PAIR)
    native = mine / ref if mine is not None and ref else None
    return {
        "cases": by_case,
        "serial_p50_ratio": serial,
        "serial_inline_p50_ratio": serial_inline,
        "serial_native_p50_ratio": serial_native,
        "async_vs_tuned_props": protocol,
        "native_vs_tuned_props": native,
    }


def _p50_ratio(by_case: dict[str, dict[str, Any]], pair: tuple[str, str]) -> float | None:
    a, b = (by_case.get(name, {}).get("latency_ms", {}).get("p50") for name in pair)
    return a / b if a is not None and b else None
