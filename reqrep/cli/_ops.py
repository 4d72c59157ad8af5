"""``reqrep ping`` and ``reqrep status``: which workers are alive, how each service stands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from reqrep.cli._output import emit_json, exit_for, safe, table
from reqrep.common import exitcodes
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.requestor.admin import Admin

__all__ = ["admin_session", "ping_command", "status_command"]

T = TypeVar("T")


def admin_session(url: str | None, work: Callable[[Admin], T], **settings: Any) -> T:
    """Run ``work`` in an Admin session; a reqrep error exits with its code."""
    try:
        with Admin(settings=Settings.from_env(url=url, **settings)) as admin:
            return work(admin)
    except ReqrepError as exc:
        exit_for(exc)


_url = click.option("--url", envvar="AMQP_URL", show_envvar=True, help="Broker URL.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_services = click.option(
    "--service", "services", multiple=True, help="Only this service (repeat for more)."
)
_timeout = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=60),
    default=1.0,
    show_default=True,
    help="Seconds to collect the workers' answers.",
)


@click.command("ping")
@_services
@_timeout
@_json
@_url
def ping_command(
    *, services: tuple[str, ...], timeout: float, as_json: bool, url: str | None
) -> None:
    """List every live worker process (one line per worker connection).

    Collects answers for TIMEOUT seconds. Exit 10 if no worker answered.
    """
    workers = admin_session(url, lambda admin: admin.ping(services, timeout=timeout))
    if as_json:
        emit_json([w.to_wire() for w in workers])
    elif workers:
        table(
            ["SERVICE", "HOST", "PID", "VERSION", "UPTIME", "IN-FLIGHT", "CONCURRENCY", "STATE"],
            [
                [
                    w.service,
                    w.host,
                    w.pid,
                    w.version,
                    _duration(w.uptime),
                    w.in_flight,
                    w.concurrency,
                    "draining" if w.draining else "serving",
                ]
                for w in workers
            ],
        )
    else:
        click.echo(f"reqrep: no worker answered within {timeout:g}s", err=True)
    if not workers:
        sys.exit(exitcodes.NO_WORKERS)


@click.command("status")
@_services
@_timeout
@_json
@_url
def status_command(
    *, services: tuple[str, ...], timeout: float, as_json: bool, url: str | None
) -> None:
    """Show each service's queue depth, consumers, workers and dead letters.

    Lists the services named with --service, or else every service whose workers answer a
    ping within TIMEOUT (a service with no live worker appears only when named).
    """
    found, cap = admin_session(
        url,
        lambda admin: (admin.status(services, timeout=timeout), admin.settings.dlq_max_length),
    )
    if as_json:
        emit_json([s.to_wire() for s in found])
        return
    if not found:
        click.echo("reqrep: no worker answered; name services with --service", err=True)
        return
    table(
        ["SERVICE", "QUEUE", "DEPTH", "CONSUMERS", "WORKERS", "IN-FLIGHT", "DEAD-LETTERS"],
        [
            [
                s.service,
                s.queue if s.exists else f"{s.queue} (missing)",
                s.depth,
                s.consumers,
                s.workers,
                s.in_flight,
                s.dead_letters,
            ]
            for s in found
        ],
    )
    for s in found:
        if s.dead_letters is not None and s.dead_letters >= cap:
            click.echo(
                f"reqrep: {safe(s.service)}: the dead-letter queue is at its cap "
                f"({cap}); the oldest are being dropped",
                err=True,
            )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{seconds:.1f}s"
