"""Middleware chains: ordered wrappers around a call, shared by both sides.

A middleware is ``mw(call, call_next)``: it may look at or replace ``call`` (a frozen
dataclass: ``dataclasses.replace``), call ``call_next(call)`` and return its outcome (or another
one), or return a result without calling it (a cache), or raise (an auth check). The first
middleware given is the outermost. A worker's ``HandlerCall`` and a requestor's ``OutgoingCall``
are the calls they see.

In an async chain every middleware is ``async def`` and awaits ``call_next``; in a plain one
every middleware is a plain function. Which chain a call goes through is the caller's business
(the worker's, by its handler's kind; the requestor's, by its face).

Thread-agnostic: a chain is built once and called from any thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from reqrep.common.errors import ConfigError

__all__ = ["AsyncMiddleware", "Middleware", "build", "build_async", "check", "is_async"]

C = TypeVar("C")
Middleware = Callable[[Any, Callable[[Any], Any]], Any]
AsyncMiddleware = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


def check(middleware: object, what: str) -> Callable[..., Any]:
    """``middleware`` if it can be one; ConfigError naming ``what`` otherwise."""
    if not callable(middleware):
        raise ConfigError(f"{what}: middleware must be callable, got {middleware!r}")
    return middleware


def is_async(middleware: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(middleware) or inspect.iscoroutinefunction(
        getattr(middleware, "__call__", None)  # noqa: B004 - the method itself is inspected
    )


def build(middleware: Sequence[Middleware], innermost: Callable[[C], Any]) -> Callable[[C], Any]:
    """``innermost`` wrapped in ``middleware``, the first one outermost."""
    call = innermost
    for mw in reversed(middleware):
        call = _wrap(mw, call)
    return call


def build_async(
    middleware: Sequence[AsyncMiddleware], innermost: Callable[[C], Awaitable[Any]]
) -> Callable[[C], Awaitable[Any]]:
    """The same, for ``async def`` middleware around an awaitable ``innermost``."""
    call = innermost
    for mw in reversed(middleware):
        call = _wrap_async(mw, call)
    return call


def _wrap(mw: Middleware, call_next: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(call: Any) -> Any:
        return mw(call, call_next)

    return wrapped


def _wrap_async(
    mw: AsyncMiddleware, call_next: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    async def wrapped(call: Any) -> Any:
        return await mw(call, call_next)

    return wrapped
