"""Trace context across the broker: W3C traceparent, OpenTelemetry spans, log correlation ids."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import reqrep.tracing
from reqrep import AsyncRequestor, RemoteError, current
from reqrep.common import Settings, tracecontext
from reqrep.common.tracecontext import CorrelationFilter, TraceParent
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker


def _nesting_service(name: str, settings: Settings) -> tuple[Service, list[Requestor]]:
    """``outer`` calls ``inner`` of the same service; both return what they know of the call."""
    service = Service(name)
    inner_requestor: list[Requestor] = []

    @service.handler
    def inner(_payload: Any) -> dict[str, Any]:
        return {"traceparent": current().traceparent, "cid": current().correlation_id}

    @service.handler
    def outer(_payload: Any) -> dict[str, Any]:
        nested = inner_requestor[0].call("inner", timeout=current().remaining())
        return {"traceparent": current().traceparent, "inner": nested}

    @service.handler
    def fail(_payload: Any) -> None:
        raise ValueError("nope")

    inner_requestor.append(Requestor(settings=settings, service=name))
    return service, inner_requestor


@pytest.fixture
def nesting(settings: Settings, service_name: str) -> Iterator[Worker]:
    service, requestors = _nesting_service(service_name, settings)
    worker = Worker(service, settings=settings, concurrency=4).start()
    try:
        yield worker
    finally:
        worker.stop(5)
        for rq in requestors:
            rq.close()


def test_traceparent_crosses_the_broker_without_a_tracer(
    settings: Settings, service_name: str, nesting: Worker
) -> None:
    with Requestor(settings=settings, service=service_name) as rq:
        assert rq.call("inner")["traceparent"] is None  # no trace here: none is made up
        # As if this thread served a traced call (an HTTP request, another reqrep call):
        root = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        token = tracecontext.bind("root", {"traceparent": root})
        try:
            result = rq.call("outer")
        finally:
            tracecontext.unbind(token)
    outer = TraceParent.parse(result["traceparent"])
    inner = TraceParent.parse(result["inner"]["traceparent"])
    assert outer is not None
    assert inner is not None
    assert outer.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert outer.span_id != "00f067aa0ba902b7"  # a child of the root
    assert inner.trace_id == outer.trace_id  # the handler's call continued the caller's trace
    assert inner.span_id != outer.span_id


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A tracer provider for the test; reqrep's spans go to it."""
    provider = TracerProvider()
    reqrep.tracing.enable(provider)
    try:
        yield provider
    finally:
        reqrep.tracing.disable()
        provider.shutdown()


def _one(found: list[ReadableSpan], name: str, kind: SpanKind, method: str) -> ReadableSpan:
    matching = [
        s
        for s in found
        if s.name == name and s.kind == kind and (s.attributes or {}).get("rpc.method") == method
    ]
    assert len(matching) == 1, [(s.name, s.kind, s.attributes) for s in found]
    return matching[0]


def test_one_trace_spans_requestor_and_worker(
    provider: TracerProvider, settings: Settings, service_name: str
) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service, requestors = _nesting_service(service_name, settings)
    tracer = provider.get_tracer("test")
    queue = settings.request_queue(service_name)
    with (
        Worker(service, settings=settings, concurrency=4),
        Requestor(settings=settings, service=service_name) as rq,
        # The application's own span, e.g. an HTTP request being served.
        tracer.start_as_current_span("request") as root,
    ):
        result = rq.call("outer")
        with pytest.raises(RemoteError):
            rq.call("fail")
    for other in requestors:
        other.close()

    found = list(exporter.get_finished_spans())
    send_outer = _one(found, f"send {queue}", SpanKind.PRODUCER, "outer")
    process_outer = _one(found, f"process {queue}", SpanKind.CONSUMER, "outer")
    send_inner = _one(found, f"send {queue}", SpanKind.PRODUCER, "inner")
    process_inner = _one(found, f"process {queue}", SpanKind.CONSUMER, "inner")
    trace_id = root.get_span_context().trace_id
    chain = [send_outer, process_outer, send_inner, process_inner]
    assert {s.context.trace_id for s in chain} == {trace_id}
    # parent -> child: root -> send outer -> process outer -> send inner -> process inner
    parents = [root.get_span_context(), *(s.context for s in chain[:-1])]
    for span, parent in zip(chain, parents, strict=True):
        assert span.parent is not None
        assert span.parent.span_id == parent.span_id, span.name
    # The header the worker restored is the call span's context.
    restored = TraceParent.parse(result["traceparent"])
    assert restored is not None
    assert int(restored.span_id, 16) == send_outer.context.span_id

    attributes = dict(process_inner.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == queue
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.conversation_id"] == result["inner"]["cid"]
    assert dict(send_outer.attributes or {})["messaging.operation.type"] == "send"

    failed_send = _one(found, f"send {queue}", SpanKind.PRODUCER, "fail")
    failed_process = _one(found, f"process {queue}", SpanKind.CONSUMER, "fail")
    assert failed_send.status.status_code is StatusCode.ERROR
    assert failed_process.status.status_code is StatusCode.ERROR
    assert failed_process.parent is not None
    assert failed_process.parent.span_id == failed_send.context.span_id


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(CorrelationFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_lines_about_a_call_carry_its_correlation_id(
    settings: Settings, service_name: str
) -> None:
    service = Service(service_name)
    app_log = logging.getLogger("tests.app")

    @service.handler
    def chatty(_payload: Any) -> str:
        app_log.warning("working on it")
        return current().correlation_id

    @service.handler
    def fail(_payload: Any) -> None:
        raise ValueError("nope")

    records = _Records()
    for name in ("tests.app", "reqrep.worker"):
        logging.getLogger(name).addHandler(records)
    try:
        with (
            Worker(service, settings=settings, concurrency=2),
            Requestor(settings=settings, service=service_name) as rq,
        ):
            cid = rq.call("chatty")
            app_log.warning("not in a call")
            with pytest.raises(RemoteError):
                rq.call("fail")
    finally:
        for name in ("tests.app", "reqrep.worker"):
            logging.getLogger(name).removeHandler(records)
    working = [r for r in records.records if r.getMessage() == "working on it"]
    assert [getattr(r, "correlation_id", None) for r in working] == [cid]
    raised = [r for r in records.records if "raised ValueError" in r.getMessage()]
    assert len(raised) == 1
    assert getattr(raised[0], "correlation_id", "-") not in ("-", cid)
    outside = [r for r in records.records if r.getMessage() == "not in a call"]
    assert [getattr(r, "correlation_id", None) for r in outside] == ["-"]


def test_async_handlers_and_the_async_requestor_continue_the_trace(
    provider: TracerProvider, settings: Settings, service_name: str, aio_native: bool
) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = Service(service_name)
    nested: list[AsyncRequestor] = []

    @service.handler
    async def inner(_payload: Any) -> str | None:
        await asyncio.sleep(0)
        return current().traceparent

    @service.handler
    async def outer(_payload: Any) -> dict[str, Any]:
        if not nested:
            nested.append(
                AsyncRequestor(native=aio_native, settings=settings, service=service_name)
            )
        return {"mine": current().traceparent, "inner": await nested[0].call("inner")}

    async def call() -> dict[str, Any]:
        async with AsyncRequestor(native=aio_native, settings=settings, service=service_name) as rq:
            result: dict[str, Any] = await rq.call("outer")
            return result

    with Worker(service, settings=settings, concurrency=4):
        result = asyncio.run(call())
        for rq in nested:
            asyncio.run(rq.close())  # closing works from any loop
    queue = settings.request_queue(service_name)
    found = list(exporter.get_finished_spans())
    chain = [
        _one(found, f"send {queue}", SpanKind.PRODUCER, "outer"),
        _one(found, f"process {queue}", SpanKind.CONSUMER, "outer"),
        _one(found, f"send {queue}", SpanKind.PRODUCER, "inner"),
        _one(found, f"process {queue}", SpanKind.CONSUMER, "inner"),
    ]
    assert len({s.context.trace_id for s in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id, child.name
    mine, inner_tp = TraceParent.parse(result["mine"]), TraceParent.parse(result["inner"])
    assert mine is not None
    assert inner_tp is not None
    assert int(mine.span_id, 16) == chain[0].context.span_id
    assert int(inner_tp.span_id, 16) == chain[2].context.span_id
