"""The RabbitMQ tutorial's RPC (tutorial six, Python), one call at a time.

``python -m bench.cases.tutorial client|server --queue Q ...``

Client: ``BlockingConnection``; an exclusive server-named callback queue consumed with auto-ack;
each call publishes one request with ``reply_to`` and a fresh ``uuid4`` correlation id, then calls
``process_data_events`` until the reply with that id has arrived. Server: ``BlockingConnection``,
prefetch 1, ``start_consuming``; for each request it publishes the reply and then acks.

Two departures from the tutorial's text, neither of which changes what it costs per call: the
server echoes the body instead of computing Fibonacci, and the request queue is declared durable
(its messages stay transient) because RabbitMQ 4.3 refuses transient non-exclusive queues; the
tutorial's ``process_data_events(time_limit=None)`` is ``time_limit=1`` in a bounded loop, which
returns as soon as the reply is there, just the same. ``--outstanding`` is ignored: the
tutorial's client has one call in flight.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from typing import Any

import pika
import pika.adapters.blocking_connection
import pika.spec

from bench.cases import READY_TEXT, Window, amqp_url, arm_deadline, case_parser, raw_body, say

__all__ = ["main"]

CALL_LIMIT = 30.0
"""A call whose reply has not come after this many seconds is counted as an error."""


def _connect() -> pika.BlockingConnection:
    params = pika.URLParameters(amqp_url())
    params.connection_attempts = 3
    params.retry_delay = 1
    return pika.BlockingConnection(params)


def serve(queue: str) -> None:
    connection = _connect()
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)

    def on_request(
        ch: pika.adapters.blocking_connection.BlockingChannel,
        method: pika.spec.Basic.Deliver,
        props: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=body,
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=queue, on_message_callback=on_request)
    # SIGTERM stops consuming from inside the connection's own thread (the main one).
    signal.signal(
        signal.SIGTERM,
        lambda _s, _f: connection.add_callback_threadsafe(channel.stop_consuming),
    )
    say(READY_TEXT)
    try:
        channel.start_consuming()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class RpcClient:
    """The tutorial's ``FibonacciRpcClient``, with an echo body."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.connection = _connect()
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(
            queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True
        )
        self.response: bytes | None = None
        self.corr_id: str | None = None

    def on_response(
        self, _ch: Any, _method: Any, props: pika.spec.BasicProperties, body: bytes
    ) -> None:
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, body: bytes) -> bytes:
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            properties=pika.BasicProperties(
                reply_to=self.callback_queue, correlation_id=self.corr_id
            ),
            body=body,
        )
        limit = time.monotonic() + CALL_LIMIT
        while self.response is None and time.monotonic() < limit:
            self.connection.process_data_events(time_limit=1)
        if self.response is None:
            raise TimeoutError(f"no reply within {CALL_LIMIT:g}s")
        return self.response

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def main() -> None:
    args = case_parser(__doc__ or "").parse_args()
    arm_deadline(args.max_seconds)
    if args.role == "server":
        serve(args.queue)
        return
    window = Window(args.warmup, args.seconds)
    body = raw_body(args.payload)
    client = RpcClient(args.queue)
    try:
        window.begin()
        while window.running():
            started = time.perf_counter()
            try:
                client.call(body)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                window.error(exc)
                if window.errors > 100:
                    break
                continue
            window.done(started, time.perf_counter())
    finally:
        client.close()
    window.report(outstanding=1, unfinished=0)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
