"""``reqrep call --all``: one call to every live worker of a service, one line per reply.

Each reply is printed as a JSON object on a line of its own, tagged by its worker:
``{"worker": ID, "host": ..., "pid": ..., "result": ...}``, or ``"error": {...}`` for an error
reply. A live worker that did not reply in time gets a line on stderr. The exit status: 10 if no
worker answered at all, 3 if one did not reply in time, else that of the first error reply (4,
5), else 0.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from reqrep.cli._output import emit_json, exit_for, safe
from reqrep.common import exitcodes
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.requestor.broadcast import BroadcastReply
from reqrep.requestor.client import Requestor

__all__ = ["call_all"]


def call_all(settings: Settings, service: str, method: str, payload: Any) -> None:
    """Broadcast ``method`` to ``service``'s workers, print what they replied, and exit."""
    try:
        with Requestor(settings=settings, service=service) as requestor:
            gathered = requestor.broadcast(method, payload)
    except ReqrepError as exc:
        exit_for(exc)
    for reply in gathered.replies:
        emit_json(_line(reply), indent=None)
    for info in gathered.missing:
        click.echo(
            f"reqrep: timeout: no reply from worker {safe(info.id)} ({safe(info.host)} pid "
            f"{info.pid}) within {settings.timeout:g}s",
            err=True,
        )
    errors = [r.error for r in gathered.replies if r.error is not None]
    if not gathered.replies and not gathered.missing:
        click.echo(f"reqrep: no workers: no worker of {safe(service)!r} answered", err=True)
        sys.exit(exitcodes.NO_WORKERS)
    if gathered.missing:
        sys.exit(exitcodes.TIMEOUT)
    if errors:
        sys.exit(exitcodes.for_error(errors[0]))


def _line(reply: BroadcastReply) -> dict[str, Any]:
    line: dict[str, Any] = {"worker": reply.worker}
    if reply.info is not None:
        line.update(host=reply.info.host, pid=reply.info.pid)
    if reply.error is None:
        line["result"] = reply.result
    else:
        error = reply.error
        line["error"] = {"code": error.code, "type": error.type, "message": error.message}
    return line
