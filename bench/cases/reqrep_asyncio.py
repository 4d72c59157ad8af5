"""reqrep's AsyncRequestor as a benchmark client: ``--outstanding`` coroutines on one loop.

``python -m bench.cases.reqrep_client client --queue SERVICE --mode asyncio ...`` runs it (the
server is reqrep's own worker, as for the other reqrep cases); ``--mode asyncio-native`` runs it
with ``AsyncRequestor(native=True)`` (the connection on the event loop, no I/O thread), and the
``-serial`` modes run one coroutine (one call at a time). Each coroutine awaits
``AsyncRequestor.call(method, payload, timeout=30)`` in a loop, the shape of aio-pika's RPC
client (``bench.cases.aiopika_rpc``), so the two compare at the same number of calls in flight.
Latency: from just before ``call`` to the moment the awaiting coroutine resumes with the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from bench.cases import Window
from bench.cases._aio import drive
from reqrep.requestor import AsyncRequestor

__all__ = ["run_asyncio"]

CALL_TIMEOUT = 30.0
MAX_ERRORS = 100


async def _calls(
    rq: AsyncRequestor, method: str, payload: Any, window: Window, outstanding: int
) -> int:
    return await drive(
        lambda: rq.call(method, payload, timeout=CALL_TIMEOUT), window, outstanding, MAX_ERRORS
    )


def run_asyncio(
    service: str,
    method: str,
    payload: Any,
    window: Window,
    outstanding: int,
    *,
    native: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Run the calls; return how many were unfinished and the requestor's counters."""

    async def main() -> tuple[int, dict[str, Any]]:
        async with AsyncRequestor(service=service, timeout=CALL_TIMEOUT, native=native) as rq:
            unfinished = await _calls(rq, method, payload, window, outstanding)
            return unfinished, dataclasses.asdict(rq.stats())

    return asyncio.run(main())
