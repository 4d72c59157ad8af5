"""One chaos run, start to clean-up: the proxy, the workers, the calls, the chaos, the count."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika

from bench.chaos._calls import Tracker, is_idempotent
from bench.chaos._config import (
    LATE_GRACE,
    LOST_GRACE,
    METHOD,
    SAMPLES,
    SERVICE,
    SERVICE_SPEC,
    TEARDOWN_RESERVE,
    WORKER_DRAIN,
    ChaosConfig,
    ChaosError,
)
from bench.chaos._faults import ChaosThread
from bench.chaos._result import CallRecord, ChaosResult, percentile
from bench.chaos._workers import WorkerPool
from bench.chaos_service import LOG_ENV
from bench.faultproxy import FaultProxy
from reqrep.common import Settings, topology
from reqrep.common.config import redact_url
from reqrep.requestor import Requestor

log = logging.getLogger("reqrep.bench.chaos")


def _upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "amqp":
        raise ChaosError(f"--url must be amqp:// (the proxy cannot carry TLS): {redact_url(url)}")
    host = parts.hostname or ""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = parts.port or 5672
    except ValueError as exc:
        raise ChaosError(f"bad --url {redact_url(url)}: {exc}") from None
    return host, port


def _proxied_url(url: str, netloc: str) -> str:
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(
        (parts.scheme, f"{userinfo}{at}{netloc}", parts.path, parts.query, parts.fragment)
    )


def _delete_topology(url: str, prefix: str) -> None:
    """Delete the run's request queue, dead-letter queue and dead-letter exchange."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue = topology.request_queue(prefix, SERVICE)
        channel.queue_delete(queue)
        channel.queue_delete(topology.dead_letter_queue(queue))
        channel.exchange_delete(topology.dead_letter_exchange(prefix))
        channel.exchange_delete(topology.control_exchange(prefix))
        channel.exchange_delete(topology.request_exchange(prefix))
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _count_side_effects(path: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key = line.strip()
                if key:
                    counts[key] += 1
    return counts


def run_chaos(config: ChaosConfig, *, progress: Callable[[str], None] | None = None) -> ChaosResult:
    """Run the chaos benchmark once (see the module docstring); always cleans up.

    ``progress`` receives a line now and then. Raises ChaosError if the run cannot be set up
    (the broker is not on a loopback address, the workers never become ready, ...).
    """
    return _Run(config, progress).execute()


class _Run:
    """One run: set up, send calls under chaos, tear down, count. Used by one thread; the chaos
    thread and the requestor's I/O thread only touch ``ChaosThread``, ``WorkerPool`` and
    ``Tracker``/``CallRecord`` (through the done callbacks)."""

    def __init__(self, config: ChaosConfig, progress: Callable[[str], None] | None) -> None:
        self.config = config
        self._progress = progress
        self.t0 = time.monotonic()
        self.phase_end = self.t0 + config.max_seconds - TEARDOWN_RESERVE  # calls, chaos end
        self.host, self.port = _upstream(config.url)
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"chaos-{self.run_id}."
        self.records: list[CallRecord] = []
        self.tracker = Tracker(config.concurrency)
        self.harness_errors: list[str] = []
        self.proxy: FaultProxy | None = None
        self.pool: WorkerPool | None = None
        self.chaos: ChaosThread | None = None
        self.requestor: Requestor | None = None
        self.reconnects = 0
        self.late = 0
        self.side_effects: collections.Counter[str] = collections.Counter()

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress(f"[{time.monotonic() - self.t0:6.1f}s] {text}")

    def report_progress(self) -> None:
        ok = sum(1 for r in self.records if r.outcome == "ok")
        pool, chaos = self.pool, self.chaos
        self.say(
            f"sent {self.tracker.started}/{self.config.calls}, finished {self.tracker.finished}, "
            f"ok {ok}, killed {pool.killed if pool else 0}, cuts {chaos.cuts if chaos else 0}"
        )

    def execute(self) -> ChaosResult:
        tmpdir = Path(tempfile.mkdtemp(prefix=f"reqrep-chaos-{self.run_id}-"))
        side_log = tmpdir / "side-effects.log"
        try:
            side_log.touch(mode=0o600)
            try:
                self._setup(side_log)
                self._send_all()
                self._wait_all()
            finally:
                self._teardown()
                self.side_effects = _count_side_effects(side_log)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return self._summarize()

    def _setup(self, side_log: Path) -> None:
        try:
            proxy = FaultProxy((self.host, self.port))  # only an IPv4 loopback upstream
        except ValueError as exc:
            raise ChaosError(str(exc)) from None
        self.proxy = proxy.start()
        proxied = _proxied_url(self.config.url, proxy.url_netloc)
        env = {
            **os.environ,
            "AMQP_URL": proxied,
            "REQREP_QUEUE_PREFIX": self.prefix,
            "REQREP_LOG_LEVEL": "INFO",  # "worker ready" is an INFO line
            LOG_ENV: str(side_log),
        }
        argv = [
            sys.executable,
            "-m",
            "reqrep",
            "worker",
            SERVICE_SPEC,
            "--concurrency",
            str(self.config.worker_concurrency),
            "--drain-timeout",
            str(WORKER_DRAIN),
            "--parent-pid",  # a worker whose parent (this run) died drains and exits
            str(os.getpid()),
        ]
        self.say(
            f"proxy {proxy.url_netloc} -> {self.host}:{self.port}, queue prefix {self.prefix}: "
            f"starting {self.config.workers} workers"
        )
        self.pool = WorkerPool(self.config.workers, argv, env, self.config.ready_timeout)
        self.pool.start_all()
        self.pool.wait_ready(min(self.t0 + self.config.ready_timeout, self.phase_end))
        settings = Settings.from_env(
            url=proxied, queue_prefix=self.prefix, timeout=self.config.timeout
        )
        self.requestor = Requestor(settings=settings, service=SERVICE).open()
        self.chaos = ChaosThread(
            self.pool, proxy, kill_every=self.config.kill_every, cut_every=self.config.cut_every
        )
        self.chaos.start()
        self.say("workers ready; sending calls under chaos")

    def _send_all(self) -> None:
        config, tracker, requestor = self.config, self.tracker, self.requestor
        assert requestor is not None
        # A call sent after this could not end (deadline + grace) before the phase ends.
        send_end = self.phase_end - config.timeout - LATE_GRACE
        next_report = time.monotonic() + 5.0
        send_start = time.monotonic()
        for index in range(config.calls):
            if config.rate > 0:
                pause = min(send_start + index / config.rate, send_end) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            if not tracker.acquire(until=send_end):
                self.say(f"--max-seconds: stopped sending after {tracker.started} calls")
                break
            idempotent = is_idempotent(index, config.idempotent_share)
            key = f"chaos-{self.run_id}-{index}" if idempotent else None
            start = time.monotonic()
            record = CallRecord(index, idempotent, key, start, start + config.timeout)
            self.records.append(record)
            tracker.begin()
            try:
                future = requestor.call_async(
                    METHOD, index, idempotent=idempotent, idempotency_key=key
                )
            except Exception as exc:  # noqa: BLE001 - an error at send is an outcome too
                tracker.end(record, type(exc).__name__, f"at send: {exc}")
            else:
                future.add_done_callback(tracker.on_done(record))
            if time.monotonic() >= next_report:
                next_report += 5.0
                self.report_progress()

    def _wait_all(self) -> None:
        self.say(f"{self.tracker.started} calls sent; waiting for them to end")
        last_deadline = max((r.deadline for r in self.records), default=time.monotonic())
        until = min(self.phase_end, last_deadline + LOST_GRACE)
        self.tracker.wait_all(until, self.report_progress)
        self.say("calls ended; stopping chaos, requestor, workers and proxy")

    def _teardown(self) -> None:
        """Stop everything this run started; each step is bounded and runs even if one fails."""
        if self.chaos is not None:
            self.chaos.stop()
            if self.chaos.error is not None:
                self.harness_errors.append(f"chaos thread: {self.chaos.error!r}")
        if self.requestor is not None:
            self.reconnects = self.requestor.reconnects
            self.late = self.requestor.stats().late
            with contextlib.suppress(Exception):
                self.requestor.close(5)
        if self.pool is not None:
            self.pool.stop_all()
            self.harness_errors.extend(self.pool.problems)
        if self.proxy is not None:
            try:
                self.proxy.stop()
            except RuntimeError as exc:
                self.harness_errors.append(f"proxy: {exc}")
        try:
            _delete_topology(self.config.url, self.prefix)
        except Exception as exc:  # noqa: BLE001 - clean-up is best effort, but reported
            log.warning("could not delete the queues of prefix %s: %r", self.prefix, exc)

    def _summarize(self) -> ChaosResult:
        assert self.pool is not None
        assert self.chaos is not None
        pool, chaos, t0, side_effects = self.pool, self.chaos, self.t0, self.side_effects
        # A snapshot: nothing completes any more (the requestor is closed), but be safe.
        calls = [dataclasses.replace(r) for r in self.records]
        failures: collections.Counter[str] = collections.Counter(
            r.outcome for r in calls if r.outcome is not None and r.outcome != "ok"
        )
        lost = [r for r in calls if r.end is None]
        hung = [r for r in calls if r.end is None or r.end > r.deadline + LATE_GRACE]
        idempotent = [r for r in calls if r.idempotent]
        idempotent_keys = {r.key for r in idempotent if r.key is not None}
        repeated = {key for key, runs in side_effects.items() if runs > 1}
        latencies = sorted(r.end - r.start for r in calls if r.end is not None)

        def describe(record: CallRecord) -> dict[str, Any]:
            return {
                "index": record.index,
                "idempotent": record.idempotent,
                "key": record.key,
                "outcome": record.outcome,
                "message": record.message[:300],
                "started_at": round(record.start - t0, 3),
                "ended_at": None if record.end is None else round(record.end - t0, 3),
                "late_by": None if record.end is None else round(record.end - record.deadline, 3),
                "runs": side_effects.get(record.key, 0) if record.key else None,
            }

        samples: list[dict[str, Any]] = []
        for kind, chosen in (
            ("lost", lost),
            ("hung", [r for r in hung if r.end is not None]),
            ("idempotent failed", [r for r in idempotent if r.outcome not in ("ok", None)]),
            ("failed", [r for r in calls if r.outcome not in ("ok", None) and not r.idempotent]),
        ):
            samples.extend({"kind": kind, **describe(r)} for r in chosen[:SAMPLES])
        events = [
            {"at": round(at - t0, 3), "event": kind, "detail": detail}
            for at, kind, detail in sorted([*pool.events, *chaos.events])
        ]
        return ChaosResult(
            calls_planned=self.config.calls,
            calls_sent=len(calls),
            succeeded=sum(1 for r in calls if r.outcome == "ok"),
            failures=dict(failures),
            lost=len(lost),
            hung=len(hung),
            idempotent_sent=len(idempotent),
            idempotent_succeeded=sum(1 for r in idempotent if r.outcome == "ok"),
            side_effects=sum(side_effects.values()),
            idempotent_keys_run_more_than_once=len(repeated & idempotent_keys),
            other_keys_run_more_than_once=len(repeated - idempotent_keys),
            latency_worst=latencies[-1] if latencies else None,
            latency_p50=percentile(latencies, 0.50),
            latency_p99=percentile(latencies, 0.99),
            workers_killed=pool.killed,
            kills_skipped=pool.kills_skipped,
            workers_exited_unexpectedly=pool.unexpected_exits,
            worker_start_worst=pool.start_worst(),
            connection_cuts=chaos.cuts,
            connections_reset=chaos.connections_reset,
            requestor_reconnects=self.reconnects,
            late_replies=self.late,
            wall_seconds=time.monotonic() - t0,
            harness_errors=self.harness_errors,
            samples=samples,
            events=events,
        )
