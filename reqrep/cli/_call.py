"""``reqrep call``: send one request from the shell and print its result as JSON."""

from __future__ import annotations

import json
from typing import Any

import click

from reqrep.cli._broadcast import call_all
from reqrep.cli._output import emit_json, exit_for
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.requestor.client import Requestor

__all__ = ["call_command"]


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
    "--all",
    "every_worker",
    is_flag=True,
    help="Call every live worker of the service (a broadcast) and print one JSON line per "
    "reply, tagged by its worker; the timeout bounds the wait for the slowest.",
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
    every_worker: bool,
    url: str | None,
) -> None:
    """Call METHOD of a service with a JSON PAYLOAD and print the JSON result.

    Exit codes: 0 ok, 2 bad arguments, 3 timeout, 4 remote error, 5 method not found,
    6 no such service, 7 broker unreachable, 8 other error, 9 refused (login, vhost, TLS
    certificate, access to a queue or exchange, a worker's set-up),
    10 no workers.

    With --all, every live worker of the service runs it: one JSON line per reply, tagged by
    its worker; a worker that did not reply in time is named on stderr (exit 3).
    """
    try:
        settings = Settings.from_env(
            url=url, timeout=timeout, wait_for_workers=wait_for_workers or None
        )
        if every_worker:
            call_all(settings, service, method, payload)
            return
        with Requestor(settings=settings, service=service) as requestor:
            result = requestor.call(method, payload, idempotent=idempotent)
    except ReqrepError as exc:
        exit_for(exc)
    emit_json(result, indent=None)
