"""``reqrep call``: what it prints and the exit code for each outcome, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reqrep.common import exitcodes
from reqrep.worker import Worker

Run = Callable[..., subprocess.CompletedProcess[str]]
REQREP = str(Path(sys.executable).with_name("reqrep"))  # the installed console script


@pytest.fixture
def run(amqp_url: str, prefix: str, service_name: str) -> Run:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "REQREP_QUEUE_PREFIX": prefix,
        "REQREP_SERVICE": service_name,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [REQREP, "call", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def test_echo_prints_json(demo_worker: Worker, run: Run) -> None:
    result = run("echo", '{"hello": "world"}')
    assert (result.returncode, result.stdout, result.stderr) == (0, '{"hello": "world"}\n', "")


def test_idempotent_flag(demo_worker: Worker, run: Run) -> None:
    result = run("add", '{"a": 1, "b": 2}', "--idempotent")
    assert (result.returncode, result.stdout) == (0, "3\n")


def test_no_payload_is_null(demo_worker: Worker, run: Run) -> None:
    result = run("echo")
    assert (result.returncode, json.loads(result.stdout)) == (0, None)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ("fail", '{"message": "out of beans"}'),
            exitcodes.REMOTE_ERROR,
            "DemoError: out of beans",
        ),
        (("nope",), exitcodes.METHOD_NOT_FOUND, "has no method 'nope'"),
        (("echo", "1", "--service", "nobody-home"), exitcodes.NO_SUCH_SERVICE, "no such service"),
        (("sleep", '{"seconds": 5}', "--timeout", "0.3"), exitcodes.TIMEOUT, "within 0.3s"),
        (("echo", "{oops"), exitcodes.BAD_ARGUMENTS, "not valid JSON"),
        (("echo", "--timeout", "-1"), exitcodes.BAD_ARGUMENTS, "--timeout"),
        (
            ("echo", "--url", "amqp://u:pw-secret@127.0.0.1:1/"),
            exitcodes.BROKER_UNREACHABLE,
            "connection refused",
        ),
        (("echo", "--url", "ftp://nope"), exitcodes.BAD_ARGUMENTS, "amqp://"),
    ],
    ids=[
        "remote-error",
        "method-not-found",
        "no-such-service",
        "timeout",
        "bad-json",
        "bad-timeout",
        "unreachable",
        "bad-url",
    ],
)
def test_failures_have_distinct_exit_codes(
    demo_worker: Worker, run: Run, args: tuple[str, ...], code: int, message: str
) -> None:
    result = run(*args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert "pw-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_no_such_service_is_said_once(run: Run) -> None:
    result = run("echo", "1", "--service", "nobody-home")
    assert result.returncode == exitcodes.NO_SUCH_SERVICE
    assert result.stderr.startswith("reqrep: no such service: 'nobody-home'"), result.stderr
    assert result.stderr.count("no such service") == 1, result.stderr
