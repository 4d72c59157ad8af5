"""Static checks of docker-compose.yml's structure (the image: test_dockerfile.py).

No Docker engine and no broker are needed. The compose file is parsed with PyYAML for the
structural rules; where a rule is about what Compose makes of the file (variables, anchors), it is
checked on what Compose v2 renders (``config --format json``, no engine needed either), and those
tests skip where Compose v2 is missing, except on CI (``CI=true``), where they fail. The same rules
are checked on a running stack by scripts/compose-e2e.sh.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.unit.compose.support import (
    BROKER,
    CLI,
    CLUSTER_CLI,
    CLUSTER_NODES,
    CLUSTER_WORKER,
    REPO_ROOT,
    URL_USERINFO,
    WORKER,
    env_mapping,
    host_ports,
    is_interpolation,
    literal_secrets,
    parse_duration,
    rendered,
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


@pytest.mark.parametrize("name", [WORKER, CLUSTER_WORKER])
def test_worker_healthcheck_asks_the_workers_health_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    worker = services[name]
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


# Issue 24's findings, as far as the file shows them (scripts/compose-e2e.sh runs them).

PUBLISHED = re.compile(r"127\.0\.0\.1:\$\{(?P<var>[A-Z0-9_]+):-(?P<default>\d+)\}:(?P<target>\d+)")


def published_ports(service: dict[str, Any]) -> list[re.Match[str]]:
    found = []
    for port in host_ports(service):
        match = PUBLISHED.fullmatch(str(port))
        assert match, f"{port!r}: not 127.0.0.1:${{VARIABLE:-default}}:port"
        found.append(match)
    return found


def test_broker_ports_come_from_variables_with_defaults(
    services: dict[str, dict[str, Any]],
) -> None:
    ports = {(m["var"], m["default"], m["target"]) for m in published_ports(services[BROKER])}
    assert ports == {
        ("RABBITMQ_AMQP_PORT", "5672", "5672"),
        ("RABBITMQ_MANAGEMENT_PORT", "15672", "15672"),
    }


def test_every_published_port_has_its_own_variable(compose: dict[str, Any]) -> None:
    variables = [m["var"] for s in compose["services"].values() for m in published_ports(s)]
    assert len(variables) == len(set(variables)), variables
    defaults = [m["default"] for s in compose["services"].values() for m in published_ports(s)]
    assert len(defaults) == len(set(defaults)), "two services would take one host port"


def test_port_variables_move_the_published_ports(docker_compose: list[str]) -> None:
    project = rendered(
        docker_compose, env={"RABBITMQ_AMQP_PORT": "6001", "RABBITMQ_MANAGEMENT_PORT": "6002"}
    )
    broker = project["services"][BROKER]
    ports = {(p["target"], p["published"], p["host_ip"]) for p in broker["ports"]}
    assert ports == {(5672, "6001", "127.0.0.1"), (15672, "6002", "127.0.0.1")}


def test_every_reqrep_service_runs_one_image(compose: dict[str, Any]) -> None:
    built = {name: s for name, s in compose["services"].items() if "build" in s}
    assert set(built) == {WORKER, CLI, CLUSTER_WORKER, CLUSTER_CLI}
    images = {s.get("image") for s in built.values()}
    assert len(images) == 1, f"one tag, so `run --rm cli` runs what `up --build` built: {images}"
    (image,) = images
    assert image, "the services that build must name their image"
    assert "/" not in str(image), f"{image}: a local tag, no registry to pull it from"
    assert len({repr(s["build"]) for s in built.values()}) == 1, "one image, one way to build it"


def test_broker_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    sources = []
    for name in (BROKER, *CLUSTER_NODES):
        mounts = [str(v) for v in compose["services"][name].get("volumes") or []]
        data = [m.split(":")[0] for m in mounts if m.split(":")[1] == "/var/lib/rabbitmq"]
        # The image declares VOLUME /var/lib/rabbitmq: without a named volume there, each new
        # container gets an anonymous one (a password change loses the users; `down` leaks it).
        assert len(data) == 1, f"{name}: no named volume at /var/lib/rabbitmq: {mounts}"
        assert data[0] in declared, f"{name}: {data[0]} is not a named volume"
        sources.append(data[0])
    assert len(sources) == len(set(sources)), "each node keeps its own data"


@pytest.mark.parametrize("name", [WORKER, CLUSTER_WORKER])
def test_workers_serve_http_on_every_interface(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    # The worker's default will be 127.0.0.1: compose asks for 0.0.0.0 so that other containers
    # (a scraper, a proxy) reach /healthz and /metrics.
    every_interface = "0.0.0.0"  # noqa: S104 - what compose must ask for, not a bind here
    command = [str(c) for c in services[name]["command"]]
    env = env_mapping(services[name])
    if "--http-host" in command:
        assert command[command.index("--http-host") + 1] == every_interface
    else:
        assert env.get("REQREP_HTTP_HOST") == every_interface, f"{name} sets no HTTP host"
