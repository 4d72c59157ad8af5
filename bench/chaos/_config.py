"""The chaos run's options (``ChaosConfig``), its limits, and its setup error."""

from __future__ import annotations

import dataclasses
import math

from reqrep.common import DEFAULT_URL

SERVICE_SPEC = "bench.chaos_service:service"
SERVICE = "chaos"
METHOD = "record"
READY_TEXT = "worker ready"
LATE_GRACE = 1.0
"""A call that ends more than this many seconds after its deadline counts as hung."""
LOST_GRACE = 30.0
"""After the last call's deadline, wait at most this long for stragglers before calling the
rest lost (within ``--max-seconds`` in any case)."""
TEARDOWN_RESERVE = 20.0
"""Seconds of ``--max-seconds`` kept for stopping chaos, workers, the requestor and the proxy."""
WORKER_DRAIN = 5.0
"""``--drain-timeout`` of the workers: how long they may drain after SIGTERM at the end."""
WORKER_STOP_WAIT = 10.0
"""After SIGTERM at the end, how long to wait for all workers before SIGKILL."""
SAMPLES = 20
"""How many failed, hung and lost calls are described in the result."""


class ChaosError(Exception):
    """The run could not be set up (bad options, broker not loopback, workers never ready)."""


@dataclasses.dataclass(frozen=True)
class ChaosConfig:
    """Options of one run; the defaults are those of ``python -m bench.chaos``."""

    calls: int = 10_000
    workers: int = 3
    kill_every: float = 2.0  # seconds; 0 disables killing
    cut_every: float = 3.0  # seconds; 0 disables cutting
    concurrency: int = 64
    idempotent_share: float = 0.5
    timeout: float = 15.0
    max_seconds: float = 300.0
    url: str = DEFAULT_URL
    rate: float = 0.0  # calls started per second at most; 0 = as fast as the window allows
    worker_concurrency: int = 8
    ready_timeout: float = 30.0  # for a worker process to log "worker ready"

    def __post_init__(self) -> None:
        def positive(name: str, value: float, *, zero_ok: bool = False) -> None:
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise ChaosError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")

        for name in ("calls", "workers", "concurrency", "worker_concurrency"):
            if getattr(self, name) < 1:
                raise ChaosError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        positive("kill_every", self.kill_every, zero_ok=True)
        positive("cut_every", self.cut_every, zero_ok=True)
        positive("rate", self.rate, zero_ok=True)
        positive("timeout", self.timeout)
        positive("ready_timeout", self.ready_timeout)
        if not 0.0 <= self.idempotent_share <= 1.0:
            raise ChaosError(f"idempotent_share must be in [0, 1], got {self.idempotent_share!r}")
        minimum = TEARDOWN_RESERVE + self.timeout + 10
        if not self.max_seconds >= minimum:
            raise ChaosError(
                f"max_seconds must be >= {minimum:g} (timeout + {TEARDOWN_RESERVE:g} s for "
                f"clean-up + 10 s), got {self.max_seconds!r}"
            )
