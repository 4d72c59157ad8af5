"""``reqrep call``: send one request from the shell and print its result as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from reqrep.common import exitcodes
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.requestor.client import Requestor

__all__ = ["call_command", "error_kind", "error_line"]


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
@click.option(
    "--wait-for-workers",
    is_flag=True,
    help="If no worker consumes the service's queue, wait for one (within the timeout) "
    "instead of failing at once with exit code 10  [default: $REQREP_WAIT_FOR_WORKERS or off]",
)
@click.option(
    "--url",
    envvar="AMQP_URL",
    show_envvar=True,
    help="Broker URL; several (a cluster) as full URLs separated by commas.",
)
def call_command(
    *,
    method: str,
    payload: Any,
    service: str,
    timeout: float | None,
    idempotent: bool,
    wait_for_workers: bool,
    url: str | None,
) -> None:
    """Call METHOD of a service with a JSON PAYLOAD and print the JSON result.

    Exit codes: 0 ok, 2 bad arguments, 3 timeout, 4 remote error, 5 method not found,
    6 no such service, 7 broker unreachable, 8 other error, 9 refused (login, vhost),
    10 no workers.
    """
    try:
        settings = Settings.from_env(
            url=url, timeout=timeout, wait_for_workers=wait_for_workers or None
        )
        with Requestor(settings=settings, service=service) as requestor:
            result = requestor.call(method, payload, idempotent=idempotent)
    except ReqrepError as exc:
        click.echo(f"reqrep: {error_line(exc)}", err=True)
        sys.exit(exitcodes.for_error(exc))
    click.echo(json.dumps(result, ensure_ascii=False))


def error_kind(error: ReqrepError) -> str:
    """A short human name for the kind of error, as the CLI prints it."""
    names = {
        exitcodes.BAD_ARGUMENTS: "bad arguments",
        exitcodes.TIMEOUT: "timeout",
        exitcodes.REMOTE_ERROR: "remote error",
        exitcodes.METHOD_NOT_FOUND: "method not found",
        exitcodes.NO_SUCH_SERVICE: "no such service",
        exitcodes.NO_WORKERS: "no workers",
        exitcodes.BROKER_UNREACHABLE: "broker unreachable",
        exitcodes.REFUSED: "refused",
    }
    return names.get(exitcodes.for_error(error), "error")


def error_line(error: ReqrepError) -> str:
    """The kind of error, then its message; the kind only once if the message starts with it."""
    kind, text = error_kind(error), str(error)
    return text if text.lower().startswith(kind) else f"{kind}: {text}"
