"""How the sources become the one package ``reqrep``: pyproject's ``package-dir``, no links.

The top-level folders common/, requestor/ and worker/ are mapped to reqrep.common,
reqrep.requestor and reqrep.worker. (The wheel built from a clone without symlinks is installed
and serves a call in tests/integration/test_wheel.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import reqrep
import reqrep.common

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def _packages_on_disk() -> set[str]:
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    return found


def test_every_package_folder_is_listed_and_nothing_else() -> None:
    assert sorted(SETUPTOOLS["packages"]) == sorted(_packages_on_disk())


def test_the_three_folders_map_into_reqrep() -> None:
    assert SETUPTOOLS["package-dir"] == {
        "reqrep": "reqrep",
        "reqrep.common": "common",
        "reqrep.requestor": "requestor",
        "reqrep.worker": "worker",
    }
    assert Path(reqrep.common.__file__).parent == ROOT / "common"


def test_the_repository_holds_no_symlink() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    links = [line.split("\t", 1)[1] for line in listed.stdout.splitlines() if line[:6] == "120000"]
    assert links == []


@pytest.mark.parametrize("bare", ["common", "requestor", "worker", "common.errors"])
def test_a_bare_import_of_a_source_folder_is_refused(bare: str) -> None:
    # From the checkout's root, `import common` would otherwise load a second copy of the
    # modules: `except common.errors.CallTimeout` would not catch reqrep's CallTimeout.
    run = subprocess.run(
        [sys.executable, "-c", f"import {bare}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    package = bare.partition(".")[0]
    assert run.returncode == 1
    assert f"import reqrep.{package}, not {package}" in run.stderr


def test_the_package_ships_its_type_marker_and_license() -> None:
    assert (Path(reqrep.__file__).parent / "py.typed").is_file()
    assert SETUPTOOLS["package-data"]["reqrep"] == ["py.typed"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
