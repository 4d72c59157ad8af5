"""ConnectionThread without a broker: its guards and the errors it builds from settings."""

from __future__ import annotations

import pytest

from reqrep.common import ConfigError, Settings
from reqrep.common.connection import ConnectionThread, State


def test_a_bad_url_error_does_not_quote_ssl_options() -> None:
    url = "amqps://u:pw@host/?ssl_options={'password':'k3y'}&ssl_options={'password':'k3y'}"
    with pytest.raises(ConfigError) as info:
        ConnectionThread(Settings(url=url), name="t")
    assert "k3y" not in str(info.value)


def test_a_guarded_callback_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_frame: object) -> None:
        raise RuntimeError("bug in a callback")

    ConnectionThread(Settings(), name="t").guarded(boom)("frame")
    assert "bug in a callback" in caplog.text


class _Loop:
    """Stands in for pika's IOLoop: records the wake-ups ``submit`` asks for."""

    def __init__(self) -> None:
        self.wakeups: list[object] = []

    def add_callback_threadsafe(self, fn: object) -> None:
        self.wakeups.append(fn)


def _open_thread() -> tuple[ConnectionThread, _Loop]:
    io = ConnectionThread(Settings(), name="t")
    loop = _Loop()
    io._ioloop = loop
    io._state = State.OPEN
    return io, loop


def test_tasks_submitted_while_a_batch_runs_need_no_wakeup_of_their_own() -> None:
    io, loop = _open_thread()
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        io.submit(lambda: ran.append("second"))  # e.g. a caller thread, meanwhile

    io.submit(first)
    assert len(loop.wakeups) == 1
    io._run_tasks()
    assert ran == ["first", "second"]
    assert len(loop.wakeups) == 1  # the second task rode on the first one's wake-up
    io.submit(lambda: ran.append("third"))  # the batch is over: this one wakes the loop
    assert len(loop.wakeups) == 2


def test_a_stream_of_tasks_lets_the_loop_read_in_between_and_loses_none() -> None:
    io, loop = _open_thread()
    ran: list[int] = []

    def chain(n: int) -> None:
        ran.append(n)
        if n < 10:
            io.submit(lambda: chain(n + 1))

    io.submit(lambda: chain(1))
    while loop.wakeups:  # what pika's loop would do: run each wake-up's callback
        loop.wakeups.pop(0)()  # type: ignore[operator]
    assert ran == list(range(1, 11))
