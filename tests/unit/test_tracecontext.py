"""W3C trace context: parsing, propagation and the log correlation filter (no broker)."""

from __future__ import annotations

import logging

import pytest

from reqrep.common import tracecontext
from reqrep.common.tracecontext import CorrelationFilter, TraceParent

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_round_trips() -> None:
    parsed = TraceParent.parse(TP)
    assert parsed == TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert str(parsed) == TP
    child = parsed.child()
    assert child.trace_id == parsed.trace_id
    assert child.span_id != parsed.span_id
    assert TraceParent.parse(str(TraceParent.new())) is not None


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        TP + "-extra",
    ],
)
def test_malformed_traceparent_is_ignored(value: object) -> None:
    assert TraceParent.parse(value) is None
    assert tracecontext.extract({"traceparent": value}) == {}


def test_extract_keeps_a_bounded_tracestate() -> None:
    assert tracecontext.extract(None) == {}
    assert tracecontext.extract({"traceparent": TP, "tracestate": "k=v", "x": 1}) == {
        "traceparent": TP,
        "tracestate": "k=v",
    }
    assert tracecontext.extract({"traceparent": TP, "tracestate": "k=" + "v" * 600}) == {
        "traceparent": TP
    }


def test_outgoing_continues_the_trace_being_served() -> None:
    assert tracecontext.outgoing() == {}  # outside a traced call: nothing to propagate
    assert tracecontext.current() is None
    token = tracecontext.bind("cid-1", {})
    try:
        assert tracecontext.outgoing() == {}  # serving a call that carried no trace
    finally:
        tracecontext.unbind(token)
    token = tracecontext.bind("cid-1", {"traceparent": TP})
    try:
        assert tracecontext.current() == TraceParent.parse(TP)
        child = TraceParent.parse(tracecontext.outgoing()["traceparent"])
        assert child is not None
        assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert child.span_id != "00f067aa0ba902b7"
    finally:
        tracecontext.unbind(token)
    assert tracecontext.scope() is None


def test_correlation_filter() -> None:
    stamp = CorrelationFilter()

    def record(**extra: str) -> logging.LogRecord:
        made = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        made.__dict__.update(extra)
        assert stamp.filter(made)
        return made

    outside = record()
    assert (outside.correlation_id, outside.trace_id) == ("-", "-")  # type: ignore[attr-defined]
    token = tracecontext.bind("cid-7", {"traceparent": TP})
    try:
        inside = record()
        assert inside.correlation_id == "cid-7"  # type: ignore[attr-defined]
        assert inside.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[attr-defined]
        explicit = record(correlation_id="other")
        assert explicit.correlation_id == "other"  # type: ignore[attr-defined]
    finally:
        tracecontext.unbind(token)


def test_tracestate_is_carried_on_without_a_tracer() -> None:
    """A worker without tracing passes the caller's tracestate to the calls it makes (W3C: a
    participant that does not change it carries it along)."""
    token = tracecontext.bind("c1", tracecontext.extract({"traceparent": TP, "tracestate": "k=v"}))
    try:
        headers = tracecontext.outgoing()
    finally:
        tracecontext.unbind(token)
    assert headers["tracestate"] == "k=v"
    assert headers["traceparent"][:36] == TP[:36]
    token = tracecontext.bind("c2", tracecontext.extract({"traceparent": TP}))
    try:
        assert "tracestate" not in tracecontext.outgoing()
    finally:
        tracecontext.unbind(token)
