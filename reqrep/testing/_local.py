"""LocalRequestor: call a Service's handlers in this process, with no broker.

A call takes the path it takes through a broker, minus the broker: the requestor's checks and
JSON encoding (``prepare_call``), the worker's admission rules (deadline, content, size, method),
its reply cache for idempotency keys, its way of running a handler (``execute`` on a thread,
``execute_async`` on an event loop thread, ``concurrency`` of each), the reply's JSON envelope
and size check, and the requestor's decoding of it into a result or a typed error. Timeouts end
calls as they would: CallTimeout at the deadline, and the handler goes on (an async one is
cancelled just after the deadline).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import threading
import time
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from reqrep.common import envelope
from reqrep.common.config import Settings
from reqrep.common.errors import ClosedError, MessageTooLarge, NoSuchService
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.requestor._io import OutgoingRequest
from reqrep.requestor.client import _Call, prepare_call, retries_for
from reqrep.requestor.reply_handler import ReplyStats, timeout_error
from reqrep.worker import admission
from reqrep.worker.aio import HandlerLoop
from reqrep.worker.consumer import Job
from reqrep.worker.dedupe import ReplyCache
from reqrep.worker.execute import execute, execute_async, handler_ran
from reqrep.worker.service import Service

__all__ = ["LocalAsyncRequestor", "LocalRequestor"]


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class LocalRequestor:
    """The ``Requestor`` call API (``call``, ``call_async``) and an ``async`` one (``acall``),
    served in this process by ``service``'s handlers.

    ``settings`` (default: ``Settings.from_env()``) supply the timeout and ``max_message_bytes``;
    nothing connects anywhere. Handlers run as on a worker: plain ones on ``concurrency``
    threads, ``async def`` ones on one event loop thread of this object's, not the caller's.

    Threads: every method may be called from any thread (``acall`` on any event loop); the
    handlers' outcomes are collected on the event loop thread this object owns.
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
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.service = service
        self._settings = base.replace(timeout=timeout)
        self._concurrency = concurrency
        self._cache = ReplyCache(  # loop thread only
            dedupe_entries, dedupe_ttl, max_bytes=self._settings.dedupe_bytes
        )
        self._running: dict[tuple[str, str, str], asyncio.Future[bytes]] = {}  # (loop thread)
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._loop = HandlerLoop(concurrency, name=f"reqrep-local-{service.name}")
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future[Any]] = {}
        self._finished: set[str] = set()  # forgotten or timed out: a later outcome is late
        self._resolved = 0
        self._late = 0

    def __repr__(self) -> str:
        return f"<LocalRequestor {self._state.value} service={self.service.name!r}>"

    @property
    def settings(self) -> Settings:
        return self._settings

    def open(self) -> LocalRequestor:
        """Start the handler threads (the first call does it too)."""
        with self._lock:
            if self._state is _State.CLOSED:
                raise ClosedError("requestor is closed")
            if self._state is _State.NEW:
                self._pool = ThreadPoolExecutor(
                    self._concurrency, thread_name_prefix="reqrep-local-handler"
                )
                self._loop.start()
                self._state = _State.OPEN
        return self

    def close(self) -> None:
        """Pending calls fail with ClosedError; running handlers are left to finish."""
        with self._lock:
            was, self._state = self._state, _State.CLOSED
            pending, self._pending = self._pending, {}
        for future in pending.values():
            _complete(future, error=ClosedError("requestor was closed while the call was pending"))
        if was is _State.OPEN:
            self._loop.stop()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

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
        with self._lock:
            return ReplyStats(len(self._pending), self._resolved, self._late, 0)

    def call(self, method: str, payload: Any = None, **options: Any) -> Any:
        """Like ``Requestor.call``: the result, or the call's typed error."""
        future, call = self._start(method, payload, **options)
        try:
            return future.result(call.timeout)
        except FutureTimeout:
            self._forget(call.correlation_id)
            raise timeout_error(call.what, call.timeout) from None

    def call_async(self, method: str, payload: Any = None, **options: Any) -> Future[Any]:
        """Like ``Requestor.call_async``: a future that ends by the call's timeout."""
        return self._start(method, payload, **options)[0]

    async def acall(self, method: str, payload: Any = None, **options: Any) -> Any:
        """Like ``AsyncRequestor.call``; cancelling the awaiting task forgets the call."""
        future, call = self._start(method, payload, **options)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._forget(call.correlation_id)
            raise

    def _start(
        self,
        method: str,
        payload: Any,
        *,
        service: str | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Future[Any], _Call]:
        call, request = prepare_call(
            self._settings,
            method,
            payload,
            service=service or self.service.name,
            timeout=timeout,
            retries=retries_for(idempotent, retries),
            idempotency_key=idempotency_key,
        )
        if self._state is _State.NEW:
            self.open()
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._state is not _State.OPEN:
                raise ClosedError("requestor is closed")
            self._pending[call.correlation_id] = future
        try:
            self._loop.loop.call_soon_threadsafe(self._begin, call, request)
        except RuntimeError:  # closed by another thread just now
            self._forget(call.correlation_id)
            raise ClosedError("requestor is closed") from None
        return future, call

    def _forget(self, correlation_id: str) -> None:
        with self._lock:
            if self._pending.pop(correlation_id, None) is not None:
                self._finished.add(correlation_id)

    def _finish(
        self, correlation_id: str, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        with self._lock:
            future = self._pending.pop(correlation_id, None)
            if future is None:
                self._late += correlation_id in self._finished
                self._finished.discard(correlation_id)
                return
            if error is None:
                self._resolved += 1
        _complete(future, result=result, error=error)

    # -- the loop thread --------------------------------------------------------------------------

    def _begin(self, call: _Call, request: OutgoingRequest) -> None:
        loop = asyncio.get_running_loop()
        cid = call.correlation_id
        timer = loop.call_later(call.timeout, self._expire, call)
        task = loop.create_task(self._serve(request))
        task.add_done_callback(functools.partial(self._served, cid, timer))

    def _expire(self, call: _Call) -> None:
        with self._lock:
            if call.correlation_id in self._pending:
                self._finished.add(call.correlation_id)
        self._finish(call.correlation_id, error=timeout_error(call.what, call.timeout))

    def _served(
        self, cid: str, timer: asyncio.TimerHandle, task: asyncio.Task[bytes | None]
    ) -> None:
        if task.cancelled():
            return  # closing: close() failed the call already
        error = task.exception()
        if error is not None:
            self._finish(cid, error=error)
            return
        body = task.result()
        if body is None:
            return  # not run and not answered (its deadline passed): the call times out
        timer.cancel()
        if len(body) > self._settings.max_message_bytes:
            self._finish(
                cid,
                error=MessageTooLarge(
                    f"reply of {len(body)} bytes exceeds max_message_bytes="
                    f"{self._settings.max_message_bytes}"
                ),
            )
            return
        try:
            self._finish(cid, result=envelope.decode_reply(body))
        except Exception as exc:  # noqa: BLE001 - RemoteError and friends are the outcome
            self._finish(cid, error=exc)

    async def _serve(self, request: OutgoingRequest) -> bytes | None:
        """What a worker does with the request, up to its reply body (None: no reply)."""
        if request.service != self.service.name:
            raise NoSuchService(request.service)
        delivery = admission.Delivery(
            method=request.method,
            correlation_id=request.correlation_id,
            reply_to="local",
            content_type=CONTENT_TYPE,
            message_id=request.message_id,
            headers={admission.DEADLINE_HEADER: request.deadline_ms},
            redelivered=False,
            size=len(request.body),
        )
        verdict = admission.screen(delivery, self._settings, time.time() * 1000)
        if not isinstance(verdict, admission.Passed):
            return None
        key = (self.service.name, request.method, request.message_id)  # as a worker scopes it
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if key in self._running:  # a twin is running: its reply is ours
            return await asyncio.shield(self._running[key])
        found = admission.classify(delivery, self.service, self._settings)
        if isinstance(found, envelope.ErrorInfo):
            return envelope.error_body(found)
        job = Job(
            tag=0,
            generation=0,
            method=request.method,
            correlation_id=request.correlation_id,
            reply_to="local",
            message_id=request.message_id,
            body=request.body,
            handler=found,
            deadline_ms=verdict.deadline_ms,
        )
        running = self._running[key] = asyncio.get_running_loop().create_future()
        try:
            body = await self._run(job)
        finally:
            del self._running[key]
        if handler_ran(body):
            self._cache.put(key, body)
        running.set_result(body)
        return body

    async def _run(self, job: Job) -> bytes:
        name, limit = self.service.name, self._settings.max_message_bytes
        if self.service.is_async(job.method):
            return await self._loop.run_bounded(
                lambda: execute_async(job, service=name, max_bytes=limit)
            )
        run = functools.partial(execute, job, service=name, max_bytes=limit)
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)


def _complete(
    future: Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # completed by a racing path (timeout, close); first one wins
        pass


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
        self.local.open()
        return self

    async def close(self) -> None:
        self.local.close()

    async def __aenter__(self) -> LocalAsyncRequestor:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(self, method: str, payload: Any = None, **options: Any) -> Any:
        """Like ``AsyncRequestor.call``."""
        return await self.local.acall(method, payload, **options)
