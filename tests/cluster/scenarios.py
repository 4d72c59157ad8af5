"""What the cluster tests share: a steady load through two workers, and the checks every
scenario makes of it (0 lost, 0 hung, every failure typed, calls back by themselves)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pika

from reqrep.common import Settings, topology
from reqrep.requestor import Requestor
from reqrep.requestor._io import NACK_CHANNEL_PAUSE
from reqrep.requestor._presence import RECHECK
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.cluster.harness import Cluster, Node
from tests.cluster.load import Load, Outcome
from tests.support import wait_until

PREFIX = "cl."
# Seconds for one call's round trip, and a connection's set-up, on a loaded 2-core machine.
ROUND_TRIP = 1.0


def back_within(settings: Settings) -> float:
    """How soon a call must succeed once the request queue has a leader again: reqrep's own
    part of a recovery, as docs/reliability.md ("Failover on a cluster") states it.

    The election itself is RabbitMQ's (Ra's): it is measured (``leader_back``), not bounded
    here. From it on, a worker whose ``basic.consume`` waited for the leader is served at once;
    a worker or requestor still reconnecting is back within ``reconnect_max`` (its backoff's
    cap); the requestor holds a call back at most ``RECHECK`` (the worker check asks again) or
    ``NACK_CHANNEL_PAUSE`` (a channel the broker nacked is replaced), whichever is longer."""
    return settings.reconnect_max + max(RECHECK, NACK_CHANNEL_PAUSE) + ROUND_TRIP


def leader_back(cluster: Cluster, queue: str, since: float, timeout: float = 30.0) -> float:
    """The ``time.monotonic()`` at which the quorum queue ``queue`` got a leader after
    ``since`` (monotonic), from the nodes' logs; waits up to ``timeout`` for it to be logged."""
    offset = time.time() - time.monotonic()
    found: list[float] = []

    def logged() -> bool:
        moment = cluster.elected(queue, after=since + offset)
        if moment is not None:
            found.append(moment - offset)
        return moment is not None

    wait_until(logged, timeout, f"a leader for {queue}")
    return found[-1]


def declare_on(node: Node, settings: Settings, service: str) -> None:
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


def port(url: str) -> int:
    return urlsplit(url).port or 5672


@contextlib.contextmanager
def serving(
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
            wait_until(lambda: len(ok(load.outcomes)) >= 20, 15, "steady load")
            yield load, workers
        finally:
            load.stop()
    finally:
        for worker in workers:
            worker.stop(5)


def ok(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.error is None]


def check_every_call(load: Load, hung: int) -> None:
    """0 lost, 0 hung, every failure typed, no wrong result, and never NoWorkers: the workers
    were there all along (a queue without a leader reports 0 consumers)."""
    assert hung == 0, f"{hung} callers stuck in a call past its deadline"
    for outcome in load.outcomes:
        assert outcome.typed, outcome
        assert not (outcome.error or "").startswith("wrong result"), outcome
        assert outcome.error != "NoWorkers", outcome
        assert outcome.ended - outcome.started <= load.timeout + 1.0, f"hung call: {outcome}"


def resumed(load: Load, since: float, within: float, *, started_after: bool = True) -> float:
    """Seconds from ``since`` to the first successful call (started after it, or with
    ``started_after=False`` ended after it); and every call started ``within`` seconds after
    ``since`` succeeded (nothing stays stuck)."""
    calls = load.since(since) if started_after else load.outcomes
    first = min((o.ended for o in ok(calls) if o.ended >= since), default=float("inf")) - since
    later = load.since(since + within)
    failed = [o for o in later if o.error is not None]
    assert later, "no calls after the recovery window"
    assert not failed, f"{len(failed)} of {len(later)} later calls failed: {failed[:3]}"
    return first


def steady_after(load: Load, moment: float, timeout: float) -> None:
    wait_until(lambda: len(ok(load.since(moment))) >= 20, timeout, "load after the fault")


def every_worker_serves(workers: list[Worker]) -> None:
    """Each worker receives requests again, whichever node it was on (a bounded wait)."""
    received = [w.stats.received for w in workers]
    wait_until(
        lambda: all(w.stats.received > n for w, n in zip(workers, received, strict=True)),
        15,
        "every worker to serve again",
    )


def fresh_and_old_both_work(settings: Settings, service: str, requestor: Requestor) -> None:
    """A Requestor that lived through the fault works as well as a fresh one."""
    with Requestor(settings=settings, service=service) as fresh:
        assert fresh.call("echo", "fresh", timeout=5) == "fresh"
    assert requestor.call("echo", "old", timeout=5) == "old"
