"""``reqrep bench`` end to end, and the requestor's memory over many calls."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reqrep.common import Settings
from reqrep.loadgen import run_load
from reqrep.requestor import Requestor
from reqrep.worker import Worker

REQREP = str(Path(sys.executable).with_name("reqrep"))


@pytest.mark.parametrize("mode", ["async", "threads"])
def test_bench_command_reports_json(
    demo_worker: Worker, amqp_url: str, prefix: str, service_name: str, mode: str
) -> None:
    env = {**os.environ, "AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix}
    result = subprocess.run(
        [
            REQREP,
            "bench",
            "--calls",
            "500",
            "--concurrency",
            "8",
            "--mode",
            mode,
            "--service",
            service_name,
            "--json",
            "--warmup",
            "10",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["calls"], report["ok"], report["errors"], report["mode"]) == (500, 500, {}, mode)
    assert report["payload_bytes"] == 100
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert report["calls_per_second"] > 0


def test_bench_against_a_missing_service_fails_with_its_exit_code(
    amqp_url: str, prefix: str
) -> None:
    env = {**os.environ, "AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix}
    result = subprocess.run(
        [REQREP, "bench", "--calls", "10", "--service", "nobody", "--json", "--warmup", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 8  # every call failed: reported, and a non-zero exit
    assert json.loads(result.stdout)["errors"] == {"NoSuchService": 10}


@pytest.mark.slow
@pytest.mark.timeout(900)  # bounded by its count of calls, not by the machine's speed
def test_requestor_memory_stays_flat(settings: Settings, service_name: str) -> None:
    """100,000 calls: nothing kept per finished call. Counted in interpreter memory blocks,
    after a warm-up longer than the requestor's window of remembered ids (10,000).

    It takes ~30 s on an idle 2-core machine and several times that on a busy one: its own
    timeout is generous, and no assertion depends on how fast the calls go."""
    worker = Worker(
        __import__("reqrep.worker.demo").worker.demo.build(service_name),
        settings=settings,
        concurrency=16,
    ).start()
    try:
        with Requestor(settings=settings, service=service_name) as rq:
            run_load(rq, method="echo", payload="x" * 98, calls=15_000, concurrency=64)
            gc.collect()
            before = sys.getallocatedblocks()
            result = run_load(rq, method="echo", payload="x" * 98, calls=100_000, concurrency=64)
            del result
            gc.collect()
            after = sys.getallocatedblocks()
            assert rq.stats().pending == 0
    finally:
        worker.stop(10)
    # One leaked object per call would be 100,000+ blocks; allow for caches and fragmentation.
    assert after - before < 20_000, f"{after - before} more memory blocks after 100,000 calls"
