"""The supervisor's signal handling, without a broker: the children are plain Python processes.

The handler runs on the main thread between two bytecodes, maybe while that thread holds a lock
(an Event's, a logging handler's); taking the same lock there deadlocks the process. So the handler
only records the signal, and the main loop forwards it (as ``Worker.run`` does).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from reqrep.worker.supervisor import Supervisor


class FakeChild:
    """Stands in for a ``Popen``: records the signals sent to it."""

    pid = 424242

    def __init__(self) -> None:
        self.signals: list[int] = []

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)

    def poll(self) -> int | None:
        return None


def _supervisor_with_a_fake_child() -> tuple[Supervisor, FakeChild]:
    supervisor = Supervisor([sys.executable, "-c", "pass"], 1)
    child = FakeChild()
    supervisor._children[child.pid] = (0, child, time.monotonic())  # type: ignore[assignment]
    return supervisor, child


def test_the_signal_handler_calls_into_no_lock_logging_or_threading() -> None:
    """Every call made while the handler runs is traced: none may take a lock or log."""
    supervisor, child = _supervisor_with_a_fake_child()
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            calls.append(getattr(arg, "__qualname__", repr(arg)))
        elif event == "call":
            calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        supervisor._on_signal(signal.SIGTERM, None)
    finally:
        sys.setprofile(None)
    forbidden = [
        call
        for call in calls
        if "acquire" in call
        or "lock" in call.lower()
        or os.sep + "threading.py" in call
        or os.sep + "logging" + os.sep in call
    ]
    assert forbidden == [], calls
    assert child.signals == []  # forwarded by the main loop, not by the handler


def test_the_main_loop_forwards_each_signal_once_and_a_second_one_forces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor, child = _supervisor_with_a_fake_child()
    caplog.set_level(logging.INFO, logger="reqrep.supervisor")
    supervisor._on_signal(signal.SIGINT, None)
    assert caplog.records == []  # nothing logged from inside the handler
    supervisor._on_signals()
    assert child.signals == [signal.SIGTERM]
    supervisor._on_signals()  # nothing new: nothing sent again
    assert child.signals == [signal.SIGTERM]
    supervisor._on_signal(signal.SIGTERM, None)
    supervisor._on_signals()
    assert child.signals == [signal.SIGTERM, signal.SIGTERM]
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "SIGINT: stopping 1 worker processes",
        "SIGTERM: forcing 1 worker processes",
    ]


@pytest.mark.timeout(30)
def test_a_real_sigterm_drains_the_children_and_run_returns_0(tmp_path: Path) -> None:
    """SIGTERM sent to this process while ``run()`` supervises two children that exit 0 on it."""
    child = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"pathlib.Path({str(tmp_path)!r}, str(sys.argv[1])).touch()\n"
        "time.sleep(25)\n"
        "sys.exit(3)\n"
    )
    supervisor = Supervisor(lambda slot: [sys.executable, "-c", child, str(slot)], 2)

    def signal_once_both_are_ready() -> None:
        deadline = time.monotonic() + 20
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=signal_once_both_are_ready, daemon=True)
    sender.start()
    assert supervisor.run() == 0  # they exited on SIGTERM (0), not after sleeping (3)
    sender.join(5)
