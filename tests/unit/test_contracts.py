"""Contracts, middleware, resources and hooks, run through the real Worker and Requestor over the
in-memory broker (``LocalRequestor``): no RabbitMQ."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from typing_extensions import TypedDict

from reqrep import (
    AppError,
    AsyncRequestor,
    BadRequest,
    ConfigError,
    HandlerCall,
    Lifespan,
    OutgoingCall,
    Requestor,
    SerializationError,
    Service,
    StartupError,
    Worker,
)
from reqrep.common import contracts
from reqrep.testing import LocalRequestor, MemoryBroker


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Span(TypedDict):
    start: int
    end: int


def test_structured_hints_are_recognised_and_plain_ones_are_not() -> None:
    assert contracts.is_structured(Point)
    assert contracts.is_structured(Span)
    assert contracts.is_structured(list[Point])
    assert contracts.is_structured(Point | None)
    for plain in (Any, int, dict[str, float], list[int] | None, type(None)):
        assert not contracts.is_structured(plain)


def test_dataclass_and_typeddict_contracts() -> None:
    service = Service("geometry")

    @service.handler
    def length(span: Span) -> Point:
        return Point(span["end"] - span["start"], 0)

    with LocalRequestor(service) as rq:
        assert rq.call(length, {"start": 2, "end": 7}) == Point(5, 0)
        assert rq.call("length", {"start": 2, "end": 7}) == {"x": 5, "y": 0}
        with pytest.raises(BadRequest, match="end") as info:
            rq.call("length", {"start": 2, "end": "soon"})
    [error] = info.value.details["errors"]
    assert error["path"] == ["end"]
    assert "soon" not in str(info.value.details)  # the input is never repeated


def test_plain_hints_keep_the_payload_as_it_is() -> None:
    service = Service("plain")

    @service.handler
    def add(payload: dict[str, float]) -> float:
        return payload["a"] + payload["b"]

    with LocalRequestor(service) as rq:
        assert repr(rq.call("add", {"a": 1, "b": 2})) == "3"  # not coerced to 3.0


def test_a_reply_that_does_not_match_its_type_is_an_error_reply() -> None:
    service = Service("liar")

    @service.handler
    def where(_payload: Any) -> Point:
        return {"x": "far"}  # type: ignore[return-value]  # the wrong type is the test

    with LocalRequestor(service) as rq, pytest.raises(Exception, match="does not match"):
        rq.call("where")


def test_a_typed_call_checks_its_payload_before_sending() -> None:
    service = Service("geometry")

    @service.handler
    def shift(point: Point) -> Point:
        return Point(point.x + 1, point.y)

    with LocalRequestor(service) as rq, pytest.raises(SerializationError, match="y"):
        rq.call(shift, {"x": 1})
    with LocalRequestor(service) as rq:
        assert rq.call_async(shift, Point(1, 2)).result(10) == Point(2, 2)


def test_a_function_no_service_registered_is_refused() -> None:
    with LocalRequestor(Service("x")) as rq, pytest.raises(ConfigError, match="registered"):
        rq.call(print, None)


def test_worker_middleware_runs_in_order_and_may_short_circuit() -> None:
    service = Service("guarded")
    seen: list[str] = []

    def outer(call: HandlerCall, call_next: Callable[[HandlerCall], Any]) -> Any:
        seen.append(f"outer {call.method}")
        result = call_next(call)
        seen.append(f"outer saw {result}")
        return result

    def auth(call: HandlerCall, call_next: Callable[[HandlerCall], Any]) -> Any:
        seen.append("auth")
        if call.headers.get("token") != "secret":
            raise AppError("unauthorized", "no token")
        if call.payload == "cached":
            return "from cache"
        return call_next(dataclasses.replace(call, payload=call.payload.upper()))

    async def async_auth(
        call: HandlerCall, call_next: Callable[[HandlerCall], Awaitable[Any]]
    ) -> Any:
        seen.append("async auth")
        if call.context.method != "shout":
            raise AssertionError("sees the call's context")
        return await call_next(call)

    service.middleware(outer)
    service.middleware(auth)
    service.middleware(async_auth)

    @service.handler
    def echo(payload: str) -> str:
        seen.append(f"handler {payload}")
        return payload

    @service.handler
    async def shout(payload: str) -> str:
        seen.append("async handler")
        return payload + "!"

    with LocalRequestor(service) as rq:
        assert rq.call("echo", "hi", headers={"token": "secret"}) == "HI"
        assert seen == ["outer echo", "auth", "handler HI", "outer saw HI"]
        seen.clear()
        assert rq.call("echo", "cached", headers={"token": "secret"}) == "from cache"
        assert seen == ["outer echo", "auth", "outer saw from cache"]
        seen.clear()
        with pytest.raises(AppError) as info:
            rq.call("echo", "hi")
        assert info.value.code == "unauthorized"
        assert seen == ["outer echo", "auth"]
        seen.clear()
        assert rq.call("shout", "hey") == "hey!"
        assert seen == ["async auth", "async handler"]  # only the async middleware


def test_requestor_middleware_runs_in_order_and_may_short_circuit() -> None:
    service = Service("plain")
    service.add("echo", lambda payload: payload)
    seen: list[str] = []

    def first(call: OutgoingCall, call_next: Callable[[OutgoingCall], Any]) -> Any:
        seen.append("first")
        return call_next(dataclasses.replace(call, headers={**call.headers, "via": "first"}))

    def cache(call: OutgoingCall, call_next: Callable[[OutgoingCall], Any]) -> Any:
        seen.append(f"cache {dict(call.headers)}")
        return "cached" if call.payload == "hit" else call_next(call)

    async def afirst(
        call: OutgoingCall, call_next: Callable[[OutgoingCall], Awaitable[Any]]
    ) -> Any:
        seen.append("async first")
        if call.payload == "deny":
            raise AppError("denied", "not from here")
        return await call_next(call)

    broker = MemoryBroker()
    with (
        Worker(service, transport=broker.transport),
        Requestor(service="plain", transport=broker.transport, middleware=[first, cache]) as rq,
    ):
        assert rq.call("echo", "miss") == "miss"
        assert rq.call("echo", "hit") == "cached"
        assert seen == ["first", "cache {'via': 'first'}"] * 2
        with pytest.raises(ConfigError, match="middleware"):
            rq.call_async("echo", 1)
        seen.clear()

        async def main() -> list[Any]:
            async with AsyncRequestor(
                service="plain", transport=broker.transport, middleware=[afirst]
            ) as arq:
                results: list[Any] = [await arq.call("echo", "ok")]
                try:
                    await arq.call("echo", "deny")
                except AppError as exc:
                    results.append(exc.code)
                return results

        assert asyncio.run(main()) == ["ok", "denied"]
        assert seen == ["async first", "async first"]


def _resourceful() -> tuple[Service, list[str]]:
    service = Service("resourceful")
    events: list[str] = []

    class Db:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> Db:
            events.append(f"open {self.name}")
            return self

        def __exit__(self, *_exc: object) -> None:
            events.append(f"close {self.name}")

    @service.on_startup
    def start(life: Lifespan) -> None:
        db = life.resources.add("db", Db("real"))
        events.append(f"startup {getattr(db, 'name', db)}")

    @service.on_shutdown
    async def stop(life: Lifespan) -> None:
        events.append(f"shutdown {sorted(life.resources)}")

    @service.handler
    def who(_payload: Any, *, db: Any) -> str:
        return str(getattr(db, "name", db))

    return service, events


def test_resources_come_from_startup_hooks_and_close_after_shutdown() -> None:
    service, events = _resourceful()
    with LocalRequestor(service) as rq:
        assert rq.call("who") == "real"
        assert events == ["open real", "startup real"]
    assert events == ["open real", "startup real", "shutdown ['db']", "close real"]


def test_a_given_resource_replaces_the_hooks_own() -> None:
    service, events = _resourceful()
    with LocalRequestor(service, resources={"db": "fake"}) as rq:
        assert rq.call("who") == "fake"
    assert events == ["startup fake", "shutdown ['db']"]  # the real one was never opened


def test_a_missing_resource_or_a_failing_hook_stops_the_worker_before_it_consumes() -> None:
    service = Service("needy")

    @service.handler
    def use(_payload: Any, *, db: Any) -> None: ...

    with pytest.raises(StartupError, match="db"):
        LocalRequestor(service).open()

    broken = Service("broken")

    @broken.on_startup
    def fail(_life: Lifespan) -> None:
        raise OSError("database unreachable")

    broken.add("noop", lambda _p: None)
    with pytest.raises(StartupError, match="database unreachable"):
        LocalRequestor(broken).open()


@pytest.mark.parametrize(
    "headers",
    [{"": "x"}, {"a b": "x"}, {"name": 1}, {"name": "x" * 1025}, {f"h{i}": "x" for i in range(33)}],
)
def test_bad_headers_are_refused_before_sending(headers: dict[str, Any]) -> None:
    with LocalRequestor(Service("x")) as rq, pytest.raises(ConfigError, match="header"):
        rq.call("m", None, headers=headers)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_bad_method_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Service("x").add("m", lambda _p: None, **options)


def test_an_untyped_worker_never_imports_pydantic() -> None:
    script = textwrap.dedent(
        """
        import sys
        from reqrep.testing import LocalRequestor
        from reqrep.worker.demo import service
        with LocalRequestor(service) as rq:
            assert rq.call("add", {"a": 1, "b": 2}) == 3
        print("pydantic" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr
