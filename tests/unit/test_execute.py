"""worker.execute.execute: a handler's outcome, whatever it is, becomes a reply body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from reqrep.common.envelope import BAD_REQUEST, HANDLER_ERROR, decode_reply
from reqrep.common.errors import BadRequest, RemoteError
from reqrep.common.serialization import dumps, loads
from reqrep.worker.consumer import Job
from reqrep.worker.execute import execute as _execute


def _job(handler: Callable[[Any], Any], body: bytes = b"null", method: str = "m") -> Job:
    return Job(
        tag=1,
        generation=1,
        method=method,
        correlation_id="cid",
        reply_to="amq.gen-x",
        message_id=None,
        body=body,
        handler=handler,
    )


def _error(body: bytes) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        decode_reply(body)
    return info.value


class CustomError(Exception):
    pass


def _raiser(exc: BaseException) -> Callable[[Any], Any]:
    def handler(_payload: Any) -> Any:
        raise exc

    return handler


def test_return_value_becomes_a_success_body() -> None:
    body = _execute(_job(lambda p: {"sum": p["a"] + p["b"]}, dumps({"a": 1, "b": 2})))
    assert loads(body) == {"ok": True, "result": {"sum": 3}}


@pytest.mark.parametrize("payload", [None, 0, "é😀", [1, [2]], {"k": {"v": None}}])
def test_handler_gets_the_decoded_payload(payload: Any) -> None:
    seen: list[Any] = []

    def handler(value: Any) -> str:
        seen.append(value)
        return "ok"

    assert decode_reply(_execute(_job(handler, dumps(payload)))) == "ok"
    assert seen == [payload]


def test_none_result() -> None:
    assert loads(_execute(_job(lambda _p: None))) == {"ok": True, "result": None}


@pytest.mark.parametrize(
    ("exc", "type_name", "message"),
    [
        (ValueError("bad value"), "ValueError", "bad value"),
        (KeyError("k"), "KeyError", "'k'"),
        (CustomError("custom"), "CustomError", "custom"),
        (ZeroDivisionError("division by zero"), "ZeroDivisionError", "division by zero"),
        (SystemExit(3), "SystemExit", "3"),
        (KeyboardInterrupt(), "KeyboardInterrupt", ""),
        (RemoteError("nested", type="Inner"), "RemoteError", "Inner: nested"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_raised_exception_becomes_an_error_body(
    exc: BaseException, type_name: str, message: str
) -> None:
    error = _error(_execute(_job(_raiser(exc))))
    assert type(error) is RemoteError
    assert error.code == HANDLER_ERROR
    assert error.type == type_name
    assert error.message == message


def test_non_json_result_becomes_a_serialization_error_reply() -> None:
    error = _error(_execute(_job(lambda _p: {"when": object()}, method="clock")))
    assert error.code == HANDLER_ERROR
    assert error.type == "SerializationError"
    assert "'clock'" in error.message
    assert "JSON" in error.message


@pytest.mark.parametrize("result", [float("nan"), {1, 2}, b"raw", "\ud800"])
def test_other_non_json_results_become_error_replies(result: Any) -> None:
    assert _error(_execute(_job(lambda _p: result))).type == "SerializationError"


@pytest.mark.parametrize("body", [b"{bad", b"", b"\xff\xfe", b"NaN"])
def test_non_json_request_body_is_a_bad_request(body: bytes) -> None:
    called: list[Any] = []
    error = _error(_execute(_job(called.append, body)))
    assert type(error) is BadRequest
    assert error.code == BAD_REQUEST
    assert called == []


def test_long_exception_message_is_clipped() -> None:
    body = _execute(_job(_raiser(ValueError("z" * 100_000))))
    assert len(body) < 3000
    assert _error(body).message.startswith("z" * 100)


def test_exception_with_unencodable_message_still_gets_a_reply() -> None:
    error = _error(_execute(_job(_raiser(ValueError("bad \ud800 text")))))
    assert error.type == "ValueError"


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ failed")


def test_exception_whose_str_fails_still_gets_a_reply() -> None:
    error = _error(_execute(_job(_raiser(UnprintableError()))))
    assert error.type == "UnprintableError"
