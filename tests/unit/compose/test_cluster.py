"""docker-compose.yml's ``cluster`` profile: three nodes, and clients given every node."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from reqrep.common.addresses import split_urls
from tests.unit.compose.support import (
    BROKER,
    CLUSTER_CLI,
    CLUSTER_CONF,
    CLUSTER_NODES,
    CLUSTER_PROFILE,
    CLUSTER_WORKER,
    REPO_ROOT,
    URL_USERINFO,
    env_mapping,
    host_ports,
    is_interpolation,
    parse_duration,
)


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
