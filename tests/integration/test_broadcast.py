"""Broadcast against RabbitMQ, with worker processes: every live worker answers, each reply
tagged by its worker, and a worker killed mid-call is named as the one that did not answer."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reqrep.common import Settings, exitcodes
from reqrep.requestor import Admin as ReqrepAdmin
from reqrep.requestor import BroadcastResult, Requestor
from tests.support import Admin, WorkerProcess, wait_until

WORKERS = 3


@pytest.fixture
def fleet(amqp_url: str, prefix: str, admin: Admin) -> Iterator[list[WorkerProcess]]:
    """Three worker processes serving ``tests.services:sleepy``."""
    env = {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix, "REQREP_LOG_LEVEL": "INFO"}
    procs: list[WorkerProcess] = []
    try:
        for _ in range(WORKERS):
            procs.append(WorkerProcess(["tests.services:sleepy", "--concurrency", "2"], env))
        for proc in procs:
            proc.wait_for("worker ready")
        yield procs
    finally:
        for proc in procs:
            proc.stop()
        admin.delete_service_queues(prefix, "sleepy")


def test_every_worker_process_answers_tagged(
    settings: Settings, fleet: list[WorkerProcess]
) -> None:
    with Requestor(settings=settings, service="sleepy") as rq:
        gathered = rq.broadcast("poll", 0, timeout=10)
    assert gathered.missing == []
    assert [r.result for r in gathered.replies] == ["finished"] * WORKERS
    assert len({r.worker for r in gathered.replies}) == WORKERS  # one reply per worker
    pids = sorted(r.info.pid for r in gathered.replies if r.info is not None)
    assert pids == sorted(p.proc.pid for p in fleet)


def test_a_worker_killed_mid_call_is_named_and_the_others_answer(
    settings: Settings, fleet: list[WorkerProcess]
) -> None:
    victim = fleet[0]
    outcome: list[BroadcastResult] = []
    with Requestor(settings=settings, service="sleepy") as rq:
        call = threading.Thread(target=lambda: outcome.append(rq.broadcast("poll", 2, timeout=8)))
        call.start()
        victim.wait_for("poll started at")  # its handler runs
        # Its answer to the broadcast's ping may still sit in its socket's buffer (pika writes
        # on the next turn of the loop). An answer to a ping of our own, written after it on
        # the same channel, proves it has left: then it is known to be live.
        wait_until(lambda: _answers_ping(settings, victim), 10, "the victim's ping answer")
        victim.proc.kill()
        call.join(30)
    [gathered] = outcome
    assert [r.result for r in gathered.replies] == ["finished"] * (WORKERS - 1)
    assert victim.proc.pid not in {r.info.pid for r in gathered.replies if r.info is not None}
    [missing] = gathered.missing
    assert missing.pid == victim.proc.pid


def _answers_ping(settings: Settings, worker: WorkerProcess) -> bool:
    with ReqrepAdmin(settings=settings) as admin:
        return worker.proc.pid in {w.pid for w in admin.ping(["sleepy"], timeout=0.3)}


def test_reqrep_call_all(amqp_url: str, prefix: str, fleet: list[WorkerProcess]) -> None:
    def call_all(service: str) -> subprocess.CompletedProcess[str]:
        reqrep = str(Path(sys.executable).with_name("reqrep"))
        argv = [reqrep, "call", "--all", "poll", "0", "--service", service, "--timeout", "5"]
        env = {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix}
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    done = call_all("sleepy")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["pid"] for line in lines) == sorted(p.proc.pid for p in fleet)
    assert {line["result"] for line in lines} == {"finished"}
    nobody = call_all("nobody")
    assert nobody.returncode == exitcodes.NO_WORKERS, nobody.stderr
