"""The ceiling: request-reply with bare pika on its callback loop (``SelectConnection``).

``python -m bench.cases.raw_pika client|server --queue Q [--durable] ...``

Plain (``raw-pika``): the request queue is a durable classic queue, requests are transient
(delivery_mode 1), nobody uses publisher confirms. The client keeps ``--outstanding`` requests in
flight, reading replies from its exclusive, server-named callback queue with auto-ack; every reply
immediately sends the next request. The server consumes with prefetch 256 and, for each request,
publishes the reply and then acks the request (one ``basic_ack`` per request).

Durable (``raw-pika-durable``): a durable quorum queue, persistent requests (delivery_mode 2)
and publisher confirms on both sides, pipelined: the client never waits for a confirm before
publishing the next request (confirms are counted; a nack is an error). The server publishes each
reply on a confirm channel and acks the request only once the broker has confirmed that reply --
the order reqrep promises, so a crash between the two redelivers the request instead of losing
its reply.

``--tuned`` (the optional ``raw-pika-tuned`` cases) adds the two tricks reqrep itself uses
(so a library evidently can), written independently here so that the baseline uses no library:

- coalesced writes: before each write, join the frames pika has queued into one buffer, so that a
  publish (three frames) and an ack go out in one ``send()`` instead of one each (this replaces
  a private method of pika 1.x);
- batched acks: the acks of one turn of the I/O loop go out as one ``basic_ack(multiple=True)``
  (safe here: requests are answered in order, so every lower tag is settled).

``--reqrep-properties`` (the optional ``raw-pika-durable-tuned-props`` case) sends what reqrep's
wire contract carries besides the body, so that the cost of the protocol can be told from the
cost of the library: requests with a deadline header (``x-deadline``), ``expiration``, a
message id, a type and a content type, published ``mandatory``; replies with a content type
and a type, published ``mandatory``.

Not done in any variant, because a general-purpose library could not do it for arbitrary handlers
and callers: answering before the request is fully received, sharing one channel between client
and server, or precomputing properties.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import time

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec

from bench.cases import (
    DRAIN_SECONDS,
    READY_TEXT,
    Window,
    arm_deadline,
    case_parser,
    raw_body,
    say,
)
from bench.cases._raw_loop import Loop, coalesce_writes

__all__ = ["main"]

SERVER_PREFETCH = 256


_CONTENT_TYPE = "application/json"
_DEADLINE_MS = 30_000  # the deadline of a request sent with --reqrep-properties


class Server(Loop):
    def __init__(
        self, queue: str, durable: bool, *, batch_acks: bool = False, reqrep_props: bool = False
    ) -> None:
        super().__init__(queue, durable)
        self.reqrep_props = reqrep_props
        self.published = 0  # publish sequence numbers on a confirm channel start at 1
        self.awaiting: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.nacked = 0
        self.batch_acks = batch_acks
        self.acks: list[int] = []

    def _ack(self, tag: int) -> None:
        """Ack now, or (batch_acks) with the other acks of this turn of the I/O loop."""
        assert self.channel is not None
        if not self.batch_acks:
            self.channel.basic_ack(tag)
            return
        if not self.acks:
            self.connection.ioloop.call_later(0, self._flush_acks)
        self.acks.append(tag)

    def _flush_acks(self) -> None:
        acks, self.acks = self.acks, []
        if acks and self.channel is not None and self.channel.is_open:
            # Requests are answered in order: every tag below the highest is settled too.
            self.channel.basic_ack(max(acks), multiple=len(acks) > 1)

    def _declared(self) -> None:
        assert self.channel is not None
        self.channel.basic_qos(prefetch_count=SERVER_PREFETCH, callback=lambda _f: self._consume())

    def _consume(self) -> None:
        assert self.channel is not None
        self.channel.basic_consume(
            self.queue, self._on_request, callback=lambda _frame: say(READY_TEXT)
        )

    def _on_request(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        self._answer(method.delivery_tag, properties.reply_to, properties.correlation_id, body)

    def _answer(self, tag: int, reply_to: str, correlation_id: str, body: bytes) -> None:
        """Publish the reply; ack the request now, or (durable) once the reply is confirmed."""
        self._publish_reply(reply_to, correlation_id, body)
        if self.durable:
            self.published += 1
            self.awaiting[self.published] = tag
        else:
            self._ack(tag)

    def _publish_reply(self, reply_to: str, correlation_id: str, body: bytes) -> None:
        assert self.channel is not None
        if self.reqrep_props:
            properties = pika.BasicProperties(
                content_type=_CONTENT_TYPE, type="reply", correlation_id=correlation_id
            )
        else:
            properties = pika.BasicProperties(correlation_id=correlation_id)
        self.channel.basic_publish("", reply_to, body, properties, mandatory=self.reqrep_props)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        """Ack each request whose reply the broker confirmed (nack: requeue the request)."""
        assert self.channel is not None
        confirm = frame.method
        tag = confirm.delivery_tag
        if confirm.multiple:
            done = []
            while self.awaiting:
                seq = next(iter(self.awaiting))
                if seq > tag:
                    break
                done.append(self.awaiting.popitem(last=False)[1])
        else:
            one = self.awaiting.pop(tag, None)
            done = [] if one is None else [one]
        ack = isinstance(confirm, pika.spec.Basic.Ack)
        for request_tag in done:
            if ack:
                self._ack(request_tag)
            else:
                self.nacked += 1
                self.channel.basic_nack(request_tag, requeue=True)


class Requester(Loop):
    """A client's side of the loop, shared with ``raw_threaded``: its callback queue, publishing
    a request, counting confirms. Subclasses say what to do once replies are consumed
    (``_consuming``), with each reply (``_on_reply``) and with a nack (``_nacked``)."""

    def __init__(self, queue: str, durable: bool, *, reqrep_props: bool = False) -> None:
        super().__init__(queue, durable)
        self.reqrep_props = reqrep_props
        self.reply_queue = ""
        self.published = 0
        self.confirmed = 0
        self.nacked = 0

    def _declared(self) -> None:
        assert self.channel is not None
        self.channel.queue_declare("", exclusive=True, callback=self._on_reply_queue)

    def _on_reply_queue(self, frame: pika.frame.Method) -> None:
        assert self.channel is not None
        self.reply_queue = frame.method.queue
        self.channel.basic_consume(
            self.reply_queue, self._on_reply, auto_ack=True, callback=lambda _f: self._consuming()
        )

    def _consuming(self) -> None:
        raise NotImplementedError

    def _on_reply(
        self,
        channel: pika.channel.Channel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        raise NotImplementedError

    def _send(self, correlation_id: str, body: bytes) -> None:
        assert self.channel is not None
        properties = pika.BasicProperties(
            reply_to=self.reply_queue,
            correlation_id=correlation_id,
            delivery_mode=2 if self.durable else 1,
        )
        if self.reqrep_props:
            properties.content_type = _CONTENT_TYPE
            properties.headers = {"x-deadline": int(time.time() * 1000) + _DEADLINE_MS}
            properties.expiration = str(_DEADLINE_MS)
            properties.message_id = correlation_id
            properties.type = "echo"
        self.channel.basic_publish("", self.queue, body, properties, mandatory=self.reqrep_props)
        self.published += 1

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        confirm = frame.method
        count = (confirm.delivery_tag - self.confirmed - self.nacked) if confirm.multiple else 1
        if isinstance(confirm, pika.spec.Basic.Ack):
            self.confirmed += count
        else:
            self.nacked += count
            self._nacked(confirm.delivery_tag)

    def _nacked(self, tag: int) -> None:
        """Hook: the broker refused the requests up to ``tag``."""


class Client(Requester):
    def __init__(
        self,
        queue: str,
        durable: bool,
        *,
        window: Window,
        outstanding: int,
        payload: int,
        reqrep_props: bool = False,
    ) -> None:
        super().__init__(queue, durable, reqrep_props=reqrep_props)
        self.window = window
        self.outstanding = outstanding
        self.body = raw_body(payload)
        self.pending: dict[str, float] = {}
        self.next_id = 0
        self.stopping = False
        self.unknown = 0

    def _consuming(self) -> None:
        ioloop = self.connection.ioloop
        self.window.begin()
        ioloop.call_later(self.window.warmup, self.window.tick)
        ioloop.call_later(self.window.warmup + self.window.seconds, self._finish)
        for _ in range(self.outstanding):
            self._publish()

    def _publish(self) -> None:
        self.next_id += 1
        correlation_id = str(self.next_id)
        self.pending[correlation_id] = time.perf_counter()
        self._send(correlation_id, self.body)

    def _on_reply(
        self,
        _channel: pika.channel.Channel,
        _method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        now = time.perf_counter()
        started = self.pending.pop(properties.correlation_id, None)
        if started is None:
            self.unknown += 1
            return
        self.window.done(started, now)
        if self.stopping:
            if not self.pending:
                self.stop()
        elif self.window.running(now):
            self._publish()

    def _nacked(self, tag: int) -> None:
        self.window.error(f"request nacked (tag {tag})")

    def _finish(self) -> None:
        self.window.tick()
        self.stopping = True
        if not self.pending:
            self.stop()
        else:
            self.connection.ioloop.call_later(DRAIN_SECONDS, self.stop)


def main() -> None:
    parser = case_parser(__doc__ or "")
    parser.add_argument("--tuned", action="store_true", help="coalesced writes and batched acks")
    parser.add_argument(
        "--reqrep-properties",
        action="store_true",
        help="the properties reqrep's requests and replies carry, published mandatory",
    )
    args = parser.parse_args()
    arm_deadline(args.max_seconds)
    if args.tuned:
        coalesce_writes()
    if args.role == "server":
        server = Server(
            args.queue,
            args.durable,
            batch_acks=args.tuned,
            reqrep_props=args.reqrep_properties,
        )
        previous = signal.signal(signal.SIGTERM, lambda _s, _f: server.stop_threadsafe())
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if server.failure:
            say(f"raw-pika server: {server.failure}", err=True)
            raise SystemExit(1)
        return
    window = Window(args.warmup, args.seconds)
    client = Client(
        args.queue,
        args.durable,
        window=window,
        outstanding=args.outstanding,
        payload=args.payload,
        reqrep_props=args.reqrep_properties,
    )
    client.run()
    if client.failure:
        window.error(client.failure)
    window.report(
        outstanding=args.outstanding,
        unfinished=len(client.pending),
        published=client.published,
        confirmed=client.confirmed if args.durable else None,
        unknown_replies=client.unknown,
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
