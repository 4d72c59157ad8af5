"""Prometheus metrics: an Observer that counts reqrep's events (the optional ``metrics`` extra).

Imported only by ``reqrep.metrics.enable()``; nothing else in reqrep imports prometheus_client.
The metric names and labels are listed in docs/operations.md ("Metrics").

Threads: every method may run on any thread (I/O, handler or caller threads):
prometheus_client's metrics take their own locks.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reqrep.common.observe import CallInfo, Observer

__all__ = ["BUCKETS", "PrometheusObserver"]

# Seconds: from a fast loopback echo (~0.5 ms) to the default call timeout (30 s).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PrometheusObserver(Observer):
    """Registers reqrep's metrics in ``registry`` and keeps them up to date."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[Any, ...], Any] = {}  # (id(metric), *labels) -> child

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        # worker
        self.received = counter(
            "reqrep_worker_requests_received", "Requests delivered", ("service", "method")
        )
        self.answered = counter(
            "reqrep_worker_requests_answered",
            "Requests answered, by outcome code (ok or the error reply's code)",
            ("service", "method", "code"),
        )
        self.skipped = counter(
            "reqrep_worker_requests_skipped",
            "Requests not run and not answered: expired, unanswerable or stale",
            ("service", "reason"),
        )
        self.redeliveries = counter(
            "reqrep_worker_redeliveries", "Requests delivered again by the broker", ("service",)
        )
        self.poison = counter(
            "reqrep_worker_poison_requests", "Requests refused as poison", ("service",)
        )
        self.dedupe = counter(
            "reqrep_worker_dedupe_hits",
            "Requests answered from the reply cache or by a running twin",
            ("service",),
        )
        self.returned = counter(
            "reqrep_worker_replies_returned",
            "Replies returned by the broker: the requestor's queue was gone",
            ("service",),
        )
        self.restarts = counter(
            "reqrep_worker_consumer_restarts",
            "Stalled consumers the watchdog replaced (requests ready, none delivered)",
            ("service",),
        )
        self.inline_overruns = counter(
            "reqrep_worker_inline_overruns",
            "Inline handlers that held the worker's I/O thread longer than inline_budget",
            ("service", "method"),
        )
        self.in_flight = Gauge(
            "reqrep_worker_requests_in_flight",
            "Requests handed to handler threads and not yet answered",
            ("service",),
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "reqrep_worker_handler_seconds",
            "Time to decode, run and encode a request on a handler thread",
            ("service", "method"),
            buckets=BUCKETS,
            registry=registry,
        )
        # requestor
        self.calls = counter(
            "reqrep_requestor_calls",
            "Calls ended, by outcome (ok, a remote error code, or a local error)",
            ("service", "method", "outcome"),
        )
        self.call_seconds = Histogram(
            "reqrep_requestor_call_seconds",
            "Time from a call to its result or error",
            ("service", "method"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "reqrep_requestor_calls_pending", "Calls waiting for their reply", registry=registry
        )
        self.discarded = counter(
            "reqrep_requestor_replies_discarded",
            "Replies nobody waited for: late, unknown or untrusted",
            ("reason",),
        )
        # both
        self.reconnects = counter(
            "reqrep_reconnects", "Connections re-established after a loss", ("side",)
        )

    def call_started(self, call: CallInfo, headers: MutableMapping[str, str]) -> Any:
        self.pending.inc()
        return None

    def call_finished(self, call: CallInfo, token: Any, outcome: str, seconds: float) -> None:
        self.pending.dec()
        self._child(self.calls, call.service, call.method, outcome).inc()
        self._child(self.call_seconds, call.service, call.method).observe(seconds)

    def reply_discarded(self, reason: str) -> None:
        self._child(self.discarded, reason).inc()

    def reconnected(self, side: str) -> None:
        self._child(self.reconnects, side).inc()

    def request_received(self, service: str, method: str, redelivered: bool) -> None:
        self._child(self.received, service, method).inc()
        if redelivered:
            self._child(self.redeliveries, service).inc()

    def request_skipped(self, service: str, method: str, reason: str) -> None:
        self._child(self.skipped, service, reason).inc()

    def request_answered(self, service: str, method: str, code: str) -> None:
        self._child(self.answered, service, method, code).inc()

    def request_dispatched(self, service: str, method: str) -> None:
        self._child(self.in_flight, service).inc()

    def request_dropped(self, service: str, method: str) -> None:
        self._child(self.in_flight, service).dec()

    def handler_done(self, service: str, method: str, code: str, seconds: float) -> None:
        self._child(self.in_flight, service).dec()
        self._child(self.answered, service, method, code).inc()
        self._child(self.handler_seconds, service, method).observe(seconds)

    def dedupe_hit(self, service: str, method: str) -> None:
        self._child(self.dedupe, service).inc()

    def poisoned(self, service: str, method: str) -> None:
        self._child(self.poison, service).inc()
        self._child(self.answered, service, method, "poison_request").inc()

    def reply_returned(self, service: str) -> None:
        self._child(self.returned, service).inc()

    def consumer_restarted(self, service: str) -> None:
        self._child(self.restarts, service).inc()

    def inline_overrun(self, service: str, method: str, seconds: float) -> None:
        self._child(self.inline_overruns, service, method).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client's lookup checks and locks
        each time (~2 us), which a call would pay a dozen times."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child
