"""The built package, as a user gets it: one top-level package, and a call through it.

Clones the repository with ``core.symlinks=false`` (as on Windows: a link would become a small
text file), builds an sdist from the clone and a wheel from the sdist (as pip does from PyPI),
installs the wheel into a fresh venv, checks that ``reqrep`` is the only top-level name it adds
and that it has every module of the checkout, and runs one call against the broker from that
venv, outside the source tree, so nothing from the checkout can stand in for the package.

The clone holds what is committed (HEAD): on a CI's clean clone that is the tree under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from reqrep.common import Settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("reqrep", "common", "requestor", "worker")

CALL = """
import sys
from reqrep import Requestor, Service, Worker

service = Service(sys.argv[2])

@service.handler("add")
def add(payload):
    return payload["a"] + payload["b"]

with Worker(service, sys.argv[1], concurrency=1):
    with Requestor(sys.argv[1], service=sys.argv[2], timeout=20) as rq:
        print(rq.call("add", {"a": 2, "b": 3}))
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"rich", "common", "worker", "requestor"})
print("loaded:", loaded)
"""


def _site_packages(env_dir: Path) -> Path:
    found = list(env_dir.glob("lib/python*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def _top_level(site: Path) -> set[str]:
    return {p.name.removesuffix(".py") for p in site.iterdir() if not p.name.endswith("-info")}


def _modules(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.py")}


def _checkout_modules() -> set[str]:
    """reqrep's modules as they install: reqrep/..., reqrep/common/..., ..."""
    found = set()
    for folder in SOURCES:
        prefix = Path("reqrep") if folder == "reqrep" else Path("reqrep", folder)
        found |= {str(prefix / name) for name in _modules(ROOT / folder)}
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_installs_only_reqrep_and_serves_a_call(
    tmp_path: Path, settings: Settings, service_name: str
) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "-c", "core.symlinks=false", str(ROOT), str(clone)],
        check=True,
        timeout=120,
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "-o", str(dist), str(clone)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (sdist,) = dist.glob("reqrep-*.tar.gz")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(sdist)],
        check=True,
        timeout=240,
    )
    (wheel,) = dist.glob("reqrep-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    before = _top_level(_site_packages(env_dir))
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=240)
    added = _top_level(_site_packages(env_dir)) - before
    # Its dependencies (pika, click) bring their own names; reqrep itself brings one.
    assert "reqrep" in added
    assert added - {"reqrep", "pika", "click"} == set(), added
    installed = {f"reqrep/{name}" for name in _modules(_site_packages(env_dir) / "reqrep")}
    assert installed == _checkout_modules()

    script = tmp_path / "call.py"
    script.write_text(CALL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(python), "-I", str(script), settings.url, service_name],
        check=True, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert out.stdout.splitlines() == ["5", "loaded: []"], out.stderr
