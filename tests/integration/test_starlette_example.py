"""docs/examples/starlette_app.py: a web app calling a service through AsyncRequestor."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.testclient import TestClient

from reqrep import AsyncRequestor, Service, Settings, Worker
from reqrep.testing import LocalAsyncRequestor

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "starlette_app.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("starlette_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_app_calls_the_service_through_the_broker(
    example: ModuleType, demo_worker: Worker, settings: Settings, service_name: str
) -> None:
    app = example.create_app(AsyncRequestor(settings=settings, service=service_name))
    with TestClient(app) as client:
        assert client.get("/add", params={"a": 1, "b": 2}).json() == {"sum": 3.0}
        assert [client.get("/add", params={"a": i, "b": i}).json()["sum"] for i in range(20)] == [
            2.0 * i for i in range(20)
        ]
        assert client.get("/add", params={"a": "x"}).status_code == 400


def test_a_missing_service_is_a_503(example: ModuleType, settings: Settings) -> None:
    app = example.create_app(AsyncRequestor(settings=settings, service="no-such-service-here"))
    with TestClient(app) as client:
        response = client.get("/add", params={"a": 1, "b": 2})
    assert response.status_code == 503
    assert "no-such-service-here" in response.json()["error"]


def test_the_app_can_be_tested_without_a_broker(example: ModuleType) -> None:
    broken = Service("demo")

    @broken.handler
    def add(_payload: Any) -> None:
        raise ArithmeticError("overflow")

    with TestClient(example.create_app(LocalAsyncRequestor(broken))) as client:
        response = client.get("/add", params={"a": 1, "b": 2})
    assert (response.status_code, response.json()) == (502, {"error": "ArithmeticError: overflow"})
