"""Unit tests of common.exitcodes: one exit code per kind of failure."""

from __future__ import annotations

import click
import pytest

from reqrep.common import exitcodes
from reqrep.common.errors import (
    BadRequest,
    BrokerUnreachable,
    CallError,
    CallTimeout,
    ClosedError,
    ConfigError,
    ConnectionLost,
    MethodNotFound,
    NoSuchService,
    NoWorkers,
    PublishRejected,
    RemoteError,
    ReqrepConnectionError,
    ReqrepError,
    SerializationError,
)

CODE_NAMES = [name for name in exitcodes.__all__ if name.isupper()]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad url"), 2),
        (CallTimeout("slow"), 3),
        (RemoteError("boom"), 4),
        (BadRequest("unreadable"), 4),
        (MethodNotFound("nope"), 5),
        (NoSuchService("billing"), 6),
        (NoWorkers("billing"), 10),
        (BrokerUnreachable("refused"), 7),
        (ConnectionLost("dropped"), 7),
        (ReqrepConnectionError("other"), 7),
        (BrokerUnreachable("login refused", permanent=True), 9),
        (ConnectionLost("set-up refused", permanent=True), 9),
        (PublishRejected("nack"), 8),
        (SerializationError("malformed reply"), 8),
        (ClosedError("closed"), 8),
        (CallError("generic"), 8),
        (ReqrepError("generic"), 8),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_for_error_maps_each_class_to_its_documented_code(error: ReqrepError, code: int) -> None:
    assert exitcodes.for_error(error) == code


def test_named_codes_have_the_documented_values() -> None:
    assert {name: getattr(exitcodes, name) for name in CODE_NAMES} == {
        "OK": 0,
        "BAD_ARGUMENTS": 2,
        "TIMEOUT": 3,
        "REMOTE_ERROR": 4,
        "METHOD_NOT_FOUND": 5,
        "NO_SUCH_SERVICE": 6,
        "BROKER_UNREACHABLE": 7,
        "OTHER_ERROR": 8,
        "REFUSED": 9,
        "NO_WORKERS": 10,
    }


def test_codes_are_distinct() -> None:
    values = [getattr(exitcodes, name) for name in CODE_NAMES]
    assert len(values) == len(set(values))


def test_bad_arguments_is_clicks_usage_error_code() -> None:
    assert click.UsageError("x").exit_code == exitcodes.BAD_ARGUMENTS


def test_no_error_maps_to_ok() -> None:
    errors = [ConfigError(), CallTimeout(), RemoteError("x"), NoSuchService("s"), ClosedError()]
    assert all(exitcodes.for_error(error) != exitcodes.OK for error in errors)
