"""Plain AMQP RPC on the worker's side: a ``PlainService`` serves a queue named verbatim whose
requests and replies are plain bodies (``common/plain.py``), as the RabbitMQ tutorial's RPC
client sends them, so that a reqrep worker can take over such a queue from the program that
served it.

- The queue: named by the service alone, under no prefix. If it exists (another program
  declared it, with whatever arguments), the worker takes it as it is: a passive declare, on a
  channel of its own (a passive declare of a missing queue closes its channel). If not, the
  worker declares it durable, of the settings' queue type, with no other argument (as the
  tutorial's server declares it, which may start second). No dead-letter queue and no binding
  to the requests exchange: plain clients publish to the queue through the default exchange.
- A request needs no ``type`` and no ``content_type``: the service's one handler serves every
  request (a ``type`` is ignored). The rest is judged as for enveloped requests
  (``worker/admission.py``): a ``reply_to`` and a ``correlation_id``, deadlines, poison,
  idempotency keys and the size limit.
- Running it: the handler gets the body by its content type and returns bytes, text or a JSON
  value. Its context (``current()``), trace, metrics, deadline and error replies are those of
  enveloped handlers, because the job runs through ``execute`` itself, with the handler wrapped
  (``_PlainCall``): the wrapper hands the handler the request's own body and keeps its result
  aside; ``execute`` sees a handler that took ``null`` and returned ``null``, or raised.

Threads: ``PlainService`` as ``Service``; the declaration steps on the worker's I/O thread;
``execute_plain`` on a handler thread, ``execute_plain_async`` on the handler loop.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from reqrep.common import envelope, topology
from reqrep.common._transport import Channel, Failure, QueueInfo
from reqrep.common.config import Settings
from reqrep.common.contracts import MethodSpec
from reqrep.common.errors import ConfigError, SerializationError
from reqrep.common.observe import Probe
from reqrep.common.plain import PlainReply, decode_request, encode_result
from reqrep.worker import admission
from reqrep.worker._declare import Step
from reqrep.worker.execute import NotRun, execute, execute_async
from reqrep.worker.job import Job
from reqrep.worker.service import Handler, Hook, K, M, Service

__all__ = [
    "PlainService",
    "classify",
    "declare_steps",
    "execute_plain",
    "execute_plain_async",
    "queue_of",
]

H = TypeVar("H", bound=Handler)
_NOT_FOUND = 404
_NO_PAYLOAD = b"null"  # what execute decodes for the wrapped handler, which ignores it
_NO_RESULT = object()
_ANONYMOUS = "handle"  # the method's name in metrics and logs when the handler has none
_NO_PROBE = Probe("worker", observers=())


class PlainService:
    """A service that answers plain AMQP RPC on the queue ``queue``, named verbatim.

    One handler (``@service.handler``) serves every request: it is given the body (bytes;
    text for a ``text/...`` content type; the JSON value for ``application/json``) and
    returns the reply's body: bytes, text, or a JSON value. It may be ``async def``. ``queue``
    follows the rules of service names; it is the service's name in pings, metrics and logs.

    Threads: register the handler before a Worker starts; afterwards it is read-only.
    """

    def __init__(self, queue: str) -> None:
        self._service = Service(queue)  # checks the name; holds the one handler
        self.name = queue
        self.queue = queue

    def __repr__(self) -> str:
        return f"<PlainService queue={self.queue!r} handler={self._service.methods}>"

    def handler(self, fn: H) -> H:
        """Register ``fn`` as the handler of every request (``@service.handler``). Its name
        (``handle`` for a lambda) names the requests' method in metrics and logs."""
        if self._service.methods:
            raise ConfigError(
                f"plain service {self.queue!r} has a handler already "
                f"({self._service.methods[0]!r}): one handler serves every request"
            )
        try:
            name = topology.check_name("method", getattr(fn, "__name__", None))
        except ConfigError:
            name = _ANONYMOUS  # a lambda, a callable object: any handler will do
        self._service.add(name, fn)
        return fn

    @property
    def method(self) -> str:
        """The handler's name: what metrics and logs call the requests' method."""
        methods = self._service.methods
        if not methods:
            raise ConfigError(f"plain service {self.queue!r} has no handler")
        return methods[0]

    @property
    def run(self) -> Handler:
        """The handler; ConfigError if none was registered."""
        handler = self._service.get(self.method)
        if handler is None:  # pragma: no cover - method names a registered handler
            raise ConfigError(f"plain service {self.queue!r} has no handler")
        return handler

    @property
    def methods(self) -> list[str]:
        return self._service.methods

    # Hooks, resources and middleware are those of any Service, and work the same way: the
    # handler gets its resources as keyword-only parameters, middleware sees the decoded body.

    def on_startup(self, hook: K) -> K:
        """As ``Service.on_startup``."""
        return self._service.on_startup(hook)

    def on_shutdown(self, hook: K) -> K:
        """As ``Service.on_shutdown``."""
        return self._service.on_shutdown(hook)

    def middleware(self, mw: M) -> M:
        """As ``Service.middleware``."""
        return self._service.middleware(mw)

    @property
    def startup_hooks(self) -> list[Hook]:
        return self._service.startup_hooks

    @property
    def shutdown_hooks(self) -> list[Hook]:
        return self._service.shutdown_hooks

    @property
    def middleware_chain(self) -> list[Callable[..., Any]]:
        return self._service.middleware_chain

    def spec(self, method: str) -> MethodSpec | None:
        return self._service.spec(method)

    def resource_parameters(self, method: str) -> dict[str, bool]:
        return self._service.resource_parameters(method)

    def get(self, method: str) -> Handler | None:
        return self._service.get(method)

    def is_async(self, method: str) -> bool:
        return self._service.is_async(method)

    def is_inline(self, method: str) -> bool:
        return self._service.is_inline(method)  # never: its handler takes no options

    @property
    def has_async(self) -> bool:
        return self._service.has_async

    @property
    def has_sync(self) -> bool:
        return self._service.has_sync


def queue_of(service: Service | PlainService, settings: Settings) -> str:
    """The queue a worker of ``service`` consumes: a plain service's own name, else the
    prefixed one."""
    if isinstance(service, PlainService):
        return service.queue
    return settings.request_queue(service.name)


def classify(
    delivery: admission.Delivery, service: PlainService, settings: Settings
) -> Handler | envelope.ErrorInfo:
    """The handler for a plain request, or why it has none: only its size is judged (it has
    no method or content type to check)."""
    return admission.too_large(delivery, settings) or service.run


def declare_steps(
    channel: Channel,
    settings: Settings,
    queue: str,
    *,
    prefetch: int,
    open_channel: Callable[[Callable[[Channel], None]], None],
    confirm: Step,
    consume: Step,
) -> list[Step]:
    """QoS, confirms, the queue as it is (or declared, if missing), then consuming."""
    return [
        lambda done: channel.qos(prefetch, done),
        confirm,
        lambda done: _take_queue(channel, settings, queue, open_channel, done),
        consume,
    ]


def _take_queue(
    channel: Channel,
    settings: Settings,
    queue: str,
    open_channel: Callable[[Callable[[Channel], None]], None],
    done: Callable[[], None],
) -> None:
    """``done()`` once ``queue`` exists: as it is if a passive declare finds it, else
    declared. Any other refusal is left to consuming, on the worker's own channel, to report."""
    answered = False

    def look(extra: Channel) -> None:
        def found(_info: QueueInfo) -> None:
            nonlocal answered
            answered = True
            extra.close()
            done()

        def refused(_extra: Channel, failure: Failure) -> None:
            nonlocal answered
            if answered or failure.with_connection or not channel.is_open:
                return
            answered = True
            if failure.code != _NOT_FOUND:
                done()
                return
            channel.declare_queue(
                queue,
                durable=True,
                arguments={"x-queue-type": settings.queue_type},
                on_ok=lambda _info: done(),
            )

        extra.on_close(refused)
        extra.declare_queue(queue, passive=True, on_ok=found)

    open_channel(look)


def execute_plain(
    job: Job, *, service: str = "", max_bytes: int | None = None, probe: Probe = _NO_PROBE
) -> bytes:
    """Run a plain handler (on the calling thread); always return a reply body."""
    call = _PlainCall.start(job, asynchronous=False)
    if isinstance(call, bytes):
        return call
    body = execute(call.job, service=service, max_bytes=max_bytes, probe=probe)
    return call.reply(body, max_bytes)


async def execute_plain_async(
    job: Job, *, service: str = "", max_bytes: int | None = None, probe: Probe = _NO_PROBE
) -> bytes:
    """Await a plain async handler (on the handler loop); always return a reply body."""
    call = _PlainCall.start(job, asynchronous=True)
    if isinstance(call, bytes):
        return call
    body = await execute_async(call.job, service=service, max_bytes=max_bytes, probe=probe)
    return call.reply(body, max_bytes)


class _PlainCall:
    """One plain request on its way through ``execute``: the job it runs as (its handler
    wrapped), and the handler's own result, kept aside."""

    def __init__(self, job: Job, value: Any, *, asynchronous: bool) -> None:
        self._handler = job.handler
        self._value = value
        self._method = job.method
        self.result: Any = _NO_RESULT
        wrapped = self._run_async if asynchronous else self._run
        self.job = dataclasses.replace(job, body=_NO_PAYLOAD, handler=wrapped)

    @classmethod
    def start(cls, job: Job, *, asynchronous: bool) -> _PlainCall | bytes:
        """The call, or the error reply for a body that is not what its content type says."""
        content_type = job.delivery.properties.content_type if job.delivery else None
        try:
            value = decode_request(job.body, content_type)
        except SerializationError as exc:  # not run: it may be sent again, corrected
            error = envelope.ErrorInfo(envelope.BAD_REQUEST, "BadRequest", str(exc))
            return NotRun(envelope.error_body(error))
        return cls(job, value, asynchronous=asynchronous)

    def _run(self, _payload: None) -> Any:
        result = self._handler(self._value)
        if inspect.isawaitable(result):
            return result  # execute refuses it: the handler should be `async def`
        self.result = result
        return None

    async def _run_async(self, _payload: None) -> None:
        self.result = await self._handler(self._value)

    def reply(self, body: bytes, max_bytes: int | None) -> bytes:
        """The reply: ``body`` (execute's error reply) if the handler failed, else its result
        as a plain body."""
        if self.result is _NO_RESULT:
            return body
        try:
            data, content_type = encode_result(self.result)
        except SerializationError as exc:
            return self._error("SerializationError", f"is not bytes, text or JSON: {exc}")
        if max_bytes is not None and len(data) > max_bytes:
            return self._error("MessageTooLarge", f"of {len(data)} bytes exceeds {max_bytes=}")
        return PlainReply(data, content_type)

    def _error(self, kind: str, what: str) -> bytes:
        message = f"the result of {self._method!r} {what}"
        return envelope.error_body(envelope.ErrorInfo(envelope.HANDLER_ERROR, kind, message))
