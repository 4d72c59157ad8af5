"""FastStream's request-reply over RabbitMQ, both of the ways its documentation shows.

``python -m bench.cases.faststream_rpc client|server --queue Q --pattern request|reply-to ...``

The server is a FastStream subscriber on Q whose handler returns what it was sent: FastStream
publishes a handler's return value to the request's ``reply_to`` with its ``correlation_id``, on
the broker's channel, which has publisher confirms (FastStream's default) and awaits each one;
the request is acked after that (FastStream's default ack policy), so, as with reqrep, a server
that dies between the reply and the ack leaves the request to be redelivered. The subscriber's
channel has prefetch 256 (the ``raw-pika`` server's); aio-pika runs each delivery's handler as
a task of its own, so up to that many run at once.

Clients, each ``--outstanding`` coroutines awaiting one call after another (as in
``aiopika_rpc``), the payload ``{"payload": <P-byte JSON string>}`` (FastStream encodes a dict
as JSON):

- ``--pattern request``: ``await broker.request(message, queue=Q)``, FastStream's "blocking
  request". It uses RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``): for each call it
  starts a consumer on the pseudo-queue, publishes, waits for the reply, cancels the consumer.
  A direct reply-to consumer takes one reply at a time, so FastStream holds a lock around each
  call: whatever ``--outstanding`` is, one call is in flight per broker object (the others wait
  for the lock, and their latency includes that wait). The reply is decoded (``msg.decode()``).
- ``--pattern reply-to``: the documented "Reply-To" flow: the client has a queue of its own
  (here exclusive, named ``Q.replies.<pid>``) with a FastStream subscriber on it, and publishes
  each request with ``broker.publish(message, queue=Q, reply_to=<that queue>,
  correlation_id=<uuid4 hex>)``; the reply's subscriber (auto-ack) resolves the future kept for
  that correlation id. The future exists before the request is published.

``--durable``: Q is a quorum queue and requests are persistent (``persist=True``), both sides
with publisher confirms: the durability of ``raw-pika-durable`` and reqrep's defaults. Without
it Q is a durable classic queue and requests are transient; confirms stay on (FastStream's
default, as aio-pika's). Replies are transient in both: reqrep's are too, and direct reply-to
keeps nothing.

Per-message logging is off (``logger=None``): FastStream logs every message at INFO by
default, and no other case writes a line per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from bench.cases import (
    READY_TEXT,
    Window,
    amqp_url,
    arm_deadline,
    case_parser,
    json_payload,
    say,
)
from bench.cases._aio import drive

__all__ = ["PATTERNS", "main"]

PATTERNS = ("request", "reply-to")
SERVER_PREFETCH = 256
CALL_LIMIT = 30.0
MAX_ERRORS = 100


def request_queue(name: str, durable: bool) -> RabbitQueue:
    if durable:
        return RabbitQueue(name, queue_type=QueueType.QUORUM, durable=True)
    return RabbitQueue(name, queue_type=QueueType.CLASSIC, durable=True)


async def echo(body: dict[str, Any]) -> dict[str, Any]:
    return body


async def serve(queue: str, durable: bool, max_seconds: float) -> None:
    broker = RabbitBroker(amqp_url(), logger=None, graceful_timeout=2.0)
    subscriber = broker.subscriber(
        request_queue(queue, durable), channel=Channel(prefetch_count=SERVER_PREFETCH)
    )
    subscriber(echo)
    await broker.start()
    try:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        say(READY_TEXT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    finally:
        await broker.stop()


Call = Callable[[], Awaitable[Any]]


def _request_calls(broker: RabbitBroker, queue: str, message: Any, persist: bool) -> Call:
    async def call() -> Any:
        reply = await broker.request(message, queue=queue, persist=persist, timeout=CALL_LIMIT)
        return await reply.decode()

    return call


def _reply_to_calls(broker: RabbitBroker, queue: str, message: Any, persist: bool) -> Call:
    """Register the reply subscriber (before the broker starts) and return the call."""
    pending: dict[str, asyncio.Future[Any]] = {}
    replies = RabbitQueue(f"{queue}.replies.{os.getpid()}", exclusive=True, durable=False)

    async def on_reply(body: dict[str, Any], msg: RabbitMessage) -> None:
        waiter = pending.pop(msg.correlation_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(body)

    subscriber = broker.subscriber(replies, ack_policy=AckPolicy.ACK_FIRST, no_reply=True)
    subscriber(on_reply)

    async def call() -> Any:
        correlation_id = uuid.uuid4().hex
        waiter = pending[correlation_id] = asyncio.get_running_loop().create_future()
        try:
            await broker.publish(
                message,
                queue=queue,
                reply_to=replies.name,
                correlation_id=correlation_id,
                persist=persist,
            )
            return await waiter
        finally:
            pending.pop(correlation_id, None)

    return call


async def run_client(
    queue: str, pattern: str, window: Window, *, durable: bool, outstanding: int, payload_size: int
) -> dict[str, Any]:
    message = {"payload": json_payload(payload_size)}
    broker = RabbitBroker(amqp_url(), logger=None, graceful_timeout=2.0)
    make = _request_calls if pattern == "request" else _reply_to_calls
    call = make(broker, queue, message, durable)
    await broker.start()
    try:
        in_flight = await drive(
            lambda: asyncio.wait_for(call(), timeout=CALL_LIMIT), window, outstanding, MAX_ERRORS
        )
    finally:
        with contextlib.suppress(Exception):
            await broker.stop()
    return {"unfinished": in_flight, "pattern": pattern}


def main() -> None:
    parser = case_parser(__doc__ or "")
    parser.add_argument("--pattern", choices=PATTERNS, default="request")
    args = parser.parse_args()
    arm_deadline(args.max_seconds)
    if args.role == "server":
        asyncio.run(serve(args.queue, args.durable, args.max_seconds))
        return
    window = Window(args.warmup, args.seconds)
    extra = asyncio.run(
        run_client(
            args.queue,
            args.pattern,
            window,
            durable=args.durable,
            outstanding=args.outstanding,
            payload_size=args.payload,
        )
    )
    window.report(outstanding=args.outstanding, **extra)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
