"""What a chaos run saw: one ``CallRecord`` per call, and the ``ChaosResult`` with its verdict."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bench.chaos._config import LATE_GRACE


@dataclasses.dataclass
class CallRecord:
    """One call: times are ``time.monotonic()`` seconds."""

    index: int
    idempotent: bool
    key: str | None  # the idempotency key we chose (idempotent calls only)
    start: float
    deadline: float
    end: float | None = None
    outcome: str | None = None  # "ok", or the exception's class name
    message: str = ""


@dataclasses.dataclass
class ChaosResult:
    """What a run saw. ``passed`` is the verdict; ``rows()`` the table."""

    calls_planned: int
    calls_sent: int
    succeeded: int
    failures: dict[str, int]  # exception class name -> calls
    lost: int  # futures never completed by the end of the run
    hung: int  # completed more than LATE_GRACE after their deadline, or never
    idempotent_sent: int
    idempotent_succeeded: int
    side_effects: int  # handler runs recorded in the side-effect log
    idempotent_keys_run_more_than_once: int
    other_keys_run_more_than_once: int
    latency_worst: float | None  # seconds, over completed calls (any outcome)
    latency_p50: float | None
    latency_p99: float | None
    workers_killed: int
    kills_skipped: int  # the worker due to be killed was not ready yet
    workers_exited_unexpectedly: int
    worker_start_worst: float | None  # seconds from spawn to "worker ready"
    connection_cuts: int
    connections_reset: int  # client connections the cuts reset
    requestor_reconnects: int
    late_replies: int  # replies that came after their call had ended
    wall_seconds: float
    harness_errors: list[str] = dataclasses.field(default_factory=list)
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def idempotent_all_succeeded(self) -> bool:
        return self.idempotent_succeeded == self.idempotent_sent

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.hung == 0
            and self.idempotent_all_succeeded
            and self.calls_sent == self.calls_planned
            and not self.harness_errors
        )

    def rows(self) -> list[tuple[str, str, bool]]:
        """``(label, value, ok)`` for the table; ``ok`` False marks a row that fails the run."""
        rows: list[tuple[str, str, bool]] = []
        sent = str(self.calls_sent)
        if self.calls_sent != self.calls_planned:
            sent = f"{self.calls_sent} of {self.calls_planned} (--max-seconds reached)"
        rows.append(("calls sent", sent, self.calls_sent == self.calls_planned))
        rows.append(("succeeded", str(self.succeeded), True))
        for name, count in sorted(self.failures.items()):
            rows.append((f"failed: {name}", str(count), True))
        if not self.failures:
            rows.append(("failed", "0", True))
        rows.append(("lost (never completed; must be 0)", str(self.lost), self.lost == 0))
        rows.append(
            (
                f"hung past deadline (> {LATE_GRACE:g} s late; must be 0)",
                str(self.hung),
                self.hung == 0,
            )
        )
        rows.append(
            (
                "idempotent calls succeeded",
                f"{self.idempotent_succeeded} / {self.idempotent_sent}",
                self.idempotent_all_succeeded,
            )
        )
        rows.append(
            (
                "duplicate side effects (keys run > 1 time)",
                f"idempotent keys: {self.idempotent_keys_run_more_than_once}; "
                f"other keys: {self.other_keys_run_more_than_once}",
                True,
            )
        )
        rows.append(("side effects recorded (handler runs)", str(self.side_effects), True))
        rows.append(("worst latency", format_seconds(self.latency_worst), True))
        rows.append(
            (
                "p50 / p99 latency",
                f"{format_seconds(self.latency_p50)} / {format_seconds(self.latency_p99)}",
                True,
            )
        )
        killed = str(self.workers_killed)
        if self.kills_skipped:
            killed += f" ({self.kills_skipped} skipped: replacement not ready)"
        rows.append(("workers killed", killed, True))
        if self.workers_exited_unexpectedly:
            rows.append(
                ("workers exited on their own", str(self.workers_exited_unexpectedly), True)
            )
        rows.append(
            ("worst worker start (spawn to ready)", format_seconds(self.worker_start_worst), True)
        )
        rows.append(
            (
                "connection cuts",
                f"{self.connection_cuts} ({self.connections_reset} connections reset)",
                True,
            )
        )
        rows.append(("requestor reconnects", str(self.requestor_reconnects), True))
        rows.append(("late replies discarded", str(self.late_replies), True))
        rows.append(("wall time", f"{self.wall_seconds:.1f} s", True))
        for error in self.harness_errors:
            rows.append(("harness error", error, False))
        rows.append(("verdict", "PASS" if self.passed else "FAIL", self.passed))
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["idempotent_all_succeeded"] = self.idempotent_all_succeeded
        data["passed"] = self.passed
        return data


def format_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]
