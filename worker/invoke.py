"""What a worker calls for each request: the handler, wrapped in what its service declares.

``bind`` makes, once per method when a worker starts, the callable a handler thread (or the
handler loop) calls with the decoded payload. Around the handler, from the outside in:

1. the service's middleware, of the handler's kind (plain functions around plain handlers,
   ``async def`` ones around ``async def`` handlers), each ``mw(call, call_next)`` with a
   ``HandlerCall``: the method, the payload as decoded JSON, the call's headers and its
   ``CallContext``. A middleware may return a result without calling ``call_next`` (a cache)
   or raise (an auth check: an ``AppError`` reaches the caller with its code);
2. the contract: the payload validated into the request type (a mismatch raises
   ``InvalidPayload``, a BadRequest, and the handler does not run);
3. the handler, with its resources as keyword arguments;
4. the contract again: the result serialised from the reply type into JSON values.

So middleware sees JSON on both sides, whatever the handler's types. A handler that declares
nothing of this (no structured hints, no resources, no middleware) is called as it is.

The callable runs where the handler would: ``worker/execute.py`` calls it inside the call's
context (``current()``) and its observers' spans, so their timings include the middleware.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from reqrep.common import middleware as chains
from reqrep.common.contracts import MethodSpec
from reqrep.worker import context
from reqrep.worker.context import CallContext
from reqrep.worker.service import Handler

__all__ = ["HandlerCall", "bind"]


@dataclasses.dataclass(frozen=True)
class HandlerCall:
    """One call, as the worker's middleware sees it (``dataclasses.replace`` to change it)."""

    method: str
    payload: Any  # decoded JSON, before the contract
    headers: Mapping[str, str]
    context: CallContext


def bind(
    spec: MethodSpec,
    handler: Handler,
    *,
    is_async: bool,
    resources: Mapping[str, Any],
    middleware: list[Any],
) -> Handler:
    """The callable to run for ``spec.method``: ``handler`` itself when nothing wraps it."""
    contract = spec.contract
    method = spec.method
    kwargs = dict(resources)
    wrappers = [mw for mw in middleware if chains.is_async(mw) is is_async]
    if not (contract.typed or kwargs or wrappers):
        return handler

    if is_async:

        async def run_async(call: HandlerCall) -> Any:
            request = contract.load_request(method, call.payload)
            return contract.dump_reply(method, await handler(request, **kwargs))

        chain_async = chains.build_async(wrappers, run_async)

        async def invoke_async(payload: Any) -> Any:
            ctx = context.current()
            return await chain_async(HandlerCall(method, payload, ctx.headers, ctx))

        return invoke_async

    def run(call: HandlerCall) -> Any:
        request = contract.load_request(method, call.payload)
        return contract.dump_reply(method, handler(request, **kwargs))

    chain = chains.build(wrappers, run)

    def invoke(payload: Any) -> Any:
        ctx = context.current()
        return chain(HandlerCall(method, payload, ctx.headers, ctx))

    return invoke
