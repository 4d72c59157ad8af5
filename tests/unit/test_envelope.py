"""Unit tests of common.envelope: reply bodies, decoding, request checks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from reqrep.common import envelope
from reqrep.common.envelope import (
    BAD_REQUEST,
    HANDLER_ERROR,
    METHOD_NOT_FOUND,
    ErrorInfo,
    check_request,
    decode_reply,
    error_body,
    success_body,
)
from reqrep.common.errors import (
    AppError,
    BadRequest,
    MethodNotFound,
    RemoteError,
    SerializationError,
)
from reqrep.common.serialization import loads

MAX = 2000  # the documented clip length of error messages on the wire


def _raised(body: bytes) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        decode_reply(body)
    return info.value


# -- success -----------------------------------------------------------------------------------


@pytest.mark.parametrize("result", [None, 0, "text", "é😀", [1, 2], {"a": {"b": None}}, False])
def test_success_body_decodes_to_the_result(result: Any) -> None:
    assert decode_reply(success_body(result)) == result


def test_success_body_wire_shape() -> None:
    assert loads(success_body(5)) == {"ok": True, "result": 5}


def test_success_body_refuses_a_result_that_is_not_json() -> None:
    with pytest.raises(SerializationError):
        success_body({"when": object()})


def test_success_without_result_decodes_to_none() -> None:
    assert decode_reply(b'{"ok": true}') is None


def test_success_ignores_extra_fields() -> None:
    assert decode_reply(b'{"ok": true, "result": 3, "version": 2}') == 3


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (HANDLER_ERROR, RemoteError),
        (METHOD_NOT_FOUND, MethodNotFound),
        (BAD_REQUEST, BadRequest),
        ("quota_exceeded", AppError),  # an application's code, or one from a future version
    ],
)
def test_error_body_decodes_to_the_matching_remote_error(code: str, cls: type) -> None:
    body = error_body(ErrorInfo(code, "KeyError", "no 'x'", {"hint": [1, 2]}))
    error = _raised(body)
    assert type(error) is cls
    assert error.code == code
    assert error.type == "KeyError"
    assert error.message == "no 'x'"
    assert error.details == {"hint": [1, 2]}
    assert str(error) == "KeyError: no 'x'"


def test_error_body_wire_shape() -> None:
    body = error_body(ErrorInfo(METHOD_NOT_FOUND, "MethodNotFound", "nope", {"methods": ["a"]}))
    assert loads(body) == {
        "ok": False,
        "error": {
            "code": "method_not_found",
            "type": "MethodNotFound",
            "message": "nope",
            "details": {"methods": ["a"]},
        },
    }


def test_error_codes_match_the_protocol() -> None:
    assert (HANDLER_ERROR, METHOD_NOT_FOUND, BAD_REQUEST) == (
        "handler_error",
        "method_not_found",
        "bad_request",
    )
    assert envelope.REPLY_TYPE == "reply"


def test_foreign_error_without_details_or_code() -> None:
    error = _raised(b'{"ok": false, "error": {"type": "Boom", "message": "m"}}')
    assert type(error) is RemoteError
    assert error.code == HANDLER_ERROR
    assert error.details == {}


def test_foreign_error_with_non_object_details_gets_empty_details() -> None:
    error = _raised(
        b'{"ok": false, "error": {"code": "bad_request", "type": "T", "message": "m",'
        b' "details": [1, 2]}}'
    )
    assert type(error) is BadRequest
    assert error.details == {}


def test_foreign_error_with_empty_error_object() -> None:
    error = _raised(b'{"ok": false, "error": {}}')
    assert type(error) is RemoteError
    assert error.type == "Exception"
    assert error.message == ""


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"null",
        b"42",
        b'"ok"',
        b"{}",
        b'{"result": 1}',
        b'{"ok": "yes", "result": 1}',
        b'{"ok": 1, "result": 1}',
        b'{"ok": null}',
        b'{"ok": false}',
        b'{"ok": false, "error": "boom"}',
        b'{"ok": false, "error": ["boom"]}',
        b'{"ok": false, "error": null}',
        b"not json",
        b"\xff\xfe",
        b"",
    ],
)
def test_malformed_reply_raises_serialization_error(body: bytes) -> None:
    with pytest.raises(SerializationError):
        decode_reply(body)


# -- ErrorInfo ---------------------------------------------------------------------------------


def test_error_info_from_exception() -> None:
    info = ErrorInfo.from_exception(KeyError("k"))
    assert info == ErrorInfo(HANDLER_ERROR, "KeyError", "'k'", {})


def test_error_info_from_exception_with_code() -> None:
    info = ErrorInfo.from_exception(ValueError("bad"), code=BAD_REQUEST)
    assert (info.code, info.type, info.message) == (BAD_REQUEST, "ValueError", "bad")


def test_error_info_from_exception_subclass_uses_its_own_name() -> None:
    class QuotaExceeded(RuntimeError):
        pass

    assert ErrorInfo.from_exception(QuotaExceeded("x")).type == "QuotaExceeded"


def test_message_at_the_limit_is_not_clipped() -> None:
    message = "m" * MAX
    error = _raised(error_body(ErrorInfo(HANDLER_ERROR, "E", message)))
    assert error.message == message


def test_long_message_is_clipped_on_the_wire() -> None:
    error = _raised(error_body(ErrorInfo(HANDLER_ERROR, "E", "x" * 5000)))
    assert error.message.startswith("x" * MAX)
    assert "x" * (MAX + 1) not in error.message
    assert "3000 more chars" in error.message
    assert len(error.message) < MAX + 50


def test_huge_exception_message_makes_a_small_reply() -> None:
    body = error_body(ErrorInfo.from_exception(ValueError("y" * 1_000_000)))
    assert len(body) < MAX + 200


def test_clipped_exception_message_counts_the_dropped_chars() -> None:
    error = _raised(error_body(ErrorInfo.from_exception(ValueError("x" * 5000))))
    assert "3000 more chars" in error.message


@pytest.mark.parametrize(
    "details",
    [{"obj": object()}, {"n": math.nan}, {"s": {1, 2}}],
    ids=["object", "nan", "set"],
)
def test_details_that_are_not_json_are_dropped_not_fatal(details: dict[str, Any]) -> None:
    error = _raised(error_body(ErrorInfo(HANDLER_ERROR, "Boom", "kept", details)))
    assert error.details == {}
    assert error.message == "kept"
    assert error.type == "Boom"


# -- check_request -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content_type"),
    [
        ("echo", "application/json"),
        ("echo", "application/json; charset=utf-8"),
        ("a.b:c-d_e", "Application/JSON"),
    ],
)
def test_check_request_accepts_well_formed(method: str, content_type: str) -> None:
    assert check_request(method, content_type) is None


@pytest.mark.parametrize(
    ("method", "content_type", "mentions"),
    [
        (None, "application/json", "no method"),
        ("", "application/json", "no method"),
        ("echo", None, "content_type"),
        ("echo", "", "content_type"),
        ("echo", "text/plain", "text/plain"),
        ("echo", "application/octet-stream", "application/json"),
    ],
)
def test_check_request_refuses_malformed(
    method: str | None, content_type: str | None, mentions: str
) -> None:
    problem = check_request(method, content_type)
    assert problem is not None
    assert problem.code == BAD_REQUEST
    assert problem.type == "BadRequest"
    assert mentions in problem.message


def test_check_request_problem_decodes_to_bad_request() -> None:
    problem = check_request("echo", "text/plain")
    assert problem is not None
    assert type(_raised(error_body(problem))) is BadRequest
