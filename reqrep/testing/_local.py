"""LocalRequestor: a service's handlers behind the Requestor API, with no RabbitMQ.

It is not a copy of the call path: it runs the real ``Worker`` (its consumer, admission rules,
reply cache, handler threads and event loop) and the real ``Requestor`` and ``AsyncRequestor``
over an in-memory broker (``MemoryBroker``, reqrep's transport seam's other implementation), so a
call takes every step it takes through RabbitMQ: JSON envelope, request properties, deadlines,
size limits, idempotency keys, error replies and their typed errors. Only the network is
missing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from reqrep.common._transport._memory import MemoryBroker
from reqrep.common.config import Settings
from reqrep.common.errors import ClosedError
from reqrep.requestor._calls import ReplyStats
from reqrep.requestor.aio import AsyncRequestor
from reqrep.requestor.client import Requestor
from reqrep.worker.server import Worker
from reqrep.worker.service import Service

__all__ = ["LocalAsyncRequestor", "LocalRequestor", "MemoryBroker"]


class LocalRequestor:
    """The ``Requestor`` call API (``call``, ``call_async``) and an ``async`` one (``acall``),
    served in this process by ``service``'s handlers through a ``Worker`` on an in-memory
    broker (``broker``, or one of its own).

    ``resources`` replace, by name, what the service's ``on_startup`` hooks would hand its
    handlers (fakes: the hooks still run, and keep the given ones). ``call`` and ``acall`` take
    a method's name or a registered handler function (a typed call), as ``Requestor.call``
    does.

    ``settings`` (default: ``Settings.from_env()``) supply the timeout, ``max_message_bytes``
    and the other options both sides read; nothing connects anywhere. Handlers run as on a
    worker: plain ones on ``concurrency`` threads, ``async def`` ones on the worker's event loop
    thread, not the caller's.

    Threads: every method may be called from any thread (``acall`` on any event loop).
    """

    def __init__(
        self,
        service: Service,
        *,
        settings: Settings | None = None,
        timeout: float | None = None,
        concurrency: int = 8,
        dedupe_entries: int = 10_000,
        dedupe_ttl: float = 300.0,
        broker: MemoryBroker | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.service = service
        self.broker = broker if broker is not None else MemoryBroker()
        self._settings = base.replace(timeout=timeout)
        transport = self.broker.transport
        self.worker = Worker(
            service,
            settings=self._settings,
            concurrency=concurrency,
            dedupe_entries=dedupe_entries,
            dedupe_ttl=dedupe_ttl,
            transport=transport,
            resources=resources,
        )
        self.requestor = Requestor(
            settings=self._settings, service=service.name, transport=transport
        )
        self._async = AsyncRequestor(
            settings=self._settings, service=service.name, transport=transport
        )
        self._lock = threading.Lock()
        self._state = "new"

    def __repr__(self) -> str:
        return f"<LocalRequestor {self._state} service={self.service.name!r}>"

    @property
    def settings(self) -> Settings:
        return self._settings

    def open(self) -> LocalRequestor:
        """Start the worker and connect the requestor (the first call does it too)."""
        with self._lock:
            if self._state == "closed":
                raise ClosedError("requestor is closed")
            if self._state == "new":
                self.worker.start()
                self.requestor.open()
                self._state = "open"
        return self

    def close(self) -> None:
        """Pending calls fail with ClosedError; running handlers are left to finish."""
        with self._lock:
            was, self._state = self._state, "closed"
        self.requestor.close()
        self._async.close_sync()
        if was == "open":
            self.worker.stop(0)

    def __enter__(self) -> LocalRequestor:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalRequestor:
        return self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stats(self) -> ReplyStats:
        """The requestor's counters (both faces' together)."""
        one, two = self.requestor.stats(), self._async.stats()
        return ReplyStats(*(a + b for a, b in zip(_fields(one), _fields(two), strict=True)))

    def call(self, method: str | Callable[..., Any], payload: Any = None, **options: Any) -> Any:
        """Like ``Requestor.call``: the result, or the call's typed error."""
        self._ensure_open()
        return self.requestor.call(method, payload, **options)

    def call_async(
        self, method: str | Callable[..., Any], payload: Any = None, **options: Any
    ) -> Future[Any]:
        """Like ``Requestor.call_async``: a future that ends by the call's timeout."""
        self._ensure_open()
        return self.requestor.call_async(method, payload, **options)

    async def acall(
        self, method: str | Callable[..., Any], payload: Any = None, **options: Any
    ) -> Any:
        """Like ``AsyncRequestor.call``; cancelling the awaiting task cancels the call."""
        self._ensure_open()
        return await self._async.call(method, payload, **options)

    def _ensure_open(self) -> None:
        if self._state != "open":
            self.open()


def _fields(stats: ReplyStats) -> tuple[int, ...]:
    return (
        stats.pending,
        stats.resolved,
        stats.late,
        stats.unknown,
        stats.untrusted,
        stats.undecodable,
    )


class LocalAsyncRequestor:
    """``AsyncRequestor``'s API (``await rq.call(...)``, ``async with``) over a LocalRequestor:
    a stand-in for code that is handed an AsyncRequestor.

    Threads: as ``LocalRequestor``; the coroutines may be awaited on any event loop.
    """

    def __init__(self, service: Service, **options: Any) -> None:
        self.local = LocalRequestor(service, **options)

    def __repr__(self) -> str:
        return repr(self.local).replace("<LocalRequestor", "<LocalAsyncRequestor", 1)

    @property
    def settings(self) -> Settings:
        return self.local.settings

    def stats(self) -> ReplyStats:
        return self.local.stats()

    async def open(self) -> LocalAsyncRequestor:
        await asyncio.get_running_loop().run_in_executor(None, self.local.open)
        return self

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.local.close)

    async def __aenter__(self) -> LocalAsyncRequestor:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(
        self, method: str | Callable[..., Any], payload: Any = None, **options: Any
    ) -> Any:
        """Like ``AsyncRequestor.call``."""
        return await self.local.acall(method, payload, **options)
