"""The instrumentation seam: what reqrep reports, and to whom.

The worker and the requestor call a ``Probe`` at a handful of points (a request received, a
reply sent, a call finished, a reconnection...). A Probe forwards each event to the
``Observer`` objects installed when its Worker or Requestor was made; with none installed, an
event costs a method call. Observers are what turn events into Prometheus metrics
(``reqrep.metrics.enable()``) or OpenTelemetry spans (``reqrep.tracing.enable()``); nothing
optional is imported until one of those is called.

An observer must be quick and thread-safe; an exception it raises is logged and swallowed, so
that a broken exporter never costs a call its reply.

Which thread calls what (see docs/architecture.md):
- requestor caller threads: ``call_started`` (and ``call_finished`` for a blocking call that
  timed out, or a call that could not be queued);
- the requestor's I/O thread: ``call_finished`` (a reply, an error, an expiry), ``reply_discarded``,
  ``reconnected``;
- the worker's I/O thread: ``request_received``, ``request_skipped``, ``request_answered``,
  ``request_dispatched``, ``dedupe_hit``, ``poisoned``, ``reply_returned``,
  ``consumer_restarted``, ``reconnected``;
- handler threads: ``handling`` (around the handler) and ``handler_done`` (the worker's I/O
  thread for inline handlers);
- the worker's inline watchdog thread: ``inline_overrun``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from reqrep.common import envelope, serialization, tracecontext
from reqrep.common.errors import RemoteError, SerializationError
from reqrep.common.plain import PlainReply

__all__ = [
    "CallInfo",
    "Observer",
    "Probe",
    "install",
    "installed",
    "outcome_of",
    "reply_code",
    "uninstall",
]

log = logging.getLogger("reqrep.observe")

UNKNOWN_METHOD = "_unknown"  # the label of methods a worker has no handler for


@dataclasses.dataclass(frozen=True)
class CallInfo:
    """One call, as the requestor sends it."""

    service: str
    method: str
    queue: str
    correlation_id: str
    message_id: str


class Observer:
    """Receives reqrep's events; every method here does nothing. Override what you need.

    ``side`` is ``"worker"`` or ``"requestor"``; ``method`` on the worker side is the request's
    method if the service has a handler for it, else ``"_unknown"`` (a label an attacker cannot
    multiply).
    """

    # -- requestor ----------------------------------------------------------------------------

    def call_started(self, call: CallInfo, headers: MutableMapping[str, str]) -> Any:
        """A call is about to be published (caller thread). ``headers`` go out with the
        request: a tracer may replace ``traceparent``. The value returned comes back to
        ``call_finished``."""
        return None

    def call_finished(self, call: CallInfo, token: Any, outcome: str, seconds: float) -> None:
        """The call ended: ``outcome`` is ``ok``, a remote error code (``handler_error``...) or
        a local error (``call_timeout``, ``no_such_service``, ``connection_lost``...).

        Called on the thread that ends the call, so it must not block: the requestor's I/O
        thread for a reply, return or sweep of a blocking ``call()`` or an ``AsyncRequestor``
        call; the requestor's callback thread for a ``call_async`` future; a caller's thread on
        its own timeout or ``close()``."""

    def reply_discarded(self, reason: str) -> None:
        """A reply nobody waits for was dropped: ``late``, ``unknown`` or ``untrusted``."""

    # -- both ---------------------------------------------------------------------------------

    def reconnected(self, side: str) -> None:
        """A lost connection was re-established."""

    # -- worker -------------------------------------------------------------------------------

    def request_received(self, service: str, method: str, redelivered: bool) -> None:
        """A request was delivered."""

    def request_skipped(self, service: str, method: str, reason: str) -> None:
        """Not run, no reply: ``expired`` (past its deadline), ``cancelled`` (by its caller),
        ``unanswerable`` (no reply_to or correlation_id), ``stale`` (finished after its channel
        was lost: redelivered)."""

    def request_dropped(self, service: str, method: str) -> None:
        """A dispatched request left the handlers without a reply (its caller had gone: past
        its deadline at pickup, or cancelled): no longer in flight. ``request_skipped`` says
        why."""

    def request_answered(self, service: str, method: str, code: str) -> None:
        """Answered without a handler: ``method_not_found``, ``bad_request``, ``poison_request``."""

    def request_dispatched(self, service: str, method: str) -> None:
        """Handed to the handler threads (now in flight)."""

    def handling(
        self,
        service: str,
        queue: str,
        method: str,
        correlation_id: str,
        headers: Mapping[str, str],
    ) -> AbstractContextManager[object] | None:
        """A context manager to run around the handler (handler thread), or None; ``headers``
        are the request's trace headers (``traceparent``, ``tracestate``)."""
        return None

    def handler_done(self, service: str, method: str, code: str, seconds: float) -> None:
        """A dispatched request has its reply: ``code`` is ``ok`` or the error code."""

    def dedupe_hit(self, service: str, method: str) -> None:
        """Answered from the reply cache, or by a running twin: not run again."""

    def poisoned(self, service: str, method: str) -> None:
        """Refused as poison (delivered too often) and dead-lettered."""

    def reply_returned(self, service: str) -> None:
        """A reply came back from the broker: the requestor's callback queue was gone."""

    def consumer_restarted(self, service: str) -> None:
        """The worker's watchdog found its consumer stalled and consumed again."""

    def inline_overrun(self, service: str, method: str, seconds: float) -> None:
        """An inline handler has held the worker's I/O thread longer than its budget
        (``seconds`` so far; it still runs). Called on the inline watchdog's thread."""


_installed: list[Observer] = []
_lock = threading.Lock()


def install(observer: Observer) -> Observer:
    """Report to ``observer`` from every Worker and Requestor made from now on."""
    with _lock:
        if observer not in _installed:
            _installed.append(observer)
    return observer


def uninstall(observer: Observer) -> None:
    """Stop reporting to ``observer`` from Workers and Requestors made from now on."""
    with _lock:
        if observer in _installed:
            _installed.remove(observer)


def installed() -> tuple[Observer, ...]:
    with _lock:
        return tuple(_installed)


class Probe:
    """What reqrep's code calls; forwards to the observers installed when it was made.

    ``known`` says whether a worker serves a method (others are reported as ``_unknown``).
    Threads: as the module docstring says; the probe itself holds no mutable state.
    """

    def __init__(
        self,
        side: str,
        service: str = "",
        *,
        queue: str = "",
        known: Callable[[str], bool] | None = None,
        observers: tuple[Observer, ...] | None = None,
    ) -> None:
        self.side = side
        self.service = service
        self.queue = queue
        self._known = known
        self._observers = installed() if observers is None else observers

    @property
    def active(self) -> bool:
        """Whether any observer listens (callers skip building event data otherwise)."""
        return bool(self._observers)

    def _emit(self, name: str, *args: Any) -> None:
        for observer in self._observers:
            try:
                getattr(observer, name)(*args)
            except Exception:
                log.exception("observer %r failed in %s", observer, name)

    def _label(self, method: object) -> str:
        if isinstance(method, str) and (self._known is None or self._known(method)):
            return method
        return UNKNOWN_METHOD

    # -- requestor ----------------------------------------------------------------------------

    def call_started(
        self, call: CallInfo, headers: MutableMapping[str, str]
    ) -> Callable[[BaseException | None], None] | None:
        """Report a call about to be published (caller thread). Returns the function to call
        once, with the call's error (None: it succeeded), when it ends; None if nobody
        observes."""
        if not self._observers:
            return None
        started = time.monotonic()
        tokens = []
        for observer in self._observers:
            try:
                tokens.append((observer, observer.call_started(call, headers)))
            except Exception:
                log.exception("observer %r failed in call_started", observer)

        def finish(error: BaseException | None) -> None:
            outcome = outcome_of(error)
            seconds = time.monotonic() - started
            for observer, token in tokens:
                try:
                    observer.call_finished(call, token, outcome, seconds)
                except Exception:
                    log.exception("observer %r failed in call_finished", observer)

        return finish

    def reply_discarded(self, reason: str) -> None:
        self._emit("reply_discarded", reason)

    def reconnected(self) -> None:
        self._emit("reconnected", self.side)

    # -- worker -------------------------------------------------------------------------------

    def received(self, method: object, redelivered: bool) -> None:
        if self._observers:
            self._emit("request_received", self.service, self._label(method), redelivered)

    def skipped(self, method: object, reason: str) -> None:
        if self._observers:
            self._emit("request_skipped", self.service, self._label(method), reason)

    def answered(self, method: object, code: str) -> None:
        if self._observers:
            self._emit("request_answered", self.service, self._label(method), code)

    def dispatched(self, method: str) -> None:
        if self._observers:
            self._emit("request_dispatched", self.service, method)

    def handler_done(self, method: str, body: bytes, seconds: float) -> None:
        if self._observers:
            self._emit("handler_done", self.service, method, reply_code(body), seconds)

    def dropped(self, method: str) -> None:
        if self._observers:
            self._emit("request_dropped", self.service, method)

    def dedupe_hit(self, method: object) -> None:
        if self._observers:
            self._emit("dedupe_hit", self.service, self._label(method))

    def poisoned(self, method: object) -> None:
        if self._observers:
            self._emit("poisoned", self.service, self._label(method))

    def reply_returned(self) -> None:
        self._emit("reply_returned", self.service)

    def consumer_restarted(self) -> None:
        self._emit("consumer_restarted", self.service)

    def inline_overrun(self, method: str, seconds: float) -> None:
        if self._observers:
            self._emit("inline_overrun", self.service, method, seconds)

    def handling(
        self,
        method: str,
        correlation_id: str,
        headers: Mapping[str, str],
        deadline: float | None = None,
    ) -> AbstractContextManager[None]:
        """Around a handler (handler thread): the call's trace context, correlation id and
        deadline are current (``tracecontext.current()``, log lines, the default timeout of
        calls it makes), and each observer's context runs. ``headers`` are the request's trace
        headers as ``tracecontext.extract`` returns them."""
        if not self._observers:
            return _Bound(correlation_id, headers, deadline)
        return self._observed(method, correlation_id, headers, deadline)

    @contextlib.contextmanager
    def _observed(
        self,
        method: str,
        correlation_id: str,
        headers: Mapping[str, str],
        deadline: float | None,
    ) -> Iterator[None]:
        token = tracecontext.bind(correlation_id, headers, deadline)
        try:
            with contextlib.ExitStack() as stack:
                for observer in self._observers:
                    try:
                        manager = observer.handling(
                            self.service, self.queue, method, correlation_id, headers
                        )
                        if manager is not None:
                            stack.enter_context(manager)
                    except Exception:
                        log.exception("observer %r failed in handling", observer)
                yield
        finally:
            tracecontext.unbind(token)


class _Bound:
    """The call is current on this thread while inside (no observers: no ExitStack)."""

    __slots__ = ("_correlation_id", "_deadline", "_headers", "_token")

    def __init__(
        self, correlation_id: str, headers: Mapping[str, str], deadline: float | None
    ) -> None:
        self._correlation_id = correlation_id
        self._headers = headers
        self._deadline = deadline

    def __enter__(self) -> None:
        self._token = tracecontext.bind(self._correlation_id, self._headers, self._deadline)

    def __exit__(self, *_exc: object) -> None:
        tracecontext.unbind(self._token)


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
_OK_PREFIX = b'{"ok":true'
_WIRE_CODES = frozenset(
    (
        envelope.HANDLER_ERROR,
        envelope.METHOD_NOT_FOUND,
        envelope.BAD_REQUEST,
        envelope.POISON_REQUEST,
    )
)


def outcome_of(error: BaseException | None) -> str:
    """``ok``; a remote error's code; else the error class in snake case (``call_timeout``)."""
    if error is None:
        return "ok"
    if isinstance(error, RemoteError):  # its code came over the wire: keep the label set small
        return error.code if error.code in _WIRE_CODES else "remote_error"
    return _SNAKE.sub("_", type(error).__name__).lower()


def reply_code(body: bytes) -> str:
    """``ok`` for a success reply body (common/envelope.py, or a plain one: common/plain.py),
    else its error code."""
    if body.startswith(_OK_PREFIX) or isinstance(body, PlainReply):
        return "ok"
    try:
        reply = serialization.loads(body)
    except SerializationError:
        return "malformed"
    error = reply.get("error") if isinstance(reply, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str):
        return code
    return "ok" if isinstance(reply, dict) and reply.get("ok") is True else "malformed"
