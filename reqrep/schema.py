"""A service's AsyncAPI 3.0 document: what ``reqrep schema MODULE:SERVICE`` writes.

It describes the service as its workers serve it (docs/protocol.md is the reference):

- channels: the request queue ``{prefix}S`` (AMQP binding: a durable queue), the route to it
  through the requests exchange ``{prefix}requests`` (routing key ``{prefix}S``), and the
  caller's callback queue (its address is the request's ``reply_to``);
- one operation per method: received on the request queue, replied to on the callback queue,
  with the method's declared defaults as specification extensions (``x-reqrep-timeout``...);
- messages: each method's request (its payload the request type's JSON Schema, the AMQP
  ``type`` property the method's name, the protocol's headers) and reply (the reply envelope,
  its ``result`` the reply type's schema), and the error envelope every method may answer.

JSON Schemas come from pydantic (``reqrep[pydantic]``), one pass over every type so that a
model used by two methods is one component. A method without hints accepts and returns any
JSON value.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from reqrep.common import callheaders, topology, tracecontext
from reqrep.common.config import Settings
from reqrep.common.contracts import pydantic_module
from reqrep.worker.service import Service

__all__ = ["ASYNCAPI_VERSION", "asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
_AMQP = "0.3.0"  # the AMQP bindings' version
_REF = "#/components/schemas/{model}"


def asyncapi(service: Service, settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``service`` under ``settings``' queue prefix (default:
    ``Settings()``). ConfigError if pydantic is not installed."""
    from reqrep import __version__  # noqa: PLC0415 - the face imports this module's package

    settings = settings or Settings()
    prefix, name = settings.queue_prefix, service.name
    queue = topology.request_queue(prefix, name)
    vhost = _vhost(settings)
    methods = service.methods
    schemas, definitions = _schemas(service)
    messages: dict[str, Any] = {"error": _error_message()}
    operations: dict[str, Any] = {}
    for method in methods:
        spec = service.spec(method)
        request, reply = f"{method}.request", f"{method}.reply"
        messages[request] = {
            "name": request,
            "title": f"{name}.{method} request",
            "contentType": "application/json",
            "headers": _headers(),
            "correlationId": {"location": "$message.header#/correlation_id"},
            "payload": schemas[(method, "request")],
            "bindings": {"amqp": {"messageType": method, "bindingVersion": _AMQP}},
        }
        messages[reply] = {
            "name": reply,
            "title": f"{name}.{method} reply",
            "contentType": "application/json",
            "correlationId": {"location": "$message.header#/correlation_id"},
            "payload": {
                "type": "object",
                "required": ["ok", "result"],
                "properties": {"ok": {"const": True}, "result": schemas[(method, "reply")]},
            },
            "bindings": {"amqp": {"messageType": "reply", "bindingVersion": _AMQP}},
        }
        operation: dict[str, Any] = {
            "action": "receive",
            "title": method,
            "channel": {"$ref": "#/channels/requests"},
            "messages": [{"$ref": f"#/channels/requests/messages/{request}"}],
            "reply": {
                "address": {"location": "$message.header#/reply_to"},
                "channel": {"$ref": "#/channels/replies"},
                "messages": [
                    {"$ref": f"#/channels/replies/messages/{reply}"},
                    {"$ref": "#/channels/replies/messages/error"},
                ],
            },
            "bindings": {"amqp": {"ack": True, "bindingVersion": _AMQP}},
        }
        if spec is not None:
            if spec.timeout is not None:
                operation["x-reqrep-timeout"] = spec.timeout
            operation["x-reqrep-idempotent"] = spec.idempotent
            if spec.concurrency is not None:
                operation["x-reqrep-concurrency"] = spec.concurrency
        operations[method] = operation

    def ref(message: str) -> dict[str, str]:  # a new dict each time: no YAML anchors
        return {"$ref": f"#/components/messages/{message}"}

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{name}",
            "version": __version__,
            "description": (
                f"The reqrep service {name!r}: request-reply over RabbitMQ, wire protocol "
                "version 2 (reqrep's docs/protocol.md)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "requests": {
                "address": queue,
                "title": "request queue",
                "description": (
                    f"Requestors publish to the exchange {topology.request_exchange(prefix)!r} "
                    f"with routing key {queue!r} (mandatory, confirmed); workers consume this "
                    "queue."
                ),
                "messages": {f"{m}.request": ref(f"{m}.request") for m in methods},
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {
                            "name": queue,
                            "durable": True,
                            "exclusive": False,
                            "autoDelete": False,
                            "vhost": vhost,
                        },
                        "bindingVersion": _AMQP,
                    }
                },
            },
            "requestRoute": {
                "address": queue,
                "title": "request route",
                "messages": {f"{m}.request": ref(f"{m}.request") for m in methods},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": topology.request_exchange(prefix),
                            "type": "direct",
                            "durable": True,
                            "autoDelete": False,
                            "vhost": vhost,
                        },
                        "bindingVersion": _AMQP,
                    }
                },
            },
            "replies": {
                "address": None,
                "title": "callback queue",
                "description": "The caller's own queue, named by the broker: a request's reply_to.",
                "messages": {
                    **{f"{m}.reply": ref(f"{m}.reply") for m in methods},
                    "error": ref("error"),
                },
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {
                            "durable": False,
                            "exclusive": True,
                            "autoDelete": False,
                            "vhost": vhost,
                        },
                        "bindingVersion": _AMQP,
                    }
                },
            },
        },
        "operations": operations,
        "components": {"messages": messages, "schemas": definitions},
    }


def _schemas(service: Service) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """Each method's request and reply JSON Schema, keyed (method, "request"|"reply"), and the
    shared definitions they refer to."""
    pydantic = pydantic_module("reqrep schema")
    inputs = []
    for method in service.methods:
        spec = service.spec(method)
        request = Any if spec is None else spec.contract.request_type
        reply = Any if spec is None else spec.contract.reply_type
        inputs.append(((method, "request"), "validation", pydantic.TypeAdapter(request)))
        inputs.append(((method, "reply"), "serialization", pydantic.TypeAdapter(reply)))
    found, definitions = pydantic.TypeAdapter.json_schemas(inputs, ref_template=_REF)
    return {key: schema for (key, _mode), schema in found.items()}, definitions.get("$defs", {})


def _headers() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "x-deadline": {
                "type": "integer",
                "description": "The caller's deadline, Unix time in milliseconds.",
            },
            tracecontext.TRACE_HEADER: {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context of the caller.",
            },
            tracecontext.STATE_HEADER: {"type": "string", "maxLength": 512},
            callheaders.HEADERS_HEADER: {
                "type": "object",
                "description": "The caller's own headers (current().headers).",
                "maxProperties": callheaders.MAX_HEADERS,
                "additionalProperties": {
                    "type": "string",
                    "maxLength": callheaders.MAX_VALUE_CHARS,
                },
            },
        },
    }


def _error_message() -> dict[str, Any]:
    return {
        "name": "error",
        "title": "error reply",
        "summary": "Any method's error: a handler's exception, an application error, a refusal.",
        "contentType": "application/json",
        "correlationId": {"location": "$message.header#/correlation_id"},
        "payload": {
            "type": "object",
            "required": ["ok", "error"],
            "properties": {
                "ok": {"const": False},
                "error": {
                    "type": "object",
                    "required": ["code", "type", "message", "details"],
                    "properties": {
                        "code": {
                            "type": "string",
                            "description": (
                                "handler_error, method_not_found, bad_request, poison_request, "
                                "or an application's own code"
                            ),
                        },
                        "type": {"type": "string", "description": "the error's type name"},
                        "message": {"type": "string", "maxLength": 2100},
                        "details": {"type": "object"},
                        "trail": {
                            "type": "array",
                            "description": "the handlers it passed out of, innermost first",
                            "items": {
                                "type": "object",
                                "required": ["service", "method"],
                                "properties": {
                                    "service": {"type": "string"},
                                    "method": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
        "bindings": {"amqp": {"messageType": "reply", "bindingVersion": _AMQP}},
    }


def _vhost(settings: Settings) -> str:
    """The vhost of the (first) broker URL: its path, ``/`` when it has none."""
    path = urlsplit(settings.url.split(",")[0].strip()).path
    return unquote(path[1:]) if len(path) > 1 else "/"
