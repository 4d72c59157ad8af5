"""Unit tests of common.errors: the hierarchy, and the tree its docstring draws."""

from __future__ import annotations

import builtins
import inspect
import re

import pytest

from reqrep.common import errors
from reqrep.common.errors import (
    AppError,
    BadRequest,
    BrokerUnreachable,
    CallError,
    CallTimeout,
    ConfigError,
    ConnectionLost,
    MethodNotFound,
    NoSuchService,
    RemoteError,
    ReqrepConnectionError,
    ReqrepError,
    SerializationError,
)

EXPORTED: list[type[BaseException]] = [getattr(errors, name) for name in errors.__all__]

# "    │   ├── BrokerUnreachable        could not connect ...   (also ConnectionError)"
TREE_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)\b(?P<rest>.*)$")
ALSO = re.compile(r"\(also (?P<base>[A-Za-z]+)\)")


def _tree() -> list[tuple[int, str, str]]:
    """(column, class name, comment) for each line of the tree drawn in the docstring."""
    doc = inspect.getdoc(errors)
    assert doc is not None
    block = doc.split("::", 1)[1]
    rows: list[tuple[int, str, str]] = []
    for line in block.strip("\n").splitlines():
        if not line.strip():
            break  # the tree ends at the first blank line
        match = TREE_LINE.match(line)
        assert match is not None, f"not a tree line: {line!r}"
        rows.append((len(match["indent"]), match["name"], match["rest"]))
    return rows


def _parents() -> dict[str, str | None]:
    """Each class in the tree -> its parent in the tree (None for the root)."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for column, name, _ in _tree():
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((column, name))
    return parents


def test_all_lists_every_exception_class_defined_here() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_every_exported_exception_is_a_reqrep_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, ReqrepError)


def test_reqrep_error_is_an_exception_not_a_base_exception_only() -> None:
    assert issubclass(ReqrepError, Exception)


def test_call_timeout_is_a_timeout_error() -> None:
    assert issubclass(CallTimeout, TimeoutError)
    assert issubclass(CallTimeout, CallError)


@pytest.mark.parametrize("cls", [ReqrepConnectionError, BrokerUnreachable, ConnectionLost])
def test_connection_errors_are_connection_errors(cls: type[BaseException]) -> None:
    assert issubclass(cls, ConnectionError)
    assert issubclass(cls, ReqrepConnectionError)


@pytest.mark.parametrize("cls", [ConfigError, SerializationError])
def test_config_and_serialization_errors_are_value_errors(cls: type[BaseException]) -> None:
    assert issubclass(cls, ValueError)


@pytest.mark.parametrize("cls", [MethodNotFound, BadRequest])
def test_remote_error_subclasses(cls: type[BaseException]) -> None:
    assert issubclass(cls, RemoteError)
    assert issubclass(cls, CallError)


def test_docstring_tree_names_every_class_in_all() -> None:
    names = [name for _, name, _ in _tree()]
    assert sorted(names) == sorted(errors.__all__)
    assert len(names) == len(set(names))


def test_docstring_tree_root_is_reqrep_error() -> None:
    assert _parents()["ReqrepError"] is None
    assert list(_parents().values()).count(None) == 1


@pytest.mark.parametrize("name", errors.__all__)
def test_docstring_tree_parent_is_a_direct_base(name: str) -> None:
    parent = _parents()[name]
    cls = getattr(errors, name)
    if parent is None:
        assert cls.__bases__ == (Exception,)
    else:
        assert getattr(errors, parent) in cls.__bases__


@pytest.mark.parametrize(
    ("name", "comment"),
    [(name, rest) for _, name, rest in _tree() if ALSO.search(rest)],
)
def test_docstring_also_notes_hold(name: str, comment: str) -> None:
    match = ALSO.search(comment)
    assert match is not None
    assert issubclass(getattr(errors, name), getattr(builtins, match["base"]))


def test_docstring_notes_every_builtin_base() -> None:
    noted = {name for _, name, rest in _tree() if ALSO.search(rest)}
    with_builtin_base = {
        name
        for name in errors.__all__
        if any(base.__module__ == "builtins" for base in getattr(errors, name).__bases__)
        and name != "ReqrepError"
    }
    assert noted == with_builtin_base


def test_no_such_service_names_the_service() -> None:
    error = NoSuchService("billing")
    assert error.service == "billing"
    assert "'billing'" in str(error)


def test_remote_error_defaults() -> None:
    error = RemoteError("went wrong")
    assert error.code == "handler_error"
    assert error.type == "Exception"
    assert error.details == {}
    assert str(error) == "Exception: went wrong"


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (RemoteError, "handler_error"),
        (MethodNotFound, "method_not_found"),
        (BadRequest, "bad_request"),
    ],
)
def test_remote_error_classes_carry_their_wire_code(cls: type[RemoteError], code: str) -> None:
    assert cls("m").code == code


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("handler_error", RemoteError),
        ("method_not_found", MethodNotFound),
        ("bad_request", BadRequest),
        ("something_new", AppError),  # a code that is not a built-in one: an application's
    ],
)
def test_from_wire_picks_the_class_by_code(code: str, cls: type[RemoteError]) -> None:
    error = RemoteError.from_wire({"code": code, "type": "T", "message": "m", "details": {"k": 1}})
    assert type(error) is cls
    assert (error.code, error.type, error.message, error.details) == (code, "T", "m", {"k": 1})


def test_remote_error_details_are_not_shared_between_instances() -> None:
    first, second = RemoteError("a"), RemoteError("b")
    first.details["x"] = 1
    assert second.details == {}
