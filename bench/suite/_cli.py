"""``python -m bench.suite``: the options, the run, the table, the files; exit 1 if a run failed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.cases import DEFAULT_URL
from bench.harness import positive, write_outputs
from bench.suite._output import draw_chart, render
from bench.suite._plan import CASE_NAMES, CASES, Case, Options
from bench.suite._run import run_suite

DESCRIPTION = (
    "Throughput and latency of reqrep against bare pika, the tutorial and aio-pika, in one run."
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=DESCRIPTION)
    parser.add_argument("--repeats", type=positive(int), default=3)
    parser.add_argument("--seconds", type=positive(float), default=5.0, help="window per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--outstanding", type=positive(int), default=64, help="calls in flight")
    parser.add_argument("--payload", type=positive(int), default=100, help="body size, bytes")
    parser.add_argument(
        "--worker-concurrency",
        type=positive(int),
        default=64,
        help="reqrep worker --concurrency",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    parser.add_argument("--chart", type=Path, default=None, help="write the bar chart here too")
    parser.add_argument("--only", nargs="+", choices=CASE_NAMES, metavar="NAME", default=None)
    parser.add_argument(
        "--with-tuned",
        action="store_true",
        help="also run raw-pika(-durable)-tuned: coalesced writes and batched acks",
    )
    parser.add_argument(
        "--with-floors",
        action="store_true",
        help="also run raw-threaded-*: bare pika with reqrep's thread hand-offs and nothing else",
    )
    parser.add_argument("--max-minutes", type=positive(float), default=15.0)
    parser.add_argument("--url", default=None, help="broker URL [default: $AMQP_URL or local]")
    return parser.parse_args(argv)


def select_cases(args: argparse.Namespace) -> list[Case]:
    """``--only``'s cases; else every case, the tuned and floor ones only if asked for."""
    if args.only is not None:
        return [case for case in CASES if case.name in args.only]
    wanted = {"", *(["tuned"] * args.with_tuned), *(["floors"] * args.with_floors)}
    return [case for case in CASES if case.extra in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # failures are reported per run
    opts = Options(
        repeats=args.repeats,
        seconds=args.seconds,
        warmup=max(0.0, args.warmup),
        outstanding=args.outstanding,
        payload=args.payload,
        worker_concurrency=args.worker_concurrency,
        max_minutes=args.max_minutes,
        url=args.url or os.environ.get("AMQP_URL") or DEFAULT_URL,
    )
    cases = select_cases(args)
    try:
        report = run_suite(cases, opts, progress=lambda text: print(text, flush=True))
    except KeyboardInterrupt:
        print("interrupted: processes stopped and queues deleted", file=sys.stderr)
        return 130
    render(report)
    write_outputs("suite", report, extra_json=args.json, extra_chart=args.chart, draw=draw_chart)
    return 0 if all(r.get("ok") or r.get("retried") for r in report["runs"]) else 1
