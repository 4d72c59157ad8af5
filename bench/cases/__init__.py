"""What every benchmark case process shares: arguments, the measuring window, the result line.

Each case is a module run as ``python -m bench.cases.X client|server [options]``. ``bench.suite``
starts the server, waits for it to print ``READY_TEXT``, then starts the client. The client:

1. warms up for ``--warmup`` seconds (calls made, nothing recorded);
2. prints ``MEASURE_START_TEXT``, records every call that *completes* during the next
   ``--seconds`` seconds (its latency, from just before its request was published to the moment
   its reply was handed to the caller), prints ``MEASURE_END_TEXT``;
3. stops starting calls, waits (bounded) for those in flight, and prints one JSON line: the
   result (``Window.result``).

Every process is bounded: ``--max-seconds`` arms a timer that ends the process with exit status 3
whatever it is doing, and the suite kills what is left in its ``finally``.

The broker URL comes from ``$AMQP_URL`` (never argv, where ``ps`` would show the password).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from typing import Any

__all__ = [
    "DEFAULT_URL",
    "MEASURE_END_TEXT",
    "MEASURE_START_TEXT",
    "READY_TEXT",
    "Window",
    "amqp_url",
    "arm_deadline",
    "case_parser",
    "json_payload",
    "percentile",
    "raw_body",
    "say",
    "summarize",
]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
READY_TEXT = "BENCH-READY"
MEASURE_START_TEXT = "BENCH-MEASURE-START"
MEASURE_END_TEXT = "BENCH-MEASURE-END"
DRAIN_SECONDS = 10.0
"""After the window, how long a client waits for the calls still in flight before giving up."""


def amqp_url() -> str:
    return os.environ.get("AMQP_URL") or DEFAULT_URL


def case_parser(description: str) -> argparse.ArgumentParser:
    """The options every case understands (some ignore a few of them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("role", choices=["client", "server"])
    parser.add_argument("--queue", required=True, help="request queue (or reqrep service)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--outstanding", type=int, default=64, help="calls in flight")
    parser.add_argument("--payload", type=int, default=100, help="request body size, bytes")
    parser.add_argument("--durable", action="store_true", help="the durable variant")
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="hard limit for this process"
    )
    return parser


def arm_deadline(seconds: float) -> None:
    """End this process (exit status 3) after ``seconds``, whatever it is doing."""

    def expire() -> None:
        say(f"bench case pid {os.getpid()}: --max-seconds {seconds:g} reached, exiting", err=True)
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def raw_body(size: int) -> bytes:
    """The raw cases' request body: ``size`` bytes."""
    return b"x" * max(0, size)


def json_payload(size: int) -> str | None:
    """A JSON string whose encoding (``"xx...x"``) is ``size`` bytes; None for size 0."""
    if size <= 0:
        return None
    return "x" * max(0, size - 2)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(latencies_ms: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_ms)
    return {
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": values[-1] if values else None,
        "mean": (sum(values) / len(values)) if values else None,
    }


class Window:
    """The warm-up and measuring window of one client, and what completed inside it.

    ``done(started, ended)`` may be called from any thread (list.append and the counters are
    guarded by a lock). Times are ``time.perf_counter()`` seconds.
    """

    def __init__(self, warmup: float, seconds: float) -> None:
        self.warmup = max(0.0, warmup)
        self.seconds = seconds
        self._lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.began = 0.0
        self.start = 0.0
        self.end = 0.0
        self._cpu_start = 0.0
        self._cpu_end = 0.0
        self._announced_start = False
        self._announced_end = False

    def begin(self) -> None:
        """Start the clock: warm-up now, measuring after ``warmup`` seconds."""
        self.began = time.perf_counter()
        self.start = self.began + self.warmup
        self.end = self.start + self.seconds

    def running(self, now: float | None = None) -> bool:
        """Still starting new calls (warm-up or measuring)?"""
        now = time.perf_counter() if now is None else now
        self.tick(now)
        return now < self.end

    def tick(self, now: float | None = None) -> None:
        """Announce the window's edges on stdout (the suite samples CPU times there)."""
        now = time.perf_counter() if now is None else now
        if not self._announced_start and now >= self.start:
            self._announced_start = True
            self._cpu_start = time.process_time()
            say(MEASURE_START_TEXT)
        if not self._announced_end and now >= self.end:
            self._announced_end = True
            self._cpu_end = time.process_time()
            say(MEASURE_END_TEXT)

    def done(self, started: float, ended: float) -> None:
        if self.start <= ended < self.end:
            with self._lock:
                self.latencies_ms.append((ended - started) * 1000.0)

    def error(self, exc: BaseException | str) -> None:
        with self._lock:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(repr(exc) if isinstance(exc, BaseException) else exc)

    def result(self, *, outstanding: int, unfinished: int, **extra: Any) -> dict[str, Any]:
        self.tick(max(time.perf_counter(), self.end))
        with self._lock:
            latencies = list(self.latencies_ms)
        calls = len(latencies)
        return {
            "calls": calls,
            "seconds": self.seconds,
            "calls_per_s": calls / self.seconds if self.seconds > 0 else 0.0,
            "latency_ms": summarize(latencies),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "outstanding": outstanding,
            "unfinished": unfinished,
            "client_cpu_s": max(0.0, self._cpu_end - self._cpu_start),
            **extra,
        }

    def report(self, *, outstanding: int, unfinished: int, **extra: Any) -> None:
        say(json.dumps(self.result(outstanding=outstanding, unfinished=unfinished, **extra)))
