"""OpenTelemetry spans for calls and handlers: an Observer (the optional ``otel`` extra).

Imported only by ``reqrep.tracing.enable()``. It needs the OpenTelemetry API alone; spans are
recorded and exported by whatever SDK the application configured (without one they are no-ops).

Spans follow the semantic conventions for messaging (RabbitMQ):
- the call: ``send <queue>``, kind PRODUCER, from just before the request is published until
  its reply or error arrives (the requestor waits for the reply, so the span covers the call);
  its context is what the request's ``traceparent`` header carries;
- the handler: ``process <queue>``, kind CONSUMER, child of the call's span (extracted from the
  header), current while the handler runs, so spans the handler starts (and calls it makes) are
  its children.
Attributes: ``messaging.system`` = ``rabbitmq``, ``messaging.destination.name`` = the request
queue, ``messaging.operation.type`` (``send``/``process``), ``messaging.operation.name``
(``publish``/``process``), ``messaging.message.conversation_id`` = the correlation id,
``messaging.message.id`` = the idempotency key, ``messaging.rabbitmq.destination.routing_key``,
and ``rpc.method``; a failed call or handler sets the span's status to ERROR.

Threads: ``call_started`` on the caller's thread, ``call_finished`` on whichever thread
completes the call, ``handling`` on a handler thread; OpenTelemetry's API is thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from reqrep.common import tracecontext
from reqrep.common.observe import CallInfo, Observer

__all__ = ["OtelObserver"]

_propagator = TraceContextTextMapPropagator()


class OtelObserver(Observer):
    """Starts and ends spans through ``tracer_provider`` (default: the global one)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("reqrep", tracer_provider=tracer_provider)

    def call_started(self, call: CallInfo, headers: MutableMapping[str, str]) -> Any:
        parent = _parent()
        span = self._tracer.start_span(
            f"send {call.queue}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                **_attributes(call.queue, call.method, call.correlation_id),
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.message.id": call.message_id,
            },
        )
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        if tracecontext.TRACE_HEADER in carrier:  # a no-op tracer's span has no context to send
            headers.pop(tracecontext.STATE_HEADER, None)
            headers.update(carrier)  # this span's context replaces the one reqrep carried on
        return span

    def call_finished(self, call: CallInfo, token: Any, outcome: str, seconds: float) -> None:
        span: trace.Span = token
        span.set_attribute("reqrep.outcome", outcome)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def handling(
        self,
        service: str,
        queue: str,
        method: str,
        correlation_id: str,
        headers: Mapping[str, str],
    ) -> AbstractContextManager[object] | None:
        return self._tracer.start_as_current_span(
            f"process {queue}",
            context=_propagator.extract(dict(headers)),
            kind=SpanKind.CONSUMER,
            attributes={
                **_attributes(queue, method, correlation_id),
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
            },
        )


def _attributes(queue: str, method: str, correlation_id: str) -> dict[str, str]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": queue,
        "messaging.rabbitmq.destination.routing_key": queue,
        "messaging.message.conversation_id": correlation_id,
        "rpc.method": method,
    }


def _parent() -> Context | None:
    """The caller's span if it has one; else the trace of the call this thread serves (a
    handler of a worker that traces without OpenTelemetry); else a new trace."""
    if trace.get_current_span().get_span_context().is_valid:
        return None  # start_span uses the current context
    served = tracecontext.current()
    if served is None:
        return None
    return _propagator.extract({tracecontext.TRACE_HEADER: str(served)})
