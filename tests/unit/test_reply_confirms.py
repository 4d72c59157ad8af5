"""ReplyPublisher's confirm bookkeeping, without a broker (white box): a confirm settles the
requests of exactly the replies it covers, in publishing order."""

from __future__ import annotations

from typing import Any

import pika.spec

from reqrep.common import Settings
from reqrep.common._attempts import State
from reqrep.worker.replies import ReplyPublisher


class _Channel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("publish", args[1]))

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.calls.append(("ack", (tag, multiple)))

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.calls.append(("nack", (tag, requeue)))

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        self.calls.append(("reject", (tag, requeue)))


class _Loop:
    def call_later(self, _delay: float, _fn: Any) -> None:
        """The test flushes the acks itself."""


class _Frame:
    def __init__(self, method: Any) -> None:
        self.method = method


def _publisher() -> tuple[ReplyPublisher, _Channel]:
    publisher = ReplyPublisher(Settings(persistent=True), name="t")
    channel = _Channel()
    publisher.channel = channel
    publisher._ioloop = _Loop()
    publisher._state = State.OPEN
    for request_tag in (11, 12, 13, 14):
        publisher._unsettled.add(request_tag)
        publisher._publish_reply(request_tag, "reply-queue", f"cid-{request_tag}", b"{}")
    return publisher, channel


def test_a_multiple_ack_settles_the_replies_up_to_its_tag_and_no_more() -> None:
    publisher, channel = _publisher()

    publisher._on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=2, multiple=True)))
    publisher._flush_acks()

    assert sorted(publisher._reply_for) == [3, 4]
    assert ("ack", (12, True)) in channel.calls  # requests 11 and 12, in one frame
    assert publisher._unsettled == {13, 14}
    assert publisher.stats.replied == 2


def test_a_single_ack_and_a_multiple_nack_settle_their_own_replies() -> None:
    publisher, channel = _publisher()

    publisher._on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=3, multiple=False)))
    publisher._on_confirm(_Frame(pika.spec.Basic.Nack(delivery_tag=2, multiple=True)))
    publisher._flush_acks()

    assert sorted(publisher._reply_for) == [4]
    assert ("nack", (11, True)) in channel.calls  # refused replies: their requests run again
    assert ("nack", (12, True)) in channel.calls
    assert ("ack", (13, False)) in channel.calls
    assert publisher._unsettled == {14}
