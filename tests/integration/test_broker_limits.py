"""A broker whose ``max_message_size`` is below ``REQREP_MAX_MESSAGE_BYTES`` (a private node, so
that the shared broker's limit is left alone).

The broker answers a publish over its limit by closing the channel (406), not with a nack. That
used to close the whole connection, and every call on it: 20 of 20 bystanders failed, and an
idempotent oversized call reconnected about 100 times in 10 s; an oversized reply made its
worker reconnect 200 times in 20 s, or, on a quorum queue, came back as PoisonRequest. Now one
channel is replaced, the oversized call fails with MessageTooLarge naming the broker's limit,
and nothing else is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from reqrep.common import MessageTooLarge, RemoteError, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker
from reqrep.worker.demo import build
from tests.extra_node import ExtraNode

pytestmark = [pytest.mark.extra_node, pytest.mark.timeout(240)]

LIMIT = 1024 * 1024  # the broker's
BIG = 2 * 1024 * 1024  # reqrep's own limit (4 MiB) lets this through


@pytest.fixture
def limited(node: ExtraNode) -> Iterator[None]:
    node.ctl("eval", f"application:set_env(rabbit, max_message_size, {LIMIT}).")
    try:
        yield
    finally:
        node.ctl("eval", "application:set_env(rabbit, max_message_size, 134217728).")


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_an_oversized_request_fails_alone_and_the_connection_stays(
    node_settings: Settings, limited: None, idempotent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="reqrep.connection"),
        Worker(build("demo"), settings=node_settings, concurrency=8),
        Requestor(settings=node_settings, service="demo", timeout=30) as rq,
    ):
        assert rq.call("echo", "warm") == "warm"
        bystanders = [rq.call_async("sleep", {"seconds": 0.2}) for _ in range(10)]
        big = rq.call_async("echo", "x" * BIG, idempotent=idempotent)
        after = [rq.call_async("echo", i) for i in range(10)]
        with pytest.raises(MessageTooLarge, match=f"max_message_size={LIMIT}"):
            big.result(30)
        assert [f.result(30) for f in bystanders] == [{"slept": 0.2}] * 10
        assert [f.result(30) for f in after] == list(range(10))
        # Known now: the next one fails before it is sent.
        with pytest.raises(MessageTooLarge, match=f"max_message_size={LIMIT}"):
            rq.call("echo", "y" * BIG)
    assert "connection lost" not in caplog.text


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_an_oversized_reply_is_an_error_reply_not_a_loop(
    node_settings: Settings, limited: None, queue_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service("grow")
    service.add("grow", lambda n: "x" * n)
    settings = node_settings.replace(queue_type=queue_type)
    with (
        caplog.at_level(logging.WARNING, logger="reqrep.connection"),
        Worker(service, settings=settings, concurrency=2) as worker,
        Requestor(settings=settings, service="grow", timeout=30) as rq,
    ):
        with pytest.raises(RemoteError) as info:
            rq.call("grow", BIG)
        assert info.value.type == "MessageTooLarge"  # not PoisonRequest: nobody died
        assert f"max_message_size={LIMIT}" in info.value.message
        assert len(rq.call("grow", 10)) == 10
        assert worker.stats.replies_too_large == 1
        assert worker.stats.poisoned == 0
    assert "connection lost" not in caplog.text
