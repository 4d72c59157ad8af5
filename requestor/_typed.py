"""Typed calls: ``rq.call(add, AddIn(a=1, b=2))`` with the handler function itself.

A function registered with ``Service.handler`` carries its ``MethodSpec``
(``common/contracts.py``): the service and method it serves, its contract and its declared
defaults. Given one instead of a method name, a requestor calls that method of that service,
serialises the payload through the request type, uses the declared timeout and idempotency
when the call gives none, and turns the reply back into the reply type. The worker's code is
never run here: only the function's annotations and the spec were read, when it was
registered.

The overloads of ``Requestor.call`` and ``AsyncRequestor.call`` let mypy see the reply type:
``TypedHandler`` and ``AsyncTypedHandler`` below are what they match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from reqrep.common.contracts import Contract, spec_of
from reqrep.common.errors import ConfigError
from reqrep.requestor._core import retries_for
from reqrep.requestor.middleware import OutgoingCall

if TYPE_CHECKING:
    from reqrep.requestor._calls import Call
    from reqrep.requestor._core import RequestorCore

__all__ = ["AsyncTypedHandler", "P", "Rep", "Req", "Target", "TypedHandler", "prepare", "resolve"]

Req = TypeVar("Req")
Rep = TypeVar("Rep")
P = ParamSpec("P")  # the handler's other parameters: its resources, never passed by a caller
TypedHandler = Callable[Concatenate[Req, P], Rep]
AsyncTypedHandler = Callable[Concatenate[Req, P], Coroutine[Any, Any, Rep]]


@dataclasses.dataclass(frozen=True)
class Target:
    """What a call is sent to and with, once its method is resolved."""

    service: str | None  # None: the requestor's own
    method: str
    payload: Any  # JSON values
    timeout: float | None
    idempotent: bool
    contract: Contract | None = None

    def outgoing(self, headers: Mapping[str, str] | None) -> OutgoingCall:
        """The call as middleware sees it."""
        return OutgoingCall(
            self.service, self.method, self.payload, headers or {}, self.timeout, self.idempotent
        )

    def result(self, value: Any) -> Any:
        """The reply's result as the caller expects it (the reply type, for a typed call)."""
        return value if self.contract is None else self.contract.load_reply(self.method, value)


def resolve(
    method: str | Callable[..., Any],
    payload: Any,
    *,
    service: str | None,
    timeout: float | None,
    idempotent: bool,
) -> Target:
    """The target of a call by name, or by a registered handler function (typed).

    ConfigError for a callable that no Service registered; SerializationError for a payload
    that does not match the handler's request type (then nothing is sent)."""
    if isinstance(method, str):
        return Target(service, method, payload, timeout, idempotent)
    spec = spec_of(method)
    if spec is None:
        raise ConfigError(
            f"{method!r} is not a handler registered with Service.handler: call a method by "
            "its name, or by the function a Service registered"
        )
    return Target(
        service or spec.service,
        spec.method,
        spec.contract.dump_request(spec.method, payload),
        spec.timeout if timeout is None else timeout,
        idempotent or spec.idempotent,
        spec.contract,
    )


def prepare(
    core: RequestorCore,
    outgoing: OutgoingCall,
    retries: int | None,
    key: str | None,
    fail_fast: bool | None = None,
) -> Call:
    """``core.prepare`` for the call middleware let through."""
    return core.prepare(
        outgoing.method,
        outgoing.payload,
        service=outgoing.service,
        timeout=outgoing.timeout,
        retries=retries_for(outgoing.idempotent, retries),
        idempotency_key=key,
        headers=outgoing.headers,
        fail_fast=fail_fast,
    )
