"""A service whose queue exists but has no consumer: NoWorkers at once, or a wait by choice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reqrep import AsyncRequestor
from reqrep.common import NoSuchService, NoWorkers, Settings, exitcodes
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, wait_until

REQREP = str(Path(sys.executable).with_name("reqrep"))


@pytest.fixture
def idle_queue(settings: Settings, service_name: str) -> str:
    """The service's request queue, declared by a worker that then stopped: no consumer."""
    Worker(build(service_name), settings=settings, concurrency=1).start().stop(5)
    return settings.request_queue(service_name)


def test_no_consumer_fails_fast_and_sends_nothing(
    settings: Settings, service_name: str, idle_queue: str, admin: Admin
) -> None:
    # A deadline far beyond the test's own timeout: NoWorkers can only come from the check.
    with Requestor(settings=settings, service=service_name, timeout=300) as rq:
        with pytest.raises(NoWorkers) as caught:
            rq.call("echo", "hi")
        assert caught.value.service == service_name
        with pytest.raises(NoWorkers):  # a negative answer is not cached: asked again
            rq.call_async("echo", "again").result(5)
    assert admin.message_count(idle_queue) == 0  # the requests were never queued


def test_a_worker_that_starts_is_used_at_once(
    settings: Settings, service_name: str, idle_queue: str
) -> None:
    with Requestor(settings=settings, service=service_name, timeout=10) as rq:
        with pytest.raises(NoWorkers):
            rq.call("echo", 1)
        with Worker(build(service_name), settings=settings, concurrency=1):
            assert rq.call("echo", 2) == 2


def test_wait_for_workers_waits_and_succeeds_when_a_worker_starts(
    settings: Settings, service_name: str, idle_queue: str, admin: Admin
) -> None:
    with Requestor(settings=settings, service=service_name, wait_for_workers=True) as rq:
        future = rq.call_async("echo", "patient", timeout=20)
        # The request waits in the queue (the broker's count: no event to wait on).
        wait_until(lambda: admin.message_count(idle_queue) >= 1, 10, "the request in the queue")
        assert not future.done()
        with Worker(build(service_name), settings=settings, concurrency=1):
            assert future.result(10) == "patient"


def test_wait_for_workers_from_the_environment(settings: Settings) -> None:
    env = {"REQREP_WAIT_FOR_WORKERS": "1", "AMQP_URL": settings.url}
    assert Settings.from_env(env).wait_for_workers is True
    assert Settings.from_env({"AMQP_URL": settings.url}).wait_for_workers is False


def test_a_missing_queue_is_still_no_such_service(settings: Settings, service_name: str) -> None:
    with Requestor(settings=settings, service=service_name, timeout=10) as rq:
        with pytest.raises(NoSuchService):
            rq.call("echo", 1)
        with pytest.raises(NoSuchService):  # the check channel came back after its 404
            rq.call("echo", 2)


def test_steady_calls_check_about_once_a_second(
    settings: Settings, service_name: str, demo_worker: Worker
) -> None:
    with Requestor(settings=settings, service=service_name, timeout=10) as rq:
        started = time.monotonic()
        futures = [rq.call_async("echo", i) for i in range(2000)]
        assert [f.result(30) for f in futures] == list(range(2000))
        elapsed = time.monotonic() - started
        io = rq._core._io  # white box: how many checks the presence gate made
        assert io is not None
        checks = io._presence.checks if io._presence is not None else -1
        assert 1 <= checks <= 2 + 2 * elapsed  # one at first, then one per half-second at most


def _cli(settings: Settings, service: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMQP_URL": settings.url,
        "REQREP_QUEUE_PREFIX": settings.queue_prefix,
        "REQREP_SERVICE": service,
    }
    env.pop("REQREP_WAIT_FOR_WORKERS", None)
    return subprocess.run(
        [REQREP, "call", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_exits_with_no_workers_not_at_its_timeout(
    settings: Settings, service_name: str, idle_queue: str
) -> None:
    # --timeout far beyond the subprocess's own 60 s: the code says why it ended.
    result = _cli(settings, service_name, "echo", '"x"', "--timeout", "300")
    assert result.returncode == exitcodes.NO_WORKERS == 10, result.stderr
    assert "no workers" in result.stderr


def test_cli_wait_for_workers_waits_out_its_timeout(
    settings: Settings, service_name: str, idle_queue: str
) -> None:
    result = _cli(settings, service_name, "echo", '"x"', "--timeout", "1", "--wait-for-workers")
    assert result.returncode == exitcodes.TIMEOUT, result.stderr


def test_the_async_requestor_fails_fast_too(
    settings: Settings, service_name: str, idle_queue: str, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(
            native=aio_native, settings=settings, service=service_name, timeout=30
        ) as rq:
            with pytest.raises(NoWorkers):
                await asyncio.wait_for(rq.call("echo", 1), 5)

    asyncio.run(main())
