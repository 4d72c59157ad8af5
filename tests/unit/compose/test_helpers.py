"""The compose tests' own helpers, checked so that a check that can never fail is caught."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.compose.support import is_interpolation, literal_secrets, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${RABBITMQ_PASSWORD:-reqrep}", True),
        ("${RABBITMQ_PASSWORD}", True),
        ("${RABBITMQ_PASSWORD:?set it}", True),
        ("hunter2", False),
        ("${RABBITMQ_PASSWORD:-x}tail", False),
        ("prefix${RABBITMQ_PASSWORD}", False),
        ("${RABBITMQ_PASSWORD:+x}", False),
    ],
)
def test_is_interpolation(value: str, expected: bool) -> None:
    assert is_interpolation(value) is expected


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"RABBITMQ_DEFAULT_PASS": "${P:-local}"}, 0),
        ({"RABBITMQ_DEFAULT_PASS": None}, 0),
        ({"RABBITMQ_DEFAULT_PASS": "hunter2"}, 1),
        (["RABBITMQ_DEFAULT_PASS=hunter2"], 1),
        (["API_TOKEN=abc"], 1),
        ({"AMQP_URL": "amqp://${U:-u}:${P:-p}@rabbitmq:5672/%2F"}, 0),
        ({"AMQP_URL": "amqp://${U:-u}:hunter2@rabbitmq:5672/%2F"}, 1),
        ({"AMQP_URL": "amqp://reqrep:reqrep@rabbitmq:5672/%2F"}, 1),
        ({"AMQP_URL": "amqp://rabbitmq:5672/%2F"}, 0),
    ],
)
def test_literal_secrets_detects_hardcoded_values(environment: Any, expected: int) -> None:
    compose = {"services": {"svc": {"environment": environment}}}
    assert len(literal_secrets(compose)) == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("35s", 35.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["35", "", "s", "35 s", "abc"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a Compose duration"):
        parse_duration(text)
