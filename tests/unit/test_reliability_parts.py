"""Unit tests of the pieces behind the reliability promises: reply cache, topology, context."""

from __future__ import annotations

import time

import pytest

from reqrep.common import ConfigError, ReqrepError, Settings, topology
from reqrep.common.errors import PoisonRequest, RemoteError
from reqrep.worker import CallContext, current
from reqrep.worker.context import bind, unbind
from reqrep.worker.dedupe import ReplyCache


def test_reply_cache_returns_what_was_put() -> None:
    cache = ReplyCache(max_entries=10, ttl=60)
    cache.put("k", b"body")
    assert cache.get("k") == b"body"
    assert cache.get("other") is None


def test_reply_cache_evicts_the_oldest_beyond_its_size() -> None:
    cache = ReplyCache(max_entries=2, ttl=60)
    for key in ("a", "b", "c"):
        cache.put(key, key.encode())
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, b"b", b"c")
    assert len(cache) == 2


def test_reply_cache_forgets_after_its_ttl() -> None:
    cache = ReplyCache(max_entries=10, ttl=0.0)
    cache.put("k", b"body")
    assert cache.get("k") is None


def test_reply_cache_of_size_zero_keeps_nothing() -> None:
    cache = ReplyCache(max_entries=0)
    cache.put("k", b"body")
    assert cache.get("k") is None


def test_quorum_request_queue_has_a_backstop_delivery_limit() -> None:
    args = topology.request_queue_arguments(
        prefix="p.", queue="p.svc", queue_type="quorum", max_redeliveries=5
    )
    assert args == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "p.dlx",
        "x-dead-letter-routing-key": "p.svc.dead",
        "x-delivery-limit": 7,
    }


def test_classic_request_queue_has_no_delivery_limit() -> None:
    args = topology.request_queue_arguments(
        prefix="p.", queue="p.svc", queue_type="classic", max_redeliveries=5
    )
    assert "x-delivery-limit" not in args
    assert args["x-dead-letter-exchange"] == "p.dlx"


def test_dead_letter_queue_is_bounded() -> None:
    assert topology.dead_letter_queue_arguments("quorum")["x-max-length"] > 0
    assert topology.dead_letter_queue("p.svc") == "p.svc.dead"


def test_current_outside_a_handler_is_an_error() -> None:
    with pytest.raises(ReqrepError, match="outside a handler"):
        current()


def test_current_inside_a_bound_context() -> None:
    ctx = CallContext("svc", "m", "cid", "key", time.time() + 10, False, 0)
    token = bind(ctx)
    try:
        assert current() is ctx
        remaining = current().remaining()
        assert remaining is not None
        assert 9 < remaining <= 10
    finally:
        unbind(token)
    with pytest.raises(ReqrepError):
        current()


def test_remaining_is_never_negative_and_none_without_deadline() -> None:
    assert CallContext("s", "m", "c", None, time.time() - 5, False, 0).remaining() == 0.0
    assert CallContext("s", "m", "c", None, None, False, 0).remaining() is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("yes", True), ("TRUE", True), ("0", False), ("off", False)]
)
def test_sign_replies_from_env(raw: str, expected: bool) -> None:
    assert Settings.from_env({"REQREP_SIGN_REPLIES": raw}).sign_replies is expected


def test_bad_flag_from_env() -> None:
    with pytest.raises(ConfigError, match="REQREP_SIGN_REPLIES"):
        Settings.from_env({"REQREP_SIGN_REPLIES": "maybe"})


@pytest.mark.parametrize("field", ["max_message_bytes", "max_redeliveries"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_limits_must_be_positive_whole_numbers(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_username_of_the_url() -> None:
    assert Settings(url="amqp://al%40ice:pw@h/").username == "al@ice"
    assert Settings(url="amqp://h/").username == "guest"


def test_poison_request_comes_back_as_its_class() -> None:
    error = RemoteError.from_wire(
        {"code": "poison_request", "type": "PoisonRequest", "message": "m", "details": {}}
    )
    assert isinstance(error, PoisonRequest)
