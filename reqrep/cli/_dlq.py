"""``reqrep dlq list|show|replay|purge``: a service's dead-letter queue, bounded by --limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from reqrep.cli._ops import admin_session
from reqrep.cli._output import emit_json, safe, table
from reqrep.requestor._dead_letters import MAX_LIMIT

__all__ = ["dlq_group"]

_url = click.option("--url", envvar="AMQP_URL", show_envvar=True, help="Broker URL.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_service = click.option("--service", required=True, help="The service whose dead letters.")


def _limit(default: int) -> Callable[[Any], Any]:
    return click.option(
        "--limit",
        type=click.IntRange(1, MAX_LIMIT),
        default=default,
        show_default=True,
        help="At most this many messages, from the head of the queue.",
    )


@click.group("dlq")
def dlq_group() -> None:
    """Inspect, replay or purge a service's dead-letter queue (reqrep.SERVICE.dead)."""


@dlq_group.command("list")
@_service
@_limit(10)
@_json
@_url
def list_command(*, service: str, limit: int, as_json: bool, url: str | None) -> None:
    """One line per dead letter: why and when it died. The messages stay in the queue."""
    letters = admin_session(url, lambda admin: admin.dead_letters(service, limit=limit))
    if as_json:
        emit_json([letter.to_wire() for letter in letters])
        return
    table(
        ["#", "CORRELATION-ID", "METHOD", "REASON", "DIED-AT", "DEATHS", "BYTES"],
        [
            [i, d.correlation_id, d.method, d.reason, d.died_at, d.deaths, d.size]
            for i, d in enumerate(letters, 1)
        ],
    )


@dlq_group.command("show")
@_service
@_limit(1)
@_json
@_url
def show_command(*, service: str, limit: int, as_json: bool, url: str | None) -> None:
    """Every property, header and the body of the first dead letters. They stay queued."""
    letters = admin_session(url, lambda admin: admin.dead_letters(service, limit=limit))
    if as_json:
        emit_json([letter.to_wire(full=True) for letter in letters])
        return
    for i, letter in enumerate(letters, 1):
        click.echo(f"--- dead letter {i}")
        emit_json(letter.to_wire(full=True))


@dlq_group.command("replay")
@_service
@_limit(10)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="The replayed requests' fresh deadline, seconds; the command waits for their "
    "replies until then  [default: $REQREP_TIMEOUT or 30]",
)
@click.option(
    "--wait-for-workers", is_flag=True, help="Replay even if no worker consumes the queue."
)
@_json
@_url
def replay_command(
    *,
    service: str,
    limit: int,
    timeout: float | None,
    wait_for_workers: bool,
    as_json: bool,
    url: str | None,
) -> None:
    """Move dead letters back to the request queue and report each reply.

    Keeps each request's body, method, correlation id and idempotency key; gives it a fresh
    deadline; sends its reply here (the original caller is gone).
    """
    outcomes = admin_session(
        url,
        lambda admin: admin.replay(service, limit=limit, timeout=timeout),
        wait_for_workers=wait_for_workers or None,
    )
    if as_json:
        emit_json([o.to_wire() for o in outcomes])
        return
    if not outcomes:
        click.echo("reqrep: no dead letters to replay", err=True)
        return
    table(
        ["CORRELATION-ID", "METHOD", "OUTCOME", "DETAIL"],
        [
            [
                o.correlation_id,
                o.method,
                o.outcome,
                json.dumps(o.result) if o.outcome == "ok" else (o.error or {}).get("message"),
            ]
            for o in outcomes
        ],
    )


@dlq_group.command("purge")
@_service
@_limit(10)
@click.option("--all", "everything", is_flag=True, help="Every message, not just --limit.")
@_json
@_url
def purge_command(
    *, service: str, limit: int, everything: bool, as_json: bool, url: str | None
) -> None:
    """Delete dead letters from the head of the queue (--limit of them, or --all)."""
    removed = admin_session(
        url, lambda admin: admin.purge(service, limit=None if everything else limit)
    )
    if as_json:
        emit_json({"service": service, "purged": removed})
    else:
        click.echo(f"purged {removed} dead letters of {safe(service)}")
