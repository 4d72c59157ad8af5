"""The service the chaos benchmark calls: ``python -m reqrep worker bench.chaos_service:service``.

``record`` leaves one visible side effect per run: it appends ``<message_id>\\n`` (the call's
idempotency key) to the file named by ``$CHAOS_LOG``, so the benchmark can count afterwards how
many times each call really ran, across every worker process it started and killed.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from reqrep.worker import Service, current

__all__ = ["LOG_ENV", "record", "service"]

LOG_ENV = "CHAOS_LOG"
"""The environment variable naming the side-effect log."""

service = Service("chaos")


@service.handler
def record(payload: Any) -> Any:
    """Append this call's idempotency key to ``$CHAOS_LOG``, wait 0-3 ms, return the payload."""
    path = os.environ.get(LOG_ENV)
    if not path:
        raise RuntimeError(f"${LOG_ENV} is not set: the chaos worker has nowhere to record runs")
    line = f"{current().message_id or '-'}\n".encode()
    # One write() on an O_APPEND descriptor: lines from several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(random.uniform(0.0, 0.003))
    return payload
