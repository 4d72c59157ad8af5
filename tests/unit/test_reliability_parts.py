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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reply_cache_stays_within_its_byte_budget() -> None:
    from reqrep.worker.dedupe import ENTRY_OVERHEAD  # noqa: PLC0415 - this test only

    key = ("svc", "echo", "k0")
    one = 1_000 + len("svcechok0") + ENTRY_OVERHEAD
    cache = ReplyCache(max_entries=100, ttl=60, max_bytes=3 * one)
    for i in range(10):
        cache.put(("svc", "echo", f"k{i}"), b"x" * 1_000)
    assert cache.size_bytes <= 3 * one
    assert len(cache) == 3
    assert cache.get(key) is None  # the oldest went first
    assert cache.get(("svc", "echo", "k9")) == b"x" * 1_000


def test_reply_cache_does_not_keep_a_body_larger_than_its_budget() -> None:
    cache = ReplyCache(max_entries=100, ttl=60, max_bytes=10_000)
    cache.put("small", b"s")
    cache.put("huge", b"x" * 20_000)
    assert cache.get("huge") is None
    assert cache.get("small") == b"s"


def test_reply_cache_sweep_frees_expired_entries_without_a_lookup() -> None:
    clock = _Clock()
    cache = ReplyCache(max_entries=100, ttl=10, clock=clock)
    for i in range(5):
        cache.put(f"k{i}", b"x" * 1_000)
    clock.now += 5
    cache.put("young", b"y")
    clock.now += 6  # the first five are past their ttl; "young" is not
    assert cache.sweep() == 5
    assert len(cache) == 1
    assert 0 < cache.size_bytes < 1_000
    clock.now += 10
    cache.put("other", b"o")  # a put sweeps too
    assert cache.get("young") is None
    assert len(cache) == 1


def test_reply_cache_keys_scoped_by_method_do_not_collide() -> None:
    cache = ReplyCache()
    cache.put(("svc", "add", "same-key"), b"3")
    assert cache.get(("svc", "echo", "same-key")) is None
    assert cache.get(("other", "add", "same-key")) is None


def test_dedupe_bytes_setting_from_the_environment() -> None:
    assert Settings.from_env({"REQREP_DEDUPE_BYTES": "1048576"}).dedupe_bytes == 1_048_576
    assert Settings().dedupe_bytes == 64 * 1024 * 1024
    assert Settings(dedupe_bytes=0).dedupe_bytes == 0  # off
    with pytest.raises(ConfigError):
        Settings(dedupe_bytes=-1)
    with pytest.raises(ConfigError):
        Settings.from_env({"REQREP_DEDUPE_BYTES": "lots"})
