"""The bench cases of AsyncRequestor, threaded and native, run and report calls (a smoke test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reqrep import Settings, Worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["asyncio", "asyncio-native", "asyncio-native-serial"])
def test_the_asyncio_case_reports_calls(
    demo_worker: Worker, settings: Settings, service_name: str, mode: str
) -> None:
    env = {
        **os.environ,
        "AMQP_URL": settings.url,
        "REQREP_QUEUE_PREFIX": settings.queue_prefix,
    }
    argv = [sys.executable, "-m", "bench.cases.reqrep_client", "client", "--queue", service_name]
    argv += ["--mode", mode, "--outstanding", "8", "--seconds", "1", "--warmup", "0.2"]
    done = subprocess.run(
        [*argv, "--max-seconds", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] > 0
    assert result["errors"] == 0
    assert result["unfinished"] == 0
    assert result["mode"] == mode
    assert result["outstanding"] == (1 if mode.endswith("serial") else 8)
