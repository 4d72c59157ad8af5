"""The cluster the cluster tests share: formed once per session, stopped at its end.

Where a cluster cannot be formed (not root, no rabbitmq-server) the tests are skipped with the
reason, except on CI (``CI=true``), where that fails the run: CI must run them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster, ClusterUnavailable


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
