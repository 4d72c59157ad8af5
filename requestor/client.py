"""Requestor: the blocking, thread-safe RPC client."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from reqrep.common import serialization, tracecontext
from reqrep.common.config import Settings, check_seconds
from reqrep.common.errors import ClosedError, ConfigError, MessageTooLarge
from reqrep.common.observe import CallInfo, Probe
from reqrep.requestor._io import OutgoingRequest, RequestorIO
from reqrep.requestor._waiter import CallWaiter
from reqrep.requestor.reply_handler import Deliver, ReplyHandler, ReplyStats, timeout_error

__all__ = ["Requestor"]

_MAX_SHORTSTR = 255  # AMQP short strings (routing key, type) hold at most 255 bytes
_names = itertools.count(1)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Requestor:
    """Blocking RPC client, safe to share between threads.

    ``url`` is one AMQP URL or several (a cluster's nodes: a sequence, or full URLs separated by
    commas); the connection starts on a random one and moves to the next on every reconnection.

    Many calls can be in flight at once over one connection: each caller thread blocks only on
    its own call. Every call has a finite timeout (``timeout`` here, or per call).

    Any connection in the vhost can publish into the callback queue. With ``trusted_repliers``
    (broker user names; workers run with ``sign_replies``), only replies whose broker-verified
    ``user_id`` is one of them are accepted; others are discarded and counted.

    Threads: ``call``, ``call_async``, ``open``, ``close`` and ``stats`` may be called from any
    thread. Callers only register their call and queue a publish; every pika object lives on the
    one I/O thread this Requestor owns.

    A call to a service whose queue exists but has no consumer fails at once with NoWorkers
    (the request is not sent); with ``wait_for_workers=True`` (or ``REQREP_WAIT_FOR_WORKERS``)
    it waits in the queue for a worker instead, within its timeout.

    If the connection drops, calls whose requests were sent fail at once with ConnectionLost
    (unless marked retryable), and the requestor reconnects by itself; calls made meanwhile are
    sent once it is back, within their own deadline. After ``close()`` every call raises
    ClosedError.
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
        base = settings if settings is not None else Settings.from_env()
        self._settings = base.replace(url=url, timeout=timeout, wait_for_workers=wait_for_workers)
        self._service = service
        self._trusted = None if trusted_repliers is None else frozenset(trusted_repliers)
        self._probe = Probe("requestor")  # reports to the observers installed by now
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._io: RequestorIO | None = None
        self._name = f"reqrep-requestor-{os.getpid()}-{next(_names)}"
        self._replies = ReplyHandler(
            max_pending=self._settings.max_pending,
            name=self._name.removeprefix("reqrep-"),
            on_discard=self._probe.reply_discarded,
        )

    def __repr__(self) -> str:
        return (
            f"<Requestor {self._state.value} url={self._settings.redacted_url!r} "
            f"service={self._service!r}>"
        )

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def reply_queue(self) -> str:
        """The current callback queue (it changes when the connection is re-established)."""
        return self._io.reply_queue if self._io is not None else ""

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established."""
        return self._io.reconnects if self._io is not None else 0

    @property
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return self._io.address if self._io is not None else ""

    @property
    def name(self) -> str:
        """The connection name the broker shows for this requestor (``connection_name``)."""
        return self._name

    def open(self) -> Requestor:
        """Connect, retrying for up to ``connect_timeout``; BrokerUnreachable if it cannot.

        Once open, a dropped connection is re-established automatically.
        """
        with self._lock:
            if self._state is _State.CLOSED:
                raise ClosedError("requestor is closed")
            if self._io is not None:
                return self
            io = RequestorIO(
                self._settings,
                self._replies,
                name=self._name,
                trusted_repliers=self._trusted,
                probe=self._probe,
            )
            io.start()
            self._io = io
            self._state = _State.OPEN
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection; pending calls fail with ClosedError. Idempotent."""
        with self._lock:
            io, self._io = self._io, None
            self._state = _State.CLOSED
        if io is not None:
            io.stop(timeout)
        self._replies.fail_all(ClosedError("requestor was closed while the call was pending"))

    def __enter__(self) -> Requestor:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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
    ) -> Any:
        """Call ``method`` of ``service`` and wait for its result.

        A call whose request was sent when the connection dropped fails at once with
        ConnectionLost, unless it is safe to send again: ``idempotent=True`` (resend as often as
        the deadline allows) or ``retries=N`` (at most N resends). A resent request keeps its
        idempotency key (``idempotency_key``, by default a fresh random id per call), so a worker
        that already ran it answers from its cache instead of running it twice.

        Raises CallTimeout, RemoteError (MethodNotFound, BadRequest, PoisonRequest),
        NoSuchService, NoWorkers, ConnectionLost, BrokerUnreachable, ClosedError, MessageTooLarge,
        SerializationError or ConfigError.
        """
        call, request = prepare_call(
            self._settings,
            method,
            payload,
            service=service or self._service,
            timeout=timeout,
            retries=retries_for(idempotent, retries),
            idempotency_key=idempotency_key,
        )
        # No Future: the caller waits on a plain lock that the completing thread lets go.
        waiter = CallWaiter()
        self._send_deliver(waiter.deliver, call, request)
        if not waiter.wait(min(call.timeout, threading.TIMEOUT_MAX)):
            error = timeout_error(call.what, call.timeout)
            # An outcome that came in the meantime is dropped: the caller gave up at its
            # timeout, as with a Future's result().
            self._replies.forget(call.correlation_id, error)
            raise error
        return waiter.outcome()

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
    ) -> Future[Any]:
        """Start a call; the future completes with its result or a typed error, by its timeout.

        The options are those of ``call``. The future cannot be cancelled.
        """
        future, _call = self._send(
            method,
            payload=payload,
            service=service,
            timeout=timeout,
            retries=retries_for(idempotent, retries),
            idempotency_key=idempotency_key,
        )
        return future

    def stats(self) -> ReplyStats:
        """Counters: pending calls, replies resolved, late and unknown replies discarded."""
        return self._replies.stats()

    def _send(
        self,
        method: str,
        *,
        payload: Any,
        service: str | None,
        timeout: float | None,
        retries: int,
        idempotency_key: str | None,
    ) -> tuple[Future[Any], _Call]:
        call, request = prepare_call(
            self._settings,
            method,
            payload,
            service=service or self._service,
            timeout=timeout,
            retries=retries,
            idempotency_key=idempotency_key,
        )
        io = self._live_io()
        future = self._replies.expect(
            call.correlation_id, deadline=request.deadline, timeout=call.timeout, what=call.what
        )
        if self._probe.active:
            self._probe.watch(_info(request), request.headers, future)
        self._publish(io, request)
        return future, call

    def _send_deliver(self, deliver: Deliver, call: _Call, request: OutgoingRequest) -> None:
        """Send a prepared call whose outcome goes to ``deliver`` (AsyncRequestor's path)."""
        io = self._live_io()
        if self._probe.active:
            finish = self._probe.call_started(_info(request), request.headers)
            if finish is not None:
                deliver = _reporting(deliver, finish)
        self._replies.expect_deliver(
            call.correlation_id,
            deliver,
            deadline=request.deadline,
            timeout=call.timeout,
            what=call.what,
        )
        self._publish(io, request)

    def _publish(self, io: RequestorIO, request: OutgoingRequest) -> None:
        try:
            io.publish(request)
        except BaseException as exc:
            self._replies.forget(request.correlation_id, exc)
            raise

    def _live_io(self) -> RequestorIO:
        if self._io is None and self._state is _State.NEW:
            self.open()  # first use opens, so that a bare Requestor(...).call() works
        io = self._io
        if io is None:
            raise ClosedError("requestor is closed")
        return io


def prepare_call(
    settings: Settings,
    method: str,
    payload: Any,
    *,
    service: str | None,
    timeout: float | None,
    retries: int,
    idempotency_key: str | None,
) -> tuple[_Call, OutgoingRequest]:
    """Check a call's arguments and encode its request (any thread; touches no connection).

    Raises ConfigError, SerializationError or MessageTooLarge.
    """
    service = _check_name("service", service)
    method = _check_name("method", method)
    seconds = settings.timeout if timeout is None else timeout
    check_seconds("timeout", seconds)
    body = serialization.dumps(payload)
    if len(body) > settings.max_message_bytes:
        raise MessageTooLarge(
            f"request of {len(body)} bytes exceeds max_message_bytes={settings.max_message_bytes}"
        )
    if idempotency_key is not None:
        _check_name("idempotency_key", idempotency_key)
    correlation_id = os.urandom(16).hex()
    call = _Call(correlation_id, f"{service}.{method}", seconds)
    request = OutgoingRequest(
        service=service,
        queue=settings.request_queue(service),
        method=method,
        correlation_id=correlation_id,
        message_id=idempotency_key or correlation_id,
        body=body,
        deadline=time.monotonic() + seconds,
        deadline_ms=int((time.time() + seconds) * 1000),
        retries=retries,
        # W3C trace context: this call continues the trace being served here, if any (a tracer,
        # if enabled, puts its own span's context instead).
        headers=tracecontext.outgoing(),
    )
    return call, request


def _info(request: OutgoingRequest) -> CallInfo:
    return CallInfo(
        request.service, request.method, request.queue, request.correlation_id, request.message_id
    )


def _reporting(deliver: Deliver, finish: Callable[[BaseException | None], None]) -> Deliver:
    """``deliver``, telling ``finish`` how the call ended first."""

    def report_then_deliver(result: Any, error: BaseException | None) -> None:
        finish(error)
        deliver(result, error)

    return report_then_deliver


@dataclasses.dataclass(frozen=True)
class _Call:
    correlation_id: str
    what: str  # "service.method"
    timeout: float


# "As often as the deadline allows": each resend needs a reconnection, so this is never reached.
_UNBOUNDED_RETRIES = 1_000_000


def retries_for(idempotent: bool, retries: int | None) -> int:
    if retries is None:
        return _UNBOUNDED_RETRIES if idempotent else 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")
    return retries


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        hint = " (pass service=... to Requestor() or to the call)" if kind == "service" else ""
        raise ConfigError(f"{kind} must be a non-empty string, got {value!r}{hint}")
    if len(value.encode("utf-8")) > _MAX_SHORTSTR - len("reqrep."):
        raise ConfigError(f"{kind} name is too long ({len(value)} chars)")
    return value
