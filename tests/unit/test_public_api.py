"""The packages' public faces: ``__all__`` of each package and module, and the README example.

Nothing here connects to a broker.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType
from typing import Any

import pytest

from reqrep.common import ClosedError, ConfigError, SerializationError, Settings
from reqrep.requestor import Requestor  # the README's import lines
from reqrep.worker import Service, Worker

PACKAGES = [
    "reqrep",
    "reqrep.cli",
    "reqrep.common",
    "reqrep.requestor",
    "reqrep.testing",
    "reqrep.worker",
]


def _modules() -> list[str]:
    names = list(PACKAGES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names += [
            f"{package}.{info.name}"
            for info in pkgutil.iter_modules(path)
            if info.name != "__main__"  # running it would start the CLI
        ]
    return sorted(names)


def _isort_key(name: str) -> tuple[int, list[Any]]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then the rest; natural sort within."""
    if len(name) > 1 and name.isupper():
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return kind, natural


def _all(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{module.__name__} has no __all__ list"
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_package_all_names_are_importable(package: str) -> None:
    module = importlib.import_module(package)
    names = _all(module)
    assert names
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []
    namespace: dict[str, Any] = {}
    exec(f"from {package} import *", namespace)  # noqa: S102 - the star import is the test
    assert set(names) <= set(namespace)


@pytest.mark.parametrize("name", _modules())
def test_all_is_sorted_and_unique(name: str) -> None:
    names = _all(importlib.import_module(name))
    assert len(names) == len(set(names)), "duplicates in __all__"
    assert names == sorted(names, key=_isort_key)


@pytest.mark.parametrize("name", _modules())
def test_module_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert [n for n in _all(module) if not hasattr(module, n)] == []


def test_common_exports_the_whole_error_hierarchy() -> None:
    common = importlib.import_module("reqrep.common")
    errors = importlib.import_module("reqrep.common.errors")
    assert set(errors.__all__) <= set(common.__all__)


def test_the_face_exports_every_public_name_of_the_three_packages() -> None:
    face = importlib.import_module("reqrep")
    for package in ("reqrep.common", "reqrep.requestor", "reqrep.worker"):
        assert set(_all(importlib.import_module(package))) <= set(face.__all__), package


def test_the_face_names_are_the_objects_of_the_packages() -> None:
    import reqrep  # noqa: PLC0415 - the import is what is tested
    from reqrep.common.errors import ReqrepError  # noqa: PLC0415

    assert reqrep.ReqrepError is ReqrepError
    assert reqrep.Requestor is Requestor
    assert reqrep.Worker is Worker


def test_isort_key_orders_like_ruff() -> None:
    assert sorted(["redact_url", "Settings", "DEFAULT_URL", "A", "x2", "x10"], key=_isort_key) == [
        "DEFAULT_URL",
        "A",
        "Settings",
        "redact_url",
        "x2",
        "x10",
    ]


# -- the README example, as far as it runs without a broker -----------------------------------


def test_readme_example_imports_and_defines_a_service() -> None:
    service = Service("calc")

    @service.handler
    def add(payload: dict[str, float]) -> float:
        return payload["a"] + payload["b"]

    assert service.methods == ["add"]
    assert callable(Requestor)
    assert callable(Worker)


def test_requestor_construction_does_not_connect_and_hides_the_password() -> None:
    settings = Settings(url="amqp://alice:s3cr3t@broker.invalid:5672/%2F", timeout=2.0)
    requestor = Requestor(settings=settings, service="calc")
    try:
        assert requestor.settings.timeout == 2.0
        assert "s3cr3t" not in repr(requestor)
        assert "new" in repr(requestor)
        assert requestor.stats().pending == 0
    finally:
        requestor.close()


def test_requestor_arguments_override_settings() -> None:
    requestor = Requestor(
        "amqp://bob:pw@other.invalid/", settings=Settings(timeout=9.0), timeout=1.5
    )
    requestor.close()
    assert requestor.settings.url == "amqp://bob:pw@other.invalid/"
    assert requestor.settings.timeout == 1.5


def test_closed_requestor_refuses_calls_without_connecting() -> None:
    requestor = Requestor(settings=Settings(url="amqp://broker.invalid/"), service="calc")
    requestor.close()
    with pytest.raises(ClosedError):
        requestor.call("add", {"a": 1, "b": 2})
    with pytest.raises(ClosedError):
        requestor.open()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": "add", "payload": float("nan")}, SerializationError),
        ({"method": "add", "payload": object()}, SerializationError),
        ({"method": ""}, ConfigError),
        ({"method": "add", "timeout": 0}, ConfigError),
        ({"method": "add", "timeout": -1.0}, ConfigError),
        ({"method": "x" * 300}, ConfigError),
    ],
)
def test_requestor_validates_calls_before_touching_the_connection(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    requestor = Requestor(settings=Settings(url="amqp://broker.invalid/"), service="calc")
    requestor.close()  # a closed requestor raises ClosedError if validation lets the call through
    with pytest.raises(error):
        requestor.call(**kwargs)


def test_requestor_without_a_service_refuses_calls() -> None:
    requestor = Requestor(settings=Settings(url="amqp://broker.invalid/"))
    requestor.close()
    with pytest.raises(ConfigError, match="service"):
        requestor.call("add")
