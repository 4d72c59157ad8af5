"""Static checks of the image: the Dockerfile and .dockerignore (docker-compose.yml: see
compose/test_structure.py). No Docker engine is needed: the Dockerfile is read as text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# What `pip install .` needs: the package folders are copied as they are, so that the build works
# whether reqrep/ links the other three in or pyproject.toml maps them (package-dir).
PACKAGES = ("reqrep", "common", "requestor", "worker")
PIP_HELPER = "deploy/image/pip.sh"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    if pending:
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON array) form: {args}"
    return [str(v) for v in value]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def test_dockerfile_instructions_join_continuations() -> None:
    text = "# c\nFROM x\nRUN a \\\n && b\n\nUSER 1000\n"
    assert dockerfile_instructions(text) == [("FROM", "x"), ("RUN", "a  && b"), ("USER", "1000")]


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def _only(instructions: list[tuple[str, str]], keyword: str) -> Iterator[str]:
    return (args for kw, args in instructions if kw == keyword)


def test_dockerfile_entrypoint_is_reqrep(dockerfile: list[tuple[str, str]]) -> None:
    entrypoints = list(_only(dockerfile, "ENTRYPOINT"))
    assert entrypoints, "no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ["reqrep"]
    cmds = list(_only(dockerfile, "CMD"))
    assert cmds, "no CMD"
    assert exec_form(cmds[-1]) == ["worker", "reqrep.worker.demo:service"]


def test_dockerfile_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    users = list(_only(dockerfile, "USER"))
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), f"final USER is {users[-1]!r}"
    keywords = [kw for kw, _ in dockerfile]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:], "nothing should RUN after dropping privileges"


def test_dockerfile_runtime_settings(dockerfile: list[tuple[str, str]]) -> None:
    assert list(_only(dockerfile, "STOPSIGNAL")) == ["SIGTERM"]
    env_text = " ".join(_only(dockerfile, "ENV"))
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env_text), env_text


def test_dockerfile_installs_project_without_pip_cache(
    dockerfile: list[tuple[str, str]],
) -> None:
    runs = list(_only(dockerfile, "RUN"))
    # pip runs through deploy/image/pip.sh, which adds the build's optional CA bundle and index.
    installs = [r for r in runs if re.search(r"\bpip(\.sh)? install\b", r)]
    assert installs, "the project is not pip-installed"
    for run in installs:
        assert "--no-cache-dir" in run, run
        assert "--mount=type=secret,id=ca_bundle" in run, "pip without the build's CA bundle"
        assert "--mount=type=secret,id=pip_index_url" in run, "pip without the build's index"
    assert any(re.search(r"pip(\.sh)? install (\S+ )*\.(\s|$)", r) for r in installs), installs


def test_pip_helper_is_in_the_build_context_but_not_the_image(
    dockerfile: list[tuple[str, str]],
) -> None:
    runs = [r for r in _only(dockerfile, "RUN") if "pip.sh" in r]
    assert runs
    for run in runs:
        # A bind mount: read during the RUN, absent from every layer.
        assert f"--mount=type=bind,source={PIP_HELPER},target=/tmp/pip.sh" in run, run
    assert not any(PIP_HELPER in args for args in _only(dockerfile, "COPY"))
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    # .dockerignore leaves deploy/ out and lets this one file back in (the later line wins).
    assert lines.index(f"!{PIP_HELPER}") > lines.index("deploy")


def test_dockerfile_copies_everything_pyproject_needs(dockerfile: list[tuple[str, str]]) -> None:
    copied: set[str] = set()
    for args in _only(dockerfile, "COPY"):
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        copied.update(s.rstrip("/") for s in sources)
    assert {"pyproject.toml", "README.md", *PACKAGES} <= copied, copied
    assert "." not in copied, "COPY . busts the layer cache on every change"


def test_dockerignore_keeps_context_small_but_complete() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".git", "tests", ".venv", "**/__pycache__", ".pytest_cache"):
        assert excluded in patterns, f".dockerignore should exclude {excluded}"
    for needed in ("pyproject.toml", "README.md", *PACKAGES, "*", "*.md", "*.toml"):
        assert needed not in patterns, f".dockerignore excludes {needed}, which the build needs"
