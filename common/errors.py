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
            └── PoisonRequest        the request killed its worker on every delivery

On the wire an error is data (``code``, ``type``, ``message``, ``details``);
``RemoteError.from_wire`` turns it back into the matching class here. No exception object is
ever pickled.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessRefused",
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
    (``handler_error``, ``method_not_found``, ``bad_request`` or one this version does not know).
    """

    code = "handler_error"

    def __init__(
        self,
        message: str,
        *,
        type: str = "Exception",
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.code = code or self.code
        self.details = details or {}

    @staticmethod
    def from_wire(error: dict[str, Any]) -> RemoteError:
        """Build the right subclass from a reply's ``error`` object."""
        code = str(error.get("code", "handler_error"))
        cls = _BY_CODE.get(code, RemoteError)
        details = error.get("details")
        return cls(
            str(error.get("message", "")),
            type=str(error.get("type", "Exception")),
            code=code,
            details=details if isinstance(details, dict) else {},
        )


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


_BY_CODE: dict[str, type[RemoteError]] = {
    cls.code: cls for cls in (RemoteError, MethodNotFound, BadRequest, PoisonRequest)
}
