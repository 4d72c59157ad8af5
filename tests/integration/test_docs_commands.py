"""Every command of the documents, run as written.

README.md, CONTRIBUTING.md, CHANGELOG.md and docs/*.md: each command of a ```` ```sh ```` block
and each ```` ```python ```` block that is a program runs against the test broker. The
conventions (``# prints X``, ``# exit N``, ``# serves NAME``, files named ``# NAME.py``,
``<!-- fragment -->``) are in CONTRIBUTING.md, "Documents"; ``tests/unit/doc_text.py`` reads
them.

Where a block runs:

- a block that makes ``.venv`` (``python3 -m venv .venv ...``) runs in a fresh copy of the
  checkout, as in a user's clone;
- a block that uses a file its document defines (``python billing.py``) runs in a scratch
  directory holding those files, with ``.venv`` linked to the venv that runs the tests;
- python programs run in that scratch directory too; any other block at the repository root.

Each block has a queue prefix of its own (``REQREP_QUEUE_PREFIX``) and, unless one of its
commands serves ``demo``, a demo worker in this process under that prefix; its queues and
exchanges are deleted afterwards. A background command (``# serves NAME``) runs until the end of
its block, is waited for until its service's queue has its consumers (never for a fixed time),
then gets SIGTERM and must exit 0.

What is not run is in ``SKIPS``, each with its reason, and each skipped command shows as a
skipped test of its own (``test_a_skipped_command_says_why``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pika.exceptions
import pytest

from reqrep.common import DEFAULT_URL, Settings
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, wait_until
from tests.unit.doc_text import ROOT, Block, Command, blocks, commands, documents, files

COMMAND_TIMEOUT = 120.0  # seconds any one command may take (the chaos run takes about 30)
READY_TIMEOUT = 30.0  # seconds a background command has to consume its queue
STOP_TIMEOUT = 45.0  # seconds it has to exit after SIGTERM (a worker drains for up to 30)


@dataclasses.dataclass(frozen=True)
class Where:
    """What a skip may depend on: the test's broker and machine, and where a block runs."""

    url: str
    rabbitmqctl: bool  # rabbitmqctl manages the test broker from here
    own_venv: bool  # ROOT/.venv is the venv running these tests
    at_root: bool  # the block runs at the repository root


@dataclasses.dataclass(frozen=True)
class Skip:
    """A command (or program) not run: ``pattern`` matches the command as written, ``uses`` the
    code it runs; ``when`` limits the skip to some machines; ``rest`` skips the rest of its
    block too; ``check_help`` checks its options against its ``--help`` instead of running it."""

    reason: str
    pattern: str | None = None
    uses: str | None = None
    when: Callable[[Where], bool] | None = None
    rest: bool = False
    check_help: bool = False


# Everything the documents show that this test does not run, and why.
SKIPS = (
    Skip(
        "needs a Docker engine: scripts/compose-e2e.sh runs the compose stack for real",
        pattern=r"^docker compose ",
    ),
    Skip("runs this test suite: it would recurse", pattern=r"^bash scripts/test\.sh\b"),
    Skip(
        "scripts/test.sh runs these checks before pytest",
        pattern=r"^\.venv/bin/(ruff |python scripts/typecheck\.py|python -m pytest )",
    ),
    Skip(
        "makes the environment these tests run in (scripts/test.sh does the same)",
        pattern=r"^python3 -m venv \.venv && \.venv/bin/pip install -q -e '\.\[dev\]'$",
    ),
    Skip(
        "installs the released package from an index; README's 'Without Docker' block installs "
        "this checkout instead",
        pattern=r"^pip install reqrep$",
    ),
    Skip(
        "would reinstall the package under test into the venv running the tests; the dev extra "
        "already has the bench extra",
        pattern=r"pip install -e '\.\[bench\]'",
    ),
    Skip(
        "takes many minutes and rewrites the committed charts; its options are checked against "
        "its --help",
        pattern=r"-m bench\.(suite|scaling) ",
        check_help=True,
    ),
    Skip(
        "takes many minutes (two runs per property and round); its options are checked "
        "against its --help",
        pattern=r"-m bench\.props ",
        check_help=True,
    ),
    Skip(
        "needs a 3-node cluster named rabbit1-3 (tests/cluster/ runs the cluster scenarios)",
        pattern=r"^export AMQP_URL=.*rabbit1",
        rest=True,
    ),
    Skip(
        "the chaos run's fault proxy fronts 127.0.0.1:5672 (or --url), not the test broker",
        pattern=r"-m bench\.chaos ",
        when=lambda where: where.url != DEFAULT_URL,
    ),
    Skip(
        "rabbitmqctl cannot manage the test broker from here (root, and the broker on this "
        "machine)",
        pattern=r"^rabbitmqctl ",
        when=lambda where: not where.rabbitmqctl,
    ),
    Skip(
        "the documents' .venv is not the venv running these tests: run them through "
        "scripts/test.sh",
        pattern=r"(^|\s)\.venv/bin/",
        when=lambda where: where.at_root and not where.own_venv,
    ),
)

# Commands that fail for a bug in the product, not in the document: (pattern, where the block
# runs, the bug). Their blocks are expected to fail; strictly, so that a fix is noticed and the
# entry removed.
KNOWN_BUGS: tuple[tuple[str, str, str], ...] = ()

_MAKES_VENV = re.compile(r"^python3 -m venv \.venv\b")
_SERVICE = re.compile(r"""Service\(\s*["']([\w.:-]+)["']""")
_PLAIN = re.compile(r"""PlainService\(\s*["']([\w.:-]+)["']""")  # queues named verbatim
_USER = re.compile(r"^rabbitmqctl set_permissions -p \S+ (\S+) ")


# -- what the documents hold --------------------------------------------------------------------


def _runnable(block: Block) -> bool:
    return block.lang == "sh" or (
        block.lang == "python" and not block.fragment and block.file_name is None
    )


RUNNABLE = [b for path in documents() for b in blocks(path) if _runnable(b)]


def _known_bug(block: Block) -> str | None:
    texts = [c.text for c in commands(block)] if block.lang == "sh" else []
    for pattern, place, bug in KNOWN_BUGS:
        if _place(block) == place and any(re.search(pattern, t) for t in texts):
            return bug
    return None


def _params() -> list[object]:
    params: list[object] = []
    for block in RUNNABLE:
        bug = _known_bug(block)
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug)] if bug else []
        params.append(pytest.param(block, id=block.where, marks=marks))
    return params


def _code(command: Command) -> str:
    """What a command runs: its text, and the text of the document's files it names."""
    named = files(command.block.path)
    return "\n".join(
        [command.text, *(b.text for name, b in named.items() if _mentions(command, name))]
    )


def _mentions(command: Command, name: str) -> bool:
    return re.search(rf"(^|[\s/]){re.escape(name)}\b", command.text) is not None


def _matches(skip: Skip, text: str, code: str) -> bool:
    if skip.pattern is not None and not re.search(skip.pattern, text):
        return False
    return skip.uses is None or re.search(skip.uses, code) is not None


def _decide(items: list[tuple[str, str]], where: Where | None) -> list[Skip | None]:
    """The skip (or None) of each (text, code) of one block, in order; ``where`` None: any
    skip that could apply on some machine (for collection)."""
    decided: list[Skip | None] = []
    carried: Skip | None = None
    for text, code in items:
        if carried is not None:
            decided.append(carried)
            continue
        found = next(
            (
                s
                for s in SKIPS
                if _matches(s, text, code) and (where is None or s.when is None or s.when(where))
            ),
            None,
        )
        if found is not None and found.rest:
            carried = dataclasses.replace(
                found, reason=f"follows a skipped command: {found.reason}"
            )
        decided.append(found)
    return decided


def _items(block: Block) -> list[tuple[str, str]]:
    if block.lang == "sh":
        return [(c.text, _code(c)) for c in commands(block)]
    return [("", block.text)]


def _place(block: Block) -> str:
    """``copy`` (a fresh checkout), ``scratch`` (the document's files) or ``root``."""
    if block.lang == "python":
        return "scratch"
    texts = [c.text for c in commands(block)]
    if any(_MAKES_VENV.match(t) for t in texts):
        return "copy"
    named = files(block.path)
    if any(_mentions(c, name) for c in commands(block) for name in named):
        return "scratch"
    return "root"


def _may_skip() -> list[tuple[Block, int]]:
    """(block, index) of every command or program some skip could apply to somewhere."""
    return [
        (block, i)
        for block in RUNNABLE
        for i, skip in enumerate(_decide(_items(block), None))
        if skip is not None
    ]


# -- the machine --------------------------------------------------------------------------------


def _rabbitmqctl_works(url: str) -> bool:
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost") or not shutil.which("rabbitmqctl"):
        return False
    try:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_users"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0


def _users() -> set[str]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_users"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return {line.split("\t")[0] for line in out.splitlines()[1:] if line.strip()}


@pytest.fixture(scope="module")
def machine(amqp_url: str) -> Where:
    own = (ROOT / ".venv").resolve() == Path(sys.prefix).resolve()
    return Where(
        url=amqp_url,
        rabbitmqctl=_rabbitmqctl_works(amqp_url),
        own_venv=own,
        at_root=False,
    )


# -- running a block ----------------------------------------------------------------------------


class BlockRun:
    """One block's run: its place, environment, prefix, background processes and clean-up."""

    def __init__(self, block: Block, where: Where, admin: Admin, scratch: Path) -> None:
        self.block = block
        self.where = where
        self.admin = admin
        self.scratch = scratch  # logs, and the place of files and programs
        self.prefix = f"docs-{uuid.uuid4().hex[:10]}."
        self.place = _place(block)
        self.cwd = {"root": ROOT, "scratch": scratch, "copy": scratch / "checkout"}[self.place]
        self.background: list[tuple[Command, subprocess.Popen[bytes], Path]] = []
        self.users: list[str] = []
        self.dead_letter_sent = False
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REQREP_", "PYTEST_")) or k == "REQREP_PIKA_FASTPATH"
        }
        self.env.update(
            AMQP_URL=where.url,
            REQREP_QUEUE_PREFIX=self.prefix,
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.place == "copy":
            _copy_checkout(self.cwd)
        elif self.place == "scratch":
            for name, file_block in files(block.path).items():
                (scratch / name).write_text(file_block.text, encoding="utf-8")
            (scratch / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)

    def _code(self) -> str:
        return "\n".join(b.text for b in blocks(self.block.path) if b.lang == "python")

    def plain_queues(self) -> set[str]:
        """The queues of the document's plain services: named verbatim, under no prefix."""
        return set(_PLAIN.findall(self._code()))

    def services(self) -> set[str]:
        """Every service whose queues this block may have made (for the clean-up)."""
        names = {"demo", *_SERVICE.findall(self._code())}
        if self.block.lang == "sh":
            names |= {c.serves for c in commands(self.block) if c.serves}
        return names

    def run(self, command: Command) -> None:
        if user := _USER.match(command.text):
            self._add_user(user.group(1))
        if re.search(r"\breqrep dlq ", command.text) and not self.dead_letter_sent:
            self._send_a_dead_letter()
        if command.background:
            self._start(command)
            return
        done = self._finish(["bash", "-c", command.program])
        assert done.returncode == command.exit_status, (
            f"{command.where}: `{command.text}` exited {done.returncode}, "
            f"the document says {command.exit_status}{_said(done)}"
        )
        if command.prints is not None:
            assert done.stdout.strip() == command.prints, (
                f"{command.where}: `{command.text}` should print {command.prints!r}{_said(done)}"
            )

    def run_program(self) -> None:
        program = self.cwd / f"example_{self.block.line}.py"
        program.write_text(self.block.text, encoding="utf-8")
        done = self._finish([sys.executable, program.name])
        assert done.returncode == 0, (
            f"{self.block.where}: the program exited {done.returncode}{_said(done)}"
        )

    def _finish(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` where the block runs, to its end (bounded), output captured."""
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def _start(self, command: Command) -> None:
        log = self.scratch / f"background-{command.line}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(  # the command as written; exec: the signal reaches it
                ["bash", "-c", f"exec {command.program}"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self.background.append((command, proc, log))
        served = command.serves or ""
        queue = served if served in self.plain_queues() else f"{self.prefix}{served}"

        def consuming() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{command.where}: `{command.text}` exited {proc.returncode} before it "
                    f"consumed {queue}:\n{_tail(log)}"
                )
            try:
                return self.admin.consumer_count(queue) >= command.processes
            except pika.exceptions.ChannelClosedByBroker:
                return False  # not declared yet

        wait_until(consuming, READY_TIMEOUT, f"{command.where} to consume {queue}")

    def stop_background(self) -> list[str]:
        """SIGTERM every background command, newest first; what went wrong, if anything."""
        problems = []
        for command, proc, log in reversed(self.background):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                problems.append(f"{command.where}: still running {STOP_TIMEOUT:g}s after SIGTERM")
                continue
            if status != 0:
                problems.append(f"{command.where}: exited {status} on SIGTERM:\n{_tail(log)}")
        self.background.clear()
        return problems

    def _send_a_dead_letter(self) -> None:
        """A request the demo worker cannot answer (no reply_to): it is dead-lettered."""
        self.dead_letter_sent = True
        queue = f"{self.prefix}demo"
        properties = pika.BasicProperties(
            type="echo",
            content_type="application/json",
            correlation_id="docs-dead-letter",
            message_id=uuid.uuid4().hex,
            delivery_mode=2,
        )
        self.admin.publish(queue, b'"a dead letter"', properties)
        wait_until(lambda: self.admin.message_count(f"{queue}.dead") >= 1, 30, "the dead letter")

    def _add_user(self, name: str) -> None:
        if name in self.users:
            return
        if name in _users():
            pytest.fail(f"the test broker has a user {name!r} already: the test will not touch it")
        _ctl("add_user", name, uuid.uuid4().hex)
        self.users.append(name)

    def clean_up(self) -> None:
        for name in self.users:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ctl("delete_user", name)
        for service in self.services():
            self.admin.delete_service_queues(self.prefix, service)
        for queue in self.plain_queues():
            self.admin.delete_queue(queue)
        for exchange in ("dlx", "control", "requests"):
            self.admin.delete_exchange(f"{self.prefix}{exchange}")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return f"\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _copy_checkout(target: Path) -> None:
    """The checkout as a user clones it: no venv, caches or build output."""
    left_out = {".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
    left_out |= {".hypothesis", "build", "dist", "results"}

    def ignore(_folder: str, names: list[str]) -> set[str]:
        return {
            n for n in names if n in left_out or n.startswith(".venv") or n.endswith(".egg-info")
        }

    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)


@contextlib.contextmanager
def _demo_worker(run: BlockRun) -> Iterator[None]:
    """The demo worker the documents assume, unless the block starts one itself."""
    own = run.block.lang == "sh" and any(c.serves == "demo" for c in commands(run.block))
    if own:
        yield
        return
    settings = Settings(url=run.where.url, queue_prefix=run.prefix, connect_timeout=10.0)
    with Worker(build("demo"), settings=settings, concurrency=4):
        yield


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("block", _params())
def test_a_block_runs_as_written(
    block: Block, machine: Where, admin: Admin, tmp_path: Path
) -> None:
    where = dataclasses.replace(machine, at_root=_place(block) == "root")
    skips = _decide(_items(block), where)
    if all(skips):
        pytest.skip("every command of this block is skipped: see test_a_skipped_command_says_why")
    run = BlockRun(block, where, admin, tmp_path)
    try:
        with _demo_worker(run):
            problems: list[str] = []
            try:
                if block.lang == "python":
                    run.run_program()
                else:
                    for command, skip in zip(commands(block), skips, strict=True):
                        if skip is None:
                            run.run(command)
            finally:
                problems = run.stop_background()
            assert not problems, "\n".join(problems)
    finally:
        run.clean_up()


@pytest.mark.parametrize(
    ("block", "index"), _may_skip(), ids=[f"{b.where}#{i + 1}" for b, i in _may_skip()]
)
def test_a_skipped_command_says_why(block: Block, index: int, machine: Where) -> None:
    where = dataclasses.replace(machine, at_root=_place(block) == "root")
    skip = _decide(_items(block), where)[index]
    if skip is None:
        return  # it runs here, in its block's test
    text = _items(block)[index][0]
    if skip.check_help:
        _check_options(text)
    at = commands(block)[index].where if block.lang == "sh" else block.where
    pytest.skip(f"{at} `{text or 'a python program'}`: {skip.reason}")


def _check_options(text: str) -> None:
    """Every ``--option`` of a ``python -m MODULE ...`` command is one its ``--help`` lists."""
    words = shlex.split(text)
    module = words[words.index("-m") + 1]
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for word in words:
        if word.startswith("--"):
            assert re.search(rf"{re.escape(word)}\b", shown), f"`{text}`: {module} has no {word}"


def test_every_skip_is_still_needed() -> None:
    """A skip that matches nothing in the documents is left over: remove it."""
    texts = [item for block in RUNNABLE for item in _items(block)]
    for skip in SKIPS:
        assert any(_matches(skip, text, code) for text, code in texts), skip.reason
