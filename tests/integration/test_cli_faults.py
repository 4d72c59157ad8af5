"""Every subcommand of ``reqrep`` against the faults an operator meets: a refused login, a TLS
certificate the client refuses, and a broker in a resource alarm. Each ends with its documented
exit code and one line on stderr, never a traceback, and the alarm cannot hold one past its own
timeout (the subprocess timeout only catches a hang)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest

from reqrep.common import Settings, exitcodes
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.extra_node import Alarm, ExtraNode, TlsFiles

REQREP = str(Path(sys.executable).with_name("reqrep"))

# Every subcommand that talks to a broker, with arguments that make it end on its own.
COMMANDS = {
    "call": ["call", "echo", "1", "--timeout", "2"],
    "ping": ["ping", "--timeout", "1"],
    "status": ["status", "--timeout", "1"],
    "dlq list": ["dlq", "list", "--service", "demo"],
    "dlq show": ["dlq", "show", "--service", "demo"],
    "dlq replay": ["dlq", "replay", "--service", "demo", "--timeout", "2"],
    "dlq purge": ["dlq", "purge", "--service", "demo", "--limit", "1"],
    "bench": ["bench", "--calls", "10", "--concurrency", "2", "--timeout", "2"],
    "worker": ["worker", "reqrep.worker.demo:service"],
}


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REQREP, *args],
        env={**os.environ, "REQREP_CONNECT_TIMEOUT": "3", "REQREP_TIMEOUT": "2", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("reqrep: ")]
    assert len(lines) == 1, result.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_refused_login_is_exit_9_for_every_command(amqp_url: str, command: str) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:not-the-password@", 1)
    assert wrong != amqp_url
    result = _run(COMMANDS[command], {"AMQP_URL": wrong, "REQREP_LOG_LEVEL": "ERROR"})
    assert result.returncode == exitcodes.REFUSED, result.stderr
    _one_line(result)
    assert "login refused" in result.stderr
    assert "not-the-password" not in result.stderr


@pytest.mark.extra_node
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_refused_certificate_is_exit_9_for_every_command(
    node: ExtraNode, tls_files: TlsFiles, command: str
) -> None:
    env = {
        "AMQP_URL": node.tls_url,
        "REQREP_TLS_CA": str(tls_files.other_ca),  # not the CA that signed the broker's
        "REQREP_LOG_LEVEL": "ERROR",
    }
    result = _run(COMMANDS[command], env)
    assert result.returncode == exitcodes.REFUSED, result.stderr
    _one_line(result)
    assert "certificate was refused" in result.stderr


@pytest.mark.extra_node
def test_every_admin_command_ends_by_its_deadline_in_an_alarm(
    node: ExtraNode, node_settings: Settings, alarm: Alarm
) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}."
    settings = node_settings.replace(queue_prefix=prefix)
    env = {"AMQP_URL": node.url, "REQREP_QUEUE_PREFIX": prefix}
    with Worker(build("demo"), settings=settings, concurrency=1):
        # One dead letter to replay (a request without reply_to is rejected into the queue).
        with pika.BlockingConnection(pika.URLParameters(node.url)) as connection:
            props = pika.BasicProperties(type="echo", content_type="application/json")
            connection.channel().basic_publish("", f"{prefix}demo", b"1", props)
        with Requestor(settings=settings, service="demo") as rq:
            assert rq.call("echo", "before") == "before"
        alarm.on()
        try:
            # Publishing commands are held by the broker: each ends at its deadline, saying why.
            for name in ("ping", "status", "dlq replay"):
                result = _run(COMMANDS[name], env)
                assert result.returncode == exitcodes.TIMEOUT, (name, result.stderr)
                _one_line(result)
                assert "blocks publishing" in result.stderr, (name, result.stderr)
            # Reading ones publish nothing, and work.
            for name in ("dlq list", "dlq show"):
                result = _run(COMMANDS[name], env)
                assert result.returncode == exitcodes.OK, (name, result.stderr)
        finally:
            alarm.off()
