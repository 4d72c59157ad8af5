"""The project's Markdown documents as the tests read them: code blocks, commands, links.

Shared by ``tests/unit/test_docs.py`` (what needs no broker) and
``tests/integration/test_docs_commands.py`` (which runs every command). The conventions a
document follows are in CONTRIBUTING.md, "Documents":

- a ```` ```sh ```` line is one command (a line ending in ``\\`` goes on); its comment may say
  ``prints X`` (the exact output), ``exit N`` (the exit status, default 0) or ``serves NAME``
  (it runs in the background and consumes the queue of service ``NAME``);
- a ```` ```python ```` block whose first line is ``# NAME.py`` is a file that the document's
  commands use; one with ``<!-- fragment -->`` on the line before is only parsed; any other runs
  as a program.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

__all__ = [
    "ROOT",
    "Block",
    "Command",
    "blocks",
    "commands",
    "documents",
    "files",
    "headings",
    "links",
    "relative",
    "slug",
]

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>```+)(?P<lang>[^`\s]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<marker>.*?)\s*-->\s*$")
_FILE_NAME = re.compile(r"^# (?P<name>[\w.-]+\.py)\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (?P<title>.+?)\s*$")


def documents() -> list[Path]:
    """Every document whose commands must run: README.md, CONTRIBUTING.md, CHANGELOG.md and
    docs/*.md (those that exist)."""
    top = [ROOT / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    return [p for p in top if p.exists()] + sorted((ROOT / "docs").glob("*.md"))


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block: its document, the line of its opening fence, its language."""

    path: Path
    line: int
    lang: str
    text: str
    marker: str | None  # the HTML comment on the line before the fence, if any

    @property
    def where(self) -> str:
        return f"{relative(self.path)}:{self.line}"

    @property
    def fragment(self) -> bool:
        return self.marker is not None and self.marker.split(":")[0].strip() == "fragment"

    @property
    def file_name(self) -> str | None:
        """``NAME.py`` for a python block that starts with ``# NAME.py``."""
        first = self.text.split("\n", 1)[0]
        found = _FILE_NAME.match(first) if self.lang == "python" else None
        return found.group("name") if found else None


@functools.cache
def blocks(path: Path) -> tuple[Block, ...]:
    """The fenced code blocks of a document, in order (a fence may be indented, in a list)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent, ticks = fence.group("indent"), fence.group("ticks")
        closing = re.compile(rf"^ {{0,3}}{ticks}`*\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = _MARKER.match(before)
        found.append(
            Block(
                path=path,
                line=i + 1,
                lang=fence.group("lang"),
                text="\n".join(body) + "\n",
                marker=marker.group("marker") if marker else None,
            )
        )
        i = j + 1
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class Command:
    """One command of a ```` ```sh ```` block, as written, and what its comment promises."""

    block: Block
    line: int
    text: str
    comment: str

    @property
    def where(self) -> str:
        return f"{relative(self.block.path)}:{self.line}"

    @property
    def exit_status(self) -> int:
        found = re.search(r"\bexit (\d+)\b", self.comment)
        return int(found.group(1)) if found else 0

    @property
    def prints(self) -> str | None:
        found = re.search(r"\bprints (.+)$", self.comment)
        return found.group(1).strip() if found else None

    @property
    def serves(self) -> str | None:
        """The service a background command serves (``# serves NAME``)."""
        found = re.search(r"\bserves (\S+)", self.comment)
        return found.group(1) if found else None

    @property
    def processes(self) -> int:
        found = re.search(r"--processes[ =](\d+)", self.text)
        return int(found.group(1)) if found else 1

    @property
    def background(self) -> bool:
        return self.serves is not None

    @property
    def program(self) -> str:
        """The command without a trailing ``&`` (the test puts it in the background itself)."""
        return self.text.removesuffix("&").rstrip()


def commands(block: Block) -> list[Command]:
    """The commands of a sh block: blank and comment lines skipped, continuations joined."""
    found: list[Command] = []
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        text, comment = split_comment(" ".join([*pending, line]))
        pending = []
        found.append(Command(block, start, text, comment))
    return found


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's command and its trailing comment (a ``#`` after a blank, outside quotes)."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:  # the character after a backslash (outside single quotes) is literal
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:].lstrip("#").strip()
    return line.rstrip(), ""


def files(path: Path) -> dict[str, Block]:
    """The files a document defines (python blocks that start with ``# NAME.py``)."""
    return {b.file_name: b for b in blocks(path) if b.file_name is not None}


def links(path: Path) -> list[tuple[int, str]]:
    """Every Markdown link and image target outside code blocks, with its line."""
    inside = _in_blocks(path)
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if number in inside:
            continue
        found += [(number, m.group("target")) for m in _LINK.finditer(line)]
    return found


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]", "", title.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> set[str]:
    """The anchors of a document's headings (outside code blocks)."""
    inside = _in_blocks(path)
    return {
        slug(m.group("title"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if number not in inside and (m := _HEADING.match(line))
    }


def _in_blocks(path: Path) -> set[int]:
    """The line numbers of a document's code blocks, fences included."""
    lines: set[int] = set()
    for block in blocks(path):
        lines.update(range(block.line, block.line + block.text.count("\n") + 2))
    return lines
