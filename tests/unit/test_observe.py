"""The instrumentation seam: call outcomes, the probe and its observers (no broker)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import reqrep.metrics
from reqrep.common import tracecontext
from reqrep.common.envelope import ErrorInfo, error_body, success_body
from reqrep.common.errors import CallTimeout, MethodNotFound, NoSuchService, RemoteError
from reqrep.common.observe import (
    CallInfo,
    Observer,
    Probe,
    install,
    installed,
    outcome_of,
    reply_code,
    uninstall,
)
from reqrep.common.tracecontext import TraceParent

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- outcomes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (CallTimeout("t"), "call_timeout"),
        (NoSuchService("s"), "no_such_service"),
        (MethodNotFound("m"), "method_not_found"),
        (RemoteError("x", type="ValueError"), "handler_error"),
        (RemoteError("x", code="made_up_by_the_worker"), "remote_error"),
        (ValueError("x"), "value_error"),
    ],
)
def test_outcome_of(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_reply_code() -> None:
    assert reply_code(success_body({"a": 1})) == "ok"
    assert reply_code(error_body(ErrorInfo("bad_request", "BadRequest", "x"))) == "bad_request"
    assert reply_code(b"not json") == "malformed"
    assert reply_code(b"[]") == "malformed"


# -- the probe ----------------------------------------------------------------------------------


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def call_started(self, call: CallInfo, headers: MutableMapping[str, str]) -> Any:
        headers["traceparent"] = TP
        return "token"

    def call_finished(self, call: CallInfo, token: Any, outcome: str, seconds: float) -> None:
        self.events.append(("finished", call.method, token, outcome, seconds >= 0))

    def request_received(self, service: str, method: str, redelivered: bool) -> None:
        self.events.append(("received", service, method, redelivered))

    def handling(
        self,
        service: str,
        queue: str,
        method: str,
        correlation_id: str,
        headers: Mapping[str, str],
    ) -> AbstractContextManager[object] | None:
        @contextmanager
        def around() -> Iterator[None]:
            self.events.append(("enter", queue, method, tracecontext.scope()))
            yield
            self.events.append(("exit",))

        return around()


class Broken(Observer):
    def request_received(self, service: str, method: str, redelivered: bool) -> None:
        raise RuntimeError("exporter down")


def test_probe_labels_unknown_methods_and_survives_broken_observers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    probe = Probe("worker", "svc", known=lambda m: m == "add", observers=(Broken(), recorder))
    probe.received("add", False)
    probe.received("../../etc/passwd", True)
    probe.received(b"\xff", False)
    assert recorder.events == [
        ("received", "svc", "add", False),
        ("received", "svc", "_unknown", True),
        ("received", "svc", "_unknown", False),
    ]
    assert "exporter down" in caplog.text


def test_probe_reports_how_each_call_ended() -> None:
    recorder = Recorder()
    probe = Probe("requestor", observers=(recorder,))
    headers = {"traceparent": "00-old"}
    ok = probe.call_started(CallInfo("svc", "m1", "reqrep.svc", "c1", "k1"), headers)
    assert headers == {"traceparent": TP}  # an observer may replace the trace context
    failed = probe.call_started(CallInfo("svc", "m2", "reqrep.svc", "c2", "k2"), {})
    finish = probe.call_started(CallInfo("svc", "m3", "reqrep.svc", "c3", "k3"), {})
    assert recorder.events == []
    assert ok is not None
    assert failed is not None
    assert finish is not None
    ok(None)
    failed(CallTimeout("late"))
    finish(NoSuchService("svc"))
    assert recorder.events == [
        ("finished", "m1", "token", "ok", True),
        ("finished", "m2", "token", "call_timeout", True),
        ("finished", "m3", "token", "no_such_service", True),
    ]
    unobserved = Probe("requestor", observers=())
    assert unobserved.call_started(CallInfo("s", "m", "q", "c", "k"), {}) is None


def test_handling_binds_the_call_and_runs_observer_contexts() -> None:
    recorder = Recorder()
    probe = Probe("worker", "svc", queue="reqrep.svc", observers=(recorder,))
    with probe.handling("add", "cid-3", {"traceparent": TP}):
        assert tracecontext.current() == TraceParent.parse(TP)
    assert tracecontext.scope() is None
    assert recorder.events == [
        ("enter", "reqrep.svc", "add", tracecontext.Scope("cid-3", TP)),
        ("exit",),
    ]
    with Probe("worker", observers=()).handling("m", "cid-4", {}):
        assert tracecontext.scope() == tracecontext.Scope("cid-4", None)


def test_install_and_uninstall() -> None:
    recorder = Recorder()
    install(recorder)
    install(recorder)
    try:
        assert installed().count(recorder) == 1
        assert Probe("worker")._observers == installed()
    finally:
        uninstall(recorder)
    assert recorder not in installed()


def test_metrics_enable_is_idempotent_per_registry() -> None:
    registry = CollectorRegistry()
    first = reqrep.metrics.enable(registry)
    try:
        assert reqrep.metrics.enable(registry) is first
        probe = Probe("worker", "svc", known=lambda m: m == "add")
        probe.received("add", True)
        probe.poisoned("add")
        text = reqrep.metrics.render(registry)[0].decode()
    finally:
        reqrep.metrics.disable(registry)
    assert first not in installed()
    assert 'reqrep_worker_requests_received_total{method="add",service="svc"} 1.0' in text
    assert 'reqrep_worker_redeliveries_total{service="svc"} 1.0' in text
    assert 'reqrep_worker_poison_requests_total{service="svc"} 1.0' in text
