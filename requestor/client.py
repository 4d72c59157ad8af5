"""Requestor: the blocking, thread-safe RPC client."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, overload

from reqrep.common import middleware as chains
from reqrep.common._transport import Transport
from reqrep.common.config import Settings
from reqrep.common.errors import CallTimeout, ConfigError
from reqrep.requestor._callbacks import CallbackRunner, ReplyFuture
from reqrep.requestor._calls import Call, ReplyStats
from reqrep.requestor._core import RequestorCore, retries_for
from reqrep.requestor._typed import AsyncTypedHandler, P, Rep, Req, TypedHandler, prepare, resolve
from reqrep.requestor._waiter import CallWaiter
from reqrep.requestor.broadcast import BroadcastResult
from reqrep.requestor.middleware import OutgoingCall

__all__ = ["Requestor"]

_BROADCAST_GRACE = 5.0  # seconds past its timeout a broadcast may take to report


class Requestor:
    """Blocking RPC client, safe to share between threads.

    ``url`` is one AMQP URL or several (a cluster's nodes: a sequence, or full URLs separated by
    commas); the connection starts on a random one and moves to the next on every reconnection.

    Many calls can be in flight at once over one connection: each caller thread blocks only on
    its own call. Every call has a finite timeout (``timeout`` here, or per call).

    Any connection in the vhost can publish into the callback queue. With ``trusted_repliers``
    (broker user names; workers run with ``sign_replies``), only replies whose broker-verified
    ``user_id`` is one of them are accepted; others are discarded and counted.

    A call to a service whose queue exists but has no consumer fails at once with NoWorkers
    (the request is not sent); with ``wait_for_workers=True`` (or ``REQREP_WAIT_FOR_WORKERS``)
    it waits in the queue for a worker instead, within its timeout.

    If the connection drops, calls whose requests were sent fail at once with ConnectionLost
    (unless marked retryable), and the requestor reconnects by itself; calls made meanwhile are
    sent once it is back, within their own deadline, or, with ``fail_fast`` (here, per call, or
    ``REQREP_FAIL_FAST``), fail at once with BrokerUnreachable. After ``close()`` every call raises
    ClosedError. ``transport`` is for tests (``reqrep.testing.MemoryBroker``): by default the
    requestor talks to RabbitMQ through pika. ``middleware`` (plain functions) wrap each
    ``call`` (``requestor/middleware.py``).

    Threads: ``call``, ``call_async``, ``open``, ``close``, ``stats`` and the properties may be
    used from any thread. Callers only register their call and queue a publish; the connection
    lives on the one I/O thread this Requestor owns.
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
        middleware: Sequence[chains.Middleware] = (),
    ) -> None:
        self._middleware = [chains.check(mw, "Requestor") for mw in middleware]
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
        self._callbacks = CallbackRunner(self._core.name.removeprefix("reqrep-"))

    def __repr__(self) -> str:
        return self._core.describe("Requestor")

    @property
    def settings(self) -> Settings:
        return self._core.settings

    @property
    def reply_queue(self) -> str:
        """The current callback queue (it changes when the connection is re-established)."""
        return self._core.reply_queue

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established."""
        return self._core.reconnects

    @property
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return self._core.address

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
    def name(self) -> str:
        """The connection name the broker shows for this requestor (``connection_name``)."""
        return self._core.name

    def open(self) -> Requestor:
        """Connect, retrying for up to ``connect_timeout``; BrokerUnreachable if it cannot.

        Once open, a dropped connection is re-established automatically.
        """
        self._core.open()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection; pending calls fail with ClosedError. Idempotent."""
        self._core.close(timeout)

    def __enter__(self) -> Requestor:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @overload
    def call(
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
    def call(
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
    def call(
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

    def call(
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
        """Call ``method`` of ``service`` and wait for its result.

        ``method`` is a method's name, or the handler function a ``Service`` registered: then
        the call goes to that service's method, the payload is serialised through the
        handler's request type, its declared ``timeout`` and ``idempotent`` apply unless given
        here, and the result is the handler's reply type (a typed call:
        ``requestor/_typed.py``). ``headers`` reach the handler as ``current().headers``.

        A call whose request was sent when the connection dropped fails at once with
        ConnectionLost, unless it is safe to send again: ``idempotent=True`` (resend as often as
        the deadline allows) or ``retries=N`` (at most N resends). A resent request keeps its
        idempotency key (``idempotency_key``, by default a fresh random id per call), so a worker
        that already ran it answers from its cache instead of running it twice. While no
        connection is up, the call waits for one within its timeout, unless ``fail_fast``
        (default: the Requestor's): then it raises BrokerUnreachable at once.

        Raises CallTimeout, RemoteError (MethodNotFound, BadRequest, PoisonRequest, AppError),
        NoSuchService, NoWorkers, ConnectionLost, BrokerUnreachable, ClosedError, MessageTooLarge,
        SerializationError or ConfigError.
        """
        target = resolve(method, payload, service=service, timeout=timeout, idempotent=idempotent)
        outgoing = target.outgoing(headers)

        def send(call: OutgoingCall) -> Any:
            return self._wait(prepare(self._core, call, retries, idempotency_key, fail_fast))

        chain = chains.build(self._middleware, send) if self._middleware else send
        return target.result(chain(outgoing))

    def call_plain(
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
        """Call a plain AMQP RPC server (one that speaks no reqrep envelope, such as the
        RabbitMQ tutorial's): publish ``body`` to ``queue``, named verbatim, through the
        default exchange, and return the reply's body as it came.

        ``body``: bytes are sent as they are (with ``content_type`` if given), text as UTF-8
        (``text/plain; charset=utf-8``), any other value as JSON. The request carries
        ``reply_to``, ``correlation_id``, the deadline and the idempotency key as a call does;
        the options and errors are those of ``call``. A reply typed ``error`` (a reqrep
        PlainService whose handler raised) raises its RemoteError.
        """
        call = self._core.prepare_plain(
            queue,
            body,
            content_type=content_type,
            timeout=timeout,
            retries=retries_for(idempotent, retries),
            idempotency_key=idempotency_key,
            fail_fast=fail_fast,
        )
        result: bytes = self._wait(call)
        return result

    def broadcast(
        self,
        method: str,
        payload: Any = None,
        *,
        service: str | Sequence[str] | None = None,
        timeout: float | None = None,
        min_replies: int | None = None,
    ) -> BroadcastResult:
        """Call ``method`` on every live worker of ``service`` (or of several services) and
        gather their replies, each tagged by its worker.

        The live workers are those that answer a ping sent with it within a second (or the
        timeout, if shorter). It returns once each of them has replied, once ``min_replies``
        replies are in, or at ``timeout`` (default: the Requestor's), with ``.replies`` and
        ``.missing`` (the live workers that did not reply). A reply that is an error is one of
        the replies (``reply.error``), not raised. Raises ConfigError, SerializationError,
        NoSuchService (no worker of this prefix ever ran), AccessRefused, ClosedError, or
        BrokerUnreachable / ConnectionLost if there is no connection (it is not held).
        """
        future = self._core.broadcast(
            method, payload, service=service, timeout=timeout, min_replies=min_replies
        )
        seconds = self.settings.timeout if timeout is None else timeout
        try:
            return future.result(seconds + _BROADCAST_GRACE)
        except FutureTimeout:  # the I/O thread ends it by its timeout; it did not
            raise CallTimeout(f"the broadcast of {method!r} did not end in time") from None

    def _wait(self, call: Call) -> Any:
        """Send ``call`` and wait for its outcome (the caller's thread)."""
        # No Future: the caller waits on a plain lock that the completing thread lets go.
        waiter = CallWaiter()
        self._core.send(call, waiter.deliver)
        if not waiter.wait(min(call.timeout, threading.TIMEOUT_MAX)):
            error = self._core.timed_out(call)
            # An outcome that came in the meantime is dropped: the caller gave up at its
            # timeout, as with a Future's result().
            self._core.forget(call.correlation_id, error)
            raise error
        return waiter.outcome()

    @overload
    def call_async(
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
    ) -> Future[Rep]: ...
    @overload
    def call_async(
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
    ) -> Future[Rep]: ...
    @overload
    def call_async(
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
    ) -> Future[Any]: ...

    def call_async(
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
    ) -> Future[Any]:
        """Start a call; the future completes with its result or a typed error, by its timeout.

        The options are those of ``call`` (a typed call's future holds the reply type).
        ``future.cancel()`` cancels the call: it is forgotten at once and its worker is told,
        which stops it (a queued request is skipped, an async handler cancelled, a plain one
        sees ``current().cancelled()``). Done-callbacks run on the requestor's callback thread,
        never on its I/O thread: they may block or make calls. ConfigError on a Requestor with
        middleware (``requestor/middleware.py`` says why).
        """
        if self._middleware:
            raise ConfigError("call_async does not run middleware: use call() (on a thread)")
        target = resolve(method, payload, service=service, timeout=timeout, idempotent=idempotent)
        call = prepare(self._core, target.outgoing(headers), retries, idempotency_key, fail_fast)
        # Pending, not running: Future.cancel() works, and cancels the call (see ReplyFuture).
        future: Future[Any] = ReplyFuture(
            self._callbacks, on_cancel=lambda: self._core.cancel(call, CancelledError())
        )

        def settle(result: Any, error: BaseException | None) -> None:
            if error is None and target.contract is not None:
                try:
                    result = target.result(result)
                except Exception as exc:  # noqa: BLE001 - a reply that does not match: the error
                    error = exc
            try:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            except InvalidStateError:  # completed by a racing path; the first one wins
                pass

        def deliver(result: Any, error: BaseException | None) -> None:
            if error is None and target.contract is not None:
                # A model's validators are user code: never on the I/O thread.
                self._callbacks.run(lambda _future: settle(result, None), future)
            else:
                settle(result, error)

        self._core.send(call, deliver)
        return future

    def stats(self) -> ReplyStats:
        """Counters: pending calls, replies resolved, late and unknown replies discarded."""
        return self._core.stats()
