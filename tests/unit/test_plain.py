"""Plain AMQP RPC without a broker: the body rules of ``common/plain.py``, and a PlainService
served over the in-memory broker (its twin against RabbitMQ, with the RabbitMQ tutorial's own
client and server, is tests/integration/test_plain_rpc.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from reqrep.common import (
    BadRequest,
    ConfigError,
    ForeignReply,
    NoSuchService,
    RemoteError,
    SerializationError,
    Settings,
)
from reqrep.common.envelope import ErrorInfo, error_body, success_body
from reqrep.common.plain import (
    ERROR_TYPE,
    TEXT_CONTENT_TYPE,
    decode_request,
    encode_result,
    enveloped_result,
    plain_result,
)
from reqrep.requestor import Requestor
from reqrep.testing import MemoryBroker
from reqrep.worker import HandlerCall, Lifespan, PlainService, Worker
from tests.transport_harness import Client

URL = "amqp://guest:guest@memory/%2F"


# -- the body rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "value"),
    [
        (b"30", None, b"30"),
        (b"\xff\x00", "application/octet-stream", b"\xff\x00"),
        (b'{"n": 30}', "application/json", {"n": 30}),
        (b"[1]", "Application/JSON; charset=utf-8", [1]),
        ("caf\u00e9".encode(), "text/plain", "caf\u00e9"),
        ("caf\u00e9".encode("latin-1"), "text/plain; charset=latin-1", "caf\u00e9"),
        (b"30", b"\xff", b"30"),  # a content type that is not text is no content type
    ],
)
def test_a_request_body_is_handed_over_by_its_content_type(
    body: bytes, content_type: object, value: Any
) -> None:
    assert decode_request(body, content_type) == value


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"{", "application/json"), (b"\xff", "text/plain"), (b"x", "text/plain; charset=nosuch")],
)
def test_a_body_that_is_not_what_its_content_type_says_is_refused(
    body: bytes, content_type: str
) -> None:
    with pytest.raises(SerializationError):
        decode_request(body, content_type)


def test_a_result_goes_back_as_bytes_text_or_json() -> None:
    assert encode_result(b"832040") == (b"832040", None)
    assert encode_result(bytearray(b"x")) == (b"x", None)
    assert encode_result("caf\u00e9") == ("caf\u00e9".encode(), TEXT_CONTENT_TYPE)
    assert encode_result({"n": 1}) == (b'{"n":1}', "application/json")
    for bad in (object(), "\ud800", float("nan")):
        with pytest.raises(SerializationError):
            encode_result(bad)


def test_a_plain_reply_is_its_body_unless_it_is_typed_error() -> None:
    assert plain_result(b'{"ok":false}', None) == b'{"ok":false}'
    error = error_body(ErrorInfo("handler_error", "ValueError", "bad n"))
    with pytest.raises(RemoteError, match="bad n") as info:
        plain_result(error, ERROR_TYPE)
    assert info.value.type == "ValueError"
    with pytest.raises(RemoteError, match="it broke") as raw:
        plain_result(b"it broke", ERROR_TYPE)  # a foreign error reply: its text
    assert raw.value.type == "Error"


def test_an_enveloped_call_answered_by_no_reqrep_worker_keeps_what_came() -> None:
    """It used to be "SerializationError: malformed reply", the value lost."""
    assert enveloped_result(success_body(3), "demo.add") == 3
    for body in (b"832040", b"not json at all", b'{"result": 1}', b"x" * 500):
        with pytest.raises(ForeignReply) as info:
            enveloped_result(body, "billing.fib")
        assert info.value.body == body
        assert isinstance(info.value, SerializationError)
        message = str(info.value)
        assert "billing.fib" in message
        assert f"{len(body)} bytes" in message
        assert "call_plain" in message
        assert len(message) < 400  # what arrived is quoted, not all of it


# -- PlainService ----------------------------------------------------------------------------------


def test_a_plain_service_has_one_handler() -> None:
    service = PlainService("rpc_queue")
    with pytest.raises(ConfigError, match="no handler"):
        Worker(service, transport=MemoryBroker().transport)
    service.handler(lambda body: body)
    with pytest.raises(ConfigError, match="one handler serves every request"):
        service.handler(lambda body: body)
    with pytest.raises(ConfigError):
        PlainService("no spaces please")


@pytest.fixture
def settings() -> Settings:
    return Settings(url=URL, timeout=5.0, connect_timeout=2.0)


def _fib() -> PlainService:
    service = PlainService("fib-rpc")

    @service.handler
    def fib(body: Any) -> Any:
        if body == "boom":
            raise ValueError("boom")
        if isinstance(body, dict):
            return {"echo": body}
        n, a, b = int(body), 0, 1
        for _ in range(n):
            a, b = b, a + b
        return str(a)  # text: goes back as UTF-8

    return service


def test_plain_calls_over_memory(settings: Settings) -> None:
    broker = MemoryBroker()
    with (
        Worker(_fib(), settings=settings, transport=broker.transport) as worker,
        Requestor(settings=settings, transport=broker.transport) as rq,
    ):
        assert worker.queue == "fib-rpc"
        assert rq.call_plain("fib-rpc", b"30") == b"832040"
        assert rq.call_plain("fib-rpc", {"n": 1}) == b'{"echo":{"n":1}}'
        with pytest.raises(RemoteError, match="boom"):
            rq.call_plain("fib-rpc", "boom")
        with pytest.raises(BadRequest):  # JSON by its content type, and it is not
            rq.call_plain("fib-rpc", b"{", content_type="application/json")
        with pytest.raises(NoSuchService, match="nosuch"):
            rq.call_plain("nosuch", b"1")
        assert worker.stats.replied == 4


def test_a_plain_worker_takes_an_existing_queue_as_it_is(settings: Settings) -> None:
    broker = MemoryBroker()
    client = Client(broker.transport, URL, settings, "other-program")
    try:
        arguments = {"x-queue-type": "classic", "x-max-length": 7}
        client.channel().declare_queue("fib-rpc", durable=True, arguments=arguments)
        quorum = settings.replace(queue_type="quorum")  # what it would declare: refused
        with (
            Worker(_fib(), settings=quorum, transport=broker.transport),
            Requestor(settings=settings, transport=broker.transport) as rq,
        ):
            assert rq.call_plain("fib-rpc", b"10") == b"55"
    finally:
        client.close()


def test_a_plain_handler_gets_hooks_resources_and_middleware(settings: Settings) -> None:
    service = PlainService("greet-rpc")
    seen: list[object] = []

    @service.on_startup
    def open_greeting(life: Lifespan) -> None:
        life.resources.add("greeting", "hello")

    @service.middleware
    def record(call: HandlerCall, call_next: Callable[[HandlerCall], Any]) -> Any:
        seen.append(call.payload)  # the decoded body
        return call_next(call)

    @service.handler
    def greet(body: str, *, greeting: str) -> str:
        return f"{greeting} {body}"

    broker = MemoryBroker()
    with (
        Worker(service, settings=settings, transport=broker.transport),
        Requestor(settings=settings, transport=broker.transport) as rq,
    ):
        assert rq.call_plain("greet-rpc", "world") == b"hello world"
    assert seen == ["world"]
