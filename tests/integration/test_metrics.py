"""Prometheus metrics, scraped over HTTP (loopback) after real calls through the broker."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Iterator

import pika
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import reqrep.metrics
from reqrep import AsyncRequestor
from reqrep.common import CallTimeout, MethodNotFound, RemoteError, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker
from reqrep.worker.demo import build
from reqrep.worker.endpoint import Endpoint
from tests.support import Admin, WorkerProcess, close_connections, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode("utf-8"))


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A private registry that Workers and Requestors made during the test report to."""
    registry = CollectorRegistry()
    reqrep.metrics.enable(registry)
    try:
        yield registry
    finally:
        reqrep.metrics.disable(registry)


def test_counters_after_real_calls(
    registry: CollectorRegistry, settings: Settings, service_name: str
) -> None:
    worker = Worker(build(service_name), settings=settings, concurrency=4).start()
    endpoint = Endpoint(
        0,
        host="127.0.0.1",
        health=lambda: worker.consuming,
        metrics=lambda: reqrep.metrics.render(registry),
    ).start()
    try:
        with Requestor(settings=settings, service=service_name) as rq:
            for i in range(3):
                assert rq.call("echo", i) == i
            with pytest.raises(RemoteError):
                rq.call("fail", {"message": "boom"})
            with pytest.raises(MethodNotFound):
                rq.call("no_such_method")
            with pytest.raises(CallTimeout):
                rq.call("sleep", {"seconds": 0.5}, timeout=0.2)
            wait_until(lambda: rq.stats().late == 1, 10, "the late reply")
            assert close_connections(worker.name) == 1
            wait_until(lambda: worker.reconnects == 1 and worker.consuming, 20, "reconnect")
            assert close_connections(rq.name) == 1
            assert rq.call("echo", "again", timeout=20) == "again"
            samples = parse(scrape(endpoint.port))
    finally:
        endpoint.stop()
        worker.stop(5)

    s, w = service_name, "reqrep_worker_"
    assert value(samples, f"{w}requests_received_total", service=s, method="echo") == 4
    assert value(samples, f"{w}requests_answered_total", service=s, method="echo", code="ok") == 4
    answered_fail = value(
        samples, f"{w}requests_answered_total", service=s, method="fail", code="handler_error"
    )
    assert answered_fail == 1
    unknown = value(
        samples,
        f"{w}requests_answered_total",
        service=s,
        method="_unknown",
        code="method_not_found",
    )
    assert unknown == 1
    assert value(samples, f"{w}handler_seconds_count", service=s, method="echo") == 4
    assert value(samples, f"{w}handler_seconds_count", service=s, method="sleep") == 1
    assert value(samples, f"{w}requests_in_flight", service=s) == 0
    assert value(samples, "reqrep_reconnects_total", side="worker") == 1
    assert value(samples, "reqrep_reconnects_total", side="requestor") == 1

    r = "reqrep_requestor_"
    assert value(samples, f"{r}calls_total", service=s, method="echo", outcome="ok") == 4
    assert value(samples, f"{r}calls_total", service=s, method="fail", outcome="handler_error") == 1
    assert (
        value(
            samples,
            f"{r}calls_total",
            service=s,
            method="no_such_method",
            outcome="method_not_found",
        )
        == 1
    )
    assert value(samples, f"{r}calls_total", service=s, method="sleep", outcome="call_timeout") == 1
    assert value(samples, f"{r}call_seconds_count", service=s, method="echo") == 4
    assert value(samples, f"{r}calls_pending") == 0
    assert value(samples, f"{r}replies_discarded_total", reason="late") == 1


def test_expired_and_deduplicated_requests_are_counted(
    registry: CollectorRegistry, settings: Settings, service_name: str, admin: Admin
) -> None:
    with Worker(build(service_name), settings=settings, concurrency=1) as worker:
        # A request whose caller gave up a minute ago: skipped, not run, not answered.
        past = int((time.time() - 60) * 1000)
        properties = pika.BasicProperties(
            type="echo",
            correlation_id="expired-1",
            reply_to="amq.gen-nobody",
            content_type="application/json",
            headers={"x-deadline": past},
        )
        admin.publish(worker.queue, b'"old"', properties)
        wait_until(lambda: worker.stats.expired == 1, 10, "the expired request")
        with Requestor(settings=settings, service=service_name) as rq:
            assert rq.call("echo", 1, idempotency_key="k1") == 1
            assert rq.call("echo", 1, idempotency_key="k1") == 1
        samples = parse(reqrep.metrics.render(registry)[0].decode())
    s = service_name
    assert value(samples, "reqrep_worker_requests_skipped_total", service=s, reason="expired") == 1
    assert value(samples, "reqrep_worker_requests_received_total", service=s, method="echo") == 3
    assert value(samples, "reqrep_worker_dedupe_hits_total", service=s) == 1
    answered = value(
        samples, "reqrep_worker_requests_answered_total", service=s, method="echo", code="ok"
    )
    assert answered == 1  # the duplicate was answered from the cache, not run


def _free_ports(count: int) -> int:
    """A port P such that P .. P + count - 1 are free now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            socks = []
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first
    raise AssertionError("no run of free ports found")


@pytest.mark.slow
def test_cli_serves_one_endpoint_per_process(amqp_url: str, prefix: str) -> None:
    port = _free_ports(2)
    env = {"AMQP_URL": amqp_url, "REQREP_QUEUE_PREFIX": prefix}
    worker = WorkerProcess(
        [
            "reqrep.worker.demo:service",
            "--processes",
            "2",
            "--concurrency",
            "2",
            "--metrics-port",
            str(port),
            "--http-host",
            "127.0.0.1",
            "--tracing",  # the OpenTelemetry API without an SDK: spans are no-ops, calls work
        ],
        env,
    )
    try:
        worker.wait_for("worker ready", count=2)
        wait_until(
            lambda: all(_healthy(p) for p in (port, port + 1)), 20, "both processes consuming"
        )
        settings = Settings(url=amqp_url, queue_prefix=prefix, timeout=10)
        with Requestor(settings=settings, service="demo") as rq:
            for i in range(20):
                assert rq.call("echo", i) == i
        received = [
            value(
                parse(scrape(p)),
                "reqrep_worker_requests_received_total",
                service="demo",
                method="echo",
            )
            for p in (port, port + 1)
        ]
        assert sum(received) == 20, received
    finally:
        assert worker.stop() == 0


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_async_requestor_and_async_handlers_are_counted(
    registry: CollectorRegistry, settings: Settings, service_name: str, aio_native: bool
) -> None:
    service = Service(service_name)

    @service.handler
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def calls() -> None:
        async with AsyncRequestor(native=aio_native, settings=settings, service=service_name) as rq:
            assert await rq.call("nap", 0) == 0
            assert await rq.call("nap", 0.01) == 0.01
            with pytest.raises(CallTimeout):
                await rq.call("nap", 1, timeout=0.2)
            slow = asyncio.create_task(rq.call("nap", 1, timeout=10))
            await asyncio.sleep(0.05)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow

    with Worker(service, settings=settings, concurrency=4):
        asyncio.run(calls())
        samples = parse(reqrep.metrics.render(registry)[0].decode())
    s, r = service_name, "reqrep_requestor_"
    assert value(samples, f"{r}calls_total", service=s, method="nap", outcome="ok") == 2
    assert value(samples, f"{r}calls_total", service=s, method="nap", outcome="call_timeout") == 1
    cancelled = value(
        samples, f"{r}calls_total", service=s, method="nap", outcome="cancelled_error"
    )
    assert cancelled == 1
    assert value(samples, f"{r}calls_pending") == 0
    ran = value(samples, "reqrep_worker_handler_seconds_count", service=s, method="nap")
    assert ran >= 2  # the cancelled calls may still be running or answered late
