"""docs/examples/starlette_app.py: a web app calling a service through AsyncRequestor."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.testclient import TestClient

from reqrep import AsyncRequestor, Service, Settings, Worker
from reqrep.testing import LocalAsyncRequestor
from tests.support import Admin

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "starlette_app.py"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    sys.path.insert(0, str(EXAMPLE.parent))  # the app imports shop.py from beside it
    try:
        spec = importlib.util.spec_from_file_location("starlette_app", EXAMPLE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(EXAMPLE.parent))
        sys.modules.pop("shop", None)


def test_the_app_makes_typed_calls_to_the_typed_service(
    example: ModuleType, settings: Settings, admin: Admin, prefix: str
) -> None:
    shop = sys.modules["shop"]
    worker = Worker(shop.service, settings=settings).start()
    try:
        app = example.create_app(AsyncRequestor(settings=settings, service="demo"))
        with TestClient(app) as client:
            good = {"customer": "ann", "lines": [{"sku": "tea", "quantity": 2}]}
            assert client.post("/orders", json=good).json() == {"order_id": "ann-1", "items": 2}
            bad = client.post("/orders", json={"customer": "bo", "lines": [{"sku": "tea"}]})
            assert (bad.status_code, bad.json()["fields"]) == (422, ["lines.0.quantity"])
            gone = {"customer": "cy", "lines": [{"sku": "unicorn", "quantity": 1}]}
            response = client.post("/orders", json=gone)
            assert (response.status_code, response.json()) == (
                409,
                {"error": "no unicorns left", "sku": "unicorn"},
            )
    finally:
        worker.stop(5)
        admin.delete_service_queues(prefix, "shop")


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
