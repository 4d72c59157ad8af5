"""How calls/s grows with worker processes when the handler is I/O-bound.

``python -m bench.scaling [--processes 1 2 4] [--seconds 5] [--repeats 3] [--chart PATH]
[--json PATH] [--concurrency 8] [--inflight-per-slot 4] [--classic] [--max-minutes 15]``

The handler (``bench.cases.sleepy:service``, method ``wait``) sleeps 10 ms. For each N in
``--processes``, N separate worker processes (``python -m reqrep worker
bench.cases.sleepy:service --concurrency C``; the same command ``--processes N`` would run under
its supervisor, started separately here so that each pid is known and can be killed) serve one
queue, and one reqrep client keeps ``inflight-per-slot x C x N`` calls in flight with
``call_async``. Why that many: the N processes have C x N handler slots and hold at most
``prefetch`` (= C) requests each, so C x N calls in flight would leave a slot idle during every
round trip between a reply and the next request; 4 x C x N keeps a queue of ready requests in
front of every slot (the extra calls wait in the broker's queue: more latency, not more
throughput). The handler alone allows at most C x N / 10 ms calls a second (the "ceiling"); the
"ideal" line is N times the measured 1-process figure. Repeats are round robin over N, medians
reported.

By default the queue is reqrep's default (quorum, persistent requests, confirms); ``--classic``
uses a classic queue and ``REQREP_PERSISTENT=0`` as the suite's non-durable reqrep cases do.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cases import DEFAULT_URL, DRAIN_SECONDS
from bench.cases.sleepy import SLEEP_SECONDS
from bench.suite import (
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
    positive,
    reqrep_fingerprint,
    retry_cleanup,
    source_note,
    wait_for_broker,
    write_outputs,
)

__all__ = ["main", "run_scaling"]

log = logging.getLogger("reqrep.bench.scaling")

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
        queues, exchanges = [f"{prefix}{SERVICE}", f"{prefix}{SERVICE}.dead"], [f"{prefix}dlx"]
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
    report["rows"] = rows
    return report


def render(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    opts = report["options"]
    queue = "classic, transient" if opts["classic"] else "quorum, persistent, confirms"
    table = Table(
        title=(
            f"Scaling: 10 ms I/O-bound handler, --concurrency {opts['concurrency']} per process"
            f"{'' if opts['prefetch'] is None else ' --prefetch ' + str(opts['prefetch'])}, "
            f"{opts['repeats']} repeats x {opts['seconds']:g}s, {queue} (medians)"
        )
    )
    for column in (
        "processes",
        "in flight",
        "calls/s",
        "ideal (N x 1-proc)",
        "of ideal",
        "handler ceiling",
        "of ceiling",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU us/call cli/wrk/brk",
        "calls/s per repeat",
    ):
        if column.startswith("calls/s per"):
            table.add_column(column, justify="left", no_wrap=True)
        else:
            table.add_column(column, justify="right")
    for row in report["rows"]:
        cpu = row["cpu_us_per_call"]
        table.add_row(
            str(row["processes"]),
            str(row["inflight"]),
            _num(row["calls_per_s"]),
            _num(row["ideal"]),
            _pct(row["efficiency"]),
            _num(row["ceiling"]),
            _pct(row["of_ceiling"]),
            _num(row["p50_ms"], 1),
            _num(row["p99_ms"], 1),
            str(row["errors"]),
            "/".join(_num(cpu[side]) for side in ("client", "workers", "broker")),
            " ".join(f"{v:,.0f}" for v in row["calls_per_s_runs"]) or "failed",
        )
    console = Console(width=max(150, Console().width))
    console.print(table)
    console.print(
        f"broker {report['broker'].get('product')} {report['broker'].get('version')}, "
        f"{report['machine']['cpus']} CPUs, load average at start/end "
        f"{'/'.join(f'{v:.1f}' for v in report['loadavg_start'])} / "
        f"{'/'.join(f'{v:.1f}' for v in report['loadavg_end'])}, "
        f"elapsed {report['elapsed_s']} s"
    )
    note = source_note(report)
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    for run in report["runs"]:
        if not run.get("ok") and not run.get("retried"):
            console.print(
                f"[red]{run['processes']} processes #{run['repeat']}: "
                f"{run.get('error', 'skipped')}[/red]"
            )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def draw_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [row for row in report["rows"] if row["calls_per_s"] is not None]
    xs = [row["processes"] for row in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(xs, [row["calls_per_s"] for row in rows], "o-", color="#4c72b0", label="measured")
    ideal = [(row["processes"], row["ideal"]) for row in rows if row["ideal"] is not None]
    if ideal:
        ax.plot(*zip(*ideal, strict=True), "--", color="#8c8c8c", label="ideal: N x 1 process")
    ax.plot(
        xs,
        [row["ceiling"] for row in rows],
        ":",
        color="#dd8452",
        label="handler ceiling C x N / 10 ms",
    )
    for row in rows:
        ax.annotate(
            f"{row['calls_per_s']:,.0f}/s\n({_pct(row['efficiency'])} of ideal)",
            (row["processes"], row["calls_per_s"]),
            textcoords="offset points",
            xytext=(6, -22),
            fontsize=8,
        )
    opts = report["options"]
    queue = "classic, transient" if opts["classic"] else "quorum, persistent, confirms"
    ax.set_xticks(xs)
    ax.set_xlim(0.5, max(xs or [1]) + 0.9)
    ax.set_xlabel("worker processes")
    ax.set_ylabel("calls per second (median of repeats)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"reqrep: 10 ms handler, --concurrency {opts['concurrency']} per process, {queue}\n"
        f"{report['machine']['cpus']} CPUs shared by broker, client and workers; "
        f"{report['started'][:10]}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--processes", type=positive(int), nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=positive(float), default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=positive(int), default=3)
    parser.add_argument("--concurrency", type=positive(int), default=8, help="per process")
    parser.add_argument("--inflight-per-slot", type=positive(int), default=4)
    parser.add_argument(
        "--prefetch", type=positive(int), default=None, help="worker --prefetch [reqrep default]"
    )
    parser.add_argument("--classic", action="store_true", help="classic queue, transient")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--chart", type=Path, default=None)
    parser.add_argument("--max-minutes", type=positive(float), default=15.0)
    parser.add_argument("--url", default=None, help="broker URL [default: $AMQP_URL or local]")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # failures are reported per run
    opts = ScalingOptions(
        processes=tuple(args.processes),
        seconds=args.seconds,
        warmup=max(0.0, args.warmup),
        repeats=args.repeats,
        concurrency=args.concurrency,
        inflight_per_slot=args.inflight_per_slot,
        prefetch=args.prefetch,
        classic=args.classic,
        max_minutes=args.max_minutes,
        url=args.url or os.environ.get("AMQP_URL") or DEFAULT_URL,
    )
    try:
        report = run_scaling(opts)
    except KeyboardInterrupt:
        print("interrupted: processes stopped and queues deleted", file=sys.stderr)
        return 130
    render(report)
    write_outputs("scaling", report, extra_json=args.json, extra_chart=args.chart, draw=draw_chart)
    return 0 if all(r.get("ok") or r.get("retried") for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
