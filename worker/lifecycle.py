"""A worker process's lifecycle: the service's startup and shutdown hooks, and its resources.

Each worker process (each ``Worker``) runs the service's ``on_startup`` hooks once, in order,
before it consumes, and its ``on_shutdown`` hooks once after it has drained; then it closes the
resources, newest first. A hook takes one argument, a ``Lifespan``: the service's name, the
worker's ``settings`` (its broker, its prefix: what a Requestor for nested calls should use)
and ``resources``, where a hook puts what handlers need::

    @service.on_startup
    def open_clients(life: Lifespan) -> None:
        life.resources.add("inventory", Requestor(settings=life.settings, service="inventory"))

    @service.handler
    def place(order: Order, *, inventory: Requestor) -> Placed: ...

A handler gets a resource as the keyword-only parameter of the same name (``worker/invoke.py``);
one it requires that no hook provided stops the worker before it consumes (StartupError).
Resources given to the ``Worker`` (``resources={...}``: tests put fakes there) are in place
before the hooks run and win over what a hook adds: ``add`` then keeps the given one, enters
nothing, and returns it.

Plain hooks run on the thread that starts or stops the worker; ``async def`` hooks on the
worker's handler loop (where ``async def`` handlers run, so what they open is bound to that
loop), each awaited for at most ``HOOK_TIMEOUT`` seconds.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from reqrep.common.config import Settings
from reqrep.common.errors import ConfigError, StartupError

__all__ = ["HOOK_TIMEOUT", "Lifecycle", "Lifespan", "Resources", "check_resources"]

log = logging.getLogger("reqrep.worker")

HOOK_TIMEOUT = 60.0  # seconds an ``async def`` hook or closer may take
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

RunAsync = Callable[[Awaitable[Any]], Any]  # awaits a coroutine on the handler loop, blocking


class Resources(Mapping[str, Any]):
    """What a worker process hands its handlers, by name: a read-only mapping with ``add``.

    Threads: ``add`` from the hooks (the thread starting the worker, or its handler loop);
    reading from any thread once the worker consumes.
    """

    def __init__(self, given: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {}
        for name, value in (given or {}).items():
            self._values[_check_name(name)] = value
        self._given = frozenset(self._values)
        self._closers: list[tuple[str, Callable[[], Any]]] = []  # newest last

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # names only: values may hold credentials
        return f"<Resources {sorted(self._values)}>"

    def add(self, name: str, value: Any, *, close: Callable[[], Any] | None = None) -> Any:
        """Make ``value`` the resource ``name`` and return the resource in effect.

        A context manager is entered here (and its result is the resource) and exited at
        shutdown; otherwise ``close`` (plain or ``async def``), if given, is called then. A
        resource given to the Worker under ``name`` wins: it is returned, and ``value`` is
        neither entered nor closed. ConfigError for a name taken already, or not a Python
        identifier.
        """
        _check_name(name)
        if name in self._given:
            return self._values[name]
        if name in self._values:
            raise ConfigError(f"resource {name!r} was added already")
        if close is None and hasattr(value, "__enter__") and hasattr(value, "__exit__"):
            entered = value.__enter__()
            self._closers.append((name, lambda: value.__exit__(None, None, None)))
            value = entered
        elif close is not None:
            self._closers.append((name, close))
        self._values[name] = value
        return value

    def closers(self) -> list[tuple[str, Callable[[], Any]]]:
        """The closers to run, newest first (each once: the list is emptied)."""
        found, self._closers = self._closers[::-1], []
        return found


class Lifespan:
    """What a hook is given: ``service`` (its name), ``settings`` (the worker's), ``resources``."""

    def __init__(self, service: str, settings: Settings, resources: Resources) -> None:
        self.service = service
        self.settings = settings
        self.resources = resources

    def __repr__(self) -> str:
        return f"<Lifespan service={self.service!r} resources={sorted(self.resources)}>"


class Lifecycle:
    """Runs one worker process's hooks and closes its resources.

    Threads: ``start`` and ``stop`` on the thread that starts and stops the Worker.
    """

    def __init__(
        self,
        service: str,
        settings: Settings,
        startup: list[Callable[[Any], Any]],
        shutdown: list[Callable[[Any], Any]],
        given: Mapping[str, Any] | None = None,
    ) -> None:
        self.resources = Resources(given)
        self.lifespan = Lifespan(service, settings, self.resources)
        self._startup = list(startup)
        self._shutdown = list(shutdown)
        self._started = False

    @property
    def needs_loop(self) -> bool:
        """Whether a hook is ``async def`` (then the handler loop must run for it)."""
        return any(_is_async(hook) for hook in (*self._startup, *self._shutdown))

    def start(self, run_async: RunAsync) -> None:
        """Run the startup hooks in order. If one raises, close the resources added so far
        and raise StartupError (the shutdown hooks do not run: startup did not finish)."""
        for hook in self._startup:
            try:
                self._run(hook, run_async)
            except BaseException as exc:
                self._close(run_async)
                raise StartupError(
                    f"on_startup hook {_label(hook)} of service {self.lifespan.service!r} "
                    f"failed: {type(exc).__name__}: {exc}"
                ) from exc
        self._started = True
        if self._startup:
            log.info(
                "service %s started: resources %s", self.lifespan.service, sorted(self.resources)
            )

    def stop(self, run_async: RunAsync) -> None:
        """Run the shutdown hooks (if startup finished), then close the resources, newest
        first. Failures are logged and the rest still run. Idempotent."""
        started, self._started = self._started, False
        if started:
            for hook in self._shutdown:
                try:
                    self._run(hook, run_async)
                except Exception:
                    log.exception("on_shutdown hook %s failed", _label(hook))
        self._close(run_async)

    def _run(self, hook: Callable[[Any], Any], run_async: RunAsync) -> None:
        result = hook(self.lifespan)
        if inspect.isawaitable(result):
            run_async(result)

    def _close(self, run_async: RunAsync) -> None:
        for name, close in self.resources.closers():
            try:
                result = close()
                if inspect.isawaitable(result):
                    run_async(result)
            except Exception:
                log.exception("closing resource %r failed", name)


def check_resources(
    method: str, parameters: Mapping[str, bool], resources: Mapping[str, Any]
) -> dict[str, Any]:
    """The keyword arguments ``method``'s handler gets: each of its keyword-only parameters
    that names a resource. StartupError if a required one names none."""
    missing = [name for name, required in parameters.items() if required and name not in resources]
    if missing:
        raise StartupError(
            f"handler {method!r} needs the resources {missing}, which no on_startup hook added "
            f"(resources: {sorted(resources)})"
        )
    return {name: resources[name] for name in parameters if name in resources}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"a resource name is a Python identifier, got {name!r}")
    return name


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself is inspected
    )


def _label(fn: Callable[..., Any]) -> str:
    return repr(getattr(fn, "__qualname__", None) or fn)
