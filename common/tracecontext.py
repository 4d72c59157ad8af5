"""W3C trace context on the wire, and which call the current thread is serving.

A request carries the caller's trace context in the AMQP header ``traceparent`` (and, when a
tracer set one, ``tracestate``), exactly as W3C Trace Context defines the HTTP header:
``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``. A worker restores it around the
handler, so a call the handler makes continues the same trace. With no tracer installed, reqrep
still propagates: a call made while serving one gets the same trace id and a fresh span id; a
call made elsewhere starts a new trace (flagged sampled, so that a tracing worker records it).

The same context variable holds the correlation id of the call being served, so that
``CorrelationFilter`` can stamp it on every log line written while a handler runs.

Pure and thread-agnostic: context variables are per thread (and per asyncio task).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import random
import re
from collections.abc import Mapping

__all__ = [
    "STATE_HEADER",
    "TRACE_HEADER",
    "CorrelationFilter",
    "Scope",
    "TraceParent",
    "bind",
    "current",
    "extract",
    "outgoing",
    "scope",
    "unbind",
]

TRACE_HEADER = "traceparent"
STATE_HEADER = "tracestate"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_MAX_STATE = 512  # W3C: 32 list members of at most 256 chars; we carry it, we do not parse it


@dataclasses.dataclass(frozen=True)
class TraceParent:
    """One W3C ``traceparent`` value: a trace, the span that made the request, its flags."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def parse(cls, value: object) -> TraceParent | None:
        """The parsed header, or None if it is absent or malformed (then a new trace starts)."""
        if not isinstance(value, str):
            return None
        match = _TRACEPARENT.fullmatch(value.strip())
        if match is None:
            return None
        version, trace_id, span_id, flags = match.groups()
        if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
            return None
        return cls(trace_id, span_id, flags)

    @classmethod
    def new(cls) -> TraceParent:
        return cls(_random_id(128), _random_id(64))

    def child(self) -> TraceParent:
        """The same trace, a new span id."""
        return TraceParent(self.trace_id, _random_id(64), self.flags)

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def _random_id(bits: int) -> str:
    # Unique, not secret: the same generator OpenTelemetry's SDK uses, without a syscall a call.
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


@dataclasses.dataclass(frozen=True)
class Scope:
    """The call a thread is serving: its correlation id and incoming trace context (a
    ``traceparent`` value already checked by ``extract``, or None)."""

    correlation_id: str
    traceparent: str | None

    @property
    def parent(self) -> TraceParent | None:
        return None if self.traceparent is None else TraceParent.parse(self.traceparent)


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("reqrep_scope", default=None)


def extract(headers: Mapping[str, object] | None) -> dict[str, str]:
    """The trace headers of a request, validated; empty if it carried none (or bad ones)."""
    if not headers:
        return {}
    parent = TraceParent.parse(headers.get(TRACE_HEADER))
    if parent is None:
        return {}
    found = {TRACE_HEADER: str(parent)}
    state = headers.get(STATE_HEADER)
    if isinstance(state, str) and state and len(state) <= _MAX_STATE:
        found[STATE_HEADER] = state
    return found


def outgoing() -> str:
    """The ``traceparent`` for a request made now: a child of the call being served, if any."""
    current_scope = _scope.get()
    if current_scope is not None and current_scope.traceparent is not None:
        value = current_scope.traceparent  # 00-<trace id>-<span id>-<flags>, checked
        return f"{value[:36]}{_random_id(64)}{value[52:]}"
    return f"00-{_random_id(128)}-{_random_id(64)}-01"


def scope() -> Scope | None:
    """The call being served on this thread, if any."""
    return _scope.get()


def current() -> TraceParent | None:
    """The trace context of the call being served on this thread, if it carried one."""
    current_scope = _scope.get()
    return None if current_scope is None else current_scope.parent


def bind(correlation_id: str, headers: Mapping[str, str]) -> contextvars.Token[Scope | None]:
    """Serve ``correlation_id`` on this thread until ``unbind``; ``headers`` as ``extract``
    returns them (checked)."""
    return _scope.set(Scope(correlation_id, headers.get(TRACE_HEADER)))


def unbind(token: contextvars.Token[Scope | None]) -> None:
    _scope.reset(token)


class CorrelationFilter(logging.Filter):
    """Adds ``correlation_id`` and ``trace_id`` to log records ("-" outside a call).

    A record that already has them (``extra={"correlation_id": ...}``, as reqrep's I/O threads
    pass for lines about one call) keeps them. Attach it to a handler and use
    ``%(correlation_id)s`` in the format; ``reqrep`` (the CLI) does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        current_scope = _scope.get()
        if not hasattr(record, "correlation_id"):
            record.correlation_id = "-" if current_scope is None else current_scope.correlation_id
        if not hasattr(record, "trace_id"):
            parent = None if current_scope is None else current_scope.traceparent
            record.trace_id = "-" if parent is None else parent[3:35]
        return True
