"""Chaos benchmark: many calls while workers are SIGKILLed and every connection is reset.

``python -m bench.chaos [--calls 10000] [--workers 3] [--kill-every 2] [--cut-every 3] ...``

What it does, bounded by ``--max-seconds`` from start to clean-up:

1. starts a ``FaultProxy`` (bench/faultproxy) in front of the broker, which must be on a
   loopback address, and points every connection of the run through it;
2. starts ``--workers`` worker processes of ``bench.chaos_service:service`` under a private queue
   prefix; each handler run appends the call's idempotency key to a side-effect log;
3. sends ``--calls`` calls of ``chaos.record`` from one Requestor, at most ``--concurrency`` in
   flight, a share ``--idempotent-share`` of them ``idempotent=True`` with a known key;
4. meanwhile SIGKILLs one worker every ``--kill-every`` seconds (round robin; a replacement starts
   at once) and resets every proxied connection every ``--cut-every`` seconds;
5. reports how every call ended, how late, and how many times each key really ran.

The promise under test (README.md; docs/reliability.md): every call ends, by its deadline, with
its result or a typed error; an idempotent call survives lost connections and dead workers. The
run passes (exit 0) when no call was lost (its future never completed), none ended more than 1 s
after its deadline, every idempotent call succeeded, and every planned call was sent. Plain
calls may fail with ``ConnectionLost`` (their request may or may not have run) and keys may run
more than once when a duplicate reaches another worker process (the dedupe window is per
process): both are reported, not failures of the run.

``run_chaos(ChaosConfig(...))`` is the same run as a function (tests/integration/test_chaos.py).

The parts, one idea each: ``_config`` (options and limits), ``_workers`` (the worker processes),
``_faults`` (the chaos thread), ``_calls`` (calls in flight), ``_result`` (what a run saw),
``_run`` (one run, start to clean-up), ``_cli`` (the command and its table).
"""

from __future__ import annotations

from bench.chaos._cli import main, render
from bench.chaos._config import ChaosConfig, ChaosError
from bench.chaos._result import ChaosResult
from bench.chaos._run import run_chaos

__all__ = ["ChaosConfig", "ChaosError", "ChaosResult", "main", "render", "run_chaos"]
