"""``reqrep schema``: write a service's AsyncAPI 3.0 document."""

from __future__ import annotations

import json
import sys

import click

from reqrep.cli._worker import load_service
from reqrep.common.config import Settings
from reqrep.common.errors import ConfigError
from reqrep.schema import asyncapi
from reqrep.worker.plain import PlainService

__all__ = ["schema_command"]


@click.command("schema")
@click.argument("spec", metavar="MODULE:SERVICE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    default="json",
    show_default=True,
    help="Output format; yaml needs reqrep[yaml].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="File to write  [default: stdout]",
)
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    envvar="REQREP_APP_DIR",
    help="Folder to import MODULE from, before the import path  [default: the current one]",
)
def schema_command(*, spec: str, fmt: str, output: str | None, app_dir: str | None) -> None:
    """Write the AsyncAPI 3.0 document of MODULE:SERVICE: its methods' request and reply
    JSON Schemas, its queue and exchange with their AMQP bindings, the protocol's headers and
    the error reply. Queue names use $REQREP_QUEUE_PREFIX. Needs reqrep[pydantic]."""
    service = load_service(spec, app_dir)
    if isinstance(service, PlainService):
        raise click.BadParameter(
            f"{spec} is a PlainService: its messages are plain bodies, not reqrep's envelope, "
            "and have no schema to describe",
            param_hint="MODULE:SERVICE",
        )
    document = asyncapi(service, Settings.from_env())
    if fmt == "json":
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        try:
            import yaml  # noqa: PLC0415 - optional: only this format needs it
        except ImportError:
            raise ConfigError("--format yaml needs PyYAML: pip install 'reqrep[yaml]'") from None
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as out:
            out.write(text)
