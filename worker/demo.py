"""The demo service: ``reqrep worker reqrep.worker.demo:service``.

Methods: ``echo`` (returns its payload), ``echo_inline`` (the same, run inline on the
worker's I/O thread), ``echo_async`` (the same, an ``async def`` handler), ``add``
({"a", "b"}), ``sleep`` ({"seconds": s}), ``nap`` (the same, as an ``async def`` handler that
awaits), ``fail`` ({"message": m}: raises DemoError(m)), ``fib`` ({"n": n}: CPU-bound) and
``whoami`` ({"seconds": s}: which process served the call, after holding it s seconds).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from reqrep.worker.service import Service

__all__ = ["DemoError", "build", "service"]

_MAX_SLEEP = 300.0
_MAX_FIB = 32


class DemoError(Exception):
    """What ``fail`` raises."""


def echo(payload: Any) -> Any:
    return payload


def echo_inline(payload: Any) -> Any:
    return payload


async def echo_async(payload: Any) -> Any:
    return payload


def add(payload: dict[str, float]) -> float:
    return payload["a"] + payload["b"]


def sleep(payload: dict[str, float] | None) -> dict[str, float]:
    seconds = float((payload or {}).get("seconds", 1.0))
    if not 0 <= seconds <= _MAX_SLEEP:
        raise ValueError(f"seconds must be between 0 and {_MAX_SLEEP:g}")
    time.sleep(seconds)
    return {"slept": seconds}


async def nap(payload: dict[str, float] | None) -> dict[str, float]:
    """``sleep`` without holding a thread: awaited on the worker's event loop."""
    seconds = float((payload or {}).get("seconds", 1.0))
    if not 0 <= seconds <= _MAX_SLEEP:
        raise ValueError(f"seconds must be between 0 and {_MAX_SLEEP:g}")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def fail(payload: dict[str, str] | None) -> None:
    raise DemoError(str((payload or {}).get("message", "demo failure")))


def fib(payload: dict[str, int]) -> int:
    """Naive recursive Fibonacci: burns CPU on purpose."""
    n = int(payload["n"])
    if not 0 <= n <= _MAX_FIB:
        raise ValueError(f"n must be between 0 and {_MAX_FIB}")
    return _fib(n)


def whoami(payload: dict[str, float] | None) -> dict[str, object]:
    seconds = float((payload or {}).get("seconds", 0.0))
    if seconds:
        sleep({"seconds": seconds})
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def build(name: str = "demo") -> Service:
    """A demo service under ``name`` (tests run private copies side by side)."""
    demo = Service(name)
    for handler in (echo, echo_async, add, sleep, nap, fail, fib, whoami):
        demo.add(handler.__name__, handler)
    demo.add("echo_inline", echo_inline, inline=True)
    return demo


service = build()
