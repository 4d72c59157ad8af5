"""Service: a named set of handlers, one per method.

A Service is plain data: it knows nothing of connections. A ``Worker`` serves it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from reqrep.common import topology
from reqrep.common.errors import ConfigError

__all__ = ["Handler", "Service"]

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)


class Service:
    """Handlers registered by method name.

    Threads: register handlers before a Worker starts; afterwards the Service is read-only and
    ``get`` may be called from any thread.
    """

    def __init__(self, name: str) -> None:
        _check("service", name)
        self.name = name
        self._handlers: dict[str, Handler] = {}
        self._async: set[str] = set()  # methods whose handler is ``async def``

    def __repr__(self) -> str:
        return f"<Service {self.name!r} methods={self.methods}>"

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    @overload
    def handler(self, name_or_fn: H) -> H: ...
    @overload
    def handler(self, name_or_fn: str | None = None) -> Callable[[H], H]: ...

    def handler(self, name_or_fn: str | H | None = None) -> H | Callable[[H], H]:
        """Register a handler: ``@service.handler`` or ``@service.handler("name")``.

        A handler takes the decoded JSON payload and returns a JSON-able result; whatever it
        raises goes back to the caller as a RemoteError with the exception's type and message.
        It may be ``async def``: the worker then awaits it on its event loop thread.
        """
        if callable(name_or_fn):
            self.add(name_or_fn.__name__, name_or_fn)
            return name_or_fn

        def register(fn: H) -> H:
            self.add(name_or_fn or fn.__name__, fn)
            return fn

        return register

    def add(self, method: str, fn: Handler) -> None:
        """Register ``fn`` as the handler of ``method``."""
        _check("method", method)
        if not callable(fn):
            raise ConfigError(f"handler for {method!r} is not callable: {fn!r}")
        if method in self._handlers:
            raise ConfigError(f"service {self.name!r} already has a handler for {method!r}")
        self._handlers[method] = fn
        if _is_async(fn):
            self._async.add(method)

    def get(self, method: str) -> Handler | None:
        return self._handlers.get(method)

    def is_async(self, method: str) -> bool:
        """Whether ``method``'s handler is a coroutine function (awaited on an event loop)."""
        return method in self._async

    @property
    def has_async(self) -> bool:
        return bool(self._async)

    @property
    def has_sync(self) -> bool:
        return len(self._async) < len(self._handlers)


def _is_async(fn: Handler) -> bool:
    """``async def`` functions, and objects whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


def _check(kind: str, name: object) -> None:
    topology.check_name(kind, name)
