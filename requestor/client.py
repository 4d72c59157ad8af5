"""Requestor: the blocking, thread-safe RPC client."""

from __future__ import annotations

import enum
import itertools
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from common import serialization
from common.config import Settings, check_seconds
from common.errors import ClosedError, ConfigError
from requestor._io import RequestorIO
from requestor.reply_handler import ReplyHandler, ReplyStats, timeout_error

__all__ = ["Requestor"]

_MAX_SHORTSTR = 255  # AMQP short strings (routing key, type) hold at most 255 bytes
_names = itertools.count(1)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Requestor:
    """Blocking RPC client, safe to share between threads.

    Many calls can be in flight at once over one connection: each caller thread blocks only on
    its own future. Every call has a finite timeout (``timeout`` here, or per call).

    Threads: ``call``, ``call_async``, ``open``, ``close`` and ``stats`` may be called from any
    thread. Callers only register a future and queue a publish; every pika object lives on the
    one I/O thread this Requestor owns.

    If the connection is lost, pending calls fail at once with ConnectionLost and later calls
    raise it too, until ``open()`` connects again. After ``close()`` every call raises ClosedError.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        service: str | None = None,
        timeout: float | None = None,
        settings: Settings | None = None,
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self._settings = base.replace(url=url, timeout=timeout)
        self._service = service
        self._replies = ReplyHandler()
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._io: RequestorIO | None = None
        self._name = f"reqrep-requestor-{os.getpid()}-{next(_names)}"

    def __repr__(self) -> str:
        return (
            f"<Requestor {self._state.value} url={self._settings.redacted_url!r} "
            f"service={self._service!r}>"
        )

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def name(self) -> str:
        """The connection name the broker shows for this requestor (``connection_name``)."""
        return self._name

    def open(self) -> Requestor:
        """Connect (or reconnect after a lost connection); BrokerUnreachable if it cannot."""
        with self._lock:
            if self._state is _State.CLOSED:
                raise ClosedError("requestor is closed")
            if self._io is not None and self._io.error is None:
                return self
            io = RequestorIO(self._settings, self._replies, name=self._name)
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
    ) -> Any:
        """Call ``method`` of ``service`` and wait for its result.

        Raises CallTimeout, RemoteError (MethodNotFound, BadRequest), NoSuchService,
        ConnectionLost, BrokerUnreachable, ClosedError, SerializationError or ConfigError.
        """
        future, seconds, what, correlation_id = self._send(method, payload, service, timeout)
        try:
            return future.result(seconds)
        except FutureTimeout:
            self._replies.forget(correlation_id)
            raise timeout_error(what, seconds) from None

    def call_async(
        self,
        method: str,
        payload: Any = None,
        *,
        service: str | None = None,
        timeout: float | None = None,
    ) -> Future[Any]:
        """Start a call; the future completes with its result or a typed error, by its timeout.

        The future cannot be cancelled; wait with ``future.result()``.
        """
        return self._send(method, payload, service, timeout)[0]

    def stats(self) -> ReplyStats:
        """Counters: pending calls, replies resolved, late and unknown replies discarded."""
        return self._replies.stats()

    def _send(
        self, method: str, payload: Any, service: str | None, timeout: float | None
    ) -> tuple[Future[Any], float, str, str]:
        service = _check_name("service", service or self._service)
        method = _check_name("method", method)
        seconds = self._settings.timeout if timeout is None else timeout
        check_seconds("timeout", seconds)
        body = serialization.dumps(payload)
        io = self._live_io()
        correlation_id = os.urandom(16).hex()
        what = f"{service}.{method}"
        future = self._replies.expect(
            correlation_id, deadline=time.monotonic() + seconds, timeout=seconds, what=what
        )
        try:
            io.publish(service, self._settings.request_queue(service), method, correlation_id, body)
        except BaseException:
            self._replies.forget(correlation_id)
            raise
        return future, seconds, what, correlation_id

    def _live_io(self) -> RequestorIO:
        if self._io is None and self._state is _State.NEW:
            self.open()  # first use opens, so that a bare Requestor(...).call() works
        io = self._io
        if io is None:
            raise ClosedError("requestor is closed")
        if io.error is not None:
            raise type(io.error)(f"{io.error} [call open() to reconnect]")
        return io


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        hint = " (pass service=... to Requestor() or to the call)" if kind == "service" else ""
        raise ConfigError(f"{kind} must be a non-empty string, got {value!r}{hint}")
    if len(value.encode("utf-8")) > _MAX_SHORTSTR - len("reqrep."):
        raise ConfigError(f"{kind} name is too long ({len(value)} chars)")
    return value
