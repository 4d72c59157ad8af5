"""Service: a named set of handlers, one per method, and what goes around them.

A Service is plain data: it knows nothing of connections. A ``Worker`` serves it. Besides its
handlers it declares, per method, a ``MethodSpec`` (the contract read from the handler's type
hints, and the defaults ``timeout``, ``idempotent``, ``concurrency``) and whether its handler
runs ``inline`` (on the worker's I/O thread: ``worker/inline.py``); and for the whole
service its lifecycle hooks (``on_startup``, ``on_shutdown``: ``worker/lifecycle.py`` runs
them) and its middleware (``worker/invoke.py`` wraps each handler call in it).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar, overload

from reqrep.common import middleware as chains
from reqrep.common import topology
from reqrep.common.contracts import ATTRIBUTE, Contract, MethodSpec
from reqrep.common.errors import ConfigError

__all__ = ["Handler", "Hook", "Service"]

Handler = Callable[..., Any]  # the payload first; resources as keyword-only parameters
H = TypeVar("H", bound=Handler)
Hook = Callable[[Any], Any]  # on_startup/on_shutdown: takes a Lifespan; plain or async def
K = TypeVar("K", bound=Hook)
M = TypeVar("M", bound=Callable[..., Any])


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
        self._inline: set[str] = set()  # methods whose handler runs on the I/O thread
        self._specs: dict[str, MethodSpec] = {}
        self._resources: dict[str, dict[str, bool]] = {}  # method -> {parameter: required}
        self.startup_hooks: list[Hook] = []
        self.shutdown_hooks: list[Hook] = []
        self.middleware_chain: list[Callable[..., Any]] = []  # the first is the outermost

    def __repr__(self) -> str:
        return f"<Service {self.name!r} methods={self.methods}>"

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    @overload
    def handler(self, name_or_fn: H) -> H: ...
    @overload
    def handler(
        self,
        name_or_fn: str | None = None,
        *,
        timeout: float | None = None,
        concurrency: int | None = None,
        idempotent: bool = False,
        inline: bool = False,
    ) -> Callable[[H], H]: ...

    def handler(
        self,
        name_or_fn: str | H | None = None,
        *,
        timeout: float | None = None,
        concurrency: int | None = None,
        idempotent: bool = False,
        inline: bool = False,
    ) -> H | Callable[[H], H]:
        """Register a handler: ``@service.handler`` or ``@service.handler("name", ...)``.

        A handler takes the call's payload and returns its result. Its type hints are its
        contract (``common/contracts.py``): a pydantic model, dataclass or TypedDict request
        is validated before the handler runs (a mismatch is a BadRequest listing the failing
        fields), such a reply is serialised from the model; plain JSON hints leave the decoded
        JSON as it is. Its keyword-only parameters are resources, handed over by name
        (``worker/lifecycle.py``). It may be ``async def``: the worker then awaits it on its
        event loop thread. An ``AppError`` it raises reaches the caller with its code and
        details; anything else as a RemoteError with the exception's type and message.

        ``timeout`` (seconds) and ``idempotent`` are the defaults of a typed call
        (``rq.call(handler, payload)``) that gives none; ``concurrency`` bounds how many calls
        of this method one worker process runs at once.

        ``inline=True`` runs the handler on the worker's I/O thread, where its request is
        delivered, instead of on a handler thread: two thread hand-offs fewer per call, for a
        handler that never blocks (a lookup, arithmetic on the payload). While it runs, nothing
        else of that worker's connection moves (requests, replies, heartbeats): one that runs
        longer than ``settings.inline_budget`` is logged with its stack and counted. Not for
        ``async def`` handlers, and not with ``concurrency`` (an inline handler runs one call at
        a time by construction): both are a ConfigError.
        """
        if callable(name_or_fn):
            self.add(name_or_fn.__name__, name_or_fn)
            return name_or_fn

        def register(fn: H) -> H:
            self.add(
                name_or_fn or fn.__name__,
                fn,
                timeout=timeout,
                concurrency=concurrency,
                idempotent=idempotent,
                inline=inline,
            )
            return fn

        return register

    def add(
        self,
        method: str,
        fn: Handler,
        *,
        timeout: float | None = None,
        concurrency: int | None = None,
        idempotent: bool = False,
        inline: bool = False,
    ) -> None:
        """Register ``fn`` as the handler of ``method`` (options as for ``handler``)."""
        _check("method", method)
        if not callable(fn):
            raise ConfigError(f"handler for {method!r} is not callable: {fn!r}")
        if method in self._handlers:
            raise ConfigError(f"service {self.name!r} already has a handler for {method!r}")
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
        ):
            raise ConfigError(f"{method!r}: timeout must be a positive number, got {timeout!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigError(f"{method!r}: concurrency must be >= 1, got {concurrency!r}")
        if not isinstance(inline, bool):
            raise ConfigError(f"{method!r}: inline must be True or False, got {inline!r}")
        if inline and _is_async(fn):
            raise ConfigError(
                f"{method!r}: an async def handler cannot be inline: async handlers run on "
                "the worker's event loop; make it a plain function, or drop inline=True"
            )
        if inline and concurrency is not None:
            raise ConfigError(
                f"{method!r}: inline handlers take no concurrency limit: they run on the "
                "worker's I/O thread, one call at a time"
            )
        spec = MethodSpec(
            self.name,
            method,
            Contract.of(fn),
            timeout=None if timeout is None else float(timeout),
            idempotent=bool(idempotent),
            concurrency=concurrency,
        )
        self._resources[method] = _resource_parameters(fn)
        self._handlers[method] = fn
        self._specs[method] = spec
        if _is_async(fn):
            self._async.add(method)
        if inline:
            self._inline.add(method)
        # The function itself can then be handed to a requestor (``rq.call(fn, payload)``).
        # The first registration names it: a function served under several services is called
        # with service=... for the others. Objects that take no attributes are left alone.
        if not hasattr(fn, ATTRIBUTE):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(fn, ATTRIBUTE, spec)

    def on_startup(self, hook: K) -> K:
        """Register a hook (plain or ``async def``) that every worker process runs once, in
        registration order, before it consumes; it gets a ``Lifespan`` (``settings``,
        ``resources``). A hook that raises stops the worker with StartupError."""
        self.startup_hooks.append(_callable("on_startup", hook))
        return hook

    def on_shutdown(self, hook: K) -> K:
        """Register a hook that every worker process runs once, in registration order, after
        it has drained (every reply sent), before its resources are closed."""
        self.shutdown_hooks.append(_callable("on_shutdown", hook))
        return hook

    def middleware(self, mw: M) -> M:
        """Add a middleware, inside those added before: ``mw(call, call_next)``, a plain
        function around plain handlers, an ``async def`` around ``async def`` handlers (see
        ``worker/invoke.py``)."""
        self.middleware_chain.append(chains.check(mw, f"service {self.name!r}"))
        return mw

    def spec(self, method: str) -> MethodSpec | None:
        """What ``method`` declares: its contract and defaults (None: no such method)."""
        return self._specs.get(method)

    def resource_parameters(self, method: str) -> dict[str, bool]:
        """``method``'s handler's keyword-only parameters: name -> whether it is required."""
        return dict(self._resources.get(method, {}))

    def get(self, method: str) -> Handler | None:
        return self._handlers.get(method)

    def is_async(self, method: str) -> bool:
        """Whether ``method``'s handler is a coroutine function (awaited on an event loop)."""
        return method in self._async

    def is_inline(self, method: str) -> bool:
        """Whether ``method``'s handler runs on the worker's I/O thread (``inline=True``)."""
        return method in self._inline

    @property
    def has_async(self) -> bool:
        return bool(self._async)

    @property
    def has_sync(self) -> bool:
        """Whether a handler thread pool is needed: a plain handler that is not inline."""
        return len(self._async) + len(self._inline) < len(self._handlers)


def _is_async(fn: Handler) -> bool:
    """``async def`` functions, and objects whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


def _check(kind: str, name: object) -> None:
    topology.check_name(kind, name)


def _callable(kind: str, hook: K) -> K:
    if not callable(hook):
        raise ConfigError(f"{kind} hook is not callable: {hook!r}")
    return hook


def _resource_parameters(fn: Handler) -> dict[str, bool]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin: no keyword-only parameters to fill
        return {}
    return {p.name: p.default is p.empty for p in parameters if p.kind is p.KEYWORD_ONLY}
