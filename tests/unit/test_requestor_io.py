"""RequestorIO's bookkeeping when a connection is lost, without a broker (white box)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import pika.spec
import pytest

from reqrep.common import ConnectionLost, PublishRejected, Settings
from reqrep.requestor._io import OutgoingRequest, RequestorIO
from reqrep.requestor.reply_handler import ReplyHandler


def _request(cid: str, retries: int = 0) -> OutgoingRequest:
    return OutgoingRequest(
        service="svc",
        queue="reqrep.svc",
        method="m",
        correlation_id=cid,
        message_id=cid,
        body=b"null",
        deadline=time.monotonic() + 30,
        deadline_ms=int(time.time() * 1000) + 30_000,
        retries=retries,
    )


def test_lost_connection_fails_only_what_it_stranded() -> None:
    """sent: failed; sent and retryable: held for resending; never sent: left alone."""
    replies = ReplyHandler()
    io = RequestorIO(Settings(), replies, name="t")
    futures = {
        cid: replies.expect(cid, deadline=time.monotonic() + 30, timeout=30, what="svc.m")
        for cid in ("sent", "retryable", "queued")
    }
    io._sent = {"sent", "retryable"}
    io._retryable = {"retryable": _request("retryable", retries=1)}

    io._on_lost(ConnectionLost("gone"))

    with pytest.raises(ConnectionLost, match="may or may not have been run"):
        futures["sent"].result(0)
    assert not futures["retryable"].done()
    assert not futures["queued"].done()
    assert set(io._held) == {"retryable"}
    assert io._held["retryable"].retries == 0
    assert replies.stats().pending == 2


class _Nack:
    def __init__(self, tag: int, multiple: bool = False) -> None:
        self.method = pika.spec.Basic.Nack(delivery_tag=tag, multiple=multiple)


def test_a_nack_fails_plain_calls_resends_retryable_ones_and_replaces_the_channel() -> None:
    replies = ReplyHandler()
    io = RequestorIO(Settings(), replies, name="t")
    futures = {
        cid: replies.expect(cid, deadline=time.monotonic() + 30, timeout=30, what="svc.m")
        for cid in ("plain", "retryable", "unconfirmed")
    }
    io._unconfirmed = OrderedDict([(1, "plain"), (2, "retryable"), (3, "unconfirmed")])
    io._sent = {"plain", "retryable", "unconfirmed"}
    io._retryable = {
        "retryable": _request("retryable", retries=2),
        "unconfirmed": _request("unconfirmed", retries=1),
    }
    later: list[tuple[float, Callable[[], None]]] = []
    replaced: list[bool] = []
    io.call_later = lambda delay, fn: later.append((delay, fn))  # type: ignore[method-assign]
    io._reopen_channel = lambda: replaced.append(True)  # type: ignore[method-assign]

    io._on_confirm(_Nack(2, multiple=True))

    with pytest.raises(PublishRejected):
        futures["plain"].result(0)
    assert not futures["retryable"].done()
    assert not futures["unconfirmed"].done()  # its confirm dies with the channel: sent again
    assert replaced == [True]
    assert len(later) == 2
    assert all(0 < delay <= 1.0 for delay, _fn in later)
    assert io._retryable == {}
    assert io._sent == set()

    assert io._unconfirmed == {}  # late confirms of the closing channel settle nothing
    io._unconfirmed[1] = "plain-2"
    io._on_confirm(_Nack(1))  # within a second of the last: the channel is not replaced again
    assert replaced == [True]
