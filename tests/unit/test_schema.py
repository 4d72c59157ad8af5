"""``reqrep schema``: the AsyncAPI 3.0 document, checked by the AsyncAPI project's own parser.

The parser (``@asyncapi/parser``, npm) runs in node through ``scripts/asyncapi-validate.mjs``.
``.ci/run`` installs it; where node or the parser is missing these tests skip, and with
``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from click.testing import CliRunner

from reqrep.cli import cli
from reqrep.common.config import Settings
from reqrep.schema import asyncapi
from reqrep.worker.demo import service as demo
from reqrep.worker.plain import PlainService
from tests.typed_services import shop

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "scripts" / "asyncapi-validate.mjs"


def _validate(*documents: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed")
    done = subprocess.run(
        [node, str(VALIDATOR), *map(str, documents)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 2:
        _missing(done.stderr.strip())
    return done


def _missing(reason: str) -> NoReturn:
    message = f"{reason}: .ci/run installs @asyncapi/parser (npm) into /var/cache/reqrep-asyncapi"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def _schema(*args: str) -> str:
    result = CliRunner().invoke(cli, ["schema", *args], prog_name="reqrep")
    assert result.exit_code == 0, result.output
    return result.output


def test_the_parser_accepts_the_demo_and_a_typed_service(tmp_path: Path) -> None:
    demo_json, shop_yaml = tmp_path / "demo.json", tmp_path / "shop.yaml"
    demo_json.write_text(_schema("reqrep.worker.demo:service"))
    _schema("tests.typed_services:shop", "--format", "yaml", "-o", str(shop_yaml))
    done = _validate(demo_json, shop_yaml)
    assert done.returncode == 0, done.stdout + done.stderr
    diagnostics = [json.loads(line) for line in done.stdout.splitlines()]
    assert {d["severity"] for d in diagnostics} <= {"information", "hint"}


def test_the_parser_refuses_a_broken_document(tmp_path: Path) -> None:
    """The check can fail: an operation whose action is neither send nor receive, and a
    channel binding of a kind AMQP has not."""
    document = asyncapi(shop)
    document["operations"]["place"]["action"] = "listen"
    document["channels"]["requests"]["bindings"]["amqp"]["is"] = "topic"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    done = _validate(broken)
    assert done.returncode == 1, done.stdout + done.stderr
    assert '"severity":"error"' in done.stdout


def test_a_typed_method_has_its_models_and_declared_defaults() -> None:
    document = asyncapi(shop, Settings(queue_prefix="p."))
    assert document["channels"]["requests"]["address"] == "p.shop"
    route = document["channels"]["requestRoute"]["bindings"]["amqp"]
    assert route["exchange"]["name"] == "p.requests"
    request = document["components"]["messages"]["place.request"]
    assert request["payload"] == {"$ref": "#/components/schemas/Order"}
    assert request["bindings"]["amqp"]["messageType"] == "place"
    assert set(request["headers"]["properties"]) == {
        "x-deadline",
        "traceparent",
        "tracestate",
        "x-reqrep-headers",
    }
    order = document["components"]["schemas"]["Order"]
    assert order["required"] == ["customer", "lines"]
    reply = document["components"]["messages"]["place.reply"]["payload"]
    assert reply["properties"]["result"] == {"$ref": "#/components/schemas/Placed"}
    operation = document["operations"]["place"]
    assert (operation["x-reqrep-timeout"], operation["x-reqrep-idempotent"]) == (4.5, True)
    error = document["components"]["messages"]["error"]["payload"]["properties"]["error"]
    assert set(error["properties"]) == {"code", "type", "message", "details", "trail"}


def test_an_untyped_method_takes_any_json() -> None:
    document = asyncapi(demo)
    assert document["components"]["messages"]["echo.request"]["payload"] == {}
    add = document["components"]["messages"]["add.request"]["payload"]
    assert add == {"type": "object", "additionalProperties": {"type": "number"}}


def test_yaml_and_json_say_the_same() -> None:
    as_json: Any = json.loads(_schema("tests.typed_services:shop"))
    assert yaml.safe_load(_schema("tests.typed_services:shop", "--format", "yaml")) == as_json


def test_a_plain_service_has_no_schema() -> None:
    plain = "tests.unit.test_schema:PLAIN"
    result = CliRunner().invoke(cli, ["schema", plain], prog_name="reqrep")
    assert result.exit_code == 2
    assert "is a PlainService" in result.output


PLAIN = PlainService("rpc_queue")
PLAIN.handler(lambda body: body)


def test_a_spec_that_is_not_a_service_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["schema", "reqrep.worker.demo:build"], prog_name="reqrep")
    assert result.exit_code == 2
    assert "not a worker.Service" in result.output
