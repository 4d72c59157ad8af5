"""Link without a broker: its guards, its task queue, and the errors it builds from settings.

(Connecting, reconnecting, replacing channels and giving up run against the in-memory broker in
``test_link_faults.py``, and against RabbitMQ in the integration tests.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from reqrep.common import ConfigError, Settings
from reqrep.common._link import Link, LinkOwner, State
from reqrep.common._transport import pika_transport


class _Loop:
    """Stands in for a transport's loop: records the wake-ups ``submit`` asks for."""

    def __init__(self) -> None:
        self.wakeups: list[Callable[[], None]] = []

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self.wakeups.append(fn)


class _Owner(LinkOwner):
    def __init__(self) -> None:
        self.rounds = 0

    def after_tasks(self) -> None:
        self.rounds += 1


def _link(settings: Settings | None = None) -> Link:
    return Link(settings or Settings(), _Owner(), name="t", transport=pika_transport())


def test_a_bad_url_error_does_not_quote_ssl_options() -> None:
    url = "amqps://u:pw@host/?ssl_options={'password':'k3y'}&ssl_options={'password':'k3y'}"
    with pytest.raises(ConfigError) as info:
        _link(Settings(url=url))
    assert "k3y" not in str(info.value)


def test_a_guarded_callback_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_frame: object) -> None:
        raise RuntimeError("bug in a callback")

    _link().guarded(boom)("frame")
    assert "bug in a callback" in caplog.text


def _open_link() -> tuple[Link, _Loop, _Owner]:
    owner = _Owner()
    link = Link(Settings(), owner, name="t", transport=pika_transport())
    loop = _Loop()
    link._loop = loop  # type: ignore[assignment]  # white box: no thread, no connection
    link._state = State.OPEN
    return link, loop, owner


def test_tasks_submitted_while_a_batch_runs_need_no_wakeup_of_their_own() -> None:
    link, loop, owner = _open_link()
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        link.submit(lambda: ran.append("second"))  # e.g. a caller thread, meanwhile

    link.submit(first)
    assert len(loop.wakeups) == 1
    link._run_tasks()
    assert ran == ["first", "second"]
    assert len(loop.wakeups) == 1  # the second task rode on the first one's wake-up
    assert owner.rounds == 2  # the owner heard of each round (a worker sends its acks there)
    link.submit(lambda: ran.append("third"))  # the batch is over: this one wakes the loop
    assert len(loop.wakeups) == 2


def test_a_stream_of_tasks_lets_the_loop_read_in_between_and_loses_none() -> None:
    link, loop, _owner = _open_link()
    ran: list[int] = []

    def chain(n: int) -> None:
        ran.append(n)
        if n < 10:
            link.submit(lambda: chain(n + 1))

    link.submit(lambda: chain(1))
    while loop.wakeups:  # what the transport's loop would do: run each wake-up's callback
        loop.wakeups.pop(0)()
    assert ran == list(range(1, 11))


def test_a_failing_task_is_logged_and_the_rest_run(caplog: pytest.LogCaptureFixture) -> None:
    link, loop, _owner = _open_link()
    ran: list[Any] = []

    def boom() -> None:
        raise RuntimeError("bug in a task")

    link.submit(boom)
    link.submit(lambda: ran.append("after"))
    loop.wakeups.pop(0)()
    assert ran == ["after"]
    assert "bug in a task" in caplog.text


def test_work_is_refused_once_closed() -> None:
    link = _link()
    link.stop()
    assert link.state is State.CLOSED
    with pytest.raises(Exception, match="closed"):
        link.submit(lambda: None)
