"""How calls/s grows with worker processes when the handler is I/O-bound.

``python -m bench.scaling [--processes 1 2 4] [--seconds 5] [--repeats 3] [--chart PATH]
[--json PATH] [--concurrency 8] [--inflight-per-slot 4] [--classic] [--max-minutes 15]``

The handler (``bench.cases.sleepy:service``, method ``wait``) sleeps 10 ms. For each N in
``--processes``, N separate worker processes (``python -m reqrep worker
bench.cases.sleepy:service --concurrency C``; the same command ``--processes N`` would run under
its supervisor, started separately here so that each pid is known and can be killed) serve one
queue, and one reqrep client keeps ``inflight-per-slot x C x N`` calls in flight with
``call_async``. Why that many: the N processes have C x N handler slots and hold at most
``prefetch`` (= C) requests each, so C x N calls in flight would leave a slot idle during every
round trip between a reply and the next request; 4 x C x N keeps a queue of ready requests in
front of every slot (the extra calls wait in the broker's queue: more latency, not more
throughput). The handler alone allows at most C x N / 10 ms calls a second (the "ceiling"); the
"ideal" line is N times the measured 1-process figure. Repeats are round robin over N, medians
reported.

By default the queue is reqrep's default (quorum, persistent requests, confirms); ``--classic``
uses a classic queue and ``REQREP_PERSISTENT=0`` as the suite's non-durable reqrep cases do.

The parts: ``_run`` (the workers, the client, the repeats and the summary rows), ``_output`` (the
table and the line chart), ``_cli`` (the command); ``bench.harness`` holds what it shares with
``bench.suite``.
"""

from __future__ import annotations

from bench.scaling._cli import main
from bench.scaling._run import run_scaling

__all__ = ["main", "run_scaling"]
