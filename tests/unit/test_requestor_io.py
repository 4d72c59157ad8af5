"""RequestorIO's handling of a lost connection and of nacks, without a broker (white box: the
calls are put in the states the I/O thread would have put them in)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from reqrep.common import ConnectionLost, PublishRejected, Settings
from reqrep.common._transport import Confirm, pika_transport
from reqrep.requestor._calls import CallState, ReplyHandler
from reqrep.requestor._io import RequestorIO
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
