"""Drive a transport (``reqrep.common._transport``) from a test's thread, for either transport.

A ``Client`` is one connection: its loop runs on a thread of its own (with ``hosted``, an asyncio
event loop the connection is hosted on, as a native AsyncRequestor's is), and the test hands it
work (``call_soon_threadsafe``) and waits for the answers on futures and queues, each with a
timeout: no sleeps. A ``Chan`` is one channel of it: each method starts the AMQP operation on
the loop thread and waits for the broker's answer, or raises ``ChannelClosed`` when the broker
closes the channel instead (AMQP's way of refusing). What the broker sends unasked (deliveries,
returns, confirms, cancels) lands in queues the test reads with ``take``.

Threads: a test calls everything here from its own thread; the callbacks the transport makes
run on the client's loop thread and only put results where the test waits for them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from reqrep.common._transport import (
    AsyncioLoop,
    Channel,
    Confirm,
    Connection,
    Delivery,
    Failure,
    Properties,
    QueueInfo,
    Returned,
    Transport,
)

__all__ = [
    "TIMEOUT",
    "Chan",
    "ChannelClosed",
    "Client",
    "ConnectFailed",
    "HostedLoopThread",
    "LoopThread",
    "take",
]

T = TypeVar("T")
TIMEOUT = 5.0  # seconds any single wait may take before the test fails


def take(source: queue.Queue[T], timeout: float = TIMEOUT) -> T:
    """The next item of ``source``; AssertionError if none comes within ``timeout``."""
    try:
        return source.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"nothing arrived within {timeout}s") from None


def drained(source: queue.Queue[T]) -> list[T]:
    """What ``source`` holds now, without waiting."""
    items: list[T] = []
    while True:
        try:
            items.append(source.get_nowait())
        except queue.Empty:
            return items


class ChannelClosed(Exception):
    """The broker closed the channel instead of answering."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.text)
        self.failure = failure


class ConnectFailed(Exception):
    """``on_open_failed`` came instead of ``on_open``."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.text)
        self.failure = failure


class LoopThread:
    """A transport's loop, run by a thread of its own until ``stop``.

    An exception a callback raises ends ``run`` (pika's rule): it is kept in ``errors`` and
    the loop runs on, so that a test can assert there were none.
    """

    def __init__(self, transport: Transport, name: str) -> None:
        self.loop = transport.new_loop()
        self.errors: list[BaseException] = []
        self.stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.loop.run()
            except Exception as exc:  # noqa: BLE001 - kept for the test to see
                self.errors.append(exc)
            else:
                return

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def submit(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def call(self, fn: Callable[[], T], timeout: float = TIMEOUT) -> T:
        """``fn()`` run on the loop thread; its result, or its exception re-raised here."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting test
                future.set_exception(exc)

        self.submit(run)
        return future.result(timeout)

    def stop(self, timeout: float = TIMEOUT) -> None:
        self.stopped = True
        self.submit(self.loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the loop thread {self._thread.name} did not stop")
        self.loop.close()


class HostedLoopThread(LoopThread):
    """An asyncio event loop run by a thread of its own, as an ``AsyncioLoop``: a connection
    made on it is hosted there (pika's ``AsyncioConnection``). An exception a callback raises
    reaches the loop's exception handler, which keeps it in ``errors``."""

    def __init__(self, _transport: Transport, name: str) -> None:
        self.errors: list[BaseException] = []
        self.stopped = False
        self.asyncio = asyncio.new_event_loop()
        self.asyncio.set_exception_handler(self._on_error)
        made: Future[AsyncioLoop] = Future()
        self.asyncio.call_soon(lambda: made.set_result(AsyncioLoop(self.asyncio)))
        self._thread = threading.Thread(target=self.asyncio.run_forever, name=name, daemon=True)
        self._thread.start()
        self.loop = made.result(TIMEOUT)  # made on the loop's thread, which it belongs to

    def _on_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.errors.append(error if error is not None else RuntimeError(context["message"]))

    def stop(self, timeout: float = TIMEOUT) -> None:
        self.stopped = True
        self.submit(self.loop.close)
        self.asyncio.call_soon_threadsafe(self.asyncio.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the loop thread {self._thread.name} did not stop")
        self.asyncio.close()


class Client:
    """One connection through ``transport``; raises ConnectFailed if it does not open. With
    ``hosted``, the connection lives on an asyncio loop (``HostedLoopThread``)."""

    def __init__(
        self,
        transport: Transport,
        url: str,
        settings: Any,
        name: str = "harness",
        *,
        hosted: bool = False,
    ) -> None:
        self.io = (HostedLoopThread if hosted else LoopThread)(transport, f"{name}-io")
        self.closed: Future[Failure] = Future()
        self.blocked: queue.Queue[str] = queue.Queue()
        self.unblocked: queue.Queue[None] = queue.Queue()
        opened: Future[None] = Future()
        address = transport.address(settings, url, name)

        def failed(_connection: Connection, failure: Failure) -> None:
            opened.set_exception(ConnectFailed(failure))

        def connect() -> Connection:
            return transport.connect(
                self.io.loop,
                address,
                on_open=lambda _c: opened.set_result(None),
                on_open_failed=failed,
                on_closed=lambda _c, failure: self.closed.set_result(failure),
                on_blocked=lambda _c, reason: self.blocked.put(reason),
                on_unblocked=lambda _c: self.unblocked.put(None),
            )

        try:
            self.connection = self.io.call(connect)
            opened.result(TIMEOUT)
        except BaseException:
            self.io.stop()
            raise

    def channel(self) -> Chan:
        made: Future[Chan] = Future()
        self.io.call(
            lambda: self.connection.open_channel(lambda ch: made.set_result(Chan(self, ch)))
        )
        return made.result(TIMEOUT)

    def is_open(self) -> bool:
        return self.io.call(lambda: self.connection.is_open)

    def close(self) -> Failure:
        """Close the connection and wait for ``on_closed``; stop the loop thread."""
        if not self.closed.done():
            self.io.call(self.connection.close)
        failure = self.closed.result(TIMEOUT)
        self.io.stop()
        return failure

    def abandon(self) -> None:
        self.io.call(self.connection.abandon)
        self.io.stop()


class Consumer:
    """One consumer: its tag and what it is delivered."""

    def __init__(self, tag: str, deliveries: queue.Queue[Delivery]) -> None:
        self.tag = tag
        self.deliveries = deliveries

    def next(self, timeout: float = TIMEOUT) -> Delivery:
        return take(self.deliveries, timeout)


class Chan:
    """One channel of a ``Client`` (made on the loop thread by ``Client.channel``)."""

    def __init__(self, client: Client, channel: Channel) -> None:
        self.client = client
        self.channel = channel
        self.failure: Failure | None = None
        self.closed: Future[Failure] = Future()
        self.returns: queue.Queue[Returned] = queue.Queue()
        self.confirms: queue.Queue[Confirm] = queue.Queue()
        self.cancels: queue.Queue[str] = queue.Queue()
        self.events: list[str] = []  # the order things arrived in, for ordering checks
        self._pending: list[Future[Any]] = []
        channel.on_close(self._on_close)
        channel.on_return(self._on_return)
        channel.on_cancel(self._on_cancel)

    # -- callbacks (loop thread) -------------------------------------------------------------------

    def _on_close(self, _channel: Channel, failure: Failure) -> None:
        self.failure = failure
        self.events.append("closed")
        self.closed.set_result(failure)
        for future in self._pending:
            if not future.done():
                future.set_exception(ChannelClosed(failure))

    def _on_return(self, returned: Returned) -> None:
        self.events.append(f"return {returned.routing_key}")
        self.returns.put(returned)

    def _on_cancel(self, tag: str) -> None:
        self.events.append(f"cancel {tag}")
        self.cancels.put(tag)

    def _on_confirm(self, confirm: Confirm) -> None:
        self.events.append(f"confirm {confirm.tag} {'ack' if confirm.ack else 'nack'}")
        self.confirms.put(confirm)

    # -- the test's thread -------------------------------------------------------------------------

    def _ask(self, start: Callable[[Callable[..., None]], None]) -> Any:
        """Run ``start(answer)`` on the loop and wait for ``answer``, or ChannelClosed."""
        future: Future[Any] = Future()

        def answer(*args: Any) -> None:
            if not future.done():
                future.set_result(args[0] if args else None)

        def begin() -> None:
            if self.failure is not None:
                raise ChannelClosed(self.failure)
            self._pending.append(future)
            start(answer)

        try:
            self.client.io.call(begin)
            return future.result(TIMEOUT)
        finally:
            self.client.io.call(
                lambda: self._pending.remove(future) if future in self._pending else None
            )

    def declare_queue(self, name: str, **options: Any) -> QueueInfo:
        info: QueueInfo = self._ask(
            lambda ok: self.channel.declare_queue(name, on_ok=ok, **options)
        )
        return info

    def declare_exchange(self, name: str, kind: str = "direct", *, durable: bool = False) -> None:
        self._ask(
            lambda ok: self.channel.declare_exchange(name, kind=kind, durable=durable, on_ok=ok)
        )

    def bind(self, queue_name: str, exchange: str, routing_key: str) -> None:
        self._ask(lambda ok: self.channel.bind_queue(queue_name, exchange, routing_key, ok))

    def delete_queue(self, name: str) -> None:
        self._ask(lambda ok: self.channel.delete_queue(name, ok))

    def delete_exchange(self, name: str) -> None:
        self._ask(lambda ok: self.channel.delete_exchange(name, ok))

    def purge(self, name: str) -> int:
        count: int = self._ask(lambda ok: self.channel.purge_queue(name, ok))
        return count

    def qos(self, prefetch: int) -> None:
        self._ask(lambda ok: self.channel.qos(prefetch, ok))

    def confirm(self) -> None:
        self._ask(lambda ok: self.channel.confirm(self._on_confirm, ok))

    def get(self, queue_name: str) -> Delivery | None:
        delivery: Delivery | None = self._ask(lambda ok: self.channel.get(queue_name, ok))
        return delivery

    def consume(
        self, queue_name: str, *, auto_ack: bool = False, exclusive: bool = False
    ) -> Consumer:
        deliveries: queue.Queue[Delivery] = queue.Queue()

        def delivered(delivery: Delivery) -> None:
            self.events.append(f"delivery {delivery.body!r}")
            deliveries.put(delivery)

        def start(ok: Callable[[str], None]) -> None:
            self.channel.consume(
                queue_name, delivered, auto_ack=auto_ack, exclusive=exclusive, on_ok=ok
            )

        tag: str = self._ask(start)
        return Consumer(tag, deliveries)

    def cancel(self, tag: str) -> None:
        """Cancel the consumer and wait for ``on_ok`` (noted in ``events``)."""

        def start(ok: Callable[[], None]) -> None:
            def cancelled() -> None:
                self.events.append("cancel-ok")
                ok()

            self.channel.cancel(tag, cancelled)

        self._ask(start)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties | None = None,
        *,
        mandatory: bool = False,
    ) -> None:
        self.client.io.call(
            lambda: self.channel.publish(
                exchange, routing_key, body, properties or Properties(), mandatory=mandatory
            )
        )

    def next_confirm(self, timeout: float = TIMEOUT) -> Confirm:
        return take(self.confirms, timeout)

    def ack(self, tag: int, *, multiple: bool = False) -> None:
        self.client.io.call(lambda: self.channel.ack(tag, multiple=multiple))

    def nack(self, tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        self.client.io.call(lambda: self.channel.nack(tag, multiple=multiple, requeue=requeue))

    def reject(self, tag: int, *, requeue: bool) -> None:
        self.client.io.call(lambda: self.channel.reject(tag, requeue=requeue))

    def is_open(self) -> bool:
        return self.client.io.call(lambda: self.channel.is_open)

    def close(self) -> Failure:
        self.client.io.call(self.channel.close)
        return self.closed.result(TIMEOUT)

    def expect_closed(self, timeout: float = TIMEOUT) -> Failure:
        """The failure the channel closed with (waiting for it)."""
        return self.closed.result(timeout)

    def sync(self) -> None:
        """A round trip to the broker on this channel: whatever the broker sent on it before
        answering has arrived when this returns."""
        self.declare_exchange("amq.direct", "direct", durable=True)
