"""An I/O-bound service for ``bench.scaling``: ``wait`` sleeps 10 ms, then answers ``null``.

``python -m reqrep worker bench.cases.sleepy:service --concurrency 8`` serves it. With
``--concurrency C`` one process can finish at most ``C / 0.010`` calls a second, whatever the
CPU does: the sleep releases the GIL, so more processes should scale until the CPU (shared
with the broker and the client) runs out.
"""

from __future__ import annotations

import time
from typing import Any

from reqrep.worker import Service

__all__ = ["SLEEP_SECONDS", "service", "wait"]

SLEEP_SECONDS = 0.010

service = Service("sleepy")


@service.handler("wait")
def wait(payload: Any) -> None:
    """Hold the call for 10 ms (ignores its payload)."""
    del payload
    time.sleep(SLEEP_SECONDS)
