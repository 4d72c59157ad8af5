"""Throughput and latency of reqrep against bare pika, the tutorial and aio-pika, in one run.

``python -m bench.suite [--repeats 3] [--seconds 5] [--outstanding 64] [--payload 100]
[--json PATH] [--chart PATH] [--only NAME ...] [--max-minutes 15]``

Every case is one client process and one server process on the same broker (bench/README.md
says exactly what each one does). One run measures every case ``--repeats`` times, round robin
(case 1..N, then again), so that a noisy spell hurts every case a little rather than one case a
lot; the table shows medians over the repeats. Queues get names unique to the run and are deleted
afterwards; every process is bounded in time and killed, if still alive, in a ``finally``.

While a client measures, the suite also samples the CPU time of the server process and of the
broker (``beam.smp``, from /proc) to show CPU microseconds per call on each side; the broker's
figure includes whatever else uses the broker at the time.

The parts: ``_plan`` (the cases and each run's processes), ``_run`` (running them, the medians),
``_output`` (the table and the chart), ``_cli`` (the command); ``bench.harness`` holds what
``bench.scaling`` shares.
"""

from __future__ import annotations

from bench.harness import Child, delete_broker_objects, judge, median, wait_for_broker
from bench.suite._cli import main
from bench.suite._plan import CASES, Case
from bench.suite._run import run_suite

__all__ = [
    "CASES",
    "Case",
    "Child",
    "delete_broker_objects",
    "judge",
    "main",
    "median",
    "run_suite",
    "wait_for_broker",
]
