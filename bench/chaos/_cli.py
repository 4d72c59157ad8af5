"""``python -m bench.chaos``: options in, the result out as a table (or JSON), exit 0 on a pass."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bench.chaos._config import SAMPLES, ChaosConfig, ChaosError
from bench.chaos._result import ChaosResult
from bench.chaos._run import run_chaos


def render(result: ChaosResult, config: ChaosConfig) -> str:
    """The result as a table: with rich if it is installed, else plain text."""
    title = (
        f"reqrep chaos: {config.calls} calls, {config.workers} workers, "
        f"kill every {config.kill_every:g}s, cut every {config.cut_every:g}s"
    )
    rows = result.rows()
    try:
        from rich.console import Console  # noqa: PLC0415 - optional dependency
        from rich.table import Table  # noqa: PLC0415
    except ImportError:
        width = max(len(label) for label, _, _ in rows)
        lines = [title, "-" * len(title)]
        lines += [
            f"{label.ljust(width)}  {value}{'' if ok else '   <-- FAIL'}"
            for label, value, ok in rows
        ]
        return "\n".join(lines)
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for label, value, ok in rows:
        table.add_row(label, value, style=None if ok else "bold red")
    console = Console(width=120, record=True, force_terminal=sys.stdout.isatty())
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip("\n")


def _describe_samples(result: ChaosResult) -> str:
    lines = []
    for sample in result.samples:
        if sample["kind"] == "failed":
            continue  # plain calls failing with a typed error is allowed
        lines.append(
            f"  {sample['kind']}: call {sample['index']} key={sample['key']} "
            f"outcome={sample['outcome']} started={sample['started_at']}s "
            f"ended={sample['ended_at']}s late_by={sample['late_by']} runs={sample['runs']}: "
            f"{sample['message']}"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> tuple[ChaosConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Calls reqrep under chaos: killed workers and reset connections.",
    )
    defaults = ChaosConfig()
    parser.add_argument("--calls", type=int, default=defaults.calls)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--kill-every", type=float, default=defaults.kill_every, help="seconds; 0: never"
    )
    parser.add_argument(
        "--cut-every", type=float, default=defaults.cut_every, help="seconds; 0: never"
    )
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--idempotent-share", type=float, default=defaults.idempotent_share)
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="per call, s")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="calls started per second; 0: no cap"
    )
    parser.add_argument(
        "--url", default=defaults.url, help="the broker (loopback); default %(default)s"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--verbose", action="store_true", help="log the library's warnings")
    args = parser.parse_args(argv)
    try:
        config = ChaosConfig(
            calls=args.calls,
            workers=args.workers,
            kill_every=args.kill_every,
            cut_every=args.cut_every,
            concurrency=args.concurrency,
            idempotent_share=args.idempotent_share,
            timeout=args.timeout,
            max_seconds=args.max_seconds,
            url=args.url,
            rate=args.rate,
        )
    except ChaosError as exc:
        parser.error(str(exc))
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = _parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pika").setLevel(logging.CRITICAL)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        result = run_chaos(config, progress=progress)
    except ChaosError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaos: interrupted (workers, proxy and queues were cleaned up)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result, config))
        details = _describe_samples(result)
        if details:
            print(f"\nproblem calls (first {SAMPLES} of each kind):\n{details}")
    return 0 if result.passed else 1
