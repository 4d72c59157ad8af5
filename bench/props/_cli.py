"""``python -m bench.props``: the options, the pairs, the table, the JSON file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cases import DEFAULT_URL
from bench.harness import RESULTS_DIR, positive, source_note
from bench.props._run import measured, run_props
from bench.suite._plan import Options

DESCRIPTION = (
    "What each AMQP property and header of reqrep's requests and replies costs: bare pika "
    "with all of them against the same with one flipped, in interleaved pairs."
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [prop.name for prop in measured()]
    parser = argparse.ArgumentParser(prog="python -m bench.props", description=DESCRIPTION)
    parser.add_argument("--rounds", type=positive(int), default=5, help="pairs per property")
    parser.add_argument("--seconds", type=positive(float), default=3.0, help="window per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--outstanding", type=positive(int), default=64, help="calls in flight")
    parser.add_argument("--payload", type=positive(int), default=100, help="body size, bytes")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", default=None)
    parser.add_argument(
        "--classic",
        action="store_true",
        help="a classic queue, transient requests, no confirms (REQREP_PERSISTENT=0's wire)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    parser.add_argument("--max-minutes", type=positive(float), default=30.0)
    parser.add_argument("--url", default=None, help="broker URL [default: $AMQP_URL or local]")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # failures are reported per run
    opts = Options(
        repeats=args.rounds,
        seconds=args.seconds,
        warmup=max(0.0, args.warmup),
        outstanding=args.outstanding,
        payload=args.payload,
        max_minutes=args.max_minutes,
        url=args.url or os.environ.get("AMQP_URL") or DEFAULT_URL,
    )
    props = [prop for prop in measured() if args.only is None or prop.name in args.only]
    try:
        report = run_props(
            props,
            opts,
            rounds=args.rounds,
            durable=not args.classic,
            progress=lambda text: print(text, flush=True),
        )
    except KeyboardInterrupt:
        print("interrupted: processes stopped and queues deleted", file=sys.stderr)
        return 130
    render(report)
    for path in (
        RESULTS_DIR / f"props-{time.strftime('%Y%m%d-%H%M%S')}-{report['run_id']}.json",
        *([args.json] if args.json else []),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0 if all(run.get("ok") for run in report["runs"]) else 1


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415 - only needed to print
    from rich.table import Table  # noqa: PLC0415

    console = Console(width=max(200, Console().width))
    opts = report["options"]
    kind = "quorum, persistent, confirms" if opts["durable"] else "classic, transient"
    table = Table(
        title=(
            f"What each property costs: with it / without it, medians of {opts['rounds']} "
            f"pairs x {opts['seconds']:g}s, {opts['outstanding']} in flight, {kind}"
        )
    )
    columns = ["property", "usual", "+request B", "+reply B", "calls/s", "p50"]
    columns += ["client CPU", "server CPU", "broker CPU", "pairs", "needed by"]
    for column in columns:
        left = column in ("property", "usual", "needed by")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for row in report["summary"]:
        ratio = row["ratio"]
        table.add_row(
            row["property"],
            "yes" if row["usual"] else "sometimes",
            str(row["request_bytes"]),
            str(row["reply_bytes"]),
            _ratio(ratio["calls_per_s"]) if row["measured"] else "not run",
            *(
                _ratio(ratio[key]) if row["measured"] else "-"
                for key in ("p50_ms", "client_us", "server_us", "broker_us")
            ),
            str(row["rounds"]),
            row["needed_by"],
        )
    console.print(table)
    console.print(
        "Ratios are with / without: calls/s below 1 and p50 or CPU above 1 are its cost. Bytes "
        "as published (pika's encoder; the exchange counts reqrep's default name "
        "`reqrep.requests`); the broker delivers the same properties again to the consumer. "
        "CPU: microseconds per call of the client, the server and the broker (beam.smp)."
    )
    load = report.get("loadavg_start"), report.get("loadavg_end")
    console.print(
        f"broker {report['broker'].get('product')} {report['broker'].get('version')}, "
        f"{report['machine']['cpus']} CPUs, load average at start/end "
        f"{'/'.join(f'{v:.1f}' for v in load[0] or ())} / "
        f"{'/'.join(f'{v:.1f}' for v in load[1] or ())}, elapsed {report.get('elapsed_s')} s"
    )
    note = source_note(report)
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    for run in report["runs"]:
        if not run.get("ok"):
            console.print(f"[red]{run['case']} #{run['repeat']}: {run.get('error')}[/red]")
