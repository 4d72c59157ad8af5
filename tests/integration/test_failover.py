"""Several broker addresses, nacks, a cancelled consumer and a worker that keeps trying: on the
one local broker, with loopback proxies standing in for a cluster's nodes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.faultproxy import FaultProxy
from reqrep.common import BrokerUnreachable, NoSuchService, PublishRejected, Settings, exitcodes
from reqrep.common._link import State
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, WorkerProcess, wait_until

PASSWORD = "s3cret-pw"  # noqa: S105 - a fake, to check that it never shows


def _via(settings: Settings, netloc: str, password: str | None = None) -> str:
    parts = urlsplit(settings.url)
    return f"amqp://{parts.username}:{password or parts.password}@{netloc}{parts.path}"


@pytest.fixture
def proxies(amqp_url: str) -> Iterator[list[FaultProxy]]:
    """Two loopback proxies in front of the broker: two "nodes" to move between."""
    parts = urlsplit(amqp_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the fault proxy only fronts a broker on loopback")
    with (
        FaultProxy(("127.0.0.1", parts.port or 5672)) as first,
        FaultProxy(("127.0.0.1", parts.port or 5672)) as second,
    ):
        yield [first, second]


# -- several addresses -------------------------------------------------------------------------


def test_requestor_takes_a_list_and_skips_a_dead_address(
    settings: Settings, demo_worker: Worker, service_name: str
) -> None:
    dead = _via(settings, "127.0.0.1:1", PASSWORD)
    with Requestor([dead, settings.url], service=service_name, settings=settings) as rq:
        assert rq.call("echo", "hi") == "hi"
        assert rq.address.endswith(urlsplit(settings.url).netloc.split("@")[-1] + "/%2F")


def test_unreachable_list_names_the_addresses_without_the_password(settings: Settings) -> None:
    urls = [_via(settings, "127.0.0.1:1", PASSWORD), _via(settings, "127.0.0.1:2", PASSWORD)]
    bad = settings.replace(url=",".join(urls), connect_timeout=1.0)
    with pytest.raises(BrokerUnreachable) as info, Requestor(settings=bad, service="x"):
        pass
    text = str(info.value)
    assert "127.0.0.1:1" in text
    assert "127.0.0.1:2" in text
    assert PASSWORD not in text
    assert PASSWORD not in repr(bad)


def test_each_reconnection_moves_to_the_next_address(
    settings: Settings, demo_worker: Worker, service_name: str, proxies: list[FaultProxy]
) -> None:
    urls = [_via(settings, proxy.url_netloc) for proxy in proxies]
    with Requestor(urls, service=service_name, settings=settings) as rq:
        assert rq.call("echo", 1) == 1
        first = rq.address
        used = next(p for p in proxies if p.url_netloc in first)
        used.refuse(True)
        used.cut()
        # The next address answers at once: the first retry goes there, not back to the dead one.
        assert rq.call("echo", 2, idempotent=True, timeout=5) == 2
        assert rq.address != first
        assert rq.reconnects == 1


# -- nacks -------------------------------------------------------------------------------------


def test_after_a_nack_the_channel_is_replaced_and_retryable_calls_are_resent(
    settings: Settings,
    admin: Admin,
    service_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = settings.request_queue(service_name)
    refusing = {"x-max-length": 0, "x-overflow": "reject-publish"}  # every publish is nacked
    admin.channel.queue_declare(queue, durable=True, arguments=refusing)
    requests = f"{settings.queue_prefix}requests"  # bound as the protocol says a worker binds
    admin.channel.exchange_declare(requests, exchange_type="direct", durable=True)
    admin.channel.queue_bind(queue, requests, routing_key=queue)
    caplog.set_level(logging.WARNING, logger="reqrep.connection")
    # The queue has no consumer until the worker below starts: wait for it, not NoWorkers.
    with Requestor(settings=settings, service=service_name, wait_for_workers=True) as rq:
        with pytest.raises(PublishRejected):
            rq.call("echo", "once", timeout=5)
        wait_until(
            lambda: any("replacing the channel" in r.getMessage() for r in caplog.records),
            5,
            "the channel to be replaced",
        )
        resent = rq.call_async("echo", "again", timeout=15, idempotent=True)
        wait_until(
            lambda: sum("replacing the channel" in r.getMessage() for r in caplog.records) >= 2,
            5,
            "the idempotent call to be nacked too",
        )
        assert not resent.done()  # nacked, and waiting to be sent again
        admin.delete_queue(queue)  # the queue takes requests again: a worker declares it anew
        worker = Worker(build(service_name), settings=settings, concurrency=2).start()
        try:
            assert resent.result(15) == "again"
            assert rq.call("echo", "after", timeout=5) == "after"  # not stuck
        finally:
            worker.stop(5)


def test_without_the_requests_exchange_calls_fail_with_no_such_service(
    settings: Settings, admin: Admin, service_name: str
) -> None:
    """A queue declared by something that is not a worker of this protocol version: no
    requests exchange. The call says so at once, and the channel is not churned."""
    admin.channel.queue_declare(settings.request_queue(service_name), durable=True)
    with Requestor(settings=settings, service=service_name, wait_for_workers=True) as rq:
        for _ in range(3):
            with pytest.raises(NoSuchService, match="requests exchange"):
                rq.call("echo", "x", timeout=10)
        assert rq.connected


# -- workers -----------------------------------------------------------------------------------


def test_worker_consumes_again_after_its_queue_is_deleted_and_drains_at_once(
    settings: Settings, admin: Admin, service_name: str, requestor: Requestor
) -> None:
    worker = Worker(build(service_name), settings=settings, concurrency=2).start()
    try:
        assert requestor.call("echo", 1) == 1
        admin.delete_queue(worker.queue)  # the broker cancels the worker's consumer
        wait_until(
            lambda: admin.queue_exists(worker.queue) and admin.consumer_count(worker.queue) == 1,
            10,
            "the worker to declare its queue and consume again",
        )
        assert requestor.call("echo", 2, timeout=5) == 2
        admin.delete_queue(worker.queue)
    finally:
        # A drain that waited for the CancelOk of a consumer the broker cancelled would never
        # finish: stop() would say so (False) after its 20 s.
        drained = worker.stop(20)
    assert drained is True


def test_worker_keeps_trying_past_connect_timeout_then_serves(
    settings: Settings,
    admin: Admin,
    service_name: str,
    proxies: list[FaultProxy],
    requestor: Requestor,
) -> None:
    for proxy in proxies:
        proxy.refuse(True)
    urls = [_via(settings, proxy.url_netloc) for proxy in proxies]
    worker = Worker(
        build(service_name), urls, settings=settings.replace(connect_timeout=1.0), concurrency=2
    )
    try:
        worker.start()  # returns after connect_timeout instead of failing: it keeps trying
        assert worker._consumer.state is State.RECOVERING
        proxies[1].refuse(False)
        wait_until(
            lambda: admin.queue_exists(worker.queue) and admin.consumer_count(worker.queue) == 1,
            15,
            "the worker to consume",
        )
        assert requestor.call("echo", "served", idempotent=True, timeout=15) == "served"
    finally:
        worker.stop(5)


def test_worker_command_exits_only_on_a_signal_or_a_refused_login(
    settings: Settings, service_name: str, prefix: str, proxies: list[FaultProxy]
) -> None:
    env = {"REQREP_QUEUE_PREFIX": prefix, "REQREP_CONNECT_TIMEOUT": "1"}
    spec = "reqrep.worker.demo:service"
    wrong = _via(settings, urlsplit(settings.url).netloc.split("@")[-1], PASSWORD)
    refused = WorkerProcess([spec], {**env, "AMQP_URL": wrong})
    refused.proc.wait(30)
    assert refused.stop() == exitcodes.REFUSED  # a retry cannot fix a wrong password
    assert PASSWORD not in "".join(refused.log)

    proxies[0].refuse(True)
    waiting = WorkerProcess([spec], {**env, "AMQP_URL": _via(settings, proxies[0].url_netloc)})
    try:
        waiting.wait_for("still trying", timeout=15)
        assert waiting.proc.poll() is None  # past connect_timeout, still running
        waiting.signal(signal.SIGTERM)
        assert waiting.proc.wait(15) == 0
    finally:
        waiting.stop(5)


def test_a_crash_inside_pika_while_connecting_is_one_more_failed_attempt(
    settings: Settings, service_name: str, demo_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pika may raise out of its loop when a peer closes as the socket connects (seen:
    ``getpeername()`` failed); that must not end the I/O thread."""
    from reqrep.common._transport import _pika  # noqa: PLC0415 - white box: where pika is called

    real = _pika.ReqrepConnection
    attempts: list[int] = []

    def crash_once(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("Expected connected socket, but getpeername() failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(_pika, "ReqrepConnection", crash_once)
    with Requestor(settings=settings, service=service_name) as rq:
        assert rq.call("echo", "up") == "up"
    assert len(attempts) == 2


def test_call_command_takes_a_comma_separated_list(
    settings: Settings, prefix: str, service_name: str, demo_worker: Worker
) -> None:
    dead = _via(settings, "127.0.0.1:1", PASSWORD)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("reqrep")), "call", "echo", '"hi"'],
        env={
            **os.environ,
            "AMQP_URL": f"{dead},{settings.url}",
            "REQREP_QUEUE_PREFIX": prefix,
            "REQREP_SERVICE": service_name,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, '"hi"\n'), result.stderr
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize("attempt", range(6))
def test_a_refused_url_in_a_list_is_skipped_while_another_works(
    settings: Settings, prefix: str, service_name: str, demo_worker: Worker, attempt: int
) -> None:
    """A good node, a dead port and a wrong password, in a shuffled order: whichever comes
    first, the start succeeds (it failed whenever the refused one came first)."""
    parts = urlsplit(settings.url)
    netloc = f"{parts.hostname}:{parts.port or 5672}"
    urls = [settings.url, _via(settings, "127.0.0.1:1"), _via(settings, netloc, PASSWORD)]
    with Requestor(urls, settings=settings, service=service_name) as rq:
        assert rq.call("echo", attempt) == attempt
    result = subprocess.run(
        [str(Path(sys.executable).with_name("reqrep")), "call", "echo", str(attempt)],
        env={
            **os.environ,
            "AMQP_URL": ",".join(urls),
            "REQREP_QUEUE_PREFIX": prefix,
            "REQREP_SERVICE": service_name,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, f"{attempt}\n"), result.stderr
    assert PASSWORD not in result.stderr


def test_a_list_where_every_url_refuses_fails_for_good(settings: Settings) -> None:
    parts = urlsplit(settings.url)
    netloc = f"{parts.hostname}:{parts.port or 5672}"
    urls = [_via(settings, netloc, PASSWORD), _via(settings, netloc, PASSWORD + "2")]
    with pytest.raises(BrokerUnreachable, match="login refused") as info:
        Requestor(urls, settings=settings.replace(connect_timeout=30), service="x").open()
    assert info.value.permanent
    assert PASSWORD not in str(info.value)
