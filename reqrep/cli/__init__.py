"""The ``reqrep`` command.

A neutral module: it is the only place that imports both the requestor side (``reqrep call``,
``reqrep bench``) and the worker side (``reqrep worker``, ``reqrep schema``), so neither side
depends on the other.
"""

from __future__ import annotations

import logging
import sys

import click

from reqrep.cli._bench import bench_command
from reqrep.cli._call import call_command
from reqrep.cli._dlq import dlq_group
from reqrep.cli._ops import ping_command, status_command
from reqrep.cli._output import exit_for, safe
from reqrep.cli._schema import schema_command
from reqrep.cli._worker import load_service, worker_command
from reqrep.common import exitcodes
from reqrep.common.errors import ReqrepError
from reqrep.common.tracecontext import CorrelationFilter

__all__ = ["cli", "load_service", "main"]

# correlation_id: the call a line is about ("-" for none), see common/tracecontext.py.
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(correlation_id)s: %(message)s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    envvar="REQREP_LOG_LEVEL",
    show_envvar=True,
    default=None,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level  [default: INFO for worker, WARNING for call]",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """Request-reply (RPC) over RabbitMQ."""
    default = "INFO" if ctx.invoked_subcommand == "worker" else "WARNING"
    level = getattr(logging, (log_level or default).upper())
    logging.basicConfig(level=level, format=_LOG_FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(CorrelationFilter())
    # pika narrates every connection step, and logs each failure as ERROR before we report it
    # with more context: keep its voice for DEBUG runs only.
    logging.getLogger("pika").setLevel(level if level <= logging.DEBUG else logging.CRITICAL)


cli.add_command(worker_command)
cli.add_command(call_command)
cli.add_command(bench_command)
cli.add_command(ping_command)
cli.add_command(status_command)
cli.add_command(dlq_group)
cli.add_command(schema_command)


def main() -> None:
    """Entry point of the ``reqrep`` script. Whatever goes wrong ends in one line and an exit
    code: a reqrep error with its own (the exit codes of README.md and docs/operations.md),
    anything else (a bug) with 8 and its traceback only in the debug log."""
    try:
        cli(prog_name="reqrep")
    except ReqrepError as exc:
        exit_for(exc)
    except Exception as exc:
        logging.getLogger("reqrep").debug("internal error", exc_info=True)
        click.echo(
            f"reqrep: internal error: {type(exc).__name__}: {safe(exc)} "
            "(--log-level DEBUG shows where)",
            err=True,
        )
        sys.exit(exitcodes.OTHER_ERROR)
