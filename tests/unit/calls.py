"""Calls for tests of the call table (``requestor/_calls.py``), without a Requestor.

``expect`` registers a call whose outcome completes a ``ReplyFuture``, as ``call_async`` does;
``expect_deliver`` one whose outcome goes to a hook, as ``call()`` and AsyncRequestor do.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any

from reqrep.requestor._callbacks import CallbackRunner, ReplyFuture
from reqrep.requestor._calls import Call, Deliver, ReplyHandler

_runner = CallbackRunner("tests")


def make_call(
    cid: str,
    *,
    deadline: float = 100.0,
    timeout: float = 2.0,
    what: str = "svc.method",
    retries: int = 0,
) -> Call:
    service, _, method = what.partition(".")
    return Call(
        correlation_id=cid,
        service=service,
        method=method,
        queue=f"reqrep.{service}",
        message_id=cid,
        body=b"null",
        deadline=deadline,
        deadline_ms=0,
        timeout=timeout,
        retries=retries,
    )


def expect_deliver(
    handler: ReplyHandler,
    cid: str,
    deliver: Deliver,
    *,
    deadline: float = 100.0,
    timeout: float = 2.0,
    what: str = "svc.method",
) -> Call:
    call = make_call(cid, deadline=deadline, timeout=timeout, what=what)
    call.deliver = deliver
    handler.expect(call)
    return call


def expect(
    handler: ReplyHandler,
    cid: str,
    *,
    deadline: float = 100.0,
    timeout: float = 2.0,
    what: str = "svc.method",
) -> Future[Any]:
    future: Future[Any] = ReplyFuture(
        _runner, on_cancel=lambda: handler.forget(cid, CancelledError())
    )

    def deliver(result: Any, error: BaseException | None) -> None:
        try:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        except InvalidStateError:
            pass

    expect_deliver(handler, cid, deliver, deadline=deadline, timeout=timeout, what=what)
    return future
