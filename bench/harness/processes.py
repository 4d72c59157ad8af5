"""Child processes of a benchmark: started in their own session, their output read on threads,
stopped for sure (SIGTERM, then SIGKILL); and the CPU time they (and the broker) use."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.cases import MEASURE_END_TEXT, MEASURE_START_TEXT

log = logging.getLogger("reqrep.bench.harness")

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TEXT = "worker ready"
READY_TIMEOUT = 30.0
"""Seconds for a server to say it is ready."""
STOP_GRACE = 5.0
"""After SIGTERM, seconds before SIGKILL."""
CLIENT_SLACK = 30.0
"""Seconds a client may take beyond warm-up + window + drain (start-up, connect, report)."""
REQREP_ENV = ("REQREP_QUEUE_TYPE", "REQREP_PERSISTENT", "REQREP_QUEUE_PREFIX")
"""reqrep settings a benchmark clears from its environment before setting its own."""


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc; None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    try:
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


_broker_pid: int | None = None


def find_broker_pid() -> int | None:
    """The pid of the local broker's Erlang VM (``beam.smp``), if there is one we can see."""
    global _broker_pid  # noqa: PLW0603 - a cache: the scan of /proc is not free
    if _broker_pid is not None and Path(f"/proc/{_broker_pid}").exists():
        return _broker_pid
    _broker_pid = None
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if not name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{name}/comm").read_text().strip()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes() if comm == "beam.smp" else b""
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if b"rabbit" in cmdline:
            _broker_pid = int(name)
            break
    return _broker_pid


class Child:
    """A child process whose stdout and stderr are read on threads (the pipes never fill).

    ``ready`` is set when a line containing ``ready_text`` appears on either stream; ``on_line``
    sees every stdout line. The child runs in its own session, so a Ctrl-C in the terminal is
    ours to handle; ``stop()`` ends it (SIGTERM, then SIGKILL to its whole process group).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        ready_text: str | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.ready = threading.Event()
        self._ready_text = ready_text
        self._on_line = on_line
        self.stdout: list[str] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            list(argv),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: Any, is_stdout: bool) -> None:
        if stream is None:
            return
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                line = raw.rstrip("\n")
                if is_stdout:
                    self.stdout.append(line)
                    if self._on_line is not None:
                        self._on_line(line)
                else:
                    self.stderr_tail.append(line)
                if self._ready_text and not self.ready.is_set() and self._ready_text in line:
                    self.ready.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> bool:
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if self.ready.wait(0.1):
                return True
            if not self.alive():
                return False
        return self.ready.is_set()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def cpu_seconds(self) -> float | None:
        return _proc_cpu_seconds(self.pid)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait up to ``grace``, then SIGKILL the process group; reap; close pipes."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            if self.wait(grace) is None:
                log.warning("%s (pid %d) ignored SIGTERM: killing it", self.name, self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # its session's group: it and any children
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.wait(5.0)
        for reader in self._readers:
            reader.join(2.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def result_line(self) -> dict[str, Any] | None:
        """The last JSON object the child printed on stdout."""
        for line in reversed(self.stdout):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        return value
        return None

    def describe(self) -> str:
        err = "\n".join(f"    {line}" for line in list(self.stderr_tail)[-12:])
        return f"{self.name} pid {self.pid} exit {self.proc.returncode}; stderr tail:\n{err}"


class CpuSampler:
    """Samples the CPU time of some processes when the client announces its window's edges."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self._start: dict[str, float | None] = {}
        self._end: dict[str, float | None] = {}

    def on_line(self, line: str) -> None:
        if line == MEASURE_START_TEXT:
            self._start = {name: _proc_cpu_seconds(pid) for name, pid in self.pids.items()}
        elif line == MEASURE_END_TEXT:
            self._end = {name: _proc_cpu_seconds(pid) for name, pid in self.pids.items()}

    def used(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in self.pids:
            start, end = self._start.get(name), self._end.get(name)
            out[name] = None if start is None or end is None else max(0.0, end - start)
        return out


def base_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AMQP_URL"] = url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
