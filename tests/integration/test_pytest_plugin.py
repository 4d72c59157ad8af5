"""reqrep's pytest plugin, run in a pytest of its own as a user's project would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import Admin

USER_TESTS = """
import pytest
from pathlib import Path
from reqrep import Service

svc = Service("plugged")
svc.add("echo", lambda payload: payload)

@pytest.fixture
def reqrep_service():
    return svc

@pytest.fixture
def reqrep_worker_options():
    return {"concurrency": 2}

def test_worker_and_requestor(reqrep_worker, reqrep_requestor):
    assert reqrep_worker.concurrency == 2
    assert reqrep_requestor.call("echo", [1]) == [1]
    Path("queue.txt").write_text(reqrep_worker.queue)

def test_local(reqrep_local):
    assert reqrep_local.call("echo", "x") == "x"
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env={k: v for k, v in os.environ.items() if k != "AMQP_URL"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fixtures_run_a_worker_and_delete_its_queues(
    tmp_path: Path, amqp_url: str, admin: Admin
) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    done = _pytest(tmp_path, "--reqrep-url", amqp_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    queue = (tmp_path / "queue.txt").read_text()
    assert queue.startswith("test-")
    assert queue.endswith(".plugged")
    assert not admin.queue_exists(queue)
    assert not admin.queue_exists(f"{queue}.dead")
