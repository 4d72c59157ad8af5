"""Fixtures of the compose tests: the parsed file, its services, the ``docker-compose`` command."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.unit.compose.support import BROKER, CLI, WORKER, load_compose


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


@pytest.fixture
def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = (
            "docker-compose (Compose v1) is not on PATH; it validates docker-compose.yml "
            "without a Docker engine. Install it with `apt-get install docker-compose`."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return exe
