"""worker.execute.execute: a handler's outcome, whatever it is, becomes a reply body."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from reqrep.common.envelope import BAD_REQUEST, HANDLER_ERROR, decode_reply
from reqrep.common.errors import AppError, BadRequest, RemoteError, ReqrepError
from reqrep.common.serialization import dumps, loads
from reqrep.worker.consumer import Job
from reqrep.worker.context import current
from reqrep.worker.execute import execute as _execute
from reqrep.worker.execute import execute_async


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


# -- async handlers and handlers that return awaitables -----------------------------------------


def test_a_plain_handler_returning_a_coroutine_gets_a_clear_error() -> None:
    async def forgot_async(_payload: Any) -> int:
        return 1

    def plain(payload: Any) -> Any:  # a plain function that returns a coroutine
        return forgot_async(payload)

    error = _error(_execute(_job(plain)))  # and no "never awaited" warning
    assert error.type == "TypeError"
    assert "async def" in error.message


def _async_job(handler: Callable[[Any], Any], deadline_ms: int | None = None) -> Job:
    return dataclasses.replace(_job(handler, dumps({"n": 2})), deadline_ms=deadline_ms)


def test_an_async_handler_is_awaited_with_its_context() -> None:
    async def handler(payload: dict[str, int]) -> list[Any]:
        await asyncio.sleep(0)
        return [payload["n"] * 2, current().method, current().remaining() is None]

    body = asyncio.run(execute_async(_async_job(handler), service="svc"))
    assert decode_reply(body) == [4, "m", True]


def test_an_async_handlers_exception_becomes_an_error_body() -> None:
    async def handler(_payload: Any) -> None:
        raise KeyError("k")

    assert _error(asyncio.run(execute_async(_async_job(handler)))).type == "KeyError"


def test_an_async_handler_past_the_deadline_is_cancelled() -> None:
    cancelled: list[bool] = []

    async def handler(_payload: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    deadline_ms = int((time.time() + 0.05) * 1000)

    async def main() -> bytes:
        body = await execute_async(_async_job(handler, deadline_ms))
        await asyncio.sleep(0)  # let the cancelled handler unwind
        return body

    assert _error(asyncio.run(main())).type == "DeadlineExceeded"
    assert cancelled == [True]


def test_an_async_handler_whose_deadline_passed_in_the_queue_is_not_run() -> None:
    ran: list[bool] = []

    async def handler(_payload: Any) -> None:
        ran.append(True)

    past = int((time.time() - 1) * 1000)
    assert _error(asyncio.run(execute_async(_async_job(handler, past)))).type == "DeadlineExceeded"
    assert ran == []


def test_contexts_of_concurrent_async_handlers_do_not_mix() -> None:
    async def handler(_payload: Any) -> str:
        cid = current().correlation_id
        await asyncio.sleep(0.01)
        assert current().correlation_id == cid
        return cid

    async def main() -> list[bytes]:
        jobs = [dataclasses.replace(_async_job(handler), correlation_id=f"c{i}") for i in range(20)]
        return list(await asyncio.gather(*(execute_async(job) for job in jobs)))

    assert [decode_reply(body) for body in asyncio.run(main())] == [f"c{i}" for i in range(20)]


def test_only_replies_from_running_the_handler_are_marked_cacheable() -> None:
    from reqrep.worker.execute import handler_ran  # noqa: PLC0415 - this test only

    assert handler_ran(_execute(_job(lambda p: p)))
    assert handler_ran(_execute(_job(_raiser(CustomError("boom")))))
    refused = _execute(_job(lambda p: p, body=b"{not json"))
    assert not handler_ran(refused)
    assert isinstance(_error(refused), BadRequest)
    assert not handler_ran(asyncio.run(execute_async(_job(lambda p: p, body=b"{not json"))))


def test_a_plain_handlers_context_is_one_object_made_when_asked_for() -> None:
    seen: list[Any] = []

    def handler(_payload: Any) -> str:
        seen.extend([current(), current()])
        return current().method

    assert decode_reply(_execute(_job(handler, method="add"), service="svc")) == "add"
    first, second = seen
    assert first is second
    assert (first.service, first.method, first.correlation_id) == ("svc", "add", "cid")
    with pytest.raises(ReqrepError, match="outside a handler"):
        current()


# -- errors that are data: application errors and errors of nested calls ----------------------


class OutOfStock(AppError):
    code = "test_execute.out_of_stock"


def test_an_app_error_keeps_its_code_type_and_details_and_gets_a_trail() -> None:
    raised = OutOfStock("no more tea", details={"sku": "tea"})
    error = _error(_execute(_job(_raiser(raised), method="reserve"), service="inventory"))
    assert type(error) is OutOfStock
    assert (error.code, error.type, error.message) == (OutOfStock.code, "OutOfStock", "no more tea")
    assert error.details == {"sku": "tea"}
    assert error.trail == [{"service": "inventory", "method": "reserve"}]


def test_an_error_from_a_nested_call_is_passed_on_as_it_is() -> None:
    inner = RemoteError.from_wire(
        {
            "code": "quota",
            "type": "QuotaExceeded",
            "message": "over",
            "details": {"left": 0},
            "trail": [{"service": "billing", "method": "charge"}],
        }
    )
    error = _error(_execute(_job(_raiser(inner), method="place"), service="orders"))
    assert (error.code, error.type, error.message, error.details) == (
        "quota",
        "QuotaExceeded",
        "over",
        {"left": 0},
    )
    assert error.trail == [
        {"service": "billing", "method": "charge"},
        {"service": "orders", "method": "place"},
    ]


def test_an_app_error_is_logged_at_info_and_a_crash_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="reqrep.worker")
    _execute(_job(_raiser(AppError("denied", "no"))))
    _execute(_job(_raiser(ValueError("bug"))))
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        ("INFO", "handler 'm' raised AppError: no"),
        ("WARNING", "handler 'm' raised ValueError: bug"),
    ]


@pytest.mark.parametrize("code", ["handler_error", "bad_request", "", "with space", "x" * 65])
def test_an_app_error_code_must_be_a_new_well_formed_one(code: str) -> None:
    with pytest.raises(ReqrepError, match="code"):
        AppError(code, "message")


def test_one_code_belongs_to_one_class() -> None:
    with pytest.raises(ReqrepError, match="belongs to"):

        class Again(AppError):  # another class, the same code
            code = OutOfStock.code
