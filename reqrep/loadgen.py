"""Load generation for ``reqrep bench``: N calls at concurrency C through one Requestor.

Two ways to keep C calls in flight: ``threads`` (C threads sharing the Requestor, each making
blocking calls: how a threaded web app uses it) and ``async`` (one thread keeping C
``call_async`` futures outstanding). Latency is measured per call from just before the call to
the moment its result is known.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from reqrep.common.errors import ReqrepError
from reqrep.common.serialization import dumps
from reqrep.requestor.client import Requestor

__all__ = ["LoadResult", "run_load"]

MODES = ("async", "threads")


@dataclasses.dataclass
class LoadResult:
    """What a load run measured; latencies in seconds, sorted."""

    mode: str
    calls: int
    concurrency: int
    payload_bytes: int
    seconds: float
    latencies: list[float]
    errors: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        index = min(len(self.latencies) - 1, int(p / 100 * len(self.latencies)))
        return self.latencies[index]

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "calls": self.calls,
            "ok": self.ok,
            "errors": dict(self.errors),
            "concurrency": self.concurrency,
            "payload_bytes": self.payload_bytes,
            "seconds": round(self.seconds, 3),
            "calls_per_second": round(self.rate, 1),
            "latency_ms": {f"p{p}": round(self.percentile(p) * 1000, 3) for p in (50, 90, 99)}
            | {"max": round(self.latencies[-1] * 1000, 3) if self.latencies else None},
        }


def run_load(
    requestor: Requestor,
    *,
    method: str,
    payload: Any,
    calls: int,
    concurrency: int,
    mode: str = "async",
    timeout: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Make ``calls`` calls with ``concurrency`` in flight; ``progress(n)`` after each n done."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    run = _async if mode == "async" else _threads
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    # Report progress in steps: a progress bar updated per call would cost more than the call.
    step = max(1, calls // 200)

    def record(started: float, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        with lock:
            if error is None:
                latencies.append(elapsed)
            else:
                errors[type(error).__name__] += 1
            done = len(latencies) + sum(errors.values())
        if progress is not None and (done % step == 0 or done == calls):
            progress(step if done % step == 0 else done % step)

    began = time.perf_counter()
    run(requestor, _Plan(method, payload, calls, concurrency, timeout), record)
    seconds = time.perf_counter() - began
    latencies.sort()
    size = len(_encoded(payload))
    return LoadResult(mode, calls, concurrency, size, seconds, latencies, errors)


Record = Callable[[float, BaseException | None], None]


@dataclasses.dataclass(frozen=True)
class _Plan:
    method: str
    payload: Any
    calls: int
    concurrency: int
    timeout: float | None


def _async(rq: Requestor, plan: _Plan, record: Record) -> None:
    slots = threading.Semaphore(plan.concurrency)
    finished = threading.Semaphore(0)

    for _ in range(plan.calls):
        slots.acquire()
        started = time.perf_counter()
        try:
            future = rq.call_async(plan.method, plan.payload, timeout=plan.timeout)
        except ReqrepError as exc:
            record(started, exc)
            slots.release()
            finished.release()
            continue

        def done(f: Any, started: float = started) -> None:
            record(started, f.exception())
            slots.release()
            finished.release()

        future.add_done_callback(done)
    for _ in range(plan.calls):
        finished.acquire()


def _threads(rq: Requestor, plan: _Plan, record: Record) -> None:
    remaining = [plan.calls]
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                rq.call(plan.method, plan.payload, timeout=plan.timeout)
            except ReqrepError as exc:
                record(started, exc)
            else:
                record(started, None)

    threads = [
        threading.Thread(target=loop, name=f"reqrep-bench-{i}", daemon=True)
        for i in range(plan.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _encoded(payload: Any) -> bytes:
    return dumps(payload)
