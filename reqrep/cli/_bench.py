"""``reqrep bench``: measure calls/s and latency against a running worker.

Its progress bars and table come from ``rich``, an optional extra (``reqrep[tools]``): it is
imported only when this command runs, so a worker process never loads it.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from reqrep.cli._output import exit_for
from reqrep.common import exitcodes
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.requestor.client import Requestor

if TYPE_CHECKING:
    from reqrep.loadgen import LoadResult

__all__ = ["bench_command"]


@click.command("bench")
@click.option("--calls", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Calls in flight.",
)
@click.option(
    "--mode",
    type=click.Choice(["async", "threads"]),
    default="async",
    show_default=True,
    help="async: one thread keeps the calls in flight; threads: one thread per call "
    "in flight, all sharing one Requestor.",
)
@click.option(
    "--payload",
    "payload_bytes",
    type=click.IntRange(0, 64 * 1024 * 1024),
    default=100,
    show_default=True,
    help="Approximate request body size in bytes.",
)
@click.option("--method", default="echo", show_default=True)
@click.option(
    "--service", envvar="REQREP_SERVICE", default="demo", show_default=True, show_envvar=True
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds per call  [default: $REQREP_TIMEOUT or 30]",
)
@click.option(
    "--warmup",
    type=click.IntRange(0, 1_000_000),
    default=200,
    show_default=True,
    help="Calls made first and not measured.",
)
@click.option(
    "--url",
    envvar="AMQP_URL",
    show_envvar=True,
    help="Broker URL; several (a cluster) as full URLs separated by commas.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_command(
    *,
    calls: int,
    concurrency: int,
    mode: str,
    payload_bytes: int,
    method: str,
    service: str,
    timeout: float | None,
    warmup: int,
    url: str | None,
    as_json: bool,
) -> None:
    """Measure calls/s and latency against a running worker (e.g. of reqrep.worker.demo:service)."""
    payload = "x" * max(0, payload_bytes - 2)  # a JSON string: two quotes and the x's
    _require_rich()
    from reqrep.loadgen import run_load  # noqa: PLC0415 - only this command loads the generator

    try:
        settings = Settings.from_env(url=url, timeout=timeout)
        with Requestor(settings=settings, service=service) as requestor:
            if warmup:
                run_load(
                    requestor,
                    method=method,
                    payload=payload,
                    calls=warmup,
                    concurrency=min(concurrency, warmup),
                    mode=mode,
                )
            result = _measure(
                requestor,
                run=dict(
                    method=method, payload=payload, calls=calls, concurrency=concurrency, mode=mode
                ),
                quiet=as_json,
            )
    except ReqrepError as exc:
        exit_for(exc)
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        _print_table(result)
    if result.errors:
        sys.exit(exitcodes.OTHER_ERROR)


def _require_rich() -> None:
    try:
        import rich  # noqa: F401, PLC0415 - probe for the optional extra
    except ImportError:
        # A missing extra is a usage matter (exit 2), as click's own errors are.
        raise click.UsageError(
            "reqrep bench needs the 'tools' extra: pip install 'reqrep[tools]'"
        ) from None


def _measure(requestor: Requestor, *, run: dict[str, Any], quiet: bool) -> LoadResult:
    from rich.console import Console  # noqa: PLC0415 - optional extra, see the module docstring
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from reqrep.loadgen import run_load  # noqa: PLC0415

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{run['mode']} x{run['concurrency']}", total=run["calls"])
        return run_load(requestor, **run, progress=lambda n: progress.advance(task, n))


def _print_table(result: LoadResult) -> None:
    from rich.console import Console  # noqa: PLC0415 - optional extra
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=f"reqrep bench: {result.calls} calls, {result.mode}, "
        f"{result.concurrency} in flight, {result.payload_bytes}-byte payload"
    )
    for column in ("calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{result.rate:,.0f}",
        *(f"{result.percentile(p) * 1000:.2f}" for p in (50, 90, 99)),
        f"{result.latencies[-1] * 1000:.2f}" if result.latencies else "-",
        ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "0",
    )
    Console().print(table)
