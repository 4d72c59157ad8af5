"""The import directions between reqrep's layers, read from the source with ``ast``.

- ``reqrep.common`` imports neither side;
- ``reqrep.worker`` never imports ``reqrep.requestor``, and the other way round;
- only ``reqrep.cli`` (and the package face) may import both;
- nothing in the product imports the tools (``bench``) or the tests, and the tools never import
  the tests;
- the product imports its own code only as ``reqrep.*``, never as a bare ``common``/``worker``;
- pika is imported only inside the transport seam (``reqrep.common._transport``), and never by
  its in-memory transport.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "common": ("reqrep.requestor", "reqrep.worker", "reqrep.cli", "bench", "tests"),
    "requestor": ("reqrep.worker", "reqrep.cli", "bench", "tests"),
    "worker": ("reqrep.requestor", "reqrep.cli", "bench", "tests"),
    "reqrep": ("bench", "tests"),
    "bench": ("tests",),
}
BARE = ("common", "requestor", "worker")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _sources(folder: str) -> list[Path]:
    paths = sorted((ROOT / folder).rglob("*.py"))
    assert paths, f"no sources found under {folder}/"
    return paths


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_one_way(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(folder)
        for name in _imports(path)
        if any(_under(name, banned) for banned in FORBIDDEN[folder])
    ]
    assert wrong == []


@pytest.mark.parametrize("folder", ["common", "requestor", "worker", "reqrep", "bench", "tests"])
def test_own_code_is_imported_under_reqrep_only(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(folder)
        for name in _imports(path)
        if any(_under(name, bare) for bare in BARE)
    ]
    assert wrong == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from reqrep.requestor.client import Requestor\nimport worker.server\n")
    assert _imports(bad) == ["reqrep.requestor.client", "worker.server"]
    assert _under("reqrep.requestor.client", "reqrep.requestor")
    assert not _under("reqrep.requestors", "reqrep.requestor")


def test_pika_is_imported_only_inside_the_transport_package() -> None:
    transport = ROOT / "common" / "_transport"
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in ("common", "requestor", "worker", "reqrep")
        for path in _sources(folder)
        if transport not in path.parents
        for name in _imports(path)
        if _under(name, "pika")
    ]
    assert wrong == []


def test_the_memory_transport_does_not_import_pika() -> None:
    transport = ROOT / "common" / "_transport"
    wrong = [
        f"{path.name} imports {name}"
        for path in sorted(transport.glob("_memory*.py"))
        for name in _imports(path)
        if _under(name, "pika")
    ]
    assert wrong == []
