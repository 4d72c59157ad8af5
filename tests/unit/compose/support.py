"""What the compose tests share: the file's names, its parsing, and running Compose v2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

BROKER = "rabbitmq"
WORKER = "worker"
CLI = "cli"
CLUSTER_PROFILE = "cluster"
CLUSTER_NODES = ("rabbit1", "rabbit2", "rabbit3")
CLUSTER_WORKER = "cluster-worker"
CLUSTER_CLI = "cluster-cli"
CLUSTER_CONF = REPO_ROOT / "deploy" / "cluster" / "rabbitmq.conf"

# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and nothing else.
INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}")
# user:password@ in a URL, where either part may be an interpolation (which may contain ':').
URL_USERINFO = re.compile(
    r"://(?P<user>(?:\$\{[^}]*\}|[^:@/$])*):(?P<password>(?:\$\{[^}]*\}|[^@/$])*)@"
)
SECRET_KEY = re.compile(r"PASS|SECRET|TOKEN|API_?KEY", re.IGNORECASE)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def env_mapping(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's `environment`, in either the mapping or the list form, as a dict."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    result: dict[str, str | None] = {}
    for item in env:
        key, sep, value = str(item).partition("=")
        result[key] = value if sep else None
    return result


def is_interpolation(value: str) -> bool:
    return INTERPOLATION.fullmatch(value) is not None


def literal_secrets(compose: dict[str, Any]) -> list[str]:
    """Every secret written into the file as it is, rather than through `${VAR...}`."""
    found: list[str] = []
    for name, service in (compose.get("services") or {}).items():
        for key, value in env_mapping(service).items():
            if value is None:  # passed through from the shell
                continue
            if SECRET_KEY.search(key) and not is_interpolation(value):
                found.append(f"{name}: {key}={value!r}")
            for match in URL_USERINFO.finditer(value):
                if match["password"] and not is_interpolation(match["password"]):
                    found.append(f"{name}: {key} has a literal password in its URL")
    return found


def host_ports(service: dict[str, Any]) -> list[Any]:
    return list(service.get("ports") or [])


def parse_duration(text: str) -> float:
    """A Compose duration (`35s`, `1m30s`, `500ms`, `1h`) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Compose duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def find_compose_v2() -> list[str] | None:
    """The command of a Compose v2 on this machine (`docker compose`, or a v2 `docker-compose`)."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        try:
            version = subprocess.run(
                [*command, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if version.returncode == 0 and re.match(r"v?2\.", version.stdout.strip()):
            return command
    return None


def _compose(
    command: list[str], compose_file: Path, args: tuple[str, ...], env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    # Relative paths (build: .) resolve against the repo root, wherever the file lies. COMPOSE_*
    # and the file's own variables from the caller's shell must not change what is checked; no
    # engine is needed, so none is named.
    own = re.compile(r"COMPOSE_|DOCKER_HOST$|RABBITMQ_|RABBIT\d_|REQREP_")
    environment = {k: v for k, v in os.environ.items() if not own.match(k)} | (env or {})
    return subprocess.run(
        [*command, "--project-directory", str(REPO_ROOT), "-f", str(compose_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=environment,
    )


def run_config(
    command: list[str], compose_file: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """``config -q`` of ``compose_file`` (``options`` go before ``config``)."""
    return _compose(command, compose_file, (*options, "config", "-q"), None)


def rendered(
    command: list[str], *options: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The project as Compose resolves it (``config --format json``) with ``env`` set."""
    result = _compose(command, COMPOSE_FILE, (*options, "config", "--format", "json"), env)
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    assert isinstance(project, dict)
    return project
