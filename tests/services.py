"""Services that only tests run (``python -m reqrep worker tests.services:crashy``)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from reqrep.worker import Service, current

crashy = Service("crashy")


@crashy.handler
def echo(payload: Any) -> Any:
    return payload


@crashy.handler
def crash(_payload: Any) -> None:
    """Kill this worker process at once, as a segfaulting C extension would."""
    os._exit(70)


# What a cancelled call does to its handler, told on stderr with the time it happened, for a
# test in another process to read (tests/integration/test_cancel.py).
sleepy = Service("sleepy")


@sleepy.handler
async def nap(seconds: float) -> float:
    print(f"nap started at {time.time():.6f}", file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        print(f"nap cancelled at {time.time():.6f}", file=sys.stderr, flush=True)
        raise
    return seconds


@sleepy.handler
def poll(seconds: float) -> str:
    """Work for ``seconds``, looking every 10 ms whether the caller still wants the answer."""
    print(f"poll started at {time.time():.6f}", file=sys.stderr, flush=True)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if current().cancelled():
            print(f"poll cancelled at {time.time():.6f}", file=sys.stderr, flush=True)
            return "stopped"
        time.sleep(0.01)
    return "finished"
