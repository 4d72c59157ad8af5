"""A network partition on a 3-node cluster under steady load (``pause_minority``,
``net_ticktime`` 10 s): the last node is cut off from the other two for a while, with a
requestor on it, then the cut heals. What the callers see is printed (``-s``) for
docs/operations.md.
"""

from __future__ import annotations

import json
import time

import pytest

from reqrep.common import Settings
from reqrep.requestor import Requestor
from tests.cluster.harness import Cluster, ClusterUnavailable, Node
from tests.cluster.scenarios import (
    check_every_call,
    declare_on,
    every_worker_serves,
    fresh_and_old_both_work,
    ok,
    port,
    serving,
    steady_after,
)
from tests.support import wait_until

pytestmark = pytest.mark.timeout(300)

CUT_CALLS = 100  # successful calls on the majority's side while the cut lasts
MOVED_WITHIN = 40.0  # the cut node pauses (net_ticktime 10 s) and its clients move
RESUME_AFTER_HEAL = 5.0


def _requestor_on(node: Node, settings: Settings, service: str) -> Requestor:
    """A requestor given all three nodes that landed on ``node`` (the start is shuffled)."""
    for _ in range(30):
        rq = Requestor(settings=settings, service=service).open()
        if port(rq.address) == node.port:
            return rq
        rq.close()
    raise AssertionError(f"no requestor landed on {node.name} in 30 starts")


def _running(cluster: Cluster, count: int) -> bool:
    status = cluster.nodes[0].ctl("cluster_status", "--formatter", "json", timeout=20)
    if status.returncode != 0:
        return False
    return len(json.loads(status.stdout or "{}").get("running_nodes", [])) == count


def test_a_cut_off_node_pauses_its_clients_move_and_it_comes_back(
    cluster: Cluster,
    settings: Settings,
    service: str,
) -> None:
    if cluster.cgroup is None:
        raise ClusterUnavailable("no cgroup v2 for partitions here")
    cut_node = cluster.nodes[-1]
    declare_on(cluster.nodes[0], settings, service)  # the leader is on the majority's side
    rq = _requestor_on(cut_node, settings, service)
    try:
        with serving(settings, service, rq) as (load, workers):
            with cluster.partition():
                cut_at = time.monotonic()
                wait_until(lambda: port(rq.address) != cut_node.port, MOVED_WITHIN, "to move")
                moved_at = time.monotonic()
                wait_until(
                    lambda: len(ok(load.since(moved_at))) >= CUT_CALLS, 30, "calls meanwhile"
                )
                wait_until(lambda: _running(cluster, 2), 30, "the majority to see 2 nodes")
                with Requestor(settings=settings, service=service) as fresh:  # during the cut
                    assert fresh.call("echo", "during", timeout=10) == "during"
            healed_at = time.monotonic()
            wait_until(lambda: _running(cluster, 3), 60, "the cut node to rejoin")
            rejoined_at = time.monotonic()
            steady_after(load, rejoined_at + RESUME_AFTER_HEAL, 30)
            every_worker_serves(workers)
            hung = load.stop()
            fresh_and_old_both_work(settings, service, rq)
        check_every_call(load, hung)
        during = load.since(cut_at, healed_at)
        errors: dict[str, int] = {}
        for outcome in during:
            if outcome.error:
                errors[outcome.error] = errors.get(outcome.error, 0) + 1
        after = load.since(rejoined_at + RESUME_AFTER_HEAL)
        assert after, "no calls after the heal"
        assert not [o for o in after if o.error], "calls still failing after the heal"
        print(
            f"\npartition: the cut node's clients moved {moved_at - cut_at:.1f}s after the cut; "
            f"{len(during)} calls during it, {len(ok(during))} ok, failures {errors}; the node "
            f"rejoined {rejoined_at - healed_at:.1f}s after the heal"
        )
    finally:
        rq.close()
