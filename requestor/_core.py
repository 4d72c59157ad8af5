"""What ``Requestor`` and ``AsyncRequestor`` share: one send path.

A ``RequestorCore`` holds the settings, the call table (``ReplyHandler``) and the I/O side
(``RequestorIO`` and its Link). Both faces prepare a call the same way (``prepare``), send it the
same way (``send``: registered before it is published, reported to the observers once, queued
for the I/O thread), and differ only in how their caller waits for the outcome: a blocking
``call()`` on a ``CallWaiter``, ``call_async`` on a Future, an ``AsyncRequestor`` call on its
event loop. An ``AsyncRequestor`` on the native path opens the core with ``open_hosted``: the
Link then lives on the caller's event loop, with no I/O thread (``common/_link.py``, hosted).
Internal to the requestor package.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from reqrep.common import callheaders, plain, serialization, topology, tracecontext
from reqrep.common._link import ACCEPTS_WORK, Link, State
from reqrep.common._transport import Loop, Transport, pika_transport
from reqrep.common.config import Settings, check_seconds
from reqrep.common.errors import (
    BrokerUnreachable,
    CallTimeout,
    ClosedError,
    ConfigError,
    MessageTooLarge,
)
from reqrep.common.observe import CallInfo, Probe
from reqrep.requestor._calls import Call, Deliver, ReplyHandler, ReplyStats, timeout_error
from reqrep.requestor._io import RequestorIO
from reqrep.requestor.broadcast import BroadcastResult, Gather

__all__ = ["RequestorCore", "retries_for"]

_MAX_SHORTSTR = 255  # AMQP short strings (routing key, type) hold at most 255 bytes
_names = itertools.count(1)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class RequestorCore:
    """Settings, the call table, the connection, and the send path of one requestor.

    Threads: every method may be called from any thread. ``open`` blocks while it connects.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None,
        *,
        service: str | None,
        timeout: float | None,
        settings: Settings | None,
        trusted_repliers: Collection[str] | None,
        wait_for_workers: bool | None,
        transport: Transport | None,
        fail_fast: bool | None = None,
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(
            url=url, timeout=timeout, wait_for_workers=wait_for_workers, fail_fast=fail_fast
        )
        self.service = service
        self._trusted = None if trusted_repliers is None else frozenset(trusted_repliers)
        self._transport = transport
        self.probe = Probe("requestor")  # reports to the observers installed by now
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._io: RequestorIO | None = None
        self.name = f"reqrep-requestor-{os.getpid()}-{next(_names)}"
        self.replies = ReplyHandler(
            max_pending=self.settings.max_pending, on_discard=self.probe.reply_discarded
        )

    def describe(self, kind: str) -> str:
        return (
            f"<{kind} {self._state.value} url={self.settings.redacted_url!r} "
            f"service={self.service!r}>"
        )

    # -- the connection -----------------------------------------------------------------------

    @property
    def reply_queue(self) -> str:
        return self._io.reply_queue if self._io is not None else ""

    @property
    def reconnects(self) -> int:
        return self._io.link.reconnects if self._io is not None else 0

    @property
    def address(self) -> str:
        return self._io.link.address if self._io is not None else ""

    @property
    def blocked(self) -> str | None:
        io = self._io
        return io.link.blocked if io is not None else None

    @property
    def connected(self) -> bool:
        """Whether calls go out now: open, and neither reconnecting nor blocked by the broker."""
        io = self._io
        return io is not None and io.link.state is State.OPEN and io.link.blocked is None

    def _new_io(self) -> RequestorIO:
        return RequestorIO(
            self.settings,
            self.replies,
            name=self.name,
            transport=self._transport if self._transport is not None else pika_transport(),
            trusted_repliers=self._trusted,
            probe=self.probe,
        )

    def open(self) -> None:
        with self._lock:
            if self._state is _State.CLOSED:
                raise ClosedError("requestor is closed")
            if self._io is not None:
                return
            io = self._new_io()
            io.link.start()
            self._io = io
            self._state = _State.OPEN

    def open_hosted(self, loop: Loop, done: Callable[[BaseException | None], None]) -> None:
        """Start connecting on ``loop``, the caller's event loop (an ``AsyncioLoop``), with no
        I/O thread: returns at once, and ``done`` gets None once open, or the error. Loop
        thread. A failed attempt leaves the core as it was: the next one starts afresh."""
        with self._lock:
            if self._state is _State.CLOSED:
                raise ClosedError("requestor is closed")
            if self._io is not None:
                done(None)
                return
            io = self._new_io()

        def settled() -> None:  # on the loop
            link = io.link
            error: BaseException | None = None
            if link.state in ACCEPTS_WORK:
                with self._lock:
                    if self._state is _State.CLOSED:
                        error = ClosedError("requestor was closed while it connected")
                    else:
                        self._io = io
                        self._state = _State.OPEN
            else:
                error = link.error or BrokerUnreachable(f"{link.name}: connection failed")
            if error is not None:
                link.stop()
            done(error)

        io.link.start_hosted(loop, settled)

    def close(self, timeout: float = 10.0) -> Link | None:
        """Close the connection and fail every pending call with ClosedError. Returns the Link
        that was closed, if any: a hosted Link is only told to close (``Link.when_ended``)."""
        with self._lock:
            io, self._io = self._io, None
            self._state = _State.CLOSED
        if io is not None:
            io.link.stop(timeout)
        self.replies.fail_all(ClosedError("requestor was closed while the call was pending"))
        return io.link if io is not None else None

    # -- calls --------------------------------------------------------------------------------

    def prepare(
        self,
        method: str,
        payload: Any,
        *,
        service: str | None,
        timeout: float | None,
        retries: int,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None = None,
        fail_fast: bool | None = None,
    ) -> Call:
        """Check a call's arguments and encode its request (touches no connection).

        A call made without a timeout while a handler serves a call with a deadline ends by
        that deadline too (``tracecontext.remaining``): its caller waits no longer; past it,
        CallTimeout at once. ``headers`` are the caller's own (``common/callheaders.py``).

        Raises ConfigError, SerializationError, MessageTooLarge or CallTimeout.
        """
        service = _check_name("service", service or self.service)
        method = _check_name("method", method)
        body = serialization.dumps(payload)
        queue = self.settings.request_queue(service)
        call = self._call(service, method, queue, body, timeout, retries, idempotency_key, headers)
        call.fail_fast = self.settings.fail_fast if fail_fast is None else fail_fast
        return call

    def prepare_plain(
        self,
        queue: str,
        body: Any,
        *,
        content_type: str | None,
        timeout: float | None,
        retries: int,
        idempotency_key: str | None,
        fail_fast: bool | None = None,
    ) -> Call:
        """``prepare`` for a plain call (``common/plain.py``): ``body`` (bytes as they are,
        text as UTF-8, any other value as JSON) to ``queue``, named verbatim."""
        queue = topology.check_name("queue", queue)
        data, default_type = plain.encode_result(body)
        call = self._call(queue, "", queue, data, timeout, retries, idempotency_key)
        call.plain = True
        call.content_type = content_type if content_type is not None else default_type
        call.fail_fast = self.settings.fail_fast if fail_fast is None else fail_fast
        return call

    def _call(  # noqa: PLR0917 - the parts of every call, in one place
        self,
        service: str,
        method: str,
        queue: str,
        body: bytes,
        timeout: float | None,
        retries: int,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> Call:
        settings = self.settings
        seconds = settings.timeout if timeout is None else timeout
        if timeout is None and (left := tracecontext.remaining()) is not None:
            if left <= 0:
                raise CallTimeout(
                    f"{service}.{method}: not sent, the call being served is past its deadline"
                )
            seconds = min(seconds, left)
        check_seconds("timeout", seconds)
        own = callheaders.check(headers)
        if len(body) > settings.max_message_bytes:
            raise MessageTooLarge(
                f"request of {len(body)} bytes exceeds max_message_bytes="
                f"{settings.max_message_bytes}"
            )
        if idempotency_key is not None:
            _check_name("idempotency_key", idempotency_key)
        correlation_id = os.urandom(16).hex()
        return Call(
            correlation_id=correlation_id,
            service=service,
            method=method,
            queue=queue,
            message_id=idempotency_key or correlation_id,
            body=body,
            deadline=time.monotonic() + seconds,
            deadline_ms=int((time.time() + seconds) * 1000),
            timeout=seconds,
            retries=retries,
            # W3C trace context: this call continues the trace being served here, if any (a
            # tracer, if enabled, puts its own span's context instead).
            headers=tracecontext.outgoing(),
            app_headers={callheaders.HEADERS_HEADER: own} if own else {},
        )

    def broadcast(
        self,
        method: str,
        payload: Any,
        *,
        service: str | Sequence[str] | None,
        timeout: float | None,
        min_replies: int | None,
    ) -> Future[BroadcastResult]:
        """Start a broadcast (``requestor/broadcast.py``); its future ends by ``timeout``.
        Raises ConfigError, SerializationError, MessageTooLarge, ClosedError, or
        BrokerUnreachable while no connection is up (a broadcast is not held)."""
        named = service if service is not None else self.service
        services = [named] if isinstance(named, str) or named is None else list(named)
        services = [_check_name("service", s) for s in services]
        if not services:
            raise ConfigError("broadcast to no service: name at least one")
        method = _check_name("method", method)
        seconds = self.settings.timeout if timeout is None else timeout
        check_seconds("timeout", seconds)
        if min_replies is not None and (
            isinstance(min_replies, bool) or not isinstance(min_replies, int) or min_replies < 1
        ):
            raise ConfigError(f"min_replies must be a whole number >= 1, got {min_replies!r}")
        body = serialization.dumps(payload)
        if len(body) > self.settings.max_message_bytes:
            raise MessageTooLarge(
                f"broadcast of {len(body)} bytes exceeds max_message_bytes="
                f"{self.settings.max_message_bytes}"
            )
        io = self._live_io()
        if not io.link.up:
            raise io.unreachable("the broadcast")
        gather = Gather(
            io.link,
            self.settings,
            services,
            method,
            body,
            timeout=seconds,
            min_replies=min_replies,
        )
        io.link.submit(gather.start)
        return gather.future

    def send(self, call: Call, deliver: Deliver) -> None:
        """Register ``call`` with ``deliver`` as where its outcome goes, then queue it for the
        I/O thread. Raises TooManyPending, ClosedError, or BrokerUnreachable for a fail-fast
        call while no connection is up (then nothing was sent)."""
        io = self._live_io()
        if call.fail_fast and not io.link.up:
            raise io.unreachable()
        if self.probe.active:
            info = CallInfo(
                call.service, call.method, call.queue, call.correlation_id, call.message_id
            )
            finish = self.probe.call_started(info, call.headers)
            if finish is not None:
                deliver = _reporting(deliver, finish)
        call.deliver = deliver
        self.replies.expect(call)
        try:
            io.publish(call)
        except BaseException as exc:
            self.replies.forget(call.correlation_id, exc)
            raise

    def forget(self, correlation_id: str, error: BaseException | None) -> None:
        """The caller stopped waiting: a later reply is late."""
        self.replies.forget(correlation_id, error)

    def cancel(self, call: Call, error: BaseException) -> None:
        """The caller cancelled ``call``: forget it now, and tell its workers (a worker that
        holds it stops it; see worker/cancel.py). Any thread; never blocks."""
        self.replies.forget(call.correlation_id, error)
        io = self._io
        if io is not None:
            with contextlib.suppress(ClosedError):  # closing: the call goes with the connection
                io.cancel(call)

    def timed_out(self, call: Call) -> CallTimeout:
        """The error of a call whose caller's timeout passed: why it never went out, if it did
        not (the connection was down, the broker blocked us), else no reply in time."""
        io = self._io
        why = io.why_unsent(call) if io is not None else None
        return CallTimeout(why) if why else timeout_error(call.what, call.timeout)

    def stats(self) -> ReplyStats:
        return self.replies.stats()

    def _live_io(self) -> RequestorIO:
        if self._io is None and self._state is _State.NEW:
            self.open()  # first use opens, so that a bare Requestor(...).call() works
        io = self._io
        if io is None:
            raise ClosedError("requestor is closed")
        return io


def _reporting(deliver: Deliver, finish: Callable[[BaseException | None], None]) -> Deliver:
    """``deliver``, telling the observers how the call ended first."""

    def report_then_deliver(result: Any, error: BaseException | None) -> None:
        finish(error)
        deliver(result, error)

    return report_then_deliver


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
