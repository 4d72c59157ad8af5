"""Failover on a 3-node RabbitMQ cluster, under steady load.

Scenarios: kill -9 the node the clients are connected to (which also leads the request queue);
kill the node that leads the request queue while the requestor is on another node; lose quorum
(2 of 3 nodes down) and get it back. Every scenario asserts that no call is lost or hangs, that
every failure is a typed error, and that calls come back by themselves: within 3 s of a kill, and
within 5 s of quorum returning. The figures are printed (``-s``) for the README.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pika
import pytest

from reqrep.common import Settings, topology
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.cluster.harness import Cluster, Node
from tests.cluster.load import Load, Outcome
from tests.support import wait_until

pytestmark = pytest.mark.timeout(300)  # the first test also forms the cluster (~30 s)

RESUME_AFTER_KILL = 3.0
RECOVER_AFTER_QUORUM = 5.0
PREFIX = "cl."


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


def _declare_on(node: Node, settings: Settings, service: str) -> None:
    """Declare the request queue through ``node``: RabbitMQ places its leader there."""
    queue = settings.request_queue(service)
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        channel = connection.channel()
        arguments = topology.request_queue_arguments(
            prefix=PREFIX,
            queue=queue,
            queue_type="quorum",
            max_redeliveries=settings.max_redeliveries,
        )
        channel.queue_declare(queue, durable=True, arguments=arguments)
    finally:
        connection.close()


def _port(url: str) -> int:
    return urlsplit(url).port or 5672


@contextlib.contextmanager
def _serving(
    settings: Settings, service: str, requestor: Requestor
) -> Iterator[tuple[Load, list[Worker]]]:
    """Two workers (each on a random node of the three) and a steady load through
    ``requestor``; yields both once the load runs steadily."""
    workers = [Worker(build(service), settings=settings, concurrency=4) for _ in range(2)]
    try:
        for worker in workers:
            worker.start()
        load = Load(requestor).start()
        try:
            wait_until(lambda: len(_ok(load.outcomes)) >= 20, 15, "steady load")
            yield load, workers
        finally:
            load.stop()
    finally:
        for worker in workers:
            worker.stop(5)


def _ok(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.error is None]


def _check_every_call(load: Load, hung: int) -> None:
    """0 lost, 0 hung, every failure typed, no wrong result."""
    assert hung == 0, f"{hung} callers stuck in a call past its deadline"
    for outcome in load.outcomes:
        assert outcome.typed, outcome
        assert not (outcome.error or "").startswith("wrong result"), outcome
        assert outcome.ended - outcome.started <= load.timeout + 1.0, f"hung call: {outcome}"


def _resumed(load: Load, since: float, within: float, *, started_after: bool = True) -> float:
    """Seconds from ``since`` to the first successful call (started after it, or with
    ``started_after=False`` ended after it); and every call started ``within`` seconds after
    ``since`` succeeded (nothing stays stuck)."""
    calls = load.since(since) if started_after else load.outcomes
    first = min((o.ended for o in _ok(calls) if o.ended >= since), default=float("inf")) - since
    later = load.since(since + within)
    failed = [o for o in later if o.error is not None]
    assert later, "no calls after the recovery window"
    assert not failed, f"{len(failed)} of {len(later)} later calls failed: {failed[:3]}"
    return first


def _steady_after(load: Load, moment: float, timeout: float) -> None:
    wait_until(lambda: len(_ok(load.since(moment))) >= 20, timeout, "load after the fault")


def _every_worker_serves(workers: list[Worker]) -> None:
    """Each worker receives requests again, whichever node it was on (a bounded wait)."""
    received = [w.stats.received for w in workers]
    wait_until(
        lambda: all(w.stats.received > n for w, n in zip(workers, received, strict=True)),
        15,
        "every worker to serve again",
    )


def _fresh_and_old_both_work(settings: Settings, service: str, requestor: Requestor) -> None:
    """A Requestor that lived through the fault works as well as a fresh one."""
    with Requestor(settings=settings, service=service) as fresh:
        assert fresh.call("echo", "fresh", timeout=5) == "fresh"
    assert requestor.call("echo", "old", timeout=5) == "old"


def test_kill_the_node_the_clients_are_connected_to(
    cluster: Cluster, settings: Settings, service: str
) -> None:
    with Requestor(settings=settings, service=service) as rq:
        node = cluster.node_on(_port(rq.address))
        _declare_on(node, settings, service)  # the worst case: it leads the queue too
        killed_at = 0.0
        try:
            with _serving(settings, service, rq) as (load, workers):
                killed_at = time.monotonic()
                node.kill9()
                _steady_after(load, killed_at + RESUME_AFTER_KILL, 20)
                _every_worker_serves(workers)
                hung = load.stop()
                _fresh_and_old_both_work(settings, service, rq)
            _check_every_call(load, hung)
            first = _resumed(load, killed_at, RESUME_AFTER_KILL)
            failed = len(load.outcomes) - len(_ok(load.outcomes))
            print(
                f"\nkill the clients' node: first call back {first:.2f}s after the kill; "
                f"{failed} of {len(load.outcomes)} calls failed"
            )
            assert first < RESUME_AFTER_KILL
        finally:
            if killed_at:
                cluster.restart(node)


def test_kill_the_node_that_leads_the_queue(
    cluster: Cluster, settings: Settings, service: str
) -> None:
    with Requestor(settings=settings, service=service) as rq:
        leader = next(n for n in cluster.nodes if n.port != _port(rq.address))
        _declare_on(leader, settings, service)
        assert cluster.leader_of(settings.request_queue(service)) is leader
        killed_at = 0.0
        try:
            with _serving(settings, service, rq) as (load, workers):
                killed_at = time.monotonic()
                leader.kill9()
                _steady_after(load, killed_at + RESUME_AFTER_KILL, 20)
                _every_worker_serves(workers)
                hung = load.stop()
                _fresh_and_old_both_work(settings, service, rq)
            _check_every_call(load, hung)
            first = _resumed(load, killed_at, RESUME_AFTER_KILL)
            slowest = max(o.ended - o.started for o in _ok(load.outcomes))
            failed = len(load.outcomes) - len(_ok(load.outcomes))
            print(
                f"\nkill the leader: first call back {first:.2f}s, slowest call {slowest:.2f}s; "
                f"{failed} of {len(load.outcomes)} calls failed"
            )
            assert first < RESUME_AFTER_KILL
        finally:
            if killed_at:
                cluster.restart(leader)


def test_lose_quorum_and_get_it_back(cluster: Cluster, settings: Settings, service: str) -> None:
    with Requestor(settings=settings, service=service) as rq:
        queue = settings.request_queue(service)
        _declare_on(cluster.nodes[0], settings, service)
        down = cluster.nodes[:2]  # the leader and one more: 1 of 3 left, no majority
        killed: list[Node] = []
        late = Worker(build(service), settings=settings.replace(connect_timeout=2.0))
        try:
            with _serving(settings, service, rq) as (load, workers):
                for node in down:
                    node.kill9()
                    killed.append(node)
                lost_at = time.monotonic()
                # Calls fail (typed) while there is no majority; wait until some did.
                wait_until(lambda: any(o.error for o in load.since(lost_at)), 15, "failed calls")
                # A worker started now waits for the queue's leader: that is not "connecting".
                late.start()
                restart_at = time.monotonic()
                cluster.restart(down[1])
                killed.remove(down[1])
                back_at = time.monotonic()
                _steady_after(load, back_at + RECOVER_AFTER_QUORUM, 30)
                _every_worker_serves([*workers, late])
                hung = load.stop()
                _fresh_and_old_both_work(settings, service, rq)
            _check_every_call(load, hung)
            during = load.since(lost_at, restart_at)
            errors = sorted({o.error or "" for o in during if o.error})
            # Calls in flight when quorum returns complete then: count those too.
            first = _resumed(load, back_at, RECOVER_AFTER_QUORUM, started_after=False)
            last_failure = max(o.ended for o in load.outcomes if o.error)
            print(
                f"\nquorum lost: {len(during)} calls, {len(_ok(during))} ok, errors {errors}; "
                f"node restarted in {back_at - restart_at:.1f}s; first call back "
                f"{first:.2f}s after, last failed call ended {last_failure - back_at:+.2f}s "
                "from then"
            )
            assert first < RECOVER_AFTER_QUORUM
            assert cluster.leader_of(queue) in cluster.nodes
        finally:
            late.stop(5)
            for node in killed:
                cluster.restart(node)
