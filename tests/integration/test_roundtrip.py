"""The basic promise: a call reaches a handler and its answer comes back to the caller."""

from __future__ import annotations

from reqrep.requestor import Requestor
from reqrep.worker import Worker


def test_round_trip(demo_worker: Worker, requestor: Requestor) -> None:
    assert requestor.call("echo", {"x": 1}, timeout=5) == {"x": 1}
    assert requestor.call("add", {"a": 2, "b": 3}) == 5
    assert requestor.call_async("echo", [1, "two", None]).result(5) == [1, "two", None]
    assert demo_worker.stats.received == 3
