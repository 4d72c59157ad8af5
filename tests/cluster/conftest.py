"""The cluster the cluster tests share: formed once per session, stopped at its end.

Where a cluster cannot be formed (not root, no rabbitmq-server) the tests are skipped with the
reason, except on CI (``CI=true``), where that fails the run: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

import pika
import pytest

from reqrep.common import Settings
from tests.cluster.harness import Cluster, ClusterUnavailable
from tests.cluster.scenarios import PREFIX


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        formed = Cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no RabbitMQ cluster: {exc}", pytrace=False)
        pytest.skip(f"no RabbitMQ cluster: {exc}")
    try:
        formed.form()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as exc:
        formed.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the RabbitMQ cluster did not form: {exc}", pytrace=False)
        pytest.skip(f"the RabbitMQ cluster did not form: {exc}")
    try:
        yield formed
    finally:
        formed.close()


@pytest.fixture
def settings(cluster: Cluster) -> Settings:
    # Every client is given all three nodes; each starts on a random one.
    return Settings(
        url=",".join(cluster.urls),
        timeout=3.0,
        connect_timeout=5.0,
        heartbeat=5,
        reconnect_max=1.0,
        queue_prefix=PREFIX,
    )


@pytest.fixture
def service(cluster: Cluster) -> Iterator[str]:
    name = f"svc{uuid.uuid4().hex[:8]}"
    yield name
    for node in cluster.nodes:  # any live node can delete them
        with contextlib.suppress(Exception):
            connection = pika.BlockingConnection(pika.URLParameters(node.url))
            channel = connection.channel()
            channel.queue_delete(f"{PREFIX}{name}")
            channel.queue_delete(f"{PREFIX}{name}.dead")
            connection.close()
            return
