"""The one exception hierarchy of reqrep.

``except ReqrepError`` catches everything reqrep raises on purpose::

    ReqrepError
    ├── ConfigError                  bad settings, URL or arguments       (also ValueError)
    ├── SerializationError           a payload or body is not valid JSON  (also ValueError)
    │   └── ForeignReply             a reply that is no envelope: no reqrep worker sent it
    ├── ReqrepConnectionError        the broker connection               (also ConnectionError)
    │   ├── BrokerUnreachable        could not connect at all
    │   ├── ConnectionLost           an open connection dropped; pending calls fail with it
    │   ├── AccessRefused            the user may not use a queue or exchange (403)
    │   └── TopologyConflict         a queue or exchange exists with other arguments (406)
    ├── ClosedError                  the Requestor/Worker was closed; no more use
    ├── StartupError                 a service's startup hook or resource failed; not serving
    └── CallError                    one call did not produce a result
        ├── CallTimeout              no reply before the deadline       (also TimeoutError)
        ├── NoSuchService            no request queue for the service (AMQP 312 NO_ROUTE)
        ├── NoWorkers                the queue exists but no worker consumes it; not sent
        ├── PublishRejected          the broker refused the request (nack)
        ├── TooManyPending           max_pending calls are outstanding already
        ├── MessageTooLarge          a body exceeds max_message_bytes     (also ValueError)
        └── RemoteError              the worker answered with an error reply
            ├── MethodNotFound       the service has no such method
            ├── BadRequest           the worker could not read the request
            ├── PoisonRequest        the request killed its worker on every delivery
            └── AppError             an application error with its own code and details

On the wire an error is data (``code``, ``type``, ``message``, ``details``, ``trail``);
``RemoteError.from_wire`` turns it back into the matching class here. No exception object is
ever pickled.

``AppError`` goes both ways: a handler raises it (or a subclass that declares its ``code``:
defining the subclass registers the code), and the caller gets it back with the same code,
type name and details: as the registered class when the caller's process defines it, else as
``AppError``. A handler that lets a ``RemoteError`` from a call of its own escape passes it on
as it is, adding its own hop to ``trail``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

__all__ = [
    "AccessRefused",
    "AppError",
    "BadRequest",
    "BrokerUnreachable",
    "CallError",
    "CallTimeout",
    "ClosedError",
    "ConfigError",
    "ConnectionLost",
    "ForeignReply",
    "MessageTooLarge",
    "MethodNotFound",
    "NoSuchService",
    "NoWorkers",
    "PoisonRequest",
    "PublishRejected",
    "RemoteError",
    "ReqrepConnectionError",
    "ReqrepError",
    "SerializationError",
    "StartupError",
    "TooManyPending",
    "TopologyConflict",
]


class ReqrepError(Exception):
    """Root of every error reqrep raises."""


class ConfigError(ReqrepError, ValueError):
    """Settings, a URL or an argument are invalid."""


class SerializationError(ReqrepError, ValueError):
    """A value cannot be encoded to JSON, or bytes cannot be decoded from it."""


class ForeignReply(SerializationError):
    """The reply to an enveloped call is not reqrep's envelope: the program that answered is
    no reqrep worker (a plain AMQP RPC server, say). ``body`` is the reply as it came; call
    such a server with ``Requestor.call_plain``."""

    def __init__(self, message: str, *, body: bytes) -> None:
        super().__init__(message)
        self.body = body


class ReqrepConnectionError(ReqrepError, ConnectionError):
    """Something is wrong with the connection to the broker.

    ``permanent`` is True when trying again cannot help: the broker refused the login or the
    vhost, or refused the set-up (a queue exists with other arguments).
    """

    def __init__(self, *args: Any, permanent: bool = False) -> None:
        super().__init__(*args)
        self.permanent = permanent


class BrokerUnreachable(ReqrepConnectionError):
    """The broker could not be reached or refused the login."""


class ConnectionLost(ReqrepConnectionError):
    """An open connection closed under us; calls that were pending fail with this."""


class AccessRefused(ReqrepConnectionError):
    """The broker refused the user access to a queue or exchange (403 ACCESS_REFUSED): the
    user's permissions do not cover it. Trying again cannot help (``permanent``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args, permanent=True)


class TopologyConflict(ReqrepConnectionError):
    """The broker refused to declare a queue or exchange that exists with other arguments
    (406 PRECONDITION_FAILED), e.g. a queue another program declared first. ``kind``
    (``queue`` or ``exchange``), ``name`` and ``argument`` (``x-queue-type``, ``durable``...)
    say which; trying again cannot help (``permanent``)."""

    def __init__(self, message: str, *, kind: str, name: str, argument: str) -> None:
        super().__init__(message, permanent=True)
        self.kind = kind
        self.name = name
        self.argument = argument


class ClosedError(ReqrepError):
    """The object was closed (or never opened) and cannot be used."""


class StartupError(ReqrepError):
    """A service's ``on_startup`` hook or resource failed: the worker did not start consuming
    (the hooks and resources that had started were shut down again)."""


class CallError(ReqrepError):
    """One call ended without a result."""


class CallTimeout(CallError, TimeoutError):
    """No reply arrived before the call's deadline."""


class NoSuchService(CallError):
    """The broker returned the request: no queue exists for the service."""

    def __init__(self, service: str) -> None:
        super().__init__(f"no such service: {service!r} (no request queue; is a worker deployed?)")
        self.service = service


class NoWorkers(CallError):
    """The service's request queue exists but no worker consumes it; the request was not sent.

    Requestors check (and cache for about a second) whether a service has consumers before
    sending to it; ``wait_for_workers=True`` turns the check off, and calls then wait in the
    queue, within their timeout, for a worker to start.
    """

    def __init__(self, service: str) -> None:
        super().__init__(
            f"no workers for service {service!r}: its queue exists but nothing consumes it "
            "(the request was not sent; wait_for_workers=True waits for a worker instead)"
        )
        self.service = service


class PublishRejected(CallError):
    """The broker negatively acknowledged the request (e.g. a queue length limit)."""


class TooManyPending(CallError):
    """The requestor has ``max_pending`` calls outstanding already; the call was not sent."""


class MessageTooLarge(CallError, ValueError):
    """A request or reply body is larger than ``max_message_bytes``."""


class RemoteError(CallError):
    """The worker answered with an error.

    ``type`` is the remote exception's class name, ``message`` its text, ``code`` the wire code
    (``handler_error``, ``method_not_found``, ``bad_request``, ``poison_request``, an
    application's own code, or one this version does not know), ``details`` a JSON object, and
    ``trail`` the handlers it passed out of, innermost first (``{"service": ..., "method":
    ...}`` each).
    """

    code = "handler_error"

    def __init__(
        self,
        message: str,
        *,
        type: str = "Exception",
        code: str | None = None,
        details: dict[str, Any] | None = None,
        trail: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.code = code or self.code
        self.details = details or {}
        self.trail = trail or []

    @staticmethod
    def from_wire(error: dict[str, Any]) -> RemoteError:
        """Build the right class from a reply's ``error`` object: the built-in class of its
        code, the ``AppError`` subclass registered for it, else ``AppError`` for a code that is
        not a built-in one."""
        code = str(error.get("code", "handler_error"))
        cls = _BY_CODE.get(code) or _APP_CODES.get(code) or AppError
        details = error.get("details")
        exc = cls.__new__(cls)
        RemoteError.__init__(
            exc,
            str(error.get("message", "")),
            type=str(error.get("type", "Exception")),
            code=code,
            details=details if isinstance(details, dict) else {},
            trail=_trail(error.get("trail")),
        )
        return exc


class MethodNotFound(RemoteError):
    """The service has no handler for the method."""

    code = "method_not_found"


class BadRequest(RemoteError):
    """The worker could not read the request (bad JSON, content type, or missing method)."""

    code = "bad_request"


class PoisonRequest(RemoteError):
    """The request was delivered ``max_redeliveries`` + 1 times and its worker died each time;
    it was dead-lettered instead of being run again."""

    code = "poison_request"


class AppError(RemoteError):
    """An application error: a code, a message and JSON details, raised by a handler and
    raised again, with the same code, type name and details, in its caller.

    ``AppError("out_of_stock", "no more tea", details={"sku": "tea"})`` for a one-off; or a
    subclass that declares its code, raised with a message alone::

        class OutOfStock(AppError):
            code = "out_of_stock"

        raise OutOfStock("no more tea", details={"sku": "tea"})

    Defining such a subclass registers its code in this process: a reply with that code is
    raised as that class, so callers catch it by class (``except OutOfStock``) or by code
    (``except AppError as e: if e.code == ...``). A code is 1-64 letters, digits, ``_``, ``.``
    or ``-``, and not one of the built-in codes; one code belongs to one class.

    A worker logs an AppError at INFO: it is an expected outcome, not a crash.
    """

    code = "app_error"
    _code_fixed: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            cls._code_fixed = True
            _register(cls)

    def __init__(self, *args: str, details: dict[str, Any] | None = None) -> None:
        if self._code_fixed:
            (message,) = args
            code = type(self).code
        else:
            code, message = args
        super().__init__(message, type=type(self).__name__, code=_check_code(code), details=details)


_BY_CODE: dict[str, type[RemoteError]] = {
    cls.code: cls for cls in (RemoteError, MethodNotFound, BadRequest, PoisonRequest)
}
_APP_CODES: dict[str, type[AppError]] = {}  # codes registered by AppError subclasses
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _check_code(code: object) -> str:
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise ConfigError(f"an error code is 1-64 letters, digits, '_', '.' or '-': {code!r}")
    if code in _BY_CODE:
        raise ConfigError(f"{code!r} is a built-in error code; choose another")
    return code


def _register(cls: type[AppError]) -> None:
    """Called when an AppError subclass that declares ``code`` is defined."""
    code = _check_code(cls.code)
    known = _APP_CODES.get(code)
    if known is not None and _name(known) != _name(cls):
        raise ConfigError(f"error code {code!r} belongs to {_name(known)} already")
    _APP_CODES[code] = cls  # the same class defined again (a reload) replaces itself


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _trail(value: object) -> list[dict[str, str]]:
    """A reply's ``trail``, keeping only well-formed hops."""
    if not isinstance(value, list):
        return []
    return [
        {"service": hop["service"], "method": hop["method"]}
        for hop in value
        if isinstance(hop, dict)
        and isinstance(hop.get("service"), str)
        and isinstance(hop.get("method"), str)
    ]
