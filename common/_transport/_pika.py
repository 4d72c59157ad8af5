"""The pika transport: reqrep's seam (``_api.py``) over pika's ``SelectConnection``, or over
its ``AsyncioConnection`` for a connection hosted on a caller's asyncio loop (``AsyncioLoop``).

The only module of reqrep, with ``_pika_fast.py`` and ``_pika_codec.py`` beside it, that
imports pika (``tests/unit/test_layers.py`` checks it). It turns pika's objects into reqrep's
types both ways, and pika's exceptions into one-line ``Failure``s with every secret scrubbed.

Which pika: the short roads and the guard of ``_pika_fast.py`` work with pika's internals, which
pika does not promise to keep. They are on only for the pika versions CI tests
(``TESTED_PIKA``); on any other version reqrep logs one line and uses pika as it ships.
``REQREP_PIKA_FASTPATH=0`` turns the short roads off (the guard stays: it is what keeps an
undecodable message from dropping the connection).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.select_connection import IOLoop, SelectConnection
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

from reqrep.common import tls
from reqrep.common._transport._asyncio_loop import AsyncioLoop
from reqrep.common._transport._pika_codec import (
    ack_frame,
    from_pika,
    publish_frames,
    to_pika,
)
from reqrep.common._transport._pika_fast import (
    Consumer,
    ReqrepAsyncioConnection,
    ReqrepConnection,
    ShortRoads,
    undecodable_stand_in,
)
from reqrep.common._transport._types import (
    Confirm,
    Delivery,
    Failure,
    Properties,
    PublishError,
    QueueInfo,
    Returned,
)
from reqrep.common.addresses import redact_url
from reqrep.common.errors import ConfigError

__all__ = ["TESTED_PIKA", "PikaTransport", "ReqrepConnection"]

log = logging.getLogger("reqrep.connection")

# The pika releases CI runs the whole suite on (the lowest pyproject allows, and the newest).
TESTED_PIKA = ("1.3.2", "1.4.4")
FASTPATH_ENV = "REQREP_PIKA_FASTPATH"

_warned_untested = False


def _modes(environ: Mapping[str, str]) -> tuple[bool, bool]:
    """(guard, fast) for this process's pika and environment."""
    global _warned_untested  # noqa: PLW0603 - one log line per process, not per connection
    if pika.__version__ not in TESTED_PIKA:
        if not _warned_untested:
            _warned_untested = True
            log.info(
                "pika %s is not one CI tests (%s): using pika as it ships, without reqrep's "
                "short roads and undecodable-message guard",
                pika.__version__,
                ", ".join(TESTED_PIKA),
            )
        return False, False
    fast = environ.get(FASTPATH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    return True, fast


class PikaAddress:
    """pika's parameters for one broker URL, and the secrets to scrub from its errors."""

    def __init__(self, parameters: Any, url: str, secrets: tuple[str, ...]) -> None:
        self.parameters = parameters
        self.shown = redact_url(url)
        self._secrets = secrets

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class PikaTransport:
    """Connections through pika (see the module docstring).

    ``fast`` and ``guard`` default to what this pika and ``REQREP_PIKA_FASTPATH`` allow.
    Threads: as ``Transport`` says.
    """

    name = "pika"

    def __init__(
        self, *, fast: bool | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        guard, allowed = _modes(os.environ if environ is None else environ)
        self.guard = guard
        self.fast = allowed if fast is None else (fast and guard)

    def __repr__(self) -> str:
        return f"<PikaTransport pika={pika.__version__} guard={self.guard} fast={self.fast}>"

    def address(self, settings: Any, url: str, connection_name: str) -> PikaAddress:
        return PikaAddress(
            parameters(settings, url, connection_name),
            url,
            tuple(s for s in (_password(url), settings.tls_key_password) if s),
        )

    def new_loop(self) -> PikaLoop:
        return PikaLoop()

    def connect(
        self,
        loop: Any,
        address: Any,
        *,
        on_open: Callable[[Any], None],
        on_open_failed: Callable[[Any, Failure], None],
        on_closed: Callable[[Any, Failure], None],
        on_blocked: Callable[[Any, str], None],
        on_unblocked: Callable[[Any], None],
    ) -> PikaConnection:
        return PikaConnection(
            self,
            loop,
            address,
            on_open=on_open,
            on_open_failed=on_open_failed,
            on_closed=on_closed,
            on_blocked=on_blocked,
            on_unblocked=on_unblocked,
        )


class PikaLoop:
    """pika's ``IOLoop`` as a ``Loop``."""

    def __init__(self) -> None:
        self.ioloop = IOLoop()

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        return self.ioloop.call_later(delay, fn)

    def cancel(self, handle: object) -> None:
        self.ioloop.remove_timeout(handle)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self.ioloop.add_callback_threadsafe(fn)

    def run(self) -> None:
        self.ioloop.start()

    def stop(self) -> None:
        self.ioloop.stop()

    def close(self) -> None:
        self.ioloop.close()


class PikaConnection:
    """One ``ReqrepConnection`` (or plain ``SelectConnection``) as a ``Connection``; on an
    ``AsyncioLoop``, a ``ReqrepAsyncioConnection`` (or plain ``AsyncioConnection``)."""

    def __init__(
        self,
        transport: PikaTransport,
        loop: PikaLoop | AsyncioLoop,
        address: PikaAddress,
        *,
        on_open: Callable[[Any], None],
        on_open_failed: Callable[[Any, Failure], None],
        on_closed: Callable[[Any, Failure], None],
        on_blocked: Callable[[Any, str], None],
        on_unblocked: Callable[[Any], None],
    ) -> None:
        self._address = address
        self._fast = transport.fast
        self._on_blocked = on_blocked
        self._on_unblocked = on_unblocked
        self.hosted = isinstance(loop, AsyncioLoop)
        callbacks: dict[str, Any] = {
            "on_open_callback": lambda _c: self._opened(on_open),
            "on_open_error_callback": lambda _c, exc: on_open_failed(self, self._failure(exc)),
            "on_close_callback": lambda _c, exc: on_closed(self, self._failure(exc)),
            "custom_ioloop": loop.loop if isinstance(loop, AsyncioLoop) else loop.ioloop,
        }
        if transport.guard:
            kind = ReqrepAsyncioConnection if self.hosted else ReqrepConnection
            self.pika = kind(address.parameters, guard=True, fast=transport.fast, **callbacks)
        elif self.hosted:
            self.pika = AsyncioConnection(address.parameters, **callbacks)
        else:
            self.pika = SelectConnection(address.parameters, **callbacks)

    def _opened(self, on_open: Callable[[Any], None]) -> None:
        self.pika.add_on_connection_blocked_callback(self._blocked)
        self.pika.add_on_connection_unblocked_callback(lambda _c, _f: self._on_unblocked(self))
        on_open(self)

    def _blocked(self, _connection: Any, frame: Any) -> None:
        reason = getattr(frame.method, "reason", "") or "resource alarm"
        self._on_blocked(self, str(reason))

    def _failure(self, exc: BaseException) -> Failure:
        return failure_of(exc, self._address)

    @property
    def is_open(self) -> bool:
        return bool(self.pika.is_open)

    def open_channel(self, on_open: Callable[[Any], None]) -> None:
        try:
            self.pika.channel(on_open_callback=lambda ch: on_open(PikaChannel(self, ch)))
        except pika.exceptions.AMQPError as exc:
            raise PublishError(f"cannot open a channel: {type(exc).__name__}") from None

    def close(self) -> None:
        if not (self.pika.is_closing or self.pika.is_closed):
            self.pika.close()

    def abandon(self) -> None:
        if self.hosted:
            # The event loop goes on: pika must take the socket out of it before closing it
            # (a closed descriptor left registered would confuse the loop's selector).
            with contextlib.suppress(Exception):
                self.pika._adapter_disconnect_stream()  # pika internals: drop, no close frame
            return
        transport = getattr(self.pika, "_transport", None)  # pika internals, if present
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def hold_writes(self) -> None:
        if self._fast:
            self.pika.hold_writes()

    def flush_writes(self) -> None:
        if self._fast:
            self.pika.flush_writes()


def _closed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A method of PikaChannel whose pika errors (the channel is not open) become PublishError:
    no pika type crosses the seam."""

    def call(self: PikaChannel, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except pika.exceptions.AMQPError as exc:
            raise PublishError(f"channel not usable: {type(exc).__name__}") from None

    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


class PikaChannel:
    """One pika ``Channel`` as a ``Channel``."""

    def __init__(self, connection: PikaConnection, channel: Any) -> None:
        self._connection = connection
        self._channel = channel
        self._fast = connection._fast
        self._getting: list[Callable[[Delivery | None], None]] = []  # basic.get in flight
        self._get_empty_registered = False

    def __repr__(self) -> str:
        return f"<PikaChannel {self.number} open={self.is_open}>"

    @property
    def number(self) -> int:
        return int(self._channel.channel_number)

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    def on_close(self, fn: Callable[[Any, Failure], None]) -> None:
        self._channel.add_on_close_callback(
            lambda _ch, reason: fn(self, failure_of(reason, self._connection._address))
        )

    def on_return(self, fn: Callable[[Returned], None]) -> None:
        def returned(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            fn(
                Returned(
                    method.reply_code,
                    str(method.reply_text),
                    str(method.exchange),
                    str(method.routing_key),
                    from_pika(properties, undecodable_stand_in(properties)),
                    body,
                )
            )

        self._channel.add_on_return_callback(returned)

    def on_cancel(self, fn: Callable[[str], None]) -> None:
        self._channel.add_on_cancel_callback(lambda frame: fn(frame.method.consumer_tag))

    @_closed
    def qos(self, prefetch: int, on_ok: Callable[[], None]) -> None:
        self._channel.basic_qos(prefetch_count=prefetch, callback=lambda _f: on_ok())

    @_closed
    def confirm(self, on_confirm: Callable[[Confirm], None], on_ok: Callable[[], None]) -> None:
        def confirmed(frame: Any) -> None:
            method = frame.method
            on_confirm(
                Confirm(
                    method.delivery_tag, bool(method.multiple), isinstance(method, spec.Basic.Ack)
                )
            )

        self._channel.confirm_delivery(confirmed, callback=lambda _f: on_ok())
        if isinstance(self._connection.pika, ShortRoads):
            self._connection.pika.confirms_on_short_road(self._channel, on_confirm)

    @_closed
    def declare_exchange(
        self, name: str, *, kind: str, durable: bool, on_ok: Callable[[], None]
    ) -> None:
        self._channel.exchange_declare(
            name, exchange_type=kind, durable=durable, callback=lambda _f: on_ok()
        )

    @_closed
    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        on_ok: Callable[[QueueInfo], None],
    ) -> None:
        def declared(frame: Any) -> None:
            ok = frame.method
            on_ok(QueueInfo(str(ok.queue), int(ok.message_count), int(ok.consumer_count)))

        self._channel.queue_declare(
            name,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=dict(arguments) if arguments is not None else None,
            callback=declared,
        )

    @_closed
    def bind_queue(
        self, queue: str, exchange: str, routing_key: str, on_ok: Callable[[], None]
    ) -> None:
        self._channel.queue_bind(
            queue, exchange, routing_key=routing_key, callback=lambda _f: on_ok()
        )

    @_closed
    def delete_queue(self, name: str, on_ok: Callable[[], None]) -> None:
        self._channel.queue_delete(name, callback=lambda _f: on_ok())

    @_closed
    def delete_exchange(self, name: str, on_ok: Callable[[], None]) -> None:
        self._channel.exchange_delete(name, callback=lambda _f: on_ok())

    @_closed
    def purge_queue(self, name: str, on_ok: Callable[[int], None]) -> None:
        self._channel.queue_purge(name, callback=lambda f: on_ok(int(f.method.message_count)))

    @_closed
    def consume(
        self,
        queue: str,
        on_delivery: Callable[[Delivery], None],
        *,
        auto_ack: bool = False,
        exclusive: bool = False,
        on_ok: Callable[[str], None],
    ) -> str:
        return str(
            self._channel.basic_consume(
                queue,
                Consumer(on_delivery),
                auto_ack=auto_ack,
                exclusive=exclusive,
                callback=lambda f: on_ok(str(f.method.consumer_tag)),
            )
        )

    @_closed
    def cancel(self, consumer_tag: str, on_ok: Callable[[], None]) -> None:
        self._channel.basic_cancel(consumer_tag, callback=lambda _f: on_ok())

    @_closed
    def get(self, queue: str, on_result: Callable[[Delivery | None], None]) -> None:
        if not self._get_empty_registered:
            self._get_empty_registered = True
            self._channel.add_callback(self._got_empty, [spec.Basic.GetEmpty], one_shot=False)
        self._getting.append(on_result)
        self._channel.basic_get(queue, self._got, auto_ack=False)

    def _got(self, _ch: Any, method: Any, properties: Any, body: bytes) -> None:
        self._getting.pop(0)(
            Delivery(
                method.delivery_tag,
                bool(method.redelivered),
                method.exchange,
                method.routing_key,
                from_pika(properties, undecodable_stand_in(properties)),
                body,
            )
        )

    def _got_empty(self, _frame: Any) -> None:
        self._getting.pop(0)(None)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = False,
    ) -> None:
        channel = self._channel
        try:
            if self._fast:
                channel._raise_if_not_open()
                connection = channel.connection
                connection._output_marshaled_frames(
                    [
                        publish_frames(
                            channel.channel_number,
                            exchange,
                            routing_key,
                            body,
                            properties,
                            mandatory=mandatory,
                            body_max=connection._body_max_length,
                        )
                    ]
                )
            else:
                channel.basic_publish(
                    exchange, routing_key, body, to_pika(properties), mandatory=mandatory
                )
        except pika.exceptions.AMQPError as exc:
            raise PublishError(f"not published: {type(exc).__name__}") from None

    @_closed
    def ack(self, tag: int, *, multiple: bool = False) -> None:
        channel = self._channel
        if self._fast:
            channel._raise_if_not_open()
            channel.connection._output_marshaled_frames(
                [ack_frame(channel.channel_number, tag, multiple=multiple)]
            )
        else:
            channel.basic_ack(tag, multiple)

    @_closed
    def nack(self, tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        self._channel.basic_nack(tag, multiple=multiple, requeue=requeue)

    @_closed
    def reject(self, tag: int, *, requeue: bool) -> None:
        self._channel.basic_reject(tag, requeue=requeue)

    def close(self) -> None:
        if self._channel.is_open:
            self._channel.close()


# -- parameters and failures --------------------------------------------------------------------


def parameters(settings: Any, url: str, name: str) -> Any:
    """pika's parameters for one URL. Overridden whatever the URL says: ``connection_attempts``
    and ``retry_delay`` (reqrep retries itself, across all addresses, with backoff) and
    ``client_properties``; ``heartbeat``, ``socket_timeout`` and ``stack_timeout`` only where
    the URL does not set them (REQREP_HEARTBEAT, and connect_timeout)."""
    try:
        params = pika.URLParameters(url)
    except Exception as exc:  # noqa: BLE001 - pika raises assorted types for a bad URL
        # pika's text may quote the ssl_options argument, which can hold a key password.
        why = type(exc).__name__ if "ssl_options" in url else str(exc)
        raise ConfigError(f"invalid AMQP URL {redact_url(url)!r}: {why}") from None
    if "heartbeat=" not in url:
        params.heartbeat = settings.heartbeat
    params.connection_attempts = 1  # we retry ourselves, with backoff and a deadline
    params.retry_delay = 0
    if "socket_timeout=" not in url:
        params.socket_timeout = settings.connect_timeout
    if "stack_timeout=" not in url:
        params.stack_timeout = settings.connect_timeout
    params.client_properties = {"connection_name": name, "product": "reqrep"}
    if tls.uses_tls_settings(settings):
        if params.ssl_options is None:
            raise ConfigError(
                f"TLS settings (REQREP_TLS_*) need an amqps:// URL, got {settings.redacted_url!r}"
            )
        params.ssl_options = pika.SSLOptions(
            tls.tls_context(settings), server_hostname=settings.tls_server_name or params.host
        )
    return params


def failure_of(exc: BaseException, address: PikaAddress | None = None) -> Failure:
    """A one-line ``Failure`` for a pika exception, secrets scrubbed."""
    root = root_cause(exc)
    code: int | None = None
    by_broker = False
    with_connection = False
    refused = tls.is_tls_error(root) or isinstance(
        root,
        pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError,
    )
    if tls.is_tls_error(root):
        text = tls.describe_tls_error(root)
    elif isinstance(root, pika.exceptions.ProbableAuthenticationError):
        text = "login refused (check the user name and password)"
    elif isinstance(root, pika.exceptions.ProbableAccessDeniedError):
        text = "access refused (check the vhost and the user's permissions)"
    elif isinstance(root, AMQPConnectorStackTimeout):
        text = "timed out while connecting"
    elif isinstance(root, pika.exceptions.ChannelClosed):
        code, text = int(root.reply_code), f"{root.reply_code} {root.reply_text}"
        by_broker = isinstance(root, pika.exceptions.ChannelClosedByBroker)
    elif isinstance(root, pika.exceptions.ConnectionClosed):
        code, text = int(root.reply_code), f"{root.reply_code} {root.reply_text}"
        by_broker = isinstance(root, pika.exceptions.ConnectionClosedByBroker)
        with_connection = True
    elif isinstance(root, OSError) and root.strerror:
        text = root.strerror.lower()
        with_connection = True
    else:
        text = f"{type(root).__name__}: {root}"
        with_connection = isinstance(root, pika.exceptions.AMQPConnectionError)
    if address is not None:
        text = address.scrub(text)
    return Failure(
        text, code=code, refused=refused, by_broker=by_broker, with_connection=with_connection
    )


def root_cause(exc: BaseException) -> BaseException:
    """Unwrap pika's layers of connection-workflow wrappers."""
    for _ in range(5):
        if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif isinstance(exc, AMQPConnectorPhaseErrorBase):
            exc = exc.exception
        elif (
            isinstance(exc, pika.exceptions.AMQPConnectionError)
            and len(exc.args) == 1
            and isinstance(exc.args[0], BaseException)
        ):
            exc = exc.args[0]
        else:
            break
    return exc


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None
