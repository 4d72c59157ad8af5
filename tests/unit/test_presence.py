"""Unit tests of requestor._presence: the no-workers gate, with a fake check channel."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from reqrep.common._transport import Failure, QueueInfo
from reqrep.common.errors import NoSuchService, NoWorkers, ReqrepError
from reqrep.requestor._presence import DEFAULT_MEMORY, WorkerPresence


class FakeChannel:
    def __init__(self) -> None:
        self.asked: list[tuple[str, Callable[[QueueInfo], None]]] = []
        self.closed: Callable[[Any, Failure], None] | None = None

    def on_close(self, fn: Callable[[Any, Failure], None]) -> None:
        self.closed = fn

    def declare_queue(
        self, queue: str, *, passive: bool, on_ok: Callable[[QueueInfo], None]
    ) -> None:
        assert passive
        self.asked.append((queue, on_ok))

    def answer(self, consumers: int) -> None:
        queue, on_ok = self.asked.pop(0)
        on_ok(QueueInfo(queue, 0, consumers))

    def close(self, code: int) -> None:
        assert self.closed is not None
        self.closed(self, Failure(f"{code} closed", code=code, by_broker=True))


class Harness:
    def __init__(self) -> None:
        self.channels: list[FakeChannel] = []
        self.later: list[tuple[float, Callable[[], None]]] = []
        self.sent: list[str] = []
        self.failed: list[tuple[str, ReqrepError]] = []
        self.presence = WorkerPresence(self._open, lambda d, fn: self.later.append((d, fn)))

    def _open(self, on_open: Callable[[Any], None]) -> None:
        channel = FakeChannel()
        self.channels.append(channel)
        on_open(channel)

    def call(self, name: str, queue: str = "q") -> None:
        self.presence.gate(
            queue,
            f"svc-{queue}",
            lambda: self.sent.append(name),
            lambda error: self.failed.append((name, error)),
        )

    @property
    def channel(self) -> FakeChannel:
        return self.channels[-1]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_calls_wait_for_one_check_then_go(h: Harness) -> None:
    h.call("a")
    h.call("b")
    assert h.sent == []
    assert len(h.channel.asked) == 1
    h.channel.answer(consumers=2)
    assert h.sent == ["a", "b"]


def test_a_positive_answer_is_trusted_for_the_ttl(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    h.call("a")
    h.channel.answer(consumers=1)
    now[0] += 0.2
    h.call("b")  # fresh: sent at once, nothing asked
    assert h.sent == ["a", "b"]
    assert h.channel.asked == []
    now[0] += 0.5
    h.call("c")  # past half the ttl: sent at once, and refreshed in the background
    assert h.sent[-1] == "c"
    assert len(h.channel.asked) == 1
    h.channel.answer(consumers=1)
    now[0] += 1.5
    h.call("d")  # expired: waits for a check
    assert h.sent[-1] == "c"
    h.channel.answer(consumers=1)
    assert h.sent[-1] == "d"


def test_no_consumers_fails_each_waiting_call_and_is_not_cached(h: Harness) -> None:
    h.call("a")
    h.call("b")
    h.channel.answer(consumers=0)
    assert [name for name, _ in h.failed] == ["a", "b"]
    assert all(isinstance(error, NoWorkers) for _, error in h.failed)
    assert h.failed[0][1].service == "svc-q"  # type: ignore[attr-defined]
    h.call("c")
    assert len(h.channel.asked) == 1  # asked again
    h.channel.answer(consumers=1)
    assert h.sent == ["c"]


def test_a_missing_queue_fails_its_calls_and_the_others_are_asked_again(h: Harness) -> None:
    h.call("a", queue="gone")
    h.call("b", queue="here")
    first = h.channel
    first.close(404)  # the broker refused the first question: no such queue
    assert [(n, type(e)) for n, e in h.failed] == [("a", NoSuchService)]
    assert h.channel is not first
    assert [q for q, _ in h.channel.asked] == ["here"]
    h.channel.answer(consumers=1)
    assert h.sent == ["b"]


def test_a_lost_connection_releases_waiting_calls_to_the_request_path(h: Harness) -> None:
    h.call("a")
    h.presence.reset()
    assert h.sent == ["a"]  # the request path holds it until the next connection
    h.call("b")
    assert len(h.channels) == 2  # a new check channel on the next use


def test_no_connection_releases_calls_on_a_later_turn() -> None:
    later: list[Callable[[], None]] = []
    sent: list[str] = []

    def refuse(_on_open: Callable[[Any], None]) -> None:
        raise RuntimeError("no connection")

    presence = WorkerPresence(refuse, lambda _delay, fn: later.append(fn))
    presence.gate("q", "s", lambda: sent.append("a"), lambda _e: None)
    assert sent == []
    assert len(later) == 1
    later.pop()()
    assert sent == ["a"]


def test_after_a_reconnection_no_consumers_is_asked_again_for_a_grace_period(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    h.presence.recovered(grace=2.0)
    h.call("a")
    h.channel.answer(consumers=0)  # the workers have not reconnected yet
    assert h.failed == []
    assert len(h.later) == 1
    delay, again = h.later.pop()
    now[0] += delay
    again()
    h.channel.answer(consumers=1)
    assert h.sent == ["a"]
    now[0] += DEFAULT_MEMORY + 1  # grace over, and nobody seen for longer: no consumers fails
    h.call("b")
    h.channel.answer(consumers=0)
    assert [name for name, _ in h.failed] == ["b"]


def test_a_queue_seen_with_consumers_lately_is_asked_again_not_failed(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quorum queue without a leader (an election, a lost quorum) is reported with 0
    consumers while its workers are there: the calls wait for them, within their deadline."""
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    h.call("a")
    h.channel.answer(consumers=1)
    now[0] += 5  # past the ttl: the next call is checked
    h.call("b")
    h.channel.answer(consumers=0)  # the leader's node went away
    assert h.failed == []
    delay, again = h.later.pop()
    now[0] += delay
    again()
    h.channel.answer(consumers=2)  # a new leader, the workers back
    assert h.sent == ["a", "b"]


def test_no_consumers_for_longer_than_the_memory_is_no_workers(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    h.call("a")
    h.channel.answer(consumers=1)
    now[0] += 5
    h.call("b")
    for _ in range(1000):  # bounded: asked again every RECHECK until the memory passes
        h.channel.answer(consumers=0)
        if h.failed:
            break
        delay, again = h.later.pop()
        now[0] += delay
        again()
    assert [(name, type(error)) for name, error in h.failed] == [("b", NoWorkers)]
    assert now[0] >= 100.0 + DEFAULT_MEMORY
