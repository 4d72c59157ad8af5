"""A method's contract: what its request and its reply are, read from the handler's type hints.

A handler's first parameter's annotation is its request type, its return annotation its reply
type. Where either involves a *structured* type (a pydantic v2 model, a dataclass or a
TypedDict, anywhere in it: ``list[Item]``, ``Item | None``), that side is enforced with
pydantic's ``TypeAdapter``: the worker validates the decoded request before the handler runs
and serialises the reply from the model; a typed requestor call serialises the payload and
turns the reply back into the model. Plain JSON annotations (``dict[str, float]``, ``int``,
``Any``) and no annotation at all keep the untyped behaviour: the payload is handed over as
decoded, the result encoded as it is. They still describe the method in its schema.

pydantic is an extra (``reqrep[pydantic]``) and is imported only for a structured type: a
model's class cannot exist unless pydantic is imported already, and dataclasses and TypedDicts
are recognised without it. A structured handler without pydantic installed is a ConfigError at
registration.

``MethodSpec`` is what ``Service.handler`` declares about a method (its contract and its
defaults: timeout, idempotent, concurrency). It is attached to the handler function, so that a
requestor can be handed the function itself (``rq.call(add, AddIn(a=1, b=2))``) and knows the
service, the method, the contract and the defaults; no worker code is involved in that.

Pure and thread-agnostic: a Contract is immutable once made; pydantic's adapters are
thread-safe.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any

from reqrep.common.errors import BadRequest, ConfigError, SerializationError

__all__ = [
    "ATTRIBUTE",
    "Contract",
    "InvalidPayload",
    "MethodSpec",
    "is_structured",
    "pydantic_module",
    "spec_of",
]

ATTRIBUTE = "__reqrep_method__"  # where a handler function carries its MethodSpec
_MAX_ERRORS = 50  # validation errors listed in one BadRequest's details


class InvalidPayload(BadRequest):
    """The request did not match the method's request type: the handler did not run.

    ``details["errors"]`` lists each failing field: ``path`` (keys and indexes from the top of
    the payload), ``message`` and ``type`` (pydantic's error type). The values themselves are
    never repeated: they may be secrets."""

    def __init__(self, method: str, errors: list[dict[str, Any]]) -> None:
        fields = ", ".join(_dotted(e["path"]) or "(the payload)" for e in errors[:5])
        super().__init__(
            f"the request does not match {method!r}'s request type: {fields}",
            type="BadRequest",
            details={"errors": errors},
        )


@dataclasses.dataclass(frozen=True)
class Contract:
    """The request and reply types of one handler, and how to enforce them.

    ``request_type`` and ``reply_type`` are the annotations (``Any`` where there is none);
    ``typed_request`` and ``typed_reply`` say whether they involve a structured type (then that
    side is validated and serialised through pydantic).
    """

    request_type: Any
    reply_type: Any
    typed_request: bool
    typed_reply: bool
    _request: Any = dataclasses.field(default=None, repr=False, compare=False)  # TypeAdapter
    _reply: Any = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Contract:
        """Read ``fn``'s hints. ConfigError if they cannot be resolved (a name the module does
        not define), or if they are structured and pydantic is not installed."""
        try:
            signature = inspect.signature(fn, eval_str=True)
        except (NameError, SyntaxError) as exc:
            raise ConfigError(
                f"cannot read the type hints of handler {_label(fn)}: {exc}"
            ) from None
        except (TypeError, ValueError):  # a builtin or a C callable: no hints to read
            return cls(Any, Any, typed_request=False, typed_reply=False)
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        request = positional[0].annotation if positional else inspect.Parameter.empty
        request = Any if request is inspect.Parameter.empty else request
        reply = signature.return_annotation
        reply = Any if reply is inspect.Signature.empty else reply
        typed_request, typed_reply = is_structured(request), is_structured(reply)
        if not (typed_request or typed_reply):
            return cls(request, reply, typed_request=False, typed_reply=False)
        pydantic = pydantic_module(f"handler {_label(fn)}")
        try:
            return cls(
                request,
                reply,
                typed_request=typed_request,
                typed_reply=typed_reply,
                _request=pydantic.TypeAdapter(request) if typed_request else None,
                _reply=pydantic.TypeAdapter(reply) if typed_reply else None,
            )
        except pydantic.PydanticUserError as exc:  # e.g. typing.TypedDict before Python 3.12
            raise ConfigError(
                f"handler {_label(fn)}: pydantic cannot use its hints: {exc}"
            ) from None

    @property
    def typed(self) -> bool:
        return self.typed_request or self.typed_reply

    # -- worker side ----------------------------------------------------------------------------

    def load_request(self, method: str, payload: Any) -> Any:
        """The decoded JSON payload as the handler's request type; InvalidPayload if it does
        not match."""
        if self._request is None:
            return payload
        try:
            return self._request.validate_python(payload)
        except _validation_error() as exc:
            raise InvalidPayload(method, _errors(exc)) from None

    def dump_reply(self, method: str, result: Any) -> Any:
        """The handler's result as a JSON value, through its reply type (a dict is accepted for
        a model: it is validated first). SerializationError if it does not match."""
        if self._reply is None:
            return result
        return _dump(self._reply, result, f"the result of {method!r}")

    # -- requestor side -------------------------------------------------------------------------

    def dump_request(self, method: str, payload: Any) -> Any:
        """A typed call's payload as a JSON value. SerializationError if it does not match the
        request type (the call is then not sent)."""
        if self._request is None:
            return payload
        return _dump(self._request, payload, f"the payload for {method!r}")

    def load_reply(self, method: str, result: Any) -> Any:
        """A reply's result as the reply type; SerializationError if it does not match."""
        if self._reply is None:
            return result
        try:
            return self._reply.validate_python(result)
        except _validation_error() as exc:
            raise _mismatch(f"the reply of {method!r}", exc) from None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a service declares about one method: its name, its contract and its defaults.

    ``timeout`` (seconds) is what a typed call uses when it gives none; ``idempotent`` likewise;
    ``concurrency`` is how many of its handlers one worker process runs at once (None: no limit
    but the worker's own).
    """

    service: str
    method: str
    contract: Contract
    timeout: float | None = None
    idempotent: bool = False
    concurrency: int | None = None


def spec_of(handler: object) -> MethodSpec | None:
    """The MethodSpec a handler function carries since its first registration, if any."""
    spec = getattr(handler, ATTRIBUTE, None)
    return spec if isinstance(spec, MethodSpec) else None


def is_structured(annotation: Any) -> bool:
    """Whether ``annotation`` is or contains a pydantic model, a dataclass or a TypedDict."""
    if isinstance(annotation, type):
        if dataclasses.is_dataclass(annotation) or typing.is_typeddict(annotation):
            return True
        # Neither a model nor a typing_extensions TypedDict exists unless its module is imported.
        extensions = sys.modules.get("typing_extensions")
        if extensions is not None and extensions.is_typeddict(annotation):
            return True
        pydantic = sys.modules.get("pydantic")
        return pydantic is not None and issubclass(annotation, pydantic.BaseModel)
    return any(is_structured(arg) for arg in typing.get_args(annotation))


def pydantic_module(what: str) -> Any:
    """pydantic, imported now; ConfigError naming ``what`` needs it if it is not installed."""
    try:
        import pydantic  # noqa: PLC0415 - optional: only structured types need it
    except ImportError:
        raise ConfigError(
            f"{what} has typed (structured) hints, which need pydantic: "
            "pip install 'reqrep[pydantic]'"
        ) from None
    return pydantic


def _validation_error() -> type[Exception]:
    return pydantic_module("validation").ValidationError  # type: ignore[no-any-return]


def _dump(adapter: Any, value: Any, what: str) -> Any:
    try:
        return adapter.dump_python(adapter.validate_python(value), mode="json", by_alias=True)
    except _validation_error() as exc:
        raise _mismatch(what, exc) from None
    except (TypeError, ValueError) as exc:  # pydantic's serialisation errors are ValueErrors
        raise SerializationError(f"{what} cannot be encoded as JSON: {exc}") from None


def _mismatch(what: str, exc: Exception) -> SerializationError:
    errors = _errors(exc)
    fields = "; ".join(f"{_dotted(e['path']) or '(top)'}: {e['message']}" for e in errors[:5])
    return SerializationError(f"{what} does not match its declared type: {fields}")


def _errors(exc: Any) -> list[dict[str, Any]]:
    """pydantic's errors as plain data, without the input values (they may be secrets)."""
    return [
        {"path": list(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False)[:_MAX_ERRORS]
    ]


def _dotted(path: list[Any]) -> str:
    return ".".join(str(part) for part in path)


def _label(fn: Callable[..., Any]) -> str:
    return repr(getattr(fn, "__qualname__", None) or fn)
