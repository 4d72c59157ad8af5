"""docker-compose.yml validated by Compose v2's ``config -q`` itself, and broken copies refused.

Where Compose v2 is missing these skip, except on CI (``CI=true``), where they fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.compose.support import BROKER, COMPOSE_FILE, WORKER, load_compose, run_config


def test_docker_compose_config_is_valid(docker_compose: list[str]) -> None:
    result = run_config(docker_compose, COMPOSE_FILE)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def test_docker_compose_cluster_profile_is_valid(docker_compose: list[str]) -> None:
    result = run_config(docker_compose, COMPOSE_FILE, "--profile", "cluster")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def _add_unknown_key(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["bogus_option"] = True


def _bad_condition(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["depends_on"][BROKER]["condition"] = "service_bogus"


def _undefined_dependency(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["depends_on"] = {
        "no_such_service": {"condition": "service_started"}
    }


def _numeric_grace_period(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["stop_grace_period"] = 35


def _unchanged(compose: dict[str, Any]) -> None:
    del compose  # control: the copy itself must still validate


@pytest.mark.parametrize(
    ("mutate", "expect_ok", "expected_in_error"),
    [
        pytest.param(_unchanged, True, "", id="unchanged-copy"),
        pytest.param(_add_unknown_key, False, "bogus_option", id="unknown-key"),
        pytest.param(_bad_condition, False, "condition", id="bad-condition"),
        pytest.param(_undefined_dependency, False, "no_such_service", id="undefined-dependency"),
        pytest.param(_numeric_grace_period, False, "stop_grace_period", id="numeric-duration"),
    ],
)
def test_docker_compose_config_rejects_broken_file(
    docker_compose: list[str],
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    expect_ok: bool,
    expected_in_error: str,
) -> None:
    broken = load_compose()
    mutate(broken)
    target = tmp_path / "docker-compose.yml"
    target.write_text(yaml.safe_dump(broken, sort_keys=False), encoding="utf-8")

    result = run_config(docker_compose, target)

    if expect_ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, "Compose accepted a broken file"
        assert expected_in_error in result.stderr + result.stdout


def test_docker_compose_config_rejects_invalid_yaml(
    docker_compose: list[str], tmp_path: Path
) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    target = tmp_path / "docker-compose.yml"
    target.write_text(text.replace("services:", "services: [", 1), encoding="utf-8")
    result = run_config(docker_compose, target)
    assert result.returncode != 0, "Compose accepted unparsable YAML"
