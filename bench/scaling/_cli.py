"""``python -m bench.scaling``: the options, the run, the table, the files; exit 1 if a run
failed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.cases import DEFAULT_URL
from bench.harness import positive, write_outputs
from bench.scaling._output import draw_chart, render
from bench.scaling._run import ScalingOptions, run_scaling

DESCRIPTION = "How calls/s grows with worker processes when the handler is I/O-bound."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=DESCRIPTION)
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
