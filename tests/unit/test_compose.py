"""Static checks of the container setup: docker-compose.yml (the image: test_dockerfile.py).

No Docker engine and no broker are needed. The compose file is parsed with PyYAML for the
structural rules, and validated by ``docker-compose config -q`` (Compose v1, which validates
without an engine). Where ``docker-compose`` is missing the validation tests skip, except on CI
(``CI=true``), where they fail: CI must install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from reqrep.common.addresses import split_urls

REPO_ROOT = Path(__file__).resolve().parents[2]
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


# --------------------------------------------------------------------------------------------
# helpers


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


# --------------------------------------------------------------------------------------------
# fixtures


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


def run_config(exe: str, compose_file: Path, *options: str) -> subprocess.CompletedProcess[str]:
    # Relative paths (build: .) resolve against the repo root, wherever the file lies; COMPOSE_*
    # variables from the caller's shell must not change what is validated.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(
        [
            exe,
            "--project-directory",
            str(REPO_ROOT),
            "-f",
            str(compose_file),
            *options,
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )


# --------------------------------------------------------------------------------------------
# the helpers themselves (so that a check that can never fail is caught)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${RABBITMQ_PASSWORD:-reqrep}", True),
        ("${RABBITMQ_PASSWORD}", True),
        ("${RABBITMQ_PASSWORD:?set it}", True),
        ("hunter2", False),
        ("${RABBITMQ_PASSWORD:-x}tail", False),
        ("prefix${RABBITMQ_PASSWORD}", False),
        ("${RABBITMQ_PASSWORD:+x}", False),
    ],
)
def test_is_interpolation(value: str, expected: bool) -> None:
    assert is_interpolation(value) is expected


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"RABBITMQ_DEFAULT_PASS": "${P:-local}"}, 0),
        ({"RABBITMQ_DEFAULT_PASS": None}, 0),
        ({"RABBITMQ_DEFAULT_PASS": "hunter2"}, 1),
        (["RABBITMQ_DEFAULT_PASS=hunter2"], 1),
        (["API_TOKEN=abc"], 1),
        ({"AMQP_URL": "amqp://${U:-u}:${P:-p}@rabbitmq:5672/%2F"}, 0),
        ({"AMQP_URL": "amqp://${U:-u}:hunter2@rabbitmq:5672/%2F"}, 1),
        ({"AMQP_URL": "amqp://reqrep:reqrep@rabbitmq:5672/%2F"}, 1),
        ({"AMQP_URL": "amqp://rabbitmq:5672/%2F"}, 0),
    ],
)
def test_literal_secrets_detects_hardcoded_values(environment: Any, expected: int) -> None:
    compose = {"services": {"svc": {"environment": environment}}}
    assert len(literal_secrets(compose)) == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("35s", 35.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["35", "", "s", "35 s", "abc"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a Compose duration"):
        parse_duration(text)


# --------------------------------------------------------------------------------------------
# docker-compose.yml: structure


def test_compose_file_uses_compose_spec_without_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose spec has no top-level `version:` key"


def test_broker_is_rabbitmq_management_image(services: dict[str, dict[str, Any]]) -> None:
    image = str(services[BROKER].get("image", ""))
    assert re.fullmatch(r"rabbitmq:\d+(\.\d+)*-management(-alpine)?", image), image


def test_broker_has_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    healthcheck = services[BROKER].get("healthcheck")
    assert isinstance(healthcheck, dict), "the broker needs a healthcheck"
    assert not healthcheck.get("disable", False)
    test = healthcheck.get("test")
    command = " ".join(test) if isinstance(test, list) else str(test)
    assert "rabbitmq-diagnostics" in command
    assert re.search(r"\b(ping|check_port_connectivity|check_running)\b", command), command
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in healthcheck, f"healthcheck.{key} is missing"
    for key in ("interval", "timeout", "start_period"):
        assert parse_duration(str(healthcheck[key])) > 0
    assert int(healthcheck["retries"]) >= 1


def test_broker_ports_are_published_on_localhost_only(
    services: dict[str, dict[str, Any]],
) -> None:
    ports = host_ports(services[BROKER])
    published: set[str] = set()
    for port in ports:
        if isinstance(port, dict):  # long syntax
            assert port.get("host_ip") == "127.0.0.1", port
            published.add(str(port.get("target")))
        else:
            assert str(port).startswith("127.0.0.1:"), f"{port!r} is not bound to 127.0.0.1"
            published.add(str(port).split(":")[-1].split("/")[0])
    assert {"5672", "15672"} <= published, published


def test_broker_credentials_come_from_environment(services: dict[str, dict[str, Any]]) -> None:
    env = env_mapping(services[BROKER])
    user = env.get("RABBITMQ_DEFAULT_USER")
    password = env.get("RABBITMQ_DEFAULT_PASS")
    assert user is not None, "RabbitMQ's guest user cannot connect from other containers"
    assert password is not None
    assert is_interpolation(user), user
    assert is_interpolation(password), password
    assert "guest" not in user


def test_no_literal_passwords(compose: dict[str, Any]) -> None:
    assert literal_secrets(compose) == []


def test_worker_amqp_url_uses_broker_credentials(services: dict[str, dict[str, Any]]) -> None:
    broker_env = env_mapping(services[BROKER])
    for name in (WORKER, CLI):
        url = env_mapping(services[name]).get("AMQP_URL")
        assert url is not None, f"{name} has no AMQP_URL"
        match = URL_USERINFO.search(url)
        assert match is not None, url
        assert match["user"] == broker_env["RABBITMQ_DEFAULT_USER"]
        assert match["password"] == broker_env["RABBITMQ_DEFAULT_PASS"]
        assert f"@{BROKER}:5672/" in url, url


def test_worker_depends_on_healthy_broker(services: dict[str, dict[str, Any]]) -> None:
    depends_on = services[WORKER].get("depends_on")
    assert isinstance(depends_on, dict), "use the long form to wait for the broker's health"
    assert depends_on.get(BROKER, {}).get("condition") == "service_healthy"


def test_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services[WORKER]
    assert "container_name" not in worker, "container_name breaks --scale worker=N"
    assert host_ports(worker) == [], "published host ports break --scale worker=N"
    assert "profiles" not in worker, "`docker compose up` must start the worker"


def test_worker_runs_demo_service_and_drains_on_stop(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services[WORKER]
    assert "build" in worker
    raw = worker.get("command")
    assert raw, "the worker needs an explicit command"
    command = raw.split() if isinstance(raw, str) else [str(c) for c in raw]
    assert command[:2] == ["worker", "reqrep.worker.demo:service"], command
    assert worker.get("restart") == "unless-stopped"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    # The worker may take ~30 s to finish in-flight calls after SIGTERM.
    assert parse_duration(str(worker.get("stop_grace_period", "10s"))) >= 30


def test_worker_healthcheck_asks_the_workers_health_port(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services[WORKER]
    raw = worker["command"]
    command = raw.split() if isinstance(raw, str) else [str(c) for c in raw]
    assert "--health-port" in command, "the worker must serve /healthz for its healthcheck"
    port = command[command.index("--health-port") + 1]
    healthcheck = worker.get("healthcheck")
    assert isinstance(healthcheck, dict), "the worker needs a healthcheck"
    assert not healthcheck.get("disable", False)
    test = healthcheck["test"]
    assert isinstance(test, list), "exec form: no shell in the check"
    assert test[0] == "CMD"
    # The image must hold what the check runs: its base image is Python's, and the check uses
    # the standard library only (no curl or wget in a slim image).
    assert test[1] == "python"
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:\S+", dockerfile, re.MULTILINE), "the image must have python"
    script = " ".join(test[2:])
    assert "urllib.request" in script
    assert f"http://127.0.0.1:{port}/healthz" in script, script
    for key in ("interval", "timeout", "start_period"):
        assert parse_duration(str(healthcheck[key])) > 0, key
    assert parse_duration(str(healthcheck["timeout"])) < parse_duration(
        str(healthcheck["interval"])
    )
    assert int(healthcheck["retries"]) >= 1
    assert host_ports(worker) == [], "the health port stays inside the container"


def test_cli_is_only_started_on_demand(services: dict[str, dict[str, Any]]) -> None:
    cli = services[CLI]
    assert cli.get("profiles"), "cli must be in a profile so `docker compose up` skips it"
    assert "tools" in cli["profiles"]
    assert "build" in cli
    entrypoint = cli.get("entrypoint")
    assert (entrypoint.split() if isinstance(entrypoint, str) else entrypoint) == ["reqrep"]
    env = env_mapping(cli)
    assert env.get("REQREP_SERVICE") == "demo"
    assert cli.get("depends_on", {}).get(BROKER, {}).get("condition") == "service_healthy"
    assert "container_name" not in cli


# --------------------------------------------------------------------------------------------
# docker-compose.yml: the `cluster` profile


def interpolated_default(value: str) -> str:
    """``value`` with every ``${VAR:-default}`` replaced by its default (what Compose uses when
    the variable is unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def test_cluster_profile_has_three_nodes_sharing_one_cookie(
    services: dict[str, dict[str, Any]],
) -> None:
    broker_env = env_mapping(services[BROKER])
    cookies = set()
    for name in CLUSTER_NODES:
        node = services[name]
        assert node.get("profiles") == [CLUSTER_PROFILE], f"{name} must start only on demand"
        assert node.get("image") == services[BROKER].get("image")
        assert node.get("hostname") == name  # the node name rabbit@<hostname> is fixed
        env = env_mapping(node)
        assert env.get("RABBITMQ_DEFAULT_USER") == broker_env["RABBITMQ_DEFAULT_USER"]
        assert env.get("RABBITMQ_DEFAULT_PASS") == broker_env["RABBITMQ_DEFAULT_PASS"]
        cookie = env.get("RABBITMQ_ERLANG_COOKIE")
        assert cookie is not None
        assert is_interpolation(cookie), cookie
        cookies.add(cookie)
        mounts = [str(v) for v in node.get("volumes") or []]
        assert any(
            m.startswith(f"./{CLUSTER_CONF.relative_to(REPO_ROOT)}:/etc/rabbitmq/conf.d/")
            for m in mounts
        ), mounts
        assert "rabbitmq-diagnostics" in " ".join(node["healthcheck"]["test"])
        for port in host_ports(node):
            assert str(port).startswith("127.0.0.1:"), port
    assert len(cookies) == 1, "the nodes of one cluster share one Erlang cookie"


def test_cluster_config_discovers_the_three_nodes() -> None:
    settings = {}
    for line in CLUSTER_CONF.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            settings[key.strip()] = value.strip()
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    nodes = {v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.")}
    assert nodes == {f"rabbit@{name}" for name in CLUSTER_NODES}
    assert settings.get("queue_leader_locator") == "balanced"


@pytest.mark.parametrize("name", [CLUSTER_WORKER, CLUSTER_CLI])
def test_cluster_clients_are_given_every_node(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    client = services[name]
    assert client.get("profiles") == [CLUSTER_PROFILE]
    url = env_mapping(client).get("AMQP_URL")
    assert url is not None
    urls = split_urls(interpolated_default(url))  # what the worker itself accepts
    assert [urlsplit(u).hostname for u in urls] == list(CLUSTER_NODES)
    broker_env = env_mapping(services[BROKER])
    for match in URL_USERINFO.finditer(url):
        assert match["user"] == broker_env["RABBITMQ_DEFAULT_USER"]
        assert match["password"] == broker_env["RABBITMQ_DEFAULT_PASS"]
    depends_on = client.get("depends_on")
    assert isinstance(depends_on, dict)
    for node in CLUSTER_NODES:
        assert depends_on.get(node, {}).get("condition") == "service_healthy"
    assert "container_name" not in client
    assert host_ports(client) == []


def test_cluster_worker_drains_on_stop(services: dict[str, dict[str, Any]]) -> None:
    worker = services[CLUSTER_WORKER]
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert parse_duration(str(worker.get("stop_grace_period", "10s"))) >= 30
    command = [str(c) for c in worker.get("command") or []]
    assert command[:2] == ["worker", "reqrep.worker.demo:service"], command


# --------------------------------------------------------------------------------------------
# docker-compose.yml: validation by docker-compose itself


def test_docker_compose_config_is_valid(docker_compose: str) -> None:
    result = run_config(docker_compose, COMPOSE_FILE)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def test_docker_compose_cluster_profile_is_valid(docker_compose: str) -> None:
    result = run_config(docker_compose, COMPOSE_FILE, "--profile", "cluster")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def _add_unknown_key(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["bogus_option"] = True


def _bad_condition(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["depends_on"][BROKER]["condition"] = "service_bogus"


def _undefined_dependency(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["depends_on"] = {
        "no_such_service": {"condition": "service_started"}
    }


def _numeric_grace_period(compose: dict[str, Any]) -> None:
    compose["services"][WORKER]["stop_grace_period"] = 35


def _unchanged(compose: dict[str, Any]) -> None:
    del compose  # control: the copy itself must still validate


@pytest.mark.parametrize(
    ("mutate", "expect_ok", "expected_in_error"),
    [
        pytest.param(_unchanged, True, "", id="unchanged-copy"),
        pytest.param(_add_unknown_key, False, "bogus_option", id="unknown-key"),
        pytest.param(_bad_condition, False, "service_bogus", id="bad-condition"),
        pytest.param(_undefined_dependency, False, "no_such_service", id="undefined-dependency"),
        pytest.param(_numeric_grace_period, False, "stop_grace_period", id="numeric-duration"),
    ],
)
def test_docker_compose_config_rejects_broken_file(
    docker_compose: str,
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    expect_ok: bool,
    expected_in_error: str,
) -> None:
    broken = load_compose()
    mutate(broken)
    target = tmp_path / "docker-compose.yml"
    target.write_text(yaml.safe_dump(broken, sort_keys=False), encoding="utf-8")

    result = run_config(docker_compose, target)

    if expect_ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, "docker-compose accepted a broken file"
        assert expected_in_error in result.stderr + result.stdout


def test_docker_compose_config_rejects_invalid_yaml(docker_compose: str, tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    target = tmp_path / "docker-compose.yml"
    target.write_text(text.replace("services:", "services: [", 1), encoding="utf-8")
    result = run_config(docker_compose, target)
    assert result.returncode != 0, "docker-compose accepted unparsable YAML"
