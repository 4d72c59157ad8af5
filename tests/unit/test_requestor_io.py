"""RequestorIO's bookkeeping when a connection is lost, without a broker (white box)."""

from __future__ import annotations

import time

import pytest

from reqrep.common import ConnectionLost, Settings
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
