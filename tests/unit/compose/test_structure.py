"""Static checks of docker-compose.yml's structure (the image: test_dockerfile.py).

No Docker engine and no broker are needed. The compose file is parsed with PyYAML for the
structural rules, and validated by ``docker-compose config -q`` (Compose v1, which validates
without an engine). Where ``docker-compose`` is missing the validation tests skip, except on CI
(``CI=true``), where they fail: CI must install it.
"""

from __future__ import annotations

import re
from typing import Any

from tests.unit.compose.support import (
    BROKER,
    CLI,
    REPO_ROOT,
    URL_USERINFO,
    WORKER,
    env_mapping,
    host_ports,
    is_interpolation,
    literal_secrets,
    parse_duration,
)


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
