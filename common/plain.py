"""Plain AMQP RPC: the wire of programs that do not speak reqrep's envelope.

The RabbitMQ tutorial's RPC, and many systems built like it, send a body to a queue with a
``reply_to`` and a ``correlation_id``, and take the reply's body as the answer: no method in
``type``, no JSON envelope. reqrep speaks it both ways (``worker/plain.py``: a ``PlainService``;
``Requestor.call_plain``), by these rules:

- A request's body reaches the handler by its ``content_type``: ``application/json``: the JSON
  value; ``text/...``: text (its ``charset``, else UTF-8); anything else, or none: bytes.
- A handler's result goes back as: bytes as they are (no ``content_type``); text as UTF-8
  (``text/plain; charset=utf-8``); any other value as JSON (``application/json``).
- When the handler fails, the reply's AMQP ``type`` is ``error`` and its body reqrep's error
  object, ``{"ok": false, "error": {...}}``, as JSON: text a plain client can show, and what a
  plain call of reqrep raises as a ``RemoteError``. Any other reply is the answer, as it came.
- A reply to an enveloped call that is not an envelope came from a program that is no reqrep
  worker: ``ForeignReply`` says what arrived, keeps it, and says how to call such a server.
"""

from __future__ import annotations

from typing import Any

from reqrep.common import envelope, serialization
from reqrep.common.errors import ForeignReply, RemoteError, SerializationError

__all__ = [
    "ERROR_TYPE",
    "TEXT_CONTENT_TYPE",
    "PlainReply",
    "decode_request",
    "encode_result",
    "enveloped_result",
    "plain_result",
]

ERROR_TYPE = "error"  # the AMQP type of a plain reply that carries an error
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
_SHOWN = 40  # bytes of a foreign reply quoted in the error that reports it


class PlainReply(bytes):
    """The body of a successful reply to a plain request, with its ``content_type`` (None:
    none). Any other body a plain queue answers with is an error object (``ERROR_TYPE``)."""

    content_type: str | None

    def __new__(cls, body: bytes, content_type: str | None) -> PlainReply:
        reply = super().__new__(cls, body)
        reply.content_type = content_type
        return reply


def decode_request(body: bytes, content_type: object) -> Any:
    """What a plain handler is given: JSON, text or bytes, by ``content_type``.
    SerializationError if the body is not what its content type says."""
    if serialization.is_json_content_type(content_type):
        return serialization.loads(body)
    if isinstance(content_type, str) and content_type.strip().lower().startswith("text/"):
        charset = _charset(content_type)
        try:
            return body.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise SerializationError(f"body is not {content_type!r} text: {exc}") from exc
    return body


def encode_result(value: Any) -> tuple[bytes, str | None]:
    """A plain handler's result as a reply body and its content type; SerializationError if
    it is none of bytes, text or a JSON value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, str):
        try:
            return value.encode("utf-8"), TEXT_CONTENT_TYPE
        except UnicodeEncodeError as exc:
            raise SerializationError(f"text that is not UTF-8: {exc}") from exc
    return serialization.dumps(value), serialization.CONTENT_TYPE


def plain_result(body: bytes, kind: object) -> bytes:
    """What a plain call returns for a reply of AMQP type ``kind``: its body, or the
    RemoteError an error reply carries (one that is no error object is raised as it came)."""
    if kind != ERROR_TYPE:
        return body
    try:
        envelope.decode_reply(body)
    except SerializationError:
        text = body.decode("utf-8", "replace")
        raise RemoteError(text, type="Error") from None
    raise SerializationError("an error reply that carries no error")


def enveloped_result(body: bytes, what: str) -> Any:
    """What an enveloped call to ``what`` returns: the reply's result, or its RemoteError.
    A reply that is not reqrep's envelope raises ForeignReply."""
    try:
        return envelope.decode_reply(body)
    except SerializationError:
        shown = repr(body[:_SHOWN]) + ("..." if len(body) > _SHOWN else "")
        raise ForeignReply(
            f"the reply from {what} is not reqrep's envelope ({len(body)} bytes: {shown}): "
            "its server is no reqrep worker; call a plain AMQP RPC server with "
            "Requestor.call_plain(queue, body), which returns the reply's body",
            body=body,
        ) from None


def _charset(content_type: str) -> str:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"
