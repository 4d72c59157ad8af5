"""What each AMQP property and header of reqrep's requests and replies costs.

``python -m bench.props [--rounds 5] [--seconds 3] [--warmup 1] [--outstanding 64]
[--only NAME ...] [--classic] [--json PATH] [--max-minutes 30] [--url URL]``

A bare-pika client and server (``bench.cases.raw_props``: ``raw-pika-durable-tuned``'s loop)
exchange messages that carry everything reqrep's carry, with reqrep's values. For each property
a variant flips it (off, or on for one reqrep sends only sometimes, such as ``traceparent``),
and runs as an A/B pair with the usual set: each round runs every pair, in turn forwards and
backwards, each pair in both orders over the rounds, so that the machine's drift hits both sides
alike. Per property: the bytes it adds to a request and a reply (pika's own encoder, exact), the
medians over rounds of calls/s, p50 and CPU per call (client, server, broker) with it divided by
without it, and the guarantee that needs it.

The parts: ``_wire`` (the bytes), ``_run`` (the pairs, rounds and ratios), ``_cli`` (options,
table, JSON file). Each run is a ``bench.suite`` run of one case, with its queue and exchange
deleted afterwards.
"""

from __future__ import annotations

from bench.props._cli import main
from bench.props._run import run_props
from bench.props._wire import added_bytes

__all__ = ["added_bytes", "main", "run_props"]
