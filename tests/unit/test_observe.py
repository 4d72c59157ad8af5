"""The instrumentation seam, trace context, the HTTP endpoint and optional imports (no broker)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, MutableMapping
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import reqrep.metrics
from reqrep.common import tracecontext
from reqrep.common.envelope import ErrorInfo, error_body, success_body
from reqrep.common.errors import (
    CallTimeout,
    ConfigError,
    MethodNotFound,
    NoSuchService,
    RemoteError,
)
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
from reqrep.common.tracecontext import CorrelationFilter, TraceParent
from reqrep.worker.endpoint import Endpoint

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- trace context ------------------------------------------------------------------------------


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
    ok: Future[Any] = Future()
    probe.watch(CallInfo("svc", "m1", "reqrep.svc", "c1", "k1"), headers, ok)
    assert headers == {"traceparent": TP}  # an observer may replace the trace context
    failed: Future[Any] = Future()
    probe.watch(CallInfo("svc", "m2", "reqrep.svc", "c2", "k2"), {}, failed)
    finish = probe.call_started(CallInfo("svc", "m3", "reqrep.svc", "c3", "k3"), {})
    assert recorder.events == []
    ok.set_result(3)
    failed.set_exception(CallTimeout("late"))
    assert finish is not None
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


# -- the HTTP endpoint --------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_endpoint_answers_health_and_metrics() -> None:
    healthy = [False]
    endpoint = Endpoint(
        0,
        host="127.0.0.1",
        health=lambda: healthy[0],
        metrics=lambda: (b"m 1\n", "text/plain"),
    ).start()
    try:
        assert _get(endpoint.port, "/healthz") == (503, b"not consuming\n")
        healthy[0] = True
        assert _get(endpoint.port, "/healthz?verbose=1") == (200, b"consuming\n")
        assert _get(endpoint.port, "/metrics") == (200, b"m 1\n")
        assert _get(endpoint.port, "/other")[0] == 404
    finally:
        endpoint.stop()


def test_endpoint_without_metrics_and_a_busy_port() -> None:
    endpoint = Endpoint(0, host="127.0.0.1", health=lambda: True).start()
    try:
        assert _get(endpoint.port, "/metrics")[0] == 404
        with pytest.raises(ConfigError, match="cannot serve HTTP"):
            Endpoint(endpoint.port, host="127.0.0.1")
    finally:
        endpoint.stop()
    with socket.socket() as sock:  # the port is free again (past TIME_WAIT, as servers bind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", endpoint.port))


# -- optional packages --------------------------------------------------------------------------

OPTIONAL = ("prometheus_client", "opentelemetry", "rich")


def test_a_worker_and_a_requestor_import_nothing_optional() -> None:
    script = textwrap.dedent(
        """
        import sys
        import reqrep, reqrep.cli, reqrep.metrics, reqrep.tracing
        from reqrep.worker.demo import service
        from reqrep.worker.endpoint import Endpoint
        reqrep.Worker(service)
        reqrep.Requestor(service="demo").close()
        print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *OPTIONAL],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_enabling_imports_only_what_is_enabled() -> None:
    script = textwrap.dedent(
        """
        import sys
        import reqrep.metrics
        reqrep.metrics.enable()
        print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *OPTIONAL],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "['prometheus_client']", out.stdout + out.stderr


def test_worker_command_with_a_busy_health_port_exits_2_before_connecting() -> None:
    from click.testing import CliRunner  # noqa: PLC0415 - only this test drives the CLI

    from reqrep.cli import cli  # noqa: PLC0415

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            result = CliRunner().invoke(
                cli,
                ["worker", "reqrep.worker.demo:service", "--health-port", str(port)],
                env={"AMQP_URL": "amqp://broker.invalid/", "REQREP_HTTP_HOST": "127.0.0.1"},
                prog_name="reqrep",
            )
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    assert result.exit_code == 2, result.output
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.output


def test_tracing_without_an_sdk_still_propagates() -> None:
    from opentelemetry.trace import NoOpTracerProvider  # noqa: PLC0415

    from reqrep.common._otel import OtelObserver  # noqa: PLC0415

    observer = OtelObserver(NoOpTracerProvider())
    probe = Probe("requestor", observers=(observer,))
    headers = {"traceparent": TP}  # what reqrep carries on from the call being served
    sent = dict(headers)
    done: Future[Any] = Future()
    probe.watch(CallInfo("svc", "m", "reqrep.svc", "c", "k"), headers, done)
    done.set_result(None)
    assert headers == sent  # the no-op span had nothing to say: reqrep's own context stays
