"""The ``reqrep`` command through click's CliRunner, on paths that fail before any connection."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from reqrep.cli import cli
from reqrep.common import exitcodes

# Variables the commands read: cleared so the host's environment cannot change the outcome.
CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "AMQP_URL",
        "REQREP_LOG_LEVEL",
        "REQREP_SERVICE",
        "REQREP_TIMEOUT",
        "REQREP_CONNECT_TIMEOUT",
        "REQREP_HEARTBEAT",
        "REQREP_QUEUE_PREFIX",
        "REQREP_QUEUE_TYPE",
        "REQREP_CONCURRENCY",
        "REQREP_PROCESSES",
    )
}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The group callback configures logging; put it back as it was."""
    root, pika = logging.getLogger(), logging.getLogger("pika")
    handlers, root_level, pika_level = list(root.handlers), root.level, pika.level
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    pika.setLevel(pika_level)


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **(env or {})}, prog_name="reqrep")


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# -- reqrep call -------------------------------------------------------------------------------


def test_call_with_invalid_json_payload_exits_2() -> None:
    result = _run("call", "echo", "{bad")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "JSON" in result.output
    assert "{bad" in result.output


@pytest.mark.parametrize("timeout", ["0", "-1", "soon"])
def test_call_with_invalid_timeout_exits_2(timeout: str) -> None:
    result = _run("call", "echo", "--timeout", timeout)
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "--timeout" in result.output


def test_call_with_non_amqp_url_exits_2_without_showing_the_password() -> None:
    result = _run("call", "echo", "--url", "http://alice:s3cr3t@broker.invalid/")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "amqp://" in result.output
    assert "s3cr3t" not in result.output


@pytest.mark.parametrize("command", [("call", "echo"), ("worker", "reqrep.worker.demo:service")])
def test_a_host_list_in_one_url_exits_2_and_says_how_to_list_brokers(
    command: tuple[str, ...],
) -> None:
    url = "amqp://alice:s3cr3t@h1:5731,h2:5732/%2F"
    result = _run(*command, env={"AMQP_URL": url})
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "several hosts" in result.output
    assert "s3cr3t" not in result.output


def test_call_with_bad_timeout_in_env_exits_2() -> None:
    result = _run("call", "echo", env={"REQREP_TIMEOUT": "abc"})
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "REQREP_TIMEOUT" in result.output


def test_call_without_method_is_a_usage_error() -> None:
    result = _run("call")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "METHOD" in result.output


def test_call_help_documents_every_exit_code() -> None:
    result = _run("call", "--help")
    assert result.exit_code == 0
    text = _one_line(result.output)
    documented = {
        exitcodes.OK: "ok",
        exitcodes.BAD_ARGUMENTS: "bad arguments",
        exitcodes.TIMEOUT: "timeout",
        exitcodes.REMOTE_ERROR: "remote error",
        exitcodes.METHOD_NOT_FOUND: "method not found",
        exitcodes.NO_SUCH_SERVICE: "no such service",
        exitcodes.BROKER_UNREACHABLE: "broker unreachable",
        exitcodes.OTHER_ERROR: "other error",
        exitcodes.REFUSED: "refused",
    }
    assert "Exit codes:" in text
    for code, meaning in documented.items():
        assert f"{code} {meaning}" in text


# -- reqrep worker -----------------------------------------------------------------------------


def test_worker_with_unimportable_module_exits_2() -> None:
    result = _run("worker", "nosuchmodule:x")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "cannot import" in result.output
    assert "nosuchmodule" in result.output


def test_worker_with_missing_attribute_exits_2() -> None:
    result = _run("worker", "reqrep.worker.demo:nothere")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "reqrep.worker.demo:nothere" in result.output
    assert "not a worker.Service" in result.output


def test_worker_with_an_attribute_that_is_not_a_service_exits_2() -> None:
    result = _run("worker", "reqrep.worker.demo:build")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "not a worker.Service" in result.output


@pytest.mark.parametrize("spec", ["worker.demo", ":service", "reqrep.worker.demo:"])
def test_worker_spec_without_module_and_attribute_exits_2(spec: str) -> None:
    result = _run("worker", spec)
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "MODULE:ATTRIBUTE" in result.output


def test_worker_with_non_amqp_url_exits_2_without_showing_the_password() -> None:
    result = _run(
        "worker", "reqrep.worker.demo:service", "--url", "ftp://alice:s3cr3t@broker.invalid/"
    )
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "amqp://" in result.output
    assert "s3cr3t" not in result.output


@pytest.mark.parametrize(
    "option",
    [
        ["--concurrency", "0"],
        ["--processes", "0"],
        ["--prefetch", "0"],
        ["--queue-type", "stream"],
        ["--drain-timeout", "-1"],
    ],
)
def test_worker_option_out_of_range_exits_2(option: list[str]) -> None:
    result = _run("worker", "reqrep.worker.demo:service", *option)
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert option[0] in result.output


# -- the group ---------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    commands = result.output.split("Commands:", 1)[1]
    assert re.search(r"^\s+worker\b", commands, re.MULTILINE)
    assert re.search(r"^\s+call\b", commands, re.MULTILINE)


def test_short_help_option() -> None:
    result = _run("-h")
    assert result.exit_code == 0
    assert "Commands:" in result.output


def test_unknown_command_exits_2() -> None:
    result = _run("serve")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS


def test_invalid_log_level_exits_2() -> None:
    result = _run("--log-level", "LOUD", "call", "--help")
    assert result.exit_code == exitcodes.BAD_ARGUMENTS
    assert "--log-level" in result.output


def test_a_service_module_in_the_current_folder_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reqrep.cli._worker import load_service  # noqa: PLC0415 - the function under test

    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pricing.py").write_text(
        "from reqrep import Service\nservice = Service('pricing')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_service("shop.pricing:service").name == "pricing"


def test_an_app_dir_is_searched_and_a_missing_module_names_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reqrep.cli._worker import load_service  # noqa: PLC0415 - the function under test

    (tmp_path / "billing.py").write_text("from reqrep import Service\nservice = Service('b')\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load_service("billing:service", str(tmp_path)).name == "b"
    with pytest.raises(click.BadParameter, match=f"no module 'nowhere' in {tmp_path}"):
        load_service("nowhere.at.all:service", str(tmp_path))


def test_a_remote_errors_line_has_its_code_details_and_trail() -> None:
    from reqrep.cli._output import error_line  # noqa: PLC0415 - only this test needs it
    from reqrep.common.errors import RemoteError  # noqa: PLC0415

    app = RemoteError.from_wire(
        {
            "code": "out_of_stock",
            "type": "OutOfStock",
            "message": "no tea",
            "details": {"sku": "tea"},
            "trail": [{"service": "shop", "method": "place"}, {"service": "gw", "method": "buy"}],
        }
    )
    assert error_line(app) == (
        'remote error: OutOfStock: no tea (code out_of_stock, details {"sku": "tea"}, '
        "via shop.place < gw.buy)"
    )
    crash = RemoteError.from_wire({"code": "handler_error", "type": "KeyError", "message": "'x'"})
    assert error_line(crash) == "remote error: KeyError: 'x'"  # as before
