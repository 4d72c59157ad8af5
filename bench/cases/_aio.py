"""The asyncio clients' driver: ``outstanding`` coroutines calling one after another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.cases import DRAIN_SECONDS, Window

__all__ = ["drive"]


async def drive(
    call: Callable[[], Awaitable[Any]], window: Window, outstanding: int, max_errors: int
) -> int:
    """Run ``outstanding`` coroutines, each awaiting ``call()`` in a loop while ``window`` runs
    (and it has seen at most ``max_errors`` errors), timing each call into ``window``; returns
    the calls still in flight when they were stopped (after the drain time)."""
    in_flight = 0

    async def caller() -> None:
        nonlocal in_flight
        while window.running() and window.errors <= max_errors:
            started = time.perf_counter()
            in_flight += 1
            try:
                await call()
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
