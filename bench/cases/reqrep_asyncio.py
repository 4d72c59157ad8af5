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
import time
from typing import Any

from bench.cases import DRAIN_SECONDS, Window
from reqrep.requestor import AsyncRequestor

__all__ = ["run_asyncio"]

CALL_TIMEOUT = 30.0
MAX_ERRORS = 100


async def _calls(
    rq: AsyncRequestor, method: str, payload: Any, window: Window, outstanding: int
) -> int:
    in_flight = 0

    async def caller() -> None:
        nonlocal in_flight
        while window.running() and window.errors <= MAX_ERRORS:
            started = time.perf_counter()
            in_flight += 1
            try:
                await rq.call(method, payload, timeout=CALL_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                window.error(exc)
                continue
            finally:
                in_flight -= 1
            window.done(started, time.perf_counter())

    async def tick() -> None:  # announce the window's edges even if no call ends then
        while window.running():
            await asyncio.sleep(0.05)

    window.begin()
    callers = [asyncio.create_task(caller()) for _ in range(outstanding)]
    ticker = asyncio.create_task(tick())
    try:
        await asyncio.wait_for(
            asyncio.gather(*callers), timeout=window.warmup + window.seconds + DRAIN_SECONDS
        )
    except asyncio.TimeoutError:
        window.error("calls still in flight when the drain time ran out")
    finally:
        ticker.cancel()
        for task in callers:
            task.cancel()
    window.tick()
    return in_flight


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
