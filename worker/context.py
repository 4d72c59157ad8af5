"""What a handler may know about the call it is serving: ``worker.current()``.

Handlers keep their one-argument signature; the context travels in a context variable set on the
handler thread for the duration of the call.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Callable, Mapping

from reqrep.common.errors import ReqrepError
from reqrep.worker.cancel import CancelSignal

__all__ = ["CallContext", "current"]


@dataclasses.dataclass(frozen=True)
class CallContext:
    """The call a handler is serving.

    ``deadline`` is the caller's deadline as Unix time in seconds (None if the request carried
    none); ``delivery_count`` is how many times the broker delivered it before (quorum queues);
    ``traceparent`` is the caller's W3C trace context, if the request carried one (calls this
    handler makes continue that trace by themselves); ``headers`` are the caller's own
    (``call(..., headers=...)``); ``cancelled()`` turns true once the caller cancels the call
    or its deadline passes.
    """

    service: str
    method: str
    correlation_id: str
    message_id: str | None
    deadline: float | None
    redelivered: bool
    delivery_count: int
    traceparent: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    _cancel: CancelSignal | None = dataclasses.field(default=None, repr=False, compare=False)

    def cancelled(self) -> bool:
        """Whether the caller has given up on this call: it cancelled it (then no reply is
        sent), or its deadline passed. A long handler may look now and then and stop early."""
        signal = self._cancel
        if signal is not None and signal.is_set():
            return True
        return self.deadline is not None and time.time() >= self.deadline

    def remaining(self) -> float | None:
        """Seconds left before the caller gives up (never negative), or None: pass it on as the
        timeout of the calls this handler makes."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.time())


class _Later:
    """A CallContext made when first asked for: most handlers never call ``current()``."""

    __slots__ = ("_context", "_make")

    def __init__(self, make: Callable[[], CallContext]) -> None:
        self._make = make
        self._context: CallContext | None = None

    def get(self) -> CallContext:
        if self._context is None:
            self._context = self._make()
        return self._context


_current: contextvars.ContextVar[CallContext | _Later] = contextvars.ContextVar("reqrep_call")
Token = contextvars.Token["CallContext | _Later"]


def current() -> CallContext:
    """The context of the call being handled on this thread; ReqrepError outside a handler."""
    try:
        value = _current.get()
    except LookupError:
        raise ReqrepError("worker.current() called outside a handler") from None
    return value.get() if isinstance(value, _Later) else value


def bind(context: CallContext) -> Token:
    """Make ``context`` current on this thread (the worker does this around each handler)."""
    return _current.set(context)


def bind_later(make: Callable[[], CallContext]) -> Token:
    """Make the context ``make()`` returns current, made when ``current()`` first asks."""
    return _current.set(_Later(make))


def unbind(token: Token) -> None:
    _current.reset(token)
