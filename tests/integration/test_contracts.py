"""Typed services, structured errors, lifecycle hooks, limits and headers, through RabbitMQ."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reqrep import (
    AppError,
    BadRequest,
    OutgoingCall,
    Requestor,
    Service,
    Settings,
    Worker,
    current,
)
from tests import typed_services
from tests.support import Admin, WorkerProcess, wait_until
from tests.typed_services import Line, Order, OutOfStock, Placed, place


@pytest.fixture
def served(settings: Settings, admin: Admin, prefix: str) -> Iterator[Callable[..., Worker]]:
    """Start in-process workers for services; stopped and their queues deleted afterwards."""
    workers: list[Worker] = []

    def serve(service: Service, **options: Any) -> Worker:
        worker = Worker(service, settings=settings, **options).start()
        workers.append(worker)
        return worker

    try:
        yield serve
    finally:
        for worker in reversed(workers):
            worker.stop(5)
            admin.delete_service_queues(prefix, worker.service.name)


def test_a_typed_call_returns_the_model_and_a_missing_field_is_a_bad_request(
    served: Callable[..., Worker], settings: Settings
) -> None:
    served(typed_services.shop)
    typed_services.shop_calls.clear()
    with Requestor(settings=settings) as rq:
        placed = rq.call(place, Order(customer="ann", lines=[Line(sku="tea", quantity=2)]))
        assert placed == Placed(order_id="ann-1", items=2)
        assert len(typed_services.shop_calls) == 1

        with pytest.raises(BadRequest) as info:  # by name, a payload without "quantity"
            rq.call("place", {"customer": "bob", "lines": [{"sku": "tea"}]}, service="shop")
    assert info.value.code == "bad_request"
    assert info.value.details == {
        "errors": [
            {"path": ["lines", 0, "quantity"], "message": "Field required", "type": "missing"}
        ]
    }
    assert len(typed_services.shop_calls) == 1  # the handler did not run for it


def test_an_app_error_two_hops_down_reaches_the_first_caller_as_it_was(
    served: Callable[..., Worker],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """caller -> gateway.checkout -> orders.submit -> shop.place, which raises OutOfStock."""
    tag = uuid.uuid4().hex[:6]
    orders, gateway = Service(f"orders{tag}"), Service(f"gateway{tag}")
    with Requestor(settings=settings) as nested:

        @orders.handler
        def submit(order: Order) -> Placed:
            return nested.call(place, order)

        @gateway.handler
        def checkout(order: dict[str, Any]) -> Any:
            return nested.call("submit", order, service=orders.name)

        caplog.set_level(logging.INFO, logger="reqrep")
        for service in (typed_services.shop, orders, gateway):
            served(service)
        order = {"customer": "cy", "lines": [{"sku": "none-left", "quantity": 1}]}
        with Requestor(settings=settings) as rq, pytest.raises(OutOfStock) as info:
            rq.call("checkout", order, service=gateway.name)
    error = info.value
    assert isinstance(error, AppError)
    assert (error.type, error.code, error.message) == (
        "OutOfStock",
        OutOfStock.code,
        "no more of it",
    )
    assert error.details == {"sku": "none-left"}
    assert error.trail == [
        {"service": "shop", "method": "place"},
        {"service": orders.name, "method": "submit"},
        {"service": gateway.name, "method": "checkout"},
    ]
    worker_lines = [
        r for r in caplog.records if r.name == "reqrep.worker" and "OutOfStock" in r.getMessage()
    ]
    assert len(worker_lines) == 3  # one line per hop...
    assert {r.levelno for r in worker_lines} == {logging.INFO}  # ...and none a warning
    assert not [
        r for r in caplog.records if r.name.startswith("reqrep") and r.levelno >= logging.WARNING
    ]


def test_a_method_limit_of_2_holds_with_20_calls_in_flight(
    served: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    service = Service(service_name)
    lock = threading.Lock()
    running = {"limited": 0, "free": 0}
    most = {"limited": 0, "free": 0}
    go = threading.Event()

    def track(method: str) -> None:
        with lock:
            running[method] += 1
            most[method] = max(most[method], running[method])
        go.wait(0.05)  # long enough for the others to pile up; nothing waits on it
        with lock:
            running[method] -= 1

    @service.handler(concurrency=2)
    def limited(_payload: Any) -> None:
        track("limited")

    @service.handler
    def free(_payload: Any) -> None:
        track("free")

    served(service, concurrency=8, prefetch=40)
    with Requestor(settings=settings, service=service_name) as rq:
        futures = [rq.call_async("limited", i, timeout=30) for i in range(20)]
        futures += [rq.call_async("free", i, timeout=30) for i in range(20)]
        for future in futures:
            future.result(30)
    assert most["limited"] == 2  # reached, never exceeded
    assert most["free"] > 2  # the same load without a limit goes past it


def test_headers_reach_the_handler_and_cannot_touch_reqreps_own(
    served: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    service = Service(service_name)
    seen: list[tuple[dict[str, str], float | None]] = []

    @service.handler
    def look(_payload: Any) -> str:
        ctx = current()
        seen.append((dict(ctx.headers), ctx.deadline))
        return "ok"

    served(service)
    with Requestor(settings=settings, service=service_name) as rq:
        sent = time.time()
        rq.call("look", None, timeout=20, headers={"tenant": "acme", "x-deadline": "0"})
    [(headers, deadline)] = seen
    assert headers == {"tenant": "acme", "x-deadline": "0"}
    assert deadline is not None
    assert deadline > sent  # the real x-deadline, not the user's "0"


def test_a_typed_call_uses_the_declared_defaults_and_a_nested_call_the_callers_deadline(
    served: Callable[..., Worker], settings: Settings, service_name: str
) -> None:
    outer, inner = Service(f"{service_name}o"), Service(f"{service_name}i")
    deadlines: dict[str, float | None] = {}

    @inner.handler
    def leaf(_payload: Any) -> None:
        deadlines["inner"] = current().deadline

    @outer.handler
    def branch(_payload: Any) -> None:
        deadlines["outer"] = current().deadline
        nested.call("leaf", None, service=inner.name)  # no timeout: the caller's deadline

    seen: list[OutgoingCall] = []

    def spy(call: OutgoingCall, call_next: Callable[[OutgoingCall], Any]) -> Any:
        seen.append(call)
        return call_next(call)

    with (
        Requestor(settings=settings) as nested,
        Requestor(settings=settings, middleware=[spy]) as rq,
    ):
        served(inner)
        served(outer)
        served(typed_services.shop)
        rq.call(place, Order(customer="di", lines=[]))
        rq.call("branch", None, service=outer.name, timeout=20)
    assert dataclasses.astuple(seen[0])[1:] == (
        "place",
        {"customer": "di", "lines": []},
        {},
        4.5,  # place's declared timeout and idempotency, as the call gave none
        True,
    )
    assert seen[0].service == "shop"
    outer_deadline, inner_deadline = deadlines["outer"], deadlines["inner"]
    assert outer_deadline is not None
    assert inner_deadline is not None
    assert inner_deadline <= outer_deadline + 0.002  # ms rounding; 30 s later without it


def test_startup_hooks_run_once_per_process_and_shutdown_hooks_after_the_drain(
    amqp_url: str, prefix: str, admin: Admin, tmp_path: Path, settings: Settings
) -> None:
    events, gate = tmp_path / "events", tmp_path / "gate"
    env = {
        "AMQP_URL": amqp_url,
        "REQREP_QUEUE_PREFIX": prefix,
        "REQREP_TEST_EVENTS": str(events),
        "REQREP_LOG_LEVEL": "INFO",
    }
    proc = WorkerProcess(["tests.typed_services:lifecycle", "--processes", "2"], env)
    try:
        proc.wait_for("worker ready", count=2)
        started = _lines(events)
        assert [e for e, _ in started] == ["startup", "startup"]
        assert len({pid for _, pid in started}) == 2

        with Requestor(settings=settings, service="lifecycle") as rq:
            future = rq.call_async("work", {"gate": str(gate)}, timeout=30)
            wait_until(lambda: "handling" in [e for e, _ in _lines(events)], 20, "a call")
            proc.signal()  # the call is in flight: the supervisor's children drain
            proc.wait_for("draining", count=2)
            gate.touch()
            assert future.result(30) == "done"
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
        admin.delete_service_queues(prefix, "lifecycle")
    lines = _lines(events)
    for pid in {pid for _, pid in lines}:
        mine = [e for e, p in lines if p == pid]
        assert mine[0] == "startup"
        assert mine[-1] == "shutdown"
        assert mine.count("startup") == mine.count("shutdown") == 1
    handled = next(i for i, (e, _) in enumerate(lines) if e == "handled")
    server = next(p for e, p in lines if e == "handled")
    assert handled < lines.index(("shutdown", server))  # its shutdown came after the drain


def _lines(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        event, pid = line.split()
        found.append((event, int(pid)))
    return found
