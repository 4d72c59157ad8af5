"""Running one request's handler: a plain function on a pool thread, or a coroutine on the
handler event loop. Whatever happens, the outcome is a reply body.

The handler sees the decoded JSON payload and, through ``current()``, the call's context (a
context variable: each pool thread and each asyncio task has its own). An async handler that is
still running just after the caller's deadline (``DEADLINE_GRACE`` later, so that the caller
has surely given up and sees its own CallTimeout) is cancelled: its reply could only be late.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from typing import Any

from reqrep.common import envelope, serialization, tracecontext
from reqrep.common.contracts import InvalidPayload
from reqrep.common.errors import AppError, RemoteError, SerializationError
from reqrep.common.observe import Probe
from reqrep.worker import context
from reqrep.worker.job import Job

__all__ = ["DEADLINE_GRACE", "NotRun", "call_context", "execute", "execute_async", "handler_ran"]

DEADLINE_GRACE = 0.25  # seconds past the caller's deadline before an async handler is cancelled

log = logging.getLogger("reqrep.worker")

_NO_PROBE = Probe("worker", observers=())
# What handlers return most: never awaitable, and cheaper to rule out than inspect's ABC check.
_PLAIN = frozenset({str, int, float, bool, dict, list, type(None), bytes})


def execute(
    job: Job, *, service: str = "", max_bytes: int | None = None, probe: Probe = _NO_PROBE
) -> bytes:
    """Run a plain handler (on the calling thread); always return a reply body.

    ``probe.handling`` runs around the handler: the call's trace context and correlation id are
    current, and observers (spans) wrap it."""
    try:
        payload = serialization.loads(job.body)
    except SerializationError as exc:
        return _bad_request(exc)
    token = context.bind_later(lambda: call_context(job, service))
    try:
        with probe.handling(job.method, job.correlation_id, job.trace, _deadline(job)):
            result = job.handler(payload)
    except BaseException as exc:  # noqa: BLE001 - user code: any failure, even SystemExit, is a reply
        return _failure(job, exc, service)
    finally:
        context.unbind(token)
    if type(result) not in _PLAIN and inspect.isawaitable(result):
        _discard(result)
        error = TypeError(
            f"handler {job.method!r} returned an awaitable; declare it `async def` so that "
            "the worker awaits it on its event loop"
        )
        return _failure(job, error, service)
    return _success(job, result, max_bytes)


async def execute_async(
    job: Job, *, service: str = "", max_bytes: int | None = None, probe: Probe = _NO_PROBE
) -> bytes:
    """Await an async handler (on the handler loop); always return a reply body.

    The handler runs in a task of its own, so that the caller's deadline can cancel it and so
    that a CancelledError it raises is told apart from this coroutine being cancelled (the
    worker is stopping: then no reply, and the broker redelivers the request).
    """
    try:
        payload = serialization.loads(job.body)
    except SerializationError as exc:
        return _bad_request(exc)
    ctx = call_context(job, service)
    remaining = ctx.remaining()
    if remaining is not None and remaining <= 0:
        return _deadline_passed(job)
    token = context.bind(ctx)
    try:
        # The task copies the context; probe.handling runs inside it, around the handler.
        handler = asyncio.ensure_future(_observed(job, payload, probe))
    except BaseException as exc:  # noqa: BLE001 - calling the handler raised at once
        return _failure(job, exc, service)
    finally:
        context.unbind(token)
    try:
        done, _ = await asyncio.wait(
            (handler,), timeout=None if remaining is None else remaining + DEADLINE_GRACE
        )
    except asyncio.CancelledError:
        handler.cancel()
        handler.add_done_callback(_retrieve)  # whatever it raises as it unwinds is not "lost"
        raise
    if not done:
        handler.cancel()
        handler.add_done_callback(_retrieve)
        return _deadline_passed(job)
    try:
        result = handler.result()
    except BaseException as exc:  # noqa: BLE001 - user code: every failure becomes a reply
        return _failure(job, exc, service)
    return _success(job, result, max_bytes)


async def _observed(job: Job, payload: Any, probe: Probe) -> Any:
    with probe.handling(job.method, job.correlation_id, job.trace, _deadline(job)):
        return await job.handler(payload)


def call_context(job: Job, service: str) -> context.CallContext:
    return context.CallContext(
        service=service,
        method=job.method,
        correlation_id=job.correlation_id,
        message_id=job.message_id,
        deadline=None if job.deadline_ms is None else job.deadline_ms / 1000,
        redelivered=job.redelivered,
        delivery_count=job.delivery_count,
        traceparent=job.trace.get(tracecontext.TRACE_HEADER),
        headers=job.headers,
        _cancel=job.cancel,
    )


def _deadline(job: Job) -> float | None:
    return None if job.deadline_ms is None else job.deadline_ms / 1000


def _success(job: Job, result: Any, max_bytes: int | None) -> bytes:
    try:
        body = envelope.success_body(result)
    except SerializationError as exc:
        message = f"result of {job.method!r} is not JSON-serializable: {exc}"
        return envelope.error_body(
            envelope.ErrorInfo(envelope.HANDLER_ERROR, "SerializationError", message)
        )
    if max_bytes is not None and len(body) > max_bytes:
        message = f"result of {len(body)} bytes exceeds max_message_bytes={max_bytes}"
        return envelope.error_body(
            envelope.ErrorInfo(envelope.HANDLER_ERROR, "MessageTooLarge", message)
        )
    return body


def _failure(job: Job, exc: BaseException, service: str) -> bytes:
    """The error reply for what the handler (or its middleware or contract) raised.

    An error that is data already (an ``AppError``, or a ``RemoteError`` a call of the
    handler's own brought back) goes on as it is, this hop added to its trail. Expected
    outcomes (an AppError, a payload that does not match the contract) are logged at INFO;
    anything else is a crash, logged at WARNING.
    """
    error = envelope.ErrorInfo.from_exception(exc)
    error.trail.append({"service": service, "method": job.method})
    expected = isinstance(exc, (AppError, InvalidPayload))
    log.log(
        logging.INFO if expected else logging.WARNING,
        "handler %r %s %s: %s",
        job.method,
        "passed on" if isinstance(exc, RemoteError) and len(error.trail) > 1 else "raised",
        error.type if isinstance(exc, RemoteError) else type(exc).__name__,
        envelope.exception_text(exc) if not isinstance(exc, RemoteError) else exc.message,
        exc_info=not expected and log.isEnabledFor(logging.DEBUG),
        extra={"correlation_id": job.correlation_id},
    )
    body = envelope.error_body(error)
    return NotRun(body) if isinstance(exc, InvalidPayload) else body


class NotRun(bytes):
    """A reply body made without running the handler (the payload could not be decoded).

    It is sent like any other, but not cached: the request may be sent again, corrected, under
    the same idempotency key."""


def handler_ran(body: bytes) -> bool:
    """Whether ``body`` came from running the handler (only those replies are cached)."""
    return not isinstance(body, NotRun)


def _bad_request(exc: SerializationError) -> bytes:
    error = envelope.ErrorInfo(envelope.BAD_REQUEST, "BadRequest", str(exc))
    return NotRun(envelope.error_body(error))


def _deadline_passed(job: Job) -> bytes:
    late = "" if job.deadline_ms is None else f" ({time.time() - job.deadline_ms / 1000:.3f}s ago)"
    log.warning(
        "handler %r cancelled: the caller's deadline passed%s",
        job.method,
        late,
        extra={"correlation_id": job.correlation_id},
    )
    return envelope.error_body(
        envelope.ErrorInfo(
            envelope.HANDLER_ERROR,
            "DeadlineExceeded",
            f"handler {job.method!r} did not finish before the caller's deadline; it was cancelled",
        )
    )


def _discard(awaitable: Any) -> None:
    """Close a coroutine nobody will await (no 'never awaited' warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect a cancelled handler's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
