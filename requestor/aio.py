"""AsyncRequestor: the asyncio face of the requestor, over the same send path.

Calls are prepared and sent exactly as ``Requestor`` sends them (``RequestorCore``: same options,
errors and wire protocol); only the waiting differs. Two paths:

- threaded (the default): the connection lives on an I/O thread of the AsyncRequestor's own. A
  call's outcome is handed from the I/O thread to the caller's event loop through a
  ``LoopInbox`` (one ``call_soon_threadsafe`` per batch of replies) and completes an
  ``asyncio.Future`` there, so no user code, not even a done-callback, runs on reqrep's I/O
  thread, and the event loop never blocks: connecting runs on a helper thread the loop only
  awaits.
- native (``native=True``): the connection lives on the event loop the AsyncRequestor is opened
  on (a hosted Link, ``common/_link.py``; pika's ``AsyncioConnection``), with no thread at all:
  a call is prepared, registered, published and resolved on that loop, and its outcome completes
  its future directly. The price: whatever blocks that loop delays the connection's work too
  (its heartbeats, its confirms, every other call's reply), and the AsyncRequestor serves that
  one loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, overload

from reqrep.common import middleware as chains
from reqrep.common._link import Link
from reqrep.common._transport import AsyncioLoop, Transport
from reqrep.common.aio import LoopInbox
from reqrep.common.config import Settings
from reqrep.common.errors import BrokerUnreachable, CallTimeout, ClosedError, ConfigError
from reqrep.requestor._calls import Call, ReplyStats
from reqrep.requestor._core import RequestorCore, retries_for
from reqrep.requestor._typed import AsyncTypedHandler, P, Rep, Req, TypedHandler, prepare, resolve
from reqrep.requestor.broadcast import BroadcastResult
from reqrep.requestor.middleware import OutgoingCall

__all__ = ["AsyncRequestor"]

_openers = itertools.count(1)


class AsyncRequestor:
    """asyncio RPC client: ``await rq.call(method, payload)``.

    Usage::

        async with AsyncRequestor(url, service="billing") as rq:
            total = await rq.call("add", {"a": 1, "b": 2}, timeout=5)

    The arguments, call options and errors are those of ``Requestor``. Cancelling the task that
    awaits a call forgets the call at once and tells its worker, which stops it (a reply that
    comes later anyway is discarded and counted as late, as is one after a CallTimeout).

    One AsyncRequestor may serve several event loops, in several threads: each call's outcome
    goes to the loop it was made on. ``middleware`` (``async def`` functions) wrap each call
    (``requestor/middleware.py``).

    ``native=True`` puts the connection on the event loop the AsyncRequestor is first opened
    (or called) on, with no I/O thread and no hand-off between threads (see the module
    docstring): every guarantee is the same, but a call from another loop raises ConfigError,
    and whatever blocks that loop delays the connection's heartbeats and every reply.

    Readiness for a web app's probe: ``connected`` (calls go out now), ``address`` and
    ``reconnects``, as on ``Requestor``.

    Threads: ``open``, ``close`` and ``call`` are coroutines, awaited on any event loop (on
    the native path: on its one loop, though ``close`` and ``close_sync`` work from anywhere);
    ``stats`` and the properties may be read anywhere. The connection lives on the I/O thread
    this AsyncRequestor owns, or on the native path on its event loop.
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
        fail_fast: bool | None = None,
        transport: Transport | None = None,
        middleware: Sequence[chains.AsyncMiddleware] = (),
        native: bool = False,
    ) -> None:
        self._native = bool(native)
        self._home: AsyncioLoop | None = None  # native: the loop the connection lives on
        self._native_opening: asyncio.Future[None] | None = None  # on the home loop
        self._closed_link: Link | None = None  # native: the Link close() waits to see end
        self._middleware = [chains.check(mw, "AsyncRequestor") for mw in middleware]
        self._core = RequestorCore(
            url,
            service=service,
            timeout=timeout,
            settings=settings,
            trusted_repliers=trusted_repliers,
            wait_for_workers=wait_for_workers,
            fail_fast=fail_fast,
            transport=transport,
        )
        self._lock = threading.Lock()
        self._opening: Future[None] | None = None  # done and not failed: open
        self._inboxes: dict[asyncio.AbstractEventLoop, LoopInbox] = {}

    def __repr__(self) -> str:
        return self._core.describe("AsyncRequestor")

    @property
    def settings(self) -> Settings:
        return self._core.settings

    @property
    def native(self) -> bool:
        """Whether the connection lives on the caller's event loop (``native=True``)."""
        return self._native

    @property
    def name(self) -> str:
        """The connection name the broker shows (``connection_name``)."""
        return self._core.name

    @property
    def reply_queue(self) -> str:
        return self._core.reply_queue

    @property
    def blocked(self) -> str | None:
        """Why the broker blocks publishing on this connection (a memory or disk alarm), or
        None: calls made meanwhile are held until it unblocks, within their deadline."""
        return self._core.blocked

    @property
    def connected(self) -> bool:
        """Whether calls go out now: connected, not reconnecting, not blocked by the broker."""
        return self._core.connected

    @property
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return self._core.address

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established."""
        return self._core.reconnects

    def stats(self) -> ReplyStats:
        """Counters: pending calls, replies resolved, late and unknown replies discarded."""
        return self._core.stats()

    async def open(self) -> AsyncRequestor:
        """Connect (BrokerUnreachable if it cannot) without blocking the event loop.

        The connection is made on a helper thread (on the native path: on the running loop);
        calls made meanwhile, from any loop, await the same attempt. A failed attempt is tried
        again by the next call.
        """
        if self._native:
            await self._open_native()
            return self
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
            self._core.open()
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the waiters
            with self._lock:
                if self._opening is opening:
                    self._opening = None
            opening.set_exception(exc)
        else:
            opening.set_result(None)

    def _home_loop(self, loop: asyncio.AbstractEventLoop) -> AsyncioLoop:
        """The native path's loop, bound to ``loop`` on first use; ConfigError on another."""
        with self._lock:
            home = self._home
            if home is None:
                home = self._home = AsyncioLoop(loop)
        if home.loop is not loop and home.loop.is_closed():
            raise ClosedError(
                "the event loop this native AsyncRequestor's connection lived on has closed"
            )
        if home.loop is not loop:
            raise ConfigError(
                "a native AsyncRequestor serves the one event loop it was opened on; use "
                "native=False (the default) to share it between loops"
            )
        return home

    async def _open_native(self) -> None:
        home = self._home_loop(asyncio.get_running_loop())
        opening = self._native_opening
        if opening is None:
            opening = self._native_opening = home.loop.create_future()

            def done(error: BaseException | None) -> None:  # on the loop
                if error is not None and self._native_opening is opening:
                    self._native_opening = None  # the next call tries again
                if not opening.done():
                    if error is None:
                        opening.set_result(None)
                    else:
                        opening.set_exception(error)

            self._core.open_hosted(home, done)
        if not opening.done():
            # The Link gives up by connect_timeout itself; this only bounds a wait gone wrong.
            limit = self._core.settings.connect_timeout * 2 + 5
            try:
                await asyncio.wait_for(asyncio.shield(opening), limit)
            except asyncio.TimeoutError:
                raise BrokerUnreachable(f"{self.name}: timed out while connecting") from None
        opening.result()  # raises the attempt's error

    async def close(self, timeout: float = 10.0) -> None:
        """Close the connection; pending calls fail with ClosedError. Idempotent."""
        loop = asyncio.get_running_loop()
        if not self._native:
            await loop.run_in_executor(None, self._core.close, timeout)
            return
        link = self._close_native(timeout)
        home = self._home
        if link is None or home is None or home.loop is not loop:
            return
        ended: asyncio.Future[None] = loop.create_future()

        def end() -> None:
            if not ended.done():
                ended.set_result(None)

        link.when_ended(end)
        # Past the timeout the broker did not answer our close: the Link drops the socket.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ended, timeout)

    def close_sync(self, timeout: float = 10.0) -> None:
        """``close``, from synchronous code: a thread that is not running an event loop (a
        shutdown hook, a test's tear-down). On the native path the connection is closed by
        its event loop, if that still runs (``await close()`` there waits for it); pending
        calls fail at once."""
        if self._native:
            self._close_native(timeout)
        else:
            self._core.close(timeout)

    def _close_native(self, timeout: float) -> Link | None:
        """Close the core (returns at once: the hosted Link closes on its loop); the Link that
        was closed, now or by an earlier close."""
        link = self._core.close(timeout)
        with self._lock:
            if link is not None:
                self._closed_link = link
            return self._closed_link

    async def __aenter__(self) -> AsyncRequestor:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @overload
    async def call(
        self,
        method: AsyncTypedHandler[Req, P, Rep],
        payload: Req,
        *,
        service: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        fail_fast: bool | None = None,
    ) -> Rep: ...
    @overload
    async def call(
        self,
        method: TypedHandler[Req, P, Rep],
        payload: Req,
        *,
        service: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        fail_fast: bool | None = None,
    ) -> Rep: ...
    @overload
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
        headers: Mapping[str, str] | None = None,
        fail_fast: bool | None = None,
    ) -> Any: ...

    async def call(
        self,
        method: str | Callable[..., Any],
        payload: Any = None,
        *,
        service: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        fail_fast: bool | None = None,
    ) -> Any:
        """Call ``method`` of ``service`` and return its result; see ``Requestor.call`` (a
        method's name, or a registered handler function for a typed call)."""
        target = resolve(method, payload, service=service, timeout=timeout, idempotent=idempotent)
        outgoing = target.outgoing(headers)

        async def send(call: OutgoingCall) -> Any:
            return await self._wait(prepare(self._core, call, retries, idempotency_key, fail_fast))

        chain = chains.build_async(self._middleware, send) if self._middleware else send
        return target.result(await chain(outgoing))

    async def call_plain(
        self,
        queue: str,
        body: Any,
        *,
        content_type: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        idempotency_key: str | None = None,
        fail_fast: bool | None = None,
    ) -> bytes:
        """Call a plain AMQP RPC server and return the reply's body; see
        ``Requestor.call_plain``."""
        call = self._core.prepare_plain(
            queue,
            body,
            content_type=content_type,
            timeout=timeout,
            retries=retries_for(idempotent, retries),
            idempotency_key=idempotency_key,
            fail_fast=fail_fast,
        )
        result: bytes = await self._wait(call)
        return result

    async def broadcast(
        self,
        method: str,
        payload: Any = None,
        *,
        service: str | Sequence[str] | None = None,
        timeout: float | None = None,
        min_replies: int | None = None,
    ) -> BroadcastResult:
        """Call ``method`` on every live worker and gather the replies; see
        ``Requestor.broadcast``."""
        await self._ready()
        future = self._core.broadcast(
            method, payload, service=service, timeout=timeout, min_replies=min_replies
        )
        return await asyncio.wrap_future(future)

    async def _ready(self) -> None:
        """Open, unless open already."""
        if self._native:
            opening = self._native_opening
            if opening is None or not opening.done() or opening.exception() is not None:
                await self._open_native()
            return
        opening_ = self._opening
        if opening_ is None or not opening_.done():
            await self.open()

    async def _wait(self, call: Call) -> Any:
        """Send ``call`` and await its outcome on the running loop."""
        await self._ready()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._native:
            home = self._home
            deliver = _native_deliver(
                home if home is not None and home.loop is loop else self._home_loop(loop), future
            )
        else:
            inbox = self._inbox(loop)

            def deliver(result: Any, error: BaseException | None) -> None:  # any thread
                inbox.put(lambda: _settle(future, result, error))

        self._core.send(call, deliver)
        # Exactly at the timeout, like Requestor.call (the I/O thread's sweep may be 0.1 s late).
        timer = loop.call_later(call.timeout, self._expire, future, call)
        try:
            return await future
        except asyncio.CancelledError as exc:
            # The caller stopped waiting: forget the call now, not at its deadline, and tell
            # its worker, which stops it.
            self._core.cancel(call, exc)
            raise
        except CallTimeout as exc:
            self._core.forget(call.correlation_id, exc)
            raise
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[Any], call: Call) -> None:
        _settle(future, None, self._core.timed_out(call))

    def _inbox(self, loop: asyncio.AbstractEventLoop) -> LoopInbox:
        inbox = self._inboxes.get(loop)
        if inbox is None:
            with self._lock:
                for old in [lp for lp in self._inboxes if lp.is_closed()]:
                    del self._inboxes[old]
                inbox = self._inboxes.setdefault(loop, LoopInbox(loop))
        return inbox


def _native_deliver(
    home: AsyncioLoop, future: asyncio.Future[Any]
) -> Callable[[Any, BaseException | None], None]:
    """Where a native call's outcome goes: straight into ``future`` on its loop (where the
    Link ends calls); from another thread (``close_sync``), through ``call_soon_threadsafe``."""

    def deliver(result: Any, error: BaseException | None) -> None:
        if home.in_loop_thread():
            _settle(future, result, error)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it now
            home.loop.call_soon_threadsafe(_settle, future, result, error)

    return deliver


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: complete ``future`` unless its awaiter was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
