"""reqrep.testing.LocalRequestor: a service's handlers behind the Requestor API, no broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from reqrep import (
    CallTimeout,
    ClosedError,
    MessageTooLarge,
    MethodNotFound,
    NoSuchService,
    RemoteError,
    SerializationError,
    Service,
    Settings,
    current,
)
from reqrep.testing import LocalAsyncRequestor, LocalRequestor
from reqrep.worker.demo import build


@pytest.fixture
def demo() -> Iterator[LocalRequestor]:
    with LocalRequestor(build("demo"), settings=Settings(timeout=5.0)) as local:
        yield local


def test_results_of_sync_and_async_handlers(demo: LocalRequestor) -> None:
    assert demo.call("add", {"a": 1, "b": 2}) == 3
    assert demo.call("echo", {"x": ["é", None]}) == {"x": ["é", None]}
    assert demo.call("nap", {"seconds": 0.01}) == {"slept": 0.01}
    assert demo.call_async("sleep", {"seconds": 0.01}).result(5) == {"slept": 0.01}
    assert demo.stats().resolved == 4
    assert demo.stats().pending == 0


def test_errors_are_the_ones_a_broker_round_trip_gives(demo: LocalRequestor) -> None:
    with pytest.raises(RemoteError) as info:
        demo.call("fail", {"message": "nope"})
    assert (info.value.type, info.value.message) == ("DemoError", "nope")
    with pytest.raises(MethodNotFound) as missing:
        demo.call("missing")
    assert "add" in missing.value.details["methods"]
    with pytest.raises(NoSuchService):
        demo.call("echo", service="elsewhere")
    with pytest.raises(RemoteError, match="KeyError"):
        demo.call("add", {"a": 1})
    with pytest.raises(SerializationError):
        demo.call("echo", float("nan"))  # refused before it is "sent"


def test_size_limits_apply_both_ways() -> None:
    service = Service("big")
    service.add("grow", lambda n: "x" * n)
    with LocalRequestor(service, settings=Settings(max_message_bytes=1000)) as local:
        with pytest.raises(MessageTooLarge):
            local.call("grow", "y" * 2000)
        with pytest.raises(RemoteError) as info:
            local.call("grow", 5000)
        assert info.value.type == "MessageTooLarge"
        assert len(local.call("grow", 500)) == 500


def test_a_non_json_result_is_an_error_reply() -> None:
    service = Service("odd")
    service.add("when", lambda _p: object())
    with LocalRequestor(service) as local, pytest.raises(RemoteError) as info:
        local.call("when")
    assert info.value.type == "SerializationError"


def test_deadlines_reach_handlers_and_end_calls(demo: LocalRequestor) -> None:
    service = Service("timed")
    service.add("left", lambda _p: current().remaining())
    with LocalRequestor(service) as local:
        assert 0 < local.call("left", timeout=2) <= 2
    with pytest.raises(CallTimeout):
        demo.call("sleep", {"seconds": 1}, timeout=0.2)
    with pytest.raises(CallTimeout):
        demo.call_async("nap", {"seconds": 1}, timeout=0.2).result(5)


def test_an_async_handler_is_cancelled_after_the_deadline() -> None:
    service = Service("slow")
    cancelled = threading.Event()

    @service.handler
    async def wait(_payload: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with LocalRequestor(service) as local:
        with pytest.raises(CallTimeout):
            local.call("wait", timeout=0.2)
        assert cancelled.wait(5)


def test_an_idempotency_key_runs_the_handler_once() -> None:
    service = Service("counter")
    runs: list[Any] = []

    @service.handler
    def bump(payload: Any) -> int:
        runs.append(payload)
        return len(runs)

    with LocalRequestor(service) as local:
        assert local.call("bump", 1, idempotency_key="k1") == 1
        assert local.call("bump", 2, idempotency_key="k1") == 1
        assert local.call("bump", 3) == 2
    assert runs == [1, 3]


def test_the_async_api_and_cancellation(demo: LocalRequestor) -> None:
    async def main() -> None:
        assert await demo.acall("add", {"a": 2, "b": 2}) == 4
        task = asyncio.create_task(demo.acall("nap", {"seconds": 0.3}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert demo.stats().pending == 0  # forgotten at once
        while demo.worker.stats.cancelled == 0:  # and its worker told: the handler is cancelled
            await asyncio.sleep(0.01)
        assert demo.stats().late == 0  # no reply came

    asyncio.run(asyncio.wait_for(main(), 10))


def test_local_async_requestor_has_the_async_requestor_api() -> None:
    async def main() -> Any:
        async with LocalAsyncRequestor(build("demo")) as rq:
            return await asyncio.gather(rq.call("echo", 1), rq.call("nap", {"seconds": 0}))

    assert asyncio.run(main()) == [1, {"slept": 0.0}]


def test_bad_payloads_and_closing() -> None:
    local = LocalRequestor(build("demo"))
    with pytest.raises(RemoteError) as info:
        local.call("add", "not an object")
    assert info.value.type == "TypeError"
    slow = local.call_async("sleep", {"seconds": 2})
    local.close()
    with pytest.raises(ClosedError):
        slow.result(5)
    with pytest.raises(ClosedError):
        local.call("echo")


def test_inline_handlers_run_on_the_workers_io_thread() -> None:
    service = Service("fast")
    threads: list[str] = []

    @service.handler("echo", inline=True)
    def echo(payload: Any) -> Any:
        threads.append(threading.current_thread().name)
        if payload == "fail":
            raise ValueError("failed inline")
        return payload

    with LocalRequestor(service, settings=Settings(timeout=5.0)) as local:
        assert local.call("echo", [1, 2]) == [1, 2]
        with pytest.raises(RemoteError, match="failed inline"):
            local.call("echo", "fail")
    assert len(threads) == 2
    assert all(name.startswith("reqrep-worker-fast-") for name in threads), threads
