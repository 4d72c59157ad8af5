"""The request and reply messages, as docs/protocol.md defines them.

Pure functions over bytes and plain values: no pika here. The I/O modules copy AMQP properties
in and out; this module decides what a well-formed request or reply is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reqrep.common import serialization
from reqrep.common.errors import RemoteError, SerializationError

__all__ = [
    "BAD_REQUEST",
    "HANDLER_ERROR",
    "METHOD_NOT_FOUND",
    "NO_METHOD",
    "POISON_REQUEST",
    "REPLY_TYPE",
    "ErrorInfo",
    "check_request",
    "decode_reply",
    "error_body",
    "exception_text",
    "success_body",
]

HANDLER_ERROR = "handler_error"
METHOD_NOT_FOUND = "method_not_found"
BAD_REQUEST = "bad_request"
POISON_REQUEST = "poison_request"
REPLY_TYPE = "reply"

# What a request without a method is told; its client may be no reqrep client (a plain AMQP RPC
# client sent its body to an enveloped queue): the text says what reqrep expects.
NO_METHOD = (
    "request has no method: reqrep expects the method's name in the AMQP 'type' property, a "
    "JSON payload with content_type 'application/json', a reply_to and a correlation_id "
    "(docs/protocol.md); plain requests, a body without a method, are served by a "
    "PlainService on a queue of its own"
)

# Error text crosses the wire; a handler that raises with a megabyte message must not make a
# megabyte reply.
_MAX_MESSAGE_CHARS = 2000
# A trail grows by one hop per handler it passes out of; a loop of calls must not grow it
# without bound. The innermost hops, where the error came from, are the ones kept.
_MAX_TRAIL = 32


@dataclasses.dataclass(frozen=True)
class ErrorInfo:
    """An error as data: what an error reply carries."""

    code: str
    type: str
    message: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    trail: list[dict[str, str]] = dataclasses.field(default_factory=list)  # innermost first

    @classmethod
    def from_exception(cls, exc: BaseException, code: str = HANDLER_ERROR) -> ErrorInfo:
        """Describe ``exc``: a ``RemoteError`` (an ``AppError`` raised here, or an error a call
        of the handler's own brought back) as it is, with its code, type, details and trail;
        any other exception by its class name and text (even if its ``__str__`` fails)."""
        if isinstance(exc, RemoteError):
            return cls(exc.code, exc.type, exc.message, dict(exc.details), list(exc.trail))
        return cls(code=code, type=type(exc).__name__, message=exception_text(exc))

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "code": _text(self.code),
            "type": _text(self.type),
            "message": _clip(_text(self.message)),
            "details": self.details,
        }
        if self.trail:  # only handlers' errors have one: other replies stay as they were
            wire["trail"] = [
                {"service": _text(hop["service"]), "method": _text(hop["method"])}
                for hop in self.trail[:_MAX_TRAIL]
            ]
        return wire


def success_body(result: Any) -> bytes:
    """The body of a successful reply; SerializationError if ``result`` is not JSON-able."""
    return serialization.dumps({"ok": True, "result": result})


def error_body(error: ErrorInfo) -> bytes:
    """The body of an error reply (details that are not JSON-able are dropped, not fatal)."""
    try:
        return serialization.dumps({"ok": False, "error": error.to_wire()})
    except SerializationError:
        bare = dataclasses.replace(error, details={})
        return serialization.dumps({"ok": False, "error": bare.to_wire()})


def decode_reply(body: bytes) -> Any:
    """Return a reply's result, or raise the RemoteError it carries.

    A body that is not a reply object raises SerializationError.
    """
    reply = serialization.loads(body)
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise SerializationError("malformed reply: not an object with a boolean 'ok'")
    if reply["ok"]:
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise SerializationError("malformed error reply: 'error' is not an object")
    raise RemoteError.from_wire(error)


def check_request(method: object, content_type: object) -> ErrorInfo | None:
    """Why a request cannot be served, judged from its properties; None if it can."""
    if not method:
        return ErrorInfo(BAD_REQUEST, "BadRequest", NO_METHOD)
    if not isinstance(method, str):
        return ErrorInfo(BAD_REQUEST, "BadRequest", "the method (AMQP 'type') is not UTF-8")
    if not serialization.is_json_content_type(content_type):
        return ErrorInfo(
            BAD_REQUEST,
            "BadRequest",
            f"content_type must be {serialization.CONTENT_TYPE!r}, got {content_type!r}",
        )
    return None


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception cannot say what it is."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not cost the caller its reply
        return f"<{type(exc).__name__}: unprintable message>"


def _text(value: str) -> str:
    """``value`` as text that can be encoded as UTF-8 (lone surrogates replaced)."""
    return value.encode("utf-8", "replace").decode("utf-8")


def _clip(text: str) -> str:
    if len(text) <= _MAX_MESSAGE_CHARS:
        return text
    return text[:_MAX_MESSAGE_CHARS] + f"... [{len(text) - _MAX_MESSAGE_CHARS} more chars]"
