"""RequestorIO's handling of a lost connection and of nacks, without a broker (white box: the
calls are put in the states the I/O thread would have put them in)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

import pytest

from reqrep.common import CallTimeout, ConnectionLost, PublishRejected, Settings
from reqrep.common._link import State
from reqrep.common._transport import Confirm, Delivery, Properties, pika_transport
from reqrep.common.envelope import success_body
from reqrep.requestor._calls import CallState, ReplyHandler
from reqrep.requestor._io import NACK_CHANNEL_PAUSE, RequestorIO
from tests.unit.calls import expect, make_call


def _io() -> tuple[RequestorIO, ReplyHandler]:
    replies = ReplyHandler()
    return RequestorIO(Settings(), replies, name="t", transport=pika_transport()), replies


def _calls(
    replies: ReplyHandler, states: dict[str, tuple[CallState, int]]
) -> dict[str, Future[Any]]:
    futures = {}
    for tag, (cid, (state, retries)) in enumerate(states.items(), 1):
        futures[cid] = expect(replies, cid, deadline=time.monotonic() + 30)
        call = replies.get(cid)
        assert call is not None
        call.state, call.retries, call.tag = state, retries, tag
    return futures


def test_lost_connection_fails_only_what_it_stranded() -> None:
    """sent: failed; sent and retryable: held for resending; never sent: left alone."""
    io, replies = _io()
    futures = _calls(
        replies,
        {
            "sent": (CallState.SENT, 0),
            "retryable": (CallState.UNCONFIRMED, 1),
            "queued": (CallState.NEW, 0),
        },
    )

    io.on_lost(ConnectionLost("gone"))

    with pytest.raises(ConnectionLost, match="may or may not have been run"):
        futures["sent"].result(0)
    assert not futures["retryable"].done()
    assert not futures["queued"].done()
    retryable = replies.get("retryable")
    assert retryable is not None
    assert (retryable.state, retryable.retries) == (CallState.HELD, 0)
    assert replies.stats().pending == 2


def test_a_nack_fails_plain_calls_resends_retryable_ones_and_replaces_the_channel() -> None:
    io, replies = _io()
    futures = _calls(
        replies,
        {
            "plain": (CallState.UNCONFIRMED, 0),
            "retryable": (CallState.UNCONFIRMED, 2),
            "unconfirmed": (CallState.UNCONFIRMED, 1),
        },
    )
    io._unconfirmed.extend(c for c in (replies.get(k) for k in futures) if c is not None)
    later: list[tuple[float, Callable[[], None]]] = []
    replaced: list[bool] = []
    io.link.call_later = lambda delay, fn: later.append((delay, fn))  # type: ignore[method-assign]
    io.link.reopen_channel = lambda: replaced.append(True)  # type: ignore[method-assign]

    io._on_confirm(Confirm(2, multiple=True, ack=False))

    with pytest.raises(PublishRejected):
        futures["plain"].result(0)
    assert not futures["retryable"].done()
    assert not futures["unconfirmed"].done()  # its confirm dies with the channel: sent again
    assert replaced == [True]
    assert len(later) == 2
    assert all(0 < delay <= 1.0 for delay, _fn in later)
    assert {replies.get(c).state for c in ("retryable", "unconfirmed")} == {CallState.RETRYING}  # type: ignore[union-attr]
    assert not io._unconfirmed  # late confirms of the closing channel settle nothing

    straggler = make_call("plain-2")
    straggler.state, straggler.tag = CallState.UNCONFIRMED, 1
    io._unconfirmed.append(straggler)
    io._on_confirm(Confirm(1, multiple=False, ack=False))  # within a second of the last
    assert replaced == [True]  # the channel is not replaced again


def test_a_nack_soon_after_a_replacement_replaces_the_channel_once_the_pause_is_over() -> None:
    """RabbitMQ 3.10 nacks every publish of a channel that first published while the quorum
    queue's leader was down. A nack within NACK_CHANNEL_PAUSE of the last replacement must
    still get the channel replaced when the pause is over, not only at a later nack (which the
    growing resend pauses put off, up to a second at a time)."""
    io, replies = _io()
    futures = _calls(replies, {"plain": (CallState.UNCONFIRMED, 0)})
    io._unconfirmed.extend(c for c in (replies.get(k) for k in futures) if c is not None)
    later: list[tuple[float, Callable[[], None]]] = []
    replaced: list[bool] = []
    io.link.call_later = lambda delay, fn: later.append((delay, fn))  # type: ignore[method-assign]
    io.link.reopen_channel = lambda: replaced.append(True)  # type: ignore[method-assign]
    io.link._state, io.link.channel = State.OPEN, cast(Any, object())  # a channel is open
    io._last_replaced = time.monotonic() - NACK_CHANNEL_PAUSE / 4

    io._on_confirm(Confirm(1, multiple=False, ack=False))
    io._on_confirm(Confirm(2, multiple=False, ack=False))  # another nack: one replacement only

    with pytest.raises(PublishRejected):
        futures["plain"].result(0)
    assert replaced == []  # not at once: a channel is replaced at most once per pause
    assert len(later) == 1
    delay, replace = later[0]
    assert 0 < delay <= NACK_CHANNEL_PAUSE
    replace()
    assert replaced == [True]


def test_a_new_channel_gets_the_calls_waiting_to_be_sent_again_at_once() -> None:
    """A call nacked on the old channel waits out a pause before it is sent again; a new
    channel (after a nack, or a new connection) is what it waited for: it goes at once."""
    io, replies = _io()
    futures = _calls(replies, {"retrying": (CallState.RETRYING, 1), "sent": (CallState.SENT, 0)})

    io.on_recovered()

    retrying, sent = replies.get("retrying"), replies.get("sent")
    assert retrying is not None
    assert sent is not None
    assert retrying.state is CallState.HELD  # sent again: no channel in this test, so held
    assert sent.state is CallState.SENT
    assert not futures["retrying"].done()


def test_a_reply_read_after_the_deadline_is_late_even_before_the_sweep_runs() -> None:
    """The sweep runs every SWEEP_INTERVAL; a reply read after a call's deadline but before the
    next sweep (a handler that stops when it sees the deadline pass answers just then) must not
    turn a timeout into a result."""
    io, replies = _io()
    overdue = expect(replies, "overdue", deadline=time.monotonic() - 0.001, timeout=0.3)
    in_time = expect(replies, "in-time", deadline=time.monotonic() + 30)

    for cid in ("overdue", "in-time"):
        reply = Delivery(1, False, "", "cb", Properties(correlation_id=cid), success_body(cid))
        io._on_reply(reply)

    with pytest.raises(CallTimeout, match=r"within 0\.3s"):
        overdue.result(0)
    assert in_time.result(0) == "in-time"
    stats = replies.stats()
    assert (stats.resolved, stats.late, stats.pending) == (1, 1, 0)
