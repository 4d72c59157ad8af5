"""Fixtures of the compose tests: the parsed file, its services, a Compose v2 command."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.unit.compose.support import BROKER, CLI, WORKER, find_compose_v2, load_compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    for name in (BROKER, WORKER, CLI):
        assert name in found, f"service {name!r} is missing"
    return found


@pytest.fixture(scope="session")
def docker_compose() -> list[str]:
    command = find_compose_v2()
    if command is None:
        message = (
            "Compose v2 is not on this machine (`docker compose` or a v2 `docker-compose`); it "
            "validates docker-compose.yml without a Docker engine (Compose v1 cannot: it rejects "
            "build secrets). Install it with "
            "`bash scripts/compose-v2.sh /usr/local/lib/docker/cli-plugins/docker-compose`."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return command
