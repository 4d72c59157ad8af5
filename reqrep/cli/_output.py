"""What the ``reqrep`` command prints, and how it ends: one line per error, its exit code.

Much of what the commands print is not theirs: method names and correlation ids of dead
letters (anyone who can publish a request chooses them), and the answers to a ping (anyone who
can publish to the callback queue can forge one). So every string that reaches the terminal
goes through ``safe``: control characters (C0, DEL, C1), and the Unicode marks that reorder or
hide text, are written as escapes, so no sender can move the cursor, rewrite a line or hide one.
JSON output is escaped the same way, inside its strings.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, NoReturn

import click

from reqrep.common import exitcodes
from reqrep.common.errors import AppError, RemoteError, ReqrepError

__all__ = ["emit_json", "error_kind", "error_line", "exit_for", "safe", "table"]

# C0 controls, DEL, C1 controls, and bidi embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same, but C0: JSON escapes those itself, and its own line breaks must stay.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def safe(value: object) -> str:
    """``str(value)`` with every character that could steer a terminal escaped."""
    return _UNSAFE.sub(_escape, str(value))


def emit_json(data: Any, *, indent: int | None = 2) -> None:
    """``data`` as JSON, non-ASCII text kept, control characters escaped."""
    click.echo(_UNSAFE_IN_JSON.sub(_escape, json.dumps(data, ensure_ascii=False, indent=indent)))


def table(header: list[str], rows: list[list[object]]) -> None:
    """Columns padded to their widest cell, every cell made ``safe``."""
    cells = [header, *[["-" if c is None else safe(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


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
    """The kind of error, then its message; the kind only once if the message starts with it.
    A remote error with a code of its own (an application's), details or a trail says them
    too: ``(code out_of_stock, details {"sku": "tea"}, via shop.place < orders.submit)``."""
    kind, text = error_kind(error), str(error)
    line = text if text.lower().startswith(kind) else f"{kind}: {text}"
    if isinstance(error, RemoteError):
        extra = []
        if error.code != type(error).code or isinstance(error, AppError):
            extra.append(f"code {error.code}")
        if error.details:
            extra.append(f"details {json.dumps(error.details, ensure_ascii=False)}")
        if len(error.trail) > 1:
            extra.append("via " + " < ".join(f"{h['service']}.{h['method']}" for h in error.trail))
        if extra:
            line += f" ({', '.join(extra)})"
    return line


def exit_for(error: ReqrepError) -> NoReturn:
    """Print the error's line on stderr and exit with its code (the exit codes of README.md
    and docs/operations.md)."""
    click.echo(f"reqrep: {safe(error_line(error))}", err=True)
    sys.exit(exitcodes.for_error(error))
