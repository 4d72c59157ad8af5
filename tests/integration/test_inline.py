"""Inline handlers (``inline=True``): run on the worker's I/O thread, with every guarantee of a
pool handler, and watched against their time budget."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import reqrep.metrics
from reqrep.common import BadRequest, CallTimeout, RemoteError, Settings, tracecontext
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker, current
from reqrep.worker.invoke import HandlerCall
from tests.support import wait_until

IO_THREAD = "reqrep-worker-"


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.fixture
def serve(settings: Settings, service_name: str) -> Iterator[Callable[..., Worker]]:
    """Start a Worker of a service (stopped after the test); settings changes as keywords."""
    workers: list[Worker] = []

    def start(service: Service, **changes: Any) -> Worker:
        worker = Worker(service, settings=settings.replace(**changes), concurrency=2).start()
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop(5)


def test_an_inline_handler_answers_on_the_io_thread_and_its_errors_are_replies(
    serve: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    service = Service(service_name)
    threads: list[str] = []

    @service.handler("echo", inline=True)
    def echo(payload: Any) -> Any:
        threads.append(threading.current_thread().name)
        return payload

    @service.handler("fail", inline=True)
    def fail(payload: Any) -> Any:
        raise ValueError(f"no {payload}")

    @service.handler("exit", inline=True)
    def exit_(payload: Any) -> Any:
        raise SystemExit(3)

    @service.handler("interrupt", inline=True)
    def interrupt(payload: Any) -> Any:
        raise KeyboardInterrupt

    worker = serve(service)
    with Requestor(settings=settings, service=service_name) as rq:
        assert rq.call("echo", {"a": [1, "é"]}) == {"a": [1, "é"]}
        with pytest.raises(RemoteError) as info:
            rq.call("fail", "way")
        assert (info.value.type, info.value.message) == ("ValueError", "no way")
        # A BaseException is a reply too, and the I/O thread goes on.
        for method, kind in (("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt")):
            with pytest.raises(RemoteError) as raised:
                rq.call(method)
            assert raised.value.type == kind
        assert rq.call("echo", "still here") == "still here"
    assert len(threads) == 2
    assert all(name.startswith(f"{IO_THREAD}{service_name}-") for name in threads), threads
    assert worker.consuming
    assert worker.stats.replied == 5
    assert worker.stats.inline_overruns == 0


def test_middleware_contracts_and_dedupe_apply_to_inline_handlers(
    serve: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    service = Service(service_name)
    seen: list[tuple[str, str, Any]] = []
    runs: list[Point] = []

    @service.middleware
    def record(call: HandlerCall, call_next: Callable[[HandlerCall], Any]) -> Any:
        seen.append((threading.current_thread().name, call.method, call.payload))
        return call_next(call)

    @service.handler("norm", inline=True)
    def norm(point: Point) -> Point:
        runs.append(point)
        return Point(abs(point.x), abs(point.y))

    worker = serve(service)
    with Requestor(settings=settings, service=service_name) as rq:
        assert rq.call("norm", {"x": -1, "y": 2}) == {"x": 1, "y": 2}
        with pytest.raises(BadRequest) as bad:
            rq.call("norm", {"x": "one"})
        assert "x" in str(bad.value)
        key = f"key-{uuid.uuid4().hex}"
        assert rq.call("norm", {"x": 3, "y": -4}, idempotency_key=key) == {"x": 3, "y": 4}
        # The same key again: answered from the reply cache, the handler does not run.
        assert rq.call("norm", {"x": 9, "y": 9}, idempotency_key=key) == {"x": 3, "y": 4}
    assert runs == [Point(-1, 2), Point(3, -4)]
    assert worker.stats.deduplicated == 1
    assert [method for _, method, _ in seen] == ["norm"] * 3  # not for the dedupe hit
    assert seen[1][2] == {"x": "one"}  # middleware sees the JSON, before the contract
    assert all(name.startswith(IO_THREAD) for name, _, _ in seen)


def test_the_callers_trace_and_context_reach_an_inline_handler_and_leave_with_it(
    serve: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    service = Service(service_name)

    @service.handler("where", inline=True)
    def where(_payload: Any) -> dict[str, Any]:
        ctx = current()
        return {"traceparent": ctx.traceparent, "method": ctx.method, "cid": ctx.correlation_id}

    serve(service)
    root = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with Requestor(settings=settings, service=service_name) as rq:
        token = tracecontext.bind("root", {"traceparent": root})
        try:
            traced = rq.call("where")
        finally:
            tracecontext.unbind(token)
        untraced = rq.call("where")  # the I/O thread kept nothing of the call before
    assert traced["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert traced["method"] == "where"
    assert untraced["traceparent"] is None
    assert untraced["cid"] != traced["cid"]


def test_requests_past_their_deadline_when_the_io_thread_gets_to_them_are_not_run(
    serve: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    service = Service(service_name)
    holding, release = threading.Event(), threading.Event()
    quick_runs: list[Any] = []

    @service.handler("hold", inline=True)
    def hold(payload: Any) -> Any:
        holding.set()
        release.wait(10)  # the worker's I/O thread reads nothing meanwhile
        return payload

    @service.handler("quick", inline=True)
    def quick(payload: Any) -> Any:
        quick_runs.append(payload)
        return payload

    worker = serve(service, inline_budget=5.0)  # no overrun warning for this test's hold
    with Requestor(settings=settings, service=service_name) as rq:
        held = rq.call_async("hold", "held", timeout=20)
        assert holding.wait(10)
        # Within the prefetch (3): both reach the worker, which reads them after the hold.
        late = [rq.call_async("quick", i, timeout=0.3) for i in range(2)]
        for future in late:
            with pytest.raises(CallTimeout):
                future.result(10)
        release.set()
        assert held.result(10) == "held"
        wait_until(lambda: worker.stats.expired == 2, 10, "the late requests skipped")
        assert rq.call("quick", "fresh") == "fresh"
    assert quick_runs == ["fresh"]


def test_an_inline_handler_over_its_budget_is_logged_with_its_stack_and_counted(
    serve: Callable[..., Worker],
    settings: Settings,
    service_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    reqrep.metrics.enable(registry)
    try:
        service = Service(service_name)
        workers: list[Worker] = []

        @service.handler("spin", inline=True)
        def spin_until_the_watchdog_sees_it(payload: Any) -> Any:
            # Busy, as a CPU-bound handler is, until the watchdog has counted this run.
            until = time.monotonic() + 5
            while workers[0].stats.inline_overruns == 0 and time.monotonic() < until:
                pass
            return payload

        caplog.set_level(logging.WARNING, logger="reqrep.worker")
        workers.append(serve(service, inline_budget=0.001))
        with Requestor(settings=settings, service=service_name) as rq:
            assert rq.call("spin", 1) == 1
        worker = workers[0]
        assert worker.stats.inline_overruns == 1
        warnings = [r for r in caplog.records if "over its budget" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        text = warnings[0].getMessage()
        assert warnings[0].levelno == logging.WARNING
        assert "'spin'" in text
        assert "spin_until_the_watchdog_sees_it" in text  # where it was: its stack
        assert "returned before" not in text
        sample = registry.get_sample_value(
            "reqrep_worker_inline_overruns_total", {"service": service_name, "method": "spin"}
        )
        assert sample == 1.0
    finally:
        reqrep.metrics.disable(registry)


@pytest.mark.parametrize("persistent", [True, False])
def test_many_inline_calls_in_flight_are_all_answered_and_acked(
    serve: Callable[..., Worker], settings: Settings, service_name: str, persistent: bool
) -> None:
    service = Service(service_name)
    service.add("echo", lambda payload: payload, inline=True)
    worker = serve(service, persistent=persistent, queue_type="classic")
    with Requestor(settings=settings.replace(persistent=persistent), service=service_name) as rq:
        futures = [rq.call_async("echo", i) for i in range(300)]
        assert [future.result(20) for future in futures] == list(range(300))
    wait_until(lambda: worker.stats.replied == 300, 10, "every reply sent")
    assert worker.stop(5)  # drained: every request acknowledged
