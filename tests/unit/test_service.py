"""Unit tests of worker.service.Service: registering handlers by method name."""

from __future__ import annotations

from typing import Any

import pytest

from reqrep.common.errors import ConfigError
from reqrep.worker import demo
from reqrep.worker.service import Service


def test_bare_decorator_registers_under_the_function_name() -> None:
    service = Service("calc")

    @service.handler
    def add(payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    assert service.get("add") is add
    assert add({"a": 1, "b": 2}) == 3  # the decorator returns the function itself


def test_named_decorator_registers_under_the_given_name() -> None:
    service = Service("calc")

    @service.handler("sum.v2")
    def add(payload: list[int]) -> int:
        return sum(payload)

    assert service.get("sum.v2") is add
    assert service.get("add") is None
    assert add([1, 2, 3]) == 6


def test_empty_call_decorator_uses_the_function_name() -> None:
    service = Service("calc")

    @service.handler()
    def negate(payload: int) -> int:
        return -payload

    assert service.get("negate") is negate


def test_add_registers_a_callable() -> None:
    service = Service("calc")
    service.add("echo", repr)
    assert service.get("echo") is repr


def test_duplicate_method_raises_config_error() -> None:
    service = Service("calc")

    @service.handler
    def echo(payload: Any) -> Any:
        return payload

    with pytest.raises(ConfigError, match=r"already has a handler for 'echo'"):
        service.handler("echo")(lambda payload: payload)
    assert service.get("echo") is echo


def test_duplicate_via_add_raises_config_error() -> None:
    service = Service("calc")
    service.add("m", str)
    with pytest.raises(ConfigError):
        service.add("m", repr)


def test_non_callable_handler_raises_config_error() -> None:
    service = Service("calc")
    with pytest.raises(ConfigError, match="not callable"):
        service.add("m", 42)  # type: ignore[arg-type]
    assert service.methods == []


INVALID_NAMES: list[Any] = [
    "",
    " ",
    "has space",
    "a/b",
    "_leading_underscore",
    ".leading.dot",
    "-dash",
    "x" * 201,
    "ünïcode",
    "tab\there",
    123,
    None,
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_service_name_raises_config_error(name: Any) -> None:
    with pytest.raises(ConfigError, match="invalid service name"):
        Service(name)


@pytest.mark.parametrize("name", [n for n in INVALID_NAMES if isinstance(n, str)])
def test_invalid_method_name_raises_config_error(name: str) -> None:
    service = Service("calc")
    with pytest.raises(ConfigError, match="invalid method name"):
        service.add(name, str)
    assert service.methods == []


def test_lambda_needs_an_explicit_name() -> None:
    service = Service("calc")
    with pytest.raises(ConfigError):
        service.handler(lambda payload: payload)


@pytest.mark.parametrize("name", ["a", "A1", "echo", "x" * 200, "v2.math:add-one_b", "0lead"])
def test_valid_names(name: str) -> None:
    service = Service(name)
    service.add(name, str)
    assert service.name == name
    assert service.methods == [name]


@pytest.mark.parametrize("name", ["demo\n", "x" * 200 + "\n"])
def test_trailing_newline_is_an_invalid_name(name: str) -> None:
    with pytest.raises(ConfigError):
        Service(name)


def test_methods_are_sorted() -> None:
    service = Service("calc")
    for name in ("mul", "add", "sub"):
        service.add(name, str)
    assert service.methods == ["add", "mul", "sub"]


def test_methods_of_an_empty_service() -> None:
    assert Service("empty").methods == []


def test_get_unknown_method_returns_none() -> None:
    service = Service("calc")
    service.add("add", str)
    assert service.get("sub") is None
    assert service.get("") is None


def test_repr_names_service_and_methods() -> None:
    service = Service("calc")
    service.add("add", str)
    assert repr(service) == "<Service 'calc' methods=['add']>"


def test_demo_service() -> None:
    assert demo.service.name == "demo"
    assert {"add", "echo", "fail", "fib", "sleep"} <= set(demo.service.methods)
    echo = demo.service.get("echo")
    assert echo is not None
    assert echo({"x": [1]}) == {"x": [1]}


def test_demo_build_gives_independent_copies() -> None:
    copy = demo.build("demo-copy")
    assert copy is not demo.service
    assert copy.name == "demo-copy"
    assert copy.methods == demo.service.methods


def test_async_handlers_are_told_apart() -> None:
    service = Service("mixed")

    @service.handler
    def plain(payload: Any) -> Any:
        return payload

    @service.handler
    async def coro(payload: Any) -> Any:
        return payload

    class Callable:
        async def __call__(self, payload: Any) -> Any:
            return payload

    service.add("obj", Callable())
    assert [service.is_async(m) for m in ("plain", "coro", "obj", "missing")] == [
        False,
        True,
        True,
        False,
    ]
    assert service.has_sync
    assert service.has_async
    only_async = Service("a")
    only_async.add("coro", coro)
    assert not only_async.has_sync


def test_inline_handlers_are_marked_and_need_no_handler_threads() -> None:
    service = Service("fast")

    @service.handler("lookup", inline=True)
    def lookup(payload: Any) -> Any:
        return payload

    service.add("echo", lambda payload: payload, inline=True)
    assert service.get("lookup") is lookup
    assert [service.is_inline(m) for m in ("lookup", "echo", "missing")] == [True, True, False]
    assert not service.has_sync  # inline handlers run on the I/O thread: no pool
    service.add("slow", lambda payload: payload)
    assert service.has_sync
    assert not service.is_inline("slow")


def test_an_async_handler_cannot_be_inline() -> None:
    service = Service("fast")

    async def coro(payload: Any) -> Any:
        return payload

    with pytest.raises(ConfigError, match=r"'coro'.*async def.*inline"):
        service.handler("coro", inline=True)(coro)

    class Callable:
        async def __call__(self, payload: Any) -> Any:
            return payload

    with pytest.raises(ConfigError, match="async def"):
        service.add("obj", Callable(), inline=True)
    assert service.methods == []


def test_an_inline_handler_takes_no_concurrency_limit() -> None:
    service = Service("fast")
    with pytest.raises(ConfigError, match=r"'echo'.*inline handlers take no concurrency"):
        service.add("echo", lambda payload: payload, inline=True, concurrency=1)
    with pytest.raises(ConfigError, match="inline must be True or False"):
        service.add("echo", lambda payload: payload, inline=1)  # type: ignore[arg-type]
    assert service.methods == []
