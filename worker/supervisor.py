"""Run N worker processes under one command, forwarding stop signals to them.

The children are competing consumers of one request queue, exactly like N containers. Each runs
in its own session, so a Ctrl-C in the terminal reaches only the supervisor, which then asks
every child to drain (SIGTERM) once. A child that exits while the supervisor is not stopping is
restarted, with a growing delay if it keeps failing fast (e.g. the broker is down). A child
that exits with a code no restart can fix (``UNFIXABLE``: the broker refused the login, the vhost
or the set-up; bad arguments) stops them all: the supervisor exits with that code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from reqrep.common import exitcodes

__all__ = ["UNFIXABLE", "Supervisor"]

log = logging.getLogger("reqrep.supervisor")

_FAST_FAILURE = 5.0  # a child that dies sooner than this after starting counts as failing fast
_MAX_DELAY = 30.0
_TICK = 0.1  # seconds between looks at the children
UNFIXABLE = frozenset({exitcodes.BAD_ARGUMENTS, exitcodes.REFUSED})  # a restart fails the same way


class Supervisor:
    """Keeps ``count`` copies of ``argv`` running until told to stop.

    ``argv`` may be a function of the process's slot (0 to count - 1), for options that differ
    per process (e.g. each one's metrics port); a restarted process keeps its slot.

    Threads: main thread only (it installs signal handlers and reaps children).
    """

    def __init__(
        self,
        argv: Sequence[str] | Callable[[int], Sequence[str]],
        count: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._argv = argv
        self._count = count
        self._env = dict(os.environ if env is None else env)
        self._stopping = False  # main thread only: the signal handler never touches it
        # Set by the signal handler, which must take no lock: Event.set() (or logging) there can
        # deadlock the main thread if the signal lands while that thread holds the same lock.
        # The main loop acts on them within a tick (see _on_signals), as Worker.run does.
        self._signals: list[str] = []
        self._signals_seen = 0
        self._children: dict[int, tuple[int, subprocess.Popen[bytes], float]] = {}  # pid -> slot
        self._failures = [0] * count
        self._codes: list[int] = []
        self._restarts: dict[int, float] = {}  # slot -> when to start it again
        self._fatal: int | None = None  # the exit code that stopped everything

    def run(self) -> int:
        """Start the children, supervise them, and return 0 if all drained cleanly."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in range(self._count):
                self._spawn(slot)
            while self._children or (self._restarts and not self._stopping):
                self._on_signals()
                self._reap()
                self._restart_due()
                # A bounded sleep, not a blocking os.wait(): a signal that lands just before a
                # blocking call would only be handled once that call returns, maybe never.
                if len(self._signals) == self._signals_seen:
                    time.sleep(_TICK)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._fatal is not None:
            return self._fatal
        return 0 if self._codes and all(code == 0 for code in self._codes) else 1

    def _spawn(self, slot: int) -> None:
        argv = list(self._argv(slot) if callable(self._argv) else self._argv)
        proc = subprocess.Popen(argv, env=self._env, start_new_session=True)  # noqa: S603
        self._children[proc.pid] = (slot, proc, time.monotonic())
        log.info("started worker process %d (pid %d)", slot, proc.pid)

    def _reap(self) -> None:
        for pid, (slot, proc, started) in list(self._children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._children[pid]
            if self._stopping:
                log.info("worker process %d (pid %d) exited with %d", slot, pid, code)
                self._codes.append(code)
                continue
            if code in UNFIXABLE:
                self._give_up(slot, pid, code)
                continue
            fast = time.monotonic() - started < _FAST_FAILURE
            self._failures[slot] = self._failures[slot] + 1 if fast else 0
            delay = min(_MAX_DELAY, 0.5 * 2 ** self._failures[slot]) if fast else 0.0
            log.warning(
                "worker process %d (pid %d) exited with %d; restarting in %.1fs",
                slot,
                pid,
                code,
                delay,
            )
            self._restarts[slot] = time.monotonic() + delay

    def _give_up(self, slot: int, pid: int, code: int) -> None:
        log.error(
            "worker process %d (pid %d) exited with %d: a restart cannot fix that; not "
            "restarting, stopping the other worker processes",
            slot,
            pid,
            code,
        )
        self._fatal = code
        self._stopping = True
        self._terminate_children()

    def _restart_due(self) -> None:
        if self._stopping:
            self._restarts.clear()
            return
        now = time.monotonic()
        for slot, when in list(self._restarts.items()):
            if when <= now:
                del self._restarts[slot]
                self._spawn(slot)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """The signal handler: it only records the signal (no lock, no logging, no I/O)."""
        self._signals.append(signal.Signals(signum).name)  # list.append takes no lock

    def _on_signals(self) -> None:
        """Act on the signals recorded since the last look (main thread)."""
        while self._signals_seen < len(self._signals):
            name = self._signals[self._signals_seen]
            self._signals_seen += 1
            again = self._stopping
            self._stopping = True
            # A second signal is passed on too: a child that gets a second one exits at once.
            log.info(
                "%s: %s %d worker processes",
                name,
                "stopping" if not again else "forcing",
                len(self._children),
            )
            self._terminate_children()

    def _terminate_children(self) -> None:
        for _slot, proc, _started in self._children.values():
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                proc.send_signal(signal.SIGTERM)
