"""Running the scaling benchmark: N worker processes and one client per run, round robin over
repeats, then one summary row per N."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
import uuid
from typing import Any

from bench.cases import DEFAULT_URL, DRAIN_SECONDS
from bench.cases.sleepy import SLEEP_SECONDS
from bench.harness import (
    BROKER_WAIT,
    CLIENT_SLACK,
    READY_TIMEOUT,
    REQREP_ENV,
    WORKER_READY_TEXT,
    Child,
    CpuSampler,
    base_env,
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

SERVICE = "sleepy"
METHOD = "wait"
SPEC = "bench.cases.sleepy:service"


@dataclasses.dataclass(frozen=True)
class ScalingOptions:
    processes: tuple[int, ...] = (1, 2, 4)
    seconds: float = 5.0
    warmup: float = 1.0
    repeats: int = 3
    concurrency: int = 8
    inflight_per_slot: int = 4
    prefetch: int | None = None  # None: reqrep's default (= concurrency)
    classic: bool = False
    max_minutes: float = 15.0
    url: str = dataclasses.field(default=DEFAULT_URL, repr=False)

    def inflight(self, processes: int) -> int:
        return self.inflight_per_slot * self.concurrency * processes

    def ceiling(self, processes: int) -> float:
        return self.concurrency * processes / SLEEP_SECONDS


def run_one(
    processes: int, repeat: int, opts: ScalingOptions, run_id: str, attempt: int = 1
) -> dict[str, Any]:
    suffix = "" if attempt == 1 else f".a{attempt}"
    prefix = f"bench.{run_id}.scaling.p{processes}.r{repeat}{suffix}."
    env = base_env(opts.url)
    for name in REQREP_ENV:
        env.pop(name, None)
    env["REQREP_QUEUE_PREFIX"] = prefix
    if opts.classic:
        env["REQREP_QUEUE_TYPE"] = "classic"
        env["REQREP_PERSISTENT"] = "0"
    worker_env = {**env, "REQREP_LOG_LEVEL": "INFO"}
    worker_argv = [
        sys.executable,
        "-m",
        "reqrep",
        "worker",
        SPEC,
        "--concurrency",
        str(opts.concurrency),
        "--drain-timeout",
        "2",
        *([] if opts.prefetch is None else ["--prefetch", str(opts.prefetch)]),
    ]
    inflight = opts.inflight(processes)
    client_limit = opts.warmup + opts.seconds + DRAIN_SECONDS + CLIENT_SLACK
    client_argv = [
        sys.executable,
        "-m",
        "bench.cases.reqrep_client",
        "client",
        "--queue",
        SERVICE,
        "--method",
        METHOD,
        "--mode",
        "async",
        "--outstanding",
        str(inflight),
        "--payload",
        "0",
        "--seconds",
        str(opts.seconds),
        "--warmup",
        str(opts.warmup),
        "--max-seconds",
        str(client_limit),
    ]
    record: dict[str, Any] = {
        "processes": processes,
        "repeat": repeat,
        "inflight": inflight,
        "ok": False,
    }
    sampler = CpuSampler()
    broker_pid = find_broker_pid()
    if broker_pid is not None:
        sampler.pids["broker"] = broker_pid
    workers: list[Child] = []
    client: Child | None = None
    try:
        for index in range(processes):
            child = Child(f"worker {index}", worker_argv, worker_env, ready_text=WORKER_READY_TEXT)
            workers.append(child)
            # One at a time: the first declares the queue before the others race it.
            if not child.wait_ready(READY_TIMEOUT):
                record["error"] = f"worker not ready\n{child.describe()}"
                return record
            sampler.pids[f"worker{child.pid}"] = child.pid
        client = Child("scaling client", client_argv, env, on_line=sampler.on_line)
        code = client.wait(client_limit + 5.0)
        result = client.result_line()
        if code is None or result is None:
            record["error"] = f"client gave no result (exit {code})\n{client.describe()}"
            return record
        used = sampler.used()
        calls = result.get("calls") or 0
        worker_cpu = [v for k, v in used.items() if k.startswith("worker")]
        record.update(
            ok=True,
            result=result,
            cpu_s={
                "client": result.get("client_cpu_s"),
                "workers": sum(v for v in worker_cpu if v is not None) if worker_cpu else None,
                "broker": used.get("broker"),
            },
        )
        record["cpu_us_per_call"] = {
            side: (value / calls * 1e6 if value is not None and calls else None)
            for side, value in record["cpu_s"].items()
        }
        judge(record)
        return record
    finally:
        if client is not None:
            client.stop()
        for child in workers:
            child.stop()
        queues, exchanges = (
            [f"{prefix}{SERVICE}", f"{prefix}{SERVICE}.dead"],
            [f"{prefix}dlx", f"{prefix}control", f"{prefix}requests"],
        )
        problems = delete_broker_objects(opts.url, queues, exchanges)
        if problems:
            record["cleanup_problems"] = problems
            record["leftovers"] = {"queues": queues, "exchanges": exchanges}


def run_scaling(opts: ScalingOptions) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    per_run = opts.warmup + opts.seconds + 8.0
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "url"},
        "machine": machine_info(),
        "broker": broker_info(opts.url),
        "loadavg_start": os.getloadavg(),
        "reqrep_source_start": reqrep_fingerprint(),
    }
    runs: list[dict[str, Any]] = []
    total = len(opts.processes) * opts.repeats
    for repeat in range(1, opts.repeats + 1):
        for position, processes in enumerate(opts.processes, start=1):
            index = (repeat - 1) * len(opts.processes) + position
            if time.monotonic() - started + per_run > opts.max_minutes * 60:
                print(f"[{index}/{total}] {processes} processes #{repeat}: skipped", flush=True)
                runs.append({"processes": processes, "repeat": repeat, "ok": False})
                continue
            record = run_one(processes, repeat, opts, run_id)
            if not record["ok"] and time.monotonic() - started + per_run <= opts.max_minutes * 60:
                print(
                    f"[{index}/{total}] {processes} processes #{repeat}: failed, once more: "
                    f"{record.get('error')}",
                    flush=True,
                )
                record["retried"] = True
                runs.append(record)  # kept in the JSON, out of the medians
                wait_for_broker(opts.url, BROKER_WAIT)
                record = run_one(processes, repeat, opts, run_id, attempt=2)
            runs.append(record)
            if record["ok"]:
                res = record["result"]
                print(
                    f"[{index}/{total}] {processes} processes #{repeat}: "
                    f"{res['calls_per_s']:,.0f} calls/s, p50 {res['latency_ms']['p50']:.1f} ms"
                    + (f", {res['errors']} errors" if res.get("errors") else ""),
                    flush=True,
                )
            else:
                print(
                    f"[{index}/{total}] {processes} processes #{repeat}: FAILED "
                    f"{record.get('error')}",
                    flush=True,
                )
    retry_cleanup(opts.url, runs, lambda text: print(text, flush=True))
    report["loadavg_end"] = os.getloadavg()
    report["reqrep_source_end"] = reqrep_fingerprint()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["runs"] = runs
    report["rows"] = summarize(opts, runs)
    return report


def summarize(opts: ScalingOptions, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per process count: medians over its good repeats, the ideal and the ceiling."""
    rows: list[dict[str, Any]] = []
    for processes in opts.processes:
        ok = [r for r in runs if r["processes"] == processes and r.get("ok")]
        rows.append(
            {
                "processes": processes,
                "inflight": opts.inflight(processes),
                "calls_per_s": median(r["result"]["calls_per_s"] for r in ok),
                "calls_per_s_runs": [round(r["result"]["calls_per_s"], 1) for r in ok],
                "p50_ms": median(r["result"]["latency_ms"]["p50"] for r in ok),
                "p99_ms": median(r["result"]["latency_ms"]["p99"] for r in ok),
                "errors": sum(int(r["result"].get("errors") or 0) for r in ok),
                "ceiling": opts.ceiling(processes),
                "cpu_us_per_call": {
                    side: median((r.get("cpu_us_per_call") or {}).get(side) for r in ok)
                    for side in ("client", "workers", "broker")
                },
            }
        )
    one = next((row["calls_per_s"] for row in rows if row["processes"] == 1), None)
    base = rows[0] if rows else None
    for row in rows:
        if one is not None:
            row["ideal"] = one * row["processes"]
        elif base is not None and base["calls_per_s"] is not None:
            row["ideal"] = base["calls_per_s"] / base["processes"] * row["processes"]
        else:
            row["ideal"] = None
        mine = row["calls_per_s"]
        row["efficiency"] = mine / row["ideal"] if mine is not None and row["ideal"] else None
        row["of_ceiling"] = mine / row["ceiling"] if mine is not None else None
    return rows
