"""Optional packages (metrics, tracing, progress bars) are imported only when enabled."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap

from reqrep.common.observe import CallInfo, Probe

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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
    finish = probe.call_started(CallInfo("svc", "m", "reqrep.svc", "c", "k"), headers)
    assert finish is not None
    finish(None)
    assert headers == sent  # the no-op span had nothing to say: reqrep's own context stays
