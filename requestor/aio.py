"""AsyncRequestor: the asyncio face of the Requestor, over the same connection machinery.

Calls are sent exactly as ``Requestor`` sends them (same options, errors and wire protocol); only
the waiting differs. A call's outcome is handed from the I/O thread to the caller's event loop
through a ``LoopInbox`` (one ``call_soon_threadsafe`` per batch of replies) and completes an
``asyncio.Future`` there, so no user code, not even a done-callback, runs on reqrep's I/O thread,
and the event loop never blocks: connecting runs on a helper thread the loop only awaits.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from reqrep.common.aio import LoopInbox
from reqrep.common.config import Settings
from reqrep.common.errors import CallTimeout
from reqrep.requestor.client import Requestor, _Call, prepare_call, retries_for
from reqrep.requestor.reply_handler import ReplyStats, timeout_error

__all__ = ["AsyncRequestor"]

_openers = itertools.count(1)


class AsyncRequestor:
    """asyncio RPC client: ``await rq.call(method, payload)``.

    Usage::

        async with AsyncRequestor(url, service="billing") as rq:
            total = await rq.call("add", {"a": 1, "b": 2}, timeout=5)

    The arguments, call options and errors are those of ``Requestor``. Cancelling the task that
    awaits a call forgets the call at once: a reply that comes later is discarded and counted as
    late, as is one after a CallTimeout.

    One AsyncRequestor may serve several event loops, in several threads: each call's outcome
    goes to the loop it was made on.

    Threads: ``open``, ``close`` and ``call`` are coroutines, awaited on any event loop;
    ``stats`` may be called anywhere. The connection lives on the Requestor's I/O thread.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        service: str | None = None,
        timeout: float | None = None,
        settings: Settings | None = None,
        trusted_repliers: Collection[str] | None = None,
        wait_for_workers: bool | None = None,
    ) -> None:
        self._requestor = Requestor(
            url,
            service=service,
            timeout=timeout,
            settings=settings,
            trusted_repliers=trusted_repliers,
            wait_for_workers=wait_for_workers,
        )
        self._service = service
        self._lock = threading.Lock()
        self._opening: Future[None] | None = None  # done and not failed: open
        self._inboxes: dict[asyncio.AbstractEventLoop, LoopInbox] = {}

    def __repr__(self) -> str:
        return repr(self._requestor).replace("<Requestor", "<AsyncRequestor", 1)

    @property
    def settings(self) -> Settings:
        return self._requestor.settings

    @property
    def name(self) -> str:
        """The connection name the broker shows (``connection_name``)."""
        return self._requestor.name

    @property
    def reply_queue(self) -> str:
        return self._requestor.reply_queue

    def stats(self) -> ReplyStats:
        """Counters: pending calls, replies resolved, late and unknown replies discarded."""
        return self._requestor.stats()

    async def open(self) -> AsyncRequestor:
        """Connect (BrokerUnreachable if it cannot) without blocking the event loop.

        The connection is made on a helper thread; calls made meanwhile, from any loop, await
        the same attempt. A failed attempt is tried again by the next call.
        """
        with self._lock:
            opening = self._opening
            if opening is None:
                opening = self._opening = Future()
                opening.set_running_or_notify_cancel()  # a waiter's cancel must not cancel it
                threading.Thread(
                    target=self._open_now,
                    args=(opening,),
                    name=f"reqrep-aio-open-{next(_openers)}",
                    daemon=True,
                ).start()
        await asyncio.wrap_future(opening)
        return self

    def _open_now(self, opening: Future[None]) -> None:
        """On the helper thread: connect, and tell every waiting loop."""
        try:
            self._requestor.open()
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the waiters
            with self._lock:
                if self._opening is opening:
                    self._opening = None
            opening.set_exception(exc)
        else:
            opening.set_result(None)

    async def close(self, timeout: float = 10.0) -> None:
        """Close the connection; pending calls fail with ClosedError. Idempotent."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._requestor.close, timeout)

    async def __aenter__(self) -> AsyncRequestor:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(
        self,
        method: str,
        payload: Any = None,
        *,
        service: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call ``method`` of ``service`` and return its result; see ``Requestor.call``."""
        call, request = prepare_call(
            self._requestor.settings,
            method,
            payload,
            service=service or self._service,
            timeout=timeout,
            retries=retries_for(idempotent, retries),
            idempotency_key=idempotency_key,
        )
        opening = self._opening
        if opening is None or not opening.done():
            await self.open()
        loop = asyncio.get_running_loop()
        inbox = self._inbox(loop)
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(result: Any, error: BaseException | None) -> None:  # any thread
            inbox.put(lambda: _settle(future, result, error))

        self._requestor._send_deliver(deliver, call, request)
        # Exactly at the timeout, like Requestor.call (the I/O thread's sweep may be 0.1 s late).
        timer = loop.call_later(call.timeout, _expire, future, call)
        try:
            return await future
        except asyncio.CancelledError as exc:
            # The caller stopped waiting: forget the call now, not at its deadline.
            self._requestor._replies.forget(call.correlation_id, exc)
            raise
        except CallTimeout as exc:
            self._requestor._replies.forget(call.correlation_id, exc)
            raise
        finally:
            timer.cancel()

    def _inbox(self, loop: asyncio.AbstractEventLoop) -> LoopInbox:
        inbox = self._inboxes.get(loop)
        if inbox is None:
            with self._lock:
                for old in [lp for lp in self._inboxes if lp.is_closed()]:
                    del self._inboxes[old]
                inbox = self._inboxes.setdefault(loop, LoopInbox(loop))
        return inbox


def _expire(future: asyncio.Future[Any], call: _Call) -> None:
    _settle(future, None, timeout_error(call.what, call.timeout))


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: complete ``future`` unless its awaiter was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
