"""Two checkouts of reqrep side by side: the bench suite run in each, in turns, and a table of
how each case's ratio to bare pika moved.

    python -m bench.compare OLD_CHECKOUT [--new NEW_CHECKOUT] [--rounds 3] [--only CASE ...]

Each checkout runs its own ``bench.suite`` with its own ``.venv`` (so its own worker and
client code), against the same broker. The turns alternate (old, new, new, old, ...) so that a
drift in the shared machine's speed hits both alike; within one suite run every reqrep case is
divided by that run's ``raw-pika``, which cancels most of the rest. The verdict, ``new/old``, is
the median over rounds of the new ratio divided by the old one of the same round: above 1 means
the new code is faster; its range across rounds shows the noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

BASELINE = "raw-pika"
CASES = (
    BASELINE,
    "reqrep-threads",
    "reqrep-async",
    "reqrep-serial",
    "reqrep-asyncio",
    "reqrep-asyncio-native",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("old", type=Path, help="the checkout to compare against (with its .venv)")
    parser.add_argument("--new", type=Path, default=Path.cwd(), help="[default: this one]")
    parser.add_argument("--rounds", type=int, default=3, help="suite runs per checkout")
    parser.add_argument("--only", nargs="+", default=list(CASES), metavar="CASE")
    parser.add_argument("--seconds", type=float, default=5.0, help="window per case and run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--url", default=None, help="broker URL [default: as bench.suite]")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for checkout in (args.old, args.new):
        if not (checkout / ".venv" / "bin" / "python").exists():
            parser.error(f"{checkout} has no .venv/bin/python")
    if BASELINE not in args.only:
        args.only.insert(0, BASELINE)
    return args


def run_suite(checkout: Path, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """One suite run in ``checkout``: calls/s per case."""
    command = [
        str(checkout / ".venv" / "bin" / "python"),
        "-m",
        "bench.suite",
        "--repeats",
        "1",
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--json",
        str(out),
        "--only",
        *args.only,
        *(["--url", args.url] if args.url else []),
    ]
    subprocess.run(  # noqa: S603 - a checkout's own interpreter and our arguments
        command, cwd=checkout, check=True, stdout=subprocess.DEVNULL
    )
    cases = json.loads(out.read_text())["summary"]["cases"]
    return {name: float(case["calls_per_s"]) for name, case in cases.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    order = [("old", "new") if r % 2 == 0 else ("new", "old") for r in range(args.rounds)]
    with tempfile.TemporaryDirectory() as tmp:
        for round_no, pair in enumerate(order, 1):
            for side in pair:
                print(f"round {round_no}/{args.rounds}: {side} ({sides[side]})", flush=True)
                runs[side].append(run_suite(sides[side], args, Path(tmp) / f"{side}.json"))
    render(runs, args)
    return 0


def _median(runs: list[dict[str, float]], case: str, ratio: bool) -> float:
    values = [r[case] / r[BASELINE] if ratio else r[case] for r in runs if case in r]
    return statistics.median(values) if values else float("nan")


def _paired(runs: dict[str, list[dict[str, float]]], case: str) -> list[float]:
    """new/old of the case's ratio, round by round (each round ran both back to back)."""
    return [
        (new[case] / new[BASELINE]) / (old[case] / old[BASELINE])
        for old, new in zip(runs["old"], runs["new"], strict=True)
        if case in old and case in new
    ]


def render(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"old {args.old} vs new {args.new}: {args.rounds} rounds, medians",
        caption="ratio: calls/s divided by raw-pika's in the same suite run; new/old: the "
        "median of the rounds' paired ratios, and their range",
    )
    columns = ("case", "old calls/s", "new calls/s", "old ratio", "new ratio", "new/old", "range")
    for column in columns:
        table.add_column(column, justify="left" if column == "case" else "right")
    for case in args.only:
        paired = _paired(runs, case)
        table.add_row(
            case,
            f"{_median(runs['old'], case, ratio=False):,.0f}",
            f"{_median(runs['new'], case, ratio=False):,.0f}",
            f"{_median(runs['old'], case, ratio=True):.2f}",
            f"{_median(runs['new'], case, ratio=True):.2f}",
            f"{statistics.median(paired):.2f}" if case != BASELINE and paired else "-",
            f"{min(paired):.2f}-{max(paired):.2f}" if case != BASELINE and paired else "-",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    sys.exit(main())
