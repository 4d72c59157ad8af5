"""``reqrep call``: send one request from the shell and print its result as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import exitcodes
from common.config import Settings
from common.errors import ReqrepError
from requestor.client import Requestor
from requestor.loadgen import LoadResult, run_load

__all__ = ["bench_command", "call_command"]


def _parse_payload(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}): {value!r}") from None


@click.command("call")
@click.argument("method")
@click.argument("payload", required=False, callback=_parse_payload)
@click.option(
    "--service",
    envvar="REQREP_SERVICE",
    default="demo",
    show_default=True,
    show_envvar=True,
    help="Service to call.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to wait for the reply  [default: $REQREP_TIMEOUT or 30]",
)
@click.option(
    "--idempotent",
    is_flag=True,
    help="Safe to send again: resent on a new connection if the connection drops.",
)
@click.option("--url", envvar="AMQP_URL", show_envvar=True, help="Broker URL.")
def call_command(
    *,
    method: str,
    payload: Any,
    service: str,
    timeout: float | None,
    idempotent: bool,
    url: str | None,
) -> None:
    """Call METHOD of a service with a JSON PAYLOAD and print the JSON result.

    Exit codes: 0 ok, 2 bad arguments, 3 timeout, 4 remote error, 5 method not found,
    6 no such service, 7 broker unreachable, 8 other error.
    """
    try:
        settings = Settings.from_env(url=url, timeout=timeout)
        with Requestor(settings=settings, service=service) as requestor:
            result = requestor.call(method, payload, idempotent=idempotent)
    except ReqrepError as exc:
        click.echo(f"reqrep: {_kind(exc)}: {exc}", err=True)
        sys.exit(exitcodes.for_error(exc))
    click.echo(json.dumps(result, ensure_ascii=False))


def _kind(error: ReqrepError) -> str:
    names = {
        exitcodes.BAD_ARGUMENTS: "bad arguments",
        exitcodes.TIMEOUT: "timeout",
        exitcodes.REMOTE_ERROR: "remote error",
        exitcodes.METHOD_NOT_FOUND: "method not found",
        exitcodes.NO_SUCH_SERVICE: "no such service",
        exitcodes.BROKER_UNREACHABLE: "broker unreachable",
    }
    return names.get(exitcodes.for_error(error), "error")


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
@click.option("--url", envvar="AMQP_URL", show_envvar=True, help="Broker URL.")
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
    """Measure calls/s and latency against a running worker (e.g. of worker.demo:service)."""
    payload = "x" * max(0, payload_bytes - 2)  # a JSON string: two quotes and the x's
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
        click.echo(f"reqrep: {_kind(exc)}: {exc}", err=True)
        sys.exit(exitcodes.for_error(exc))
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        _print_table(result)
    if result.errors:
        sys.exit(exitcodes.OTHER_ERROR)


def _measure(requestor: Requestor, *, run: dict[str, Any], quiet: bool) -> LoadResult:
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
