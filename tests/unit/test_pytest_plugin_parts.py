"""reqrep's pytest plugin, without a broker: what it says when it is used wrong, and its
broker-free fixtures, run in a pytest of its own as a user's project would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MISSING_SERVICE = """
def test_needs_a_service(reqrep_worker):
    pass
"""

LOCAL = """
import pytest
from reqrep import Requestor, Service, Worker

svc = Service("plugged")
svc.add("echo", lambda payload: payload)

@pytest.fixture
def reqrep_service():
    return svc

def test_local(reqrep_local):
    assert reqrep_local.call("echo", "x") == "x"

def test_memory_broker(reqrep_memory_broker):
    transport = reqrep_memory_broker.transport
    with Worker(svc, transport=transport), Requestor(service="plugged", transport=transport) as rq:
        assert rq.call("echo", [1]) == [1]
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        # Nowhere to connect to: the broker-free fixtures must not need one.
        env={**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_service_fixture_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(MISSING_SERVICE)
    done = _pytest(tmp_path)
    assert done.returncode == 1
    assert "override the reqrep_service fixture" in done.stdout


def test_the_broker_free_fixtures_need_no_broker(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(LOCAL)
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
