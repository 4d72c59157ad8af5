"""The worker's reply side (``worker/replies.py``), without a broker (white box): a confirm
settles the requests of exactly the replies it covers, in publishing order, and a refused reply
sends its request round again with the count on the message, at most REPLY_ATTEMPTS times in
all, whichever process refused the earlier ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reqrep.common import Settings
from reqrep.common._transport import Confirm, Delivery, Properties
from reqrep.common.observe import Probe
from reqrep.worker.replies import REFUSED_HEADER, REPLY_ATTEMPTS, ConsumerStats, Replies


class _Channel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.is_open = True

    def publish(
        self, exchange: str, key: str, body: bytes, properties: Properties, **_kw: Any
    ) -> None:
        self.calls.append(("publish", (key, properties)))

    def ack(self, tag: int, *, multiple: bool = False) -> None:
        self.calls.append(("ack", (tag, multiple)))

    def nack(self, tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        self.calls.append(("nack", (tag, requeue)))

    def reject(self, tag: int, *, requeue: bool) -> None:
        self.calls.append(("reject", (tag, requeue)))

    def on_return(self, _fn: Any) -> None:
        pass


class _Link:
    """What Replies reads of its Link: the channel and its generation; timers are run by hand."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.generation = 1
        self.is_open = True
        self.batching = False
        self.connection = None

    def call_later(self, _delay: float, _fn: Callable[[], None]) -> None:
        """The test flushes the acks itself."""

    def guarded(self, fn: Any) -> Any:
        return fn


def _request(tag: int, refused: int | None = None) -> Delivery:
    headers = {} if refused is None else {REFUSED_HEADER: refused}
    properties = Properties(correlation_id=f"cid-{tag}", reply_to="reply-queue", headers=headers)
    return Delivery(tag, False, "", "reqrep.svc", properties, b'"payload"')


def _replies() -> tuple[Replies, _Channel]:
    channel = _Channel()
    replies = Replies(
        _Link(channel),  # type: ignore[arg-type]  # a stand-in with what Replies reads
        Settings(persistent=True),
        "reqrep.svc",
        stats=ConsumerStats(),
        probe=Probe("worker", observers=()),
        on_settled=lambda: None,
    )
    for request_tag in (11, 12, 13, 14):
        replies.unsettled.add(request_tag)
        replies.publish(
            request_tag, "reply-queue", f"cid-{request_tag}", b"{}", request=_request(request_tag)
        )
    return replies, channel


def test_a_multiple_ack_settles_the_replies_up_to_its_tag_and_no_more() -> None:
    replies, channel = _replies()

    replies.on_confirm(Confirm(2, multiple=True, ack=True))
    replies.flush_acks()

    assert sorted(replies._pending) == [3, 4]
    assert ("ack", (12, True)) in channel.calls  # requests 11 and 12, in one frame
    assert replies.unsettled == {13, 14}
    assert replies.stats.replied == 2


def test_a_single_ack_and_a_multiple_nack_settle_their_own_replies() -> None:
    replies, channel = _replies()

    replies.on_confirm(Confirm(3, multiple=False, ack=True))
    replies.on_confirm(Confirm(2, multiple=True, ack=False))
    replies.flush_acks()

    # Refused replies: their requests go round again (copies), acked once the copies are kept.
    copies = [c for c in channel.calls if c[0] == "publish" and c[1][0] == "reqrep.svc"]
    assert [c[1][1].headers[REFUSED_HEADER] for c in copies] == [1, 1]
    assert ("ack", (13, False)) in channel.calls
    assert replies.unsettled == {11, 12, 14}
    replies.on_confirm(Confirm(5, multiple=False, ack=True))  # the two copies are in the queue
    replies.on_confirm(Confirm(6, multiple=False, ack=True))
    replies.flush_acks()
    assert replies.unsettled == {14}
    assert replies.stats.replies_refused == 2


def test_a_request_refused_in_other_processes_is_dead_lettered_here() -> None:
    channel = _Channel()
    replies = Replies(
        _Link(channel),  # type: ignore[arg-type]  # a stand-in with what Replies reads
        Settings(persistent=True),
        "reqrep.svc",
        stats=ConsumerStats(),
        probe=Probe("worker", observers=()),
        on_settled=lambda: None,
    )
    replies.unsettled.add(21)
    # Two refusals before, somewhere: the count came with the message.
    replies.publish(21, "reply-queue", "cid-21", b"{}", request=_request(21, REPLY_ATTEMPTS - 1))

    replies.on_confirm(Confirm(1, multiple=False, ack=False))

    assert ("reject", (21, False)) in channel.calls  # dead-lettered, not sent round again
    assert replies.stats.refused_dead_lettered == 1
    assert not [c for c in channel.calls if c[0] == "publish" and c[1][0] == "reqrep.svc"]
