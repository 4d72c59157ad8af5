"""W3C trace context on the wire, and which call the current thread is serving.

A request carries the caller's trace context in the AMQP header ``traceparent`` (and, when a
tracer set one, ``tracestate``), exactly as W3C Trace Context defines the HTTP header:
``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``. A worker restores it around the
handler, so a call the handler makes continues the same trace. With no tracer installed, reqrep
still propagates: a call made while serving a traced call gets the same trace id and a fresh
span id. A call made outside any trace carries no header (a tracer, if enabled, starts one):
propagating costs untraced calls nothing.

The same context variable holds the correlation id of the call being served, so that
``CorrelationFilter`` can stamp it on every log line written while a handler runs, and its
deadline, so that a call the handler makes without a timeout of its own ends by then
(``remaining``).

Pure and thread-agnostic: context variables are per thread (and per asyncio task).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import random
import re
import time
from collections.abc import Mapping
from typing import NamedTuple

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
    "remaining",
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
        if not (isinstance(value, str) and _valid(value)):
            return None
        return cls(value[3:35], value[36:52], value[53:55])

    @classmethod
    def new(cls) -> TraceParent:
        return cls(_random_id(128), _random_id(64))

    def child(self) -> TraceParent:
        """The same trace, a new span id."""
        return TraceParent(self.trace_id, _random_id(64), self.flags)

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def _valid(value: str) -> bool:
    """A well-formed traceparent of version 00 (or a later one, read as 00)."""
    return (
        _TRACEPARENT.fullmatch(value) is not None
        and not value.startswith("ff")
        and value[3:35] != _ZERO_TRACE
        and value[36:52] != _ZERO_SPAN
    )


_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _random_id(bits: int) -> str:
    # Unique, not secret: the same generator OpenTelemetry's SDK uses, without a syscall a call.
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


class Scope(NamedTuple):
    """The call a thread is serving: its correlation id and incoming trace context (a
    ``traceparent`` value already checked by ``extract``, or None, and the ``tracestate`` that
    came with it, carried on as it is). A tuple: one is made per call, and a frozen dataclass
    costs several times as much."""

    correlation_id: str
    traceparent: str | None
    tracestate: str | None = None
    deadline: float | None = None  # the caller's deadline, Unix time in seconds

    @property
    def parent(self) -> TraceParent | None:
        return None if self.traceparent is None else TraceParent.parse(self.traceparent)


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("reqrep_scope", default=None)


def extract(headers: Mapping[str, object] | None) -> dict[str, str]:
    """The trace headers of a request, validated; empty if it carried none (or bad ones)."""
    if not headers:
        return {}
    value = headers.get(TRACE_HEADER)
    if not (isinstance(value, str) and _valid(value)):
        return {}
    found = {TRACE_HEADER: value}
    state = headers.get(STATE_HEADER)
    if isinstance(state, str) and state and len(state) <= _MAX_STATE:
        found[STATE_HEADER] = state
    return found


def outgoing() -> dict[str, str]:
    """The trace headers for a request made now: a child of the call being served, if that
    call carried a trace context, with its ``tracestate`` carried on (W3C: a participant that
    does not change it passes it along); else none (a tracer, if enabled, adds its own)."""
    current_scope = _scope.get()
    if current_scope is None or current_scope.traceparent is None:
        return {}
    value = current_scope.traceparent  # 00-<trace id>-<span id>-<flags>, checked
    headers = {TRACE_HEADER: f"{value[:36]}{_random_id(64)}{value[52:]}"}
    if current_scope.tracestate:
        headers[STATE_HEADER] = current_scope.tracestate
    return headers


def scope() -> Scope | None:
    """The call being served on this thread, if any."""
    return _scope.get()


def current() -> TraceParent | None:
    """The trace context of the call being served on this thread, if it carried one."""
    current_scope = _scope.get()
    return None if current_scope is None else current_scope.parent


def remaining() -> float | None:
    """Seconds before the caller of the call being served gives up (never negative), or None:
    not serving a call, or one without a deadline."""
    current_scope = _scope.get()
    if current_scope is None or current_scope.deadline is None:
        return None
    return max(0.0, current_scope.deadline - time.time())


def bind(
    correlation_id: str, headers: Mapping[str, str], deadline: float | None = None
) -> contextvars.Token[Scope | None]:
    """Serve ``correlation_id`` on this thread until ``unbind``; ``headers`` as ``extract``
    returns them (checked); ``deadline`` as Unix time in seconds, if the call has one."""
    return _scope.set(
        Scope(correlation_id, headers.get(TRACE_HEADER), headers.get(STATE_HEADER), deadline)
    )


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
