"""How docker-compose.yml builds the image: what it passes to the Dockerfile, and that a CA bundle
and a package index reach the build as secrets, never as arguments (issue 24, finding 5)."""

from __future__ import annotations

import re
from typing import Any

from tests.unit.compose.support import REPO_ROOT, WORKER, rendered

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
SECRET_MOUNTS = set(re.findall(r"--mount=type=secret,id=([a-z_]+)", DOCKERFILE))
ARGS = set(re.findall(r"^ARG ([A-Z_]+)", DOCKERFILE, re.MULTILINE))


def test_the_dockerfile_reads_both_build_secrets_optionally() -> None:
    assert {"ca_bundle", "pip_index_url"} == SECRET_MOUNTS
    # A build without them (PyPI, pip's own CAs) must work: no mount may require its secret.
    assert "required=true" not in DOCKERFILE


def test_compose_passes_the_secrets_the_dockerfile_reads(compose: dict[str, Any]) -> None:
    build = compose["services"][WORKER]["build"]
    assert set(build.get("secrets") or []) == SECRET_MOUNTS
    declared = compose.get("secrets") or {}
    assert set(declared) == SECRET_MOUNTS
    sources = {name: {k: str(v) for k, v in spec.items()} for name, spec in declared.items()}
    # Each from a documented REQREP_BUILD_* variable, empty when it is unset.
    assert sources["ca_bundle"] == {
        "file": "${REQREP_BUILD_CA_BUNDLE:-./deploy/image/no-ca-bundle.pem}"
    }
    assert sources["pip_index_url"] == {"environment": "REQREP_BUILD_PIP_INDEX_URL"}


def test_build_arguments_are_the_dockerfiles_and_carry_no_secret(compose: dict[str, Any]) -> None:
    args = compose["services"][WORKER]["build"].get("args") or {}
    assert set(args) <= ARGS, f"arguments the Dockerfile does not declare: {set(args) - ARGS}"
    # Arguments are kept in the image's history: an index URL (which may hold a token) or a
    # certificate must never be one.
    for name in set(args) | ARGS:
        assert not re.search(r"INDEX|CERT|CA_|TOKEN|PASS", name), name


def test_unset_build_variables_leave_the_defaults(docker_compose: list[str]) -> None:
    project = rendered(docker_compose)
    # An empty file of the repository, not /dev/null, which Windows has not.
    default = REPO_ROOT / "deploy" / "image" / "no-ca-bundle.pem"
    assert project["secrets"]["ca_bundle"]["file"] == str(default)
    assert default.read_bytes() == b"", "the default CA bundle must stay empty"
    assert project["services"][WORKER]["build"]["args"] == {"REQREP_EXTRAS": ""}


def test_build_variables_reach_the_build(docker_compose: list[str]) -> None:
    project = rendered(
        docker_compose,
        env={"REQREP_BUILD_CA_BUNDLE": "/etc/proxy-ca.pem", "REQREP_EXTRAS": "metrics,otel"},
    )
    assert project["secrets"]["ca_bundle"]["file"] == "/etc/proxy-ca.pem"
    assert project["services"][WORKER]["build"]["args"] == {"REQREP_EXTRAS": "metrics,otel"}
