"""The documents, checked without a broker: their set, links and code blocks, and that their
tables name everything the code has (settings, options, exit codes, errors, metrics, headers).

``tests/integration/test_docs_commands.py`` runs their commands; CONTRIBUTING.md, "Documents",
has the conventions.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import prometheus_client
import pytest

from reqrep.cli import cli
from reqrep.common import callheaders, config, control, errors, exitcodes, tracecontext
from reqrep.common._prometheus import PrometheusObserver
from reqrep.worker import admission, cancel, replies
from reqrep.worker import control as worker_control
from reqrep.worker.replies import ConsumerStats
from tests.unit.doc_text import (
    ROOT,
    Block,
    blocks,
    commands,
    documents,
    files,
    headings,
    links,
    relative,
)

README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDE, PROTOCOL, OPERATIONS = DOCS / "guide.md", DOCS / "protocol.md", DOCS / "operations.md"
# Words of a work journal: nothing users read tells how the figures came about.
JOURNAL = ("this stop", "this round", "tried and dropped", "previous stop", "the round's")
LANGUAGES = {"sh", "python", "json", "text", ""}  # "" : diagrams and synopses


def _all_blocks() -> list[Block]:
    return [b for path in documents() for b in blocks(path)]


def _table_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("|")]


def test_the_documents_are_all_there() -> None:
    names = {relative(p) for p in documents()}
    expected = {"README.md", "CONTRIBUTING.md", "CHANGELOG.md"}
    expected |= {f"docs/{n}.md" for n in ("guide", "protocol", "operations", "reliability")}
    expected |= {"docs/performance.md", "docs/architecture.md"}
    assert expected <= names


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) < 300


def _quick_start_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    start = lines.index("## Quick start") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("## "))
    return [b for b in blocks(README) if b.lang == "sh" and start < b.line <= end]


def test_the_quick_start_has_the_two_set_up_commands() -> None:
    """One block runs the product with compose (scripts/compose-e2e.sh runs it word for word),
    the next runs the tests, and CI runs that same command."""
    product, tests, *_ = _quick_start_blocks()
    assert all(c.text.startswith("docker compose ") for c in commands(product))
    [test_command] = [c.text for c in commands(tests)]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f".ci/run does not run README's test command {test_command!r}"


@pytest.mark.parametrize("path", documents(), ids=relative)
def test_links_lead_somewhere(path: Path) -> None:
    for line, target in links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{relative(path)}:{line}: no {file_part}"
        if anchor and linked.suffix == ".md":
            assert anchor in headings(linked), f"{relative(path)}:{line}: no heading #{anchor}"


@pytest.mark.parametrize("path", documents(), ids=relative)
def test_no_work_journal(path: Path) -> None:
    text = path.read_text().lower()
    assert not [w for w in JOURNAL if w in text]


def test_code_blocks_say_their_language() -> None:
    """A ```bash or ```py block would be neither run nor checked: only these languages."""
    assert {b.where: b.lang for b in _all_blocks() if b.lang not in LANGUAGES} == {}


def test_python_blocks_parse() -> None:
    for block in _all_blocks():
        if block.lang == "python":
            ast.parse(block.text, block.where)


def test_sh_blocks_hold_commands() -> None:
    assert [b.where for b in _all_blocks() if b.lang == "sh" and not commands(b)] == []


def test_every_file_a_document_defines_is_used() -> None:
    for path in documents():
        used = " ".join(c.text for b in blocks(path) if b.lang == "sh" for c in commands(b))
        for name, block in files(path).items():
            assert re.search(rf"(^|[\s/]){re.escape(name)}\b", used), f"{block.where}: {name}"


def test_commands_in_the_background_say_what_they_serve() -> None:
    """``&`` and ``reqrep worker`` never end by themselves: the test must know what to wait
    for (``# serves NAME``)."""
    for block in _all_blocks():
        if block.lang != "sh":
            continue
        for command in commands(block):
            endless = command.text.endswith("&") or re.search(r"\breqrep worker ", command.text)
            if endless and not command.text.startswith("docker "):
                assert command.serves, f"{command.where}: `{command.text}` # serves NAME"


def _exit_code_rows(path: Path) -> dict[int, str]:
    rows = {}
    for row in _table_rows(path):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1]
    return rows


@pytest.mark.parametrize("path", [README, OPERATIONS], ids=relative)
def test_the_exit_code_tables_have_every_code(path: Path) -> None:
    codes = {getattr(exitcodes, n) for n in exitcodes.__all__ if n.isupper()}
    assert set(_exit_code_rows(path)) == codes


def test_the_readme_lists_every_error() -> None:
    table = "\n".join(_table_rows(README))
    abstract = {"ReqrepError", "CallError", "ReqrepConnectionError"}
    for name in set(errors.__all__) - abstract:
        assert f"`{name}`" in table, name


def test_the_guide_draws_the_error_tree_as_the_code_does() -> None:
    doc = errors.__doc__ or ""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "ReqrepError")
    end = next(i for i in range(start, len(lines)) if not lines[i + 1].strip())  # a blank line
    tree = textwrap.dedent("\n".join(lines[start : end + 1])) + "\n"
    assert tree in [b.text for b in blocks(GUIDE) if b.lang == "text"]


def test_the_configuration_tables_name_every_setting() -> None:
    rows = "\n".join(_table_rows(OPERATIONS))
    for field in dataclasses.fields(config.Settings):
        assert f"`{field.name}`" in rows, field.name
    for variable, _kind in config._ENV_FIELDS.values():
        assert f"`{variable}`" in rows, variable
    for _path, option in _options():
        for variable in _envvars(option):
            assert f"`{variable}`" in rows, variable
    assert "`REQREP_PIKA_FASTPATH`" in rows


def _options(
    command: click.Command = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Option]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _options(sub, (*path, name))
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            yield path, param


def _envvars(option: click.Option) -> list[str]:
    envvar = option.envvar
    if envvar is None:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


def _synopsis() -> list[str]:
    """The entries of operations.md's synopsis, one string per ``reqrep ...`` entry."""
    block = next(b for b in blocks(OPERATIONS) if b.text.startswith("reqrep [--log-level"))
    entries: list[str] = []
    for line in block.text.splitlines():
        if line.startswith("reqrep "):
            entries.append(line)
        elif entries:
            entries[-1] += " " + line.strip()
    return entries


def _covers(entry: str, path: tuple[str, ...]) -> bool:
    words = entry.split()[1:]
    if not path:
        return words[0].startswith("[--")
    if words[0] != path[0]:
        return False
    return len(path) == 1 or path[1] in words[1].split("|")


def test_the_synopsis_has_every_option_of_every_command() -> None:
    entries = _synopsis()
    for path, option in _options():
        text = " ".join(e for e in entries if _covers(e, path))
        assert text, f"reqrep {' '.join(path)}: no synopsis"
        for opt in [*option.opts, *option.secondary_opts]:
            if opt.startswith("--"):
                assert re.search(rf"{re.escape(opt)}\b", text), f"reqrep {' '.join(path)} {opt}"


def test_the_metrics_table_has_every_metric() -> None:
    registry = prometheus_client.CollectorRegistry()
    PrometheusObserver(registry)
    rows = "\n".join(_table_rows(OPERATIONS))
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}`" in rows, name


def test_the_protocol_names_every_header_and_limit() -> None:
    text = " ".join(PROTOCOL.read_text().split())  # lines wrap anywhere
    for header in (
        admission.DEADLINE_HEADER,
        admission.DELIVERY_COUNT_HEADER,
        replies.REFUSED_HEADER,
        tracecontext.TRACE_HEADER,
        tracecontext.STATE_HEADER,
        callheaders.HEADERS_HEADER,
    ):
        assert f"`{header}`" in text, header
    for kind in (control.PING, control.CANCEL, control.BROADCAST):
        assert f"| `type` | `{kind}` |" in text, kind
    for header in (control.METHOD_HEADER, control.WORKER_HEADER):
        assert f"`{header}`" in text, header
    assert (
        f"at most {cancel.REMEMBER:g} s, and at most the {cancel.MAX_REMEMBERED:,} latest" in text
    )
    assert f"holds at most {worker_control.QUEUE_MAX} pings" in text
    assert f"a prefetch of {worker_control.PREFETCH}" in text
    assert (
        f"at most {worker_control.PER_ASKER:g} pings a second to one reply queue and "
        f"{worker_control.RATE:g} a second in all"
    ) in text
    refusals = {3: "third"}[replies.REPLY_ATTEMPTS]  # spelt out in the text
    assert (
        f"`x-reqrep-refused: {replies.REPLY_ATTEMPTS - 1}` is refused (the {refusals} refusal"
        in text
    )


def test_the_protocol_describes_every_ping_field() -> None:
    rows = "\n".join(_table_rows(PROTOCOL))
    for field in dataclasses.fields(control.WorkerInfo):
        assert f"| `{field.name}` |" in rows, field.name
    text = PROTOCOL.read_text()
    for field in dataclasses.fields(ConsumerStats):
        assert f"`{field.name}`" in text, field.name
