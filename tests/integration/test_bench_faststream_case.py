"""FastStream's bench cases run and report calls, through the suite's own runner (a smoke test,
not a measurement): server, client, result line, queues deleted."""

from __future__ import annotations

import uuid

import pytest

from bench.suite._plan import CASES, Options
from bench.suite._run import run_case
from tests.support import Admin


@pytest.mark.parametrize("name", ["faststream-request", "faststream-reply-to"])
def test_a_faststream_case_reports_calls(amqp_url: str, admin: Admin, name: str) -> None:
    case = next(case for case in CASES if case.name == name)
    opts = Options(repeats=1, seconds=0.5, warmup=0.2, outstanding=4, url=amqp_url)
    run_id = uuid.uuid4().hex[:8]
    record = run_case(case, 1, opts, run_id)
    assert record["ok"], record.get("error")
    result = record["result"]
    assert result["calls"] > 0
    assert (result["errors"], result["unfinished"]) == (0, 0)
    assert "cleanup_problems" not in record
    assert not admin.queue_exists(f"bench.{run_id}.{name}.r1")
