"""Bare pika carrying reqrep's AMQP properties, each of which can be flipped: ``bench.props``'
client and server.

``python -m bench.cases.raw_props client|server --queue Q [--durable] [--flip NAME ...]``

The loop, the queue, confirms and the tuned writes are ``raw_pika``'s (``--durable --tuned``:
a quorum queue, confirms on both sides, the server acking a request once its reply is
confirmed, coalesced writes and batched acks). What differs is what each message says:
by default, everything an untraced call with reqrep's defaults puts on its request and its
reply (``PROPERTIES``, read from ``requestor/_io.py`` and ``worker/replies.py``), with the
values reqrep would put there; ``--flip NAME`` turns one property off (or, for one that
reqrep sends only sometimes, such as ``traceparent``, on). The request exchange is declared
by the server (``Q.requests``, direct, bound to Q) and deleted with the queue.

``request_properties`` and ``reply_properties`` build the properties of one message; the
benchmark encodes them with pika to count the bytes each property adds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import time
from collections.abc import Collection

import pika
import pika.spec

from bench.cases import Window, amqp_url, arm_deadline, case_parser, say
from bench.cases._raw_loop import coalesce_writes
from bench.cases.raw_pika import Client, Server

__all__ = [
    "EXCHANGE_SUFFIX",
    "NOT_MEASURED",
    "PROPERTIES",
    "Property",
    "main",
    "reply_properties",
    "request_properties",
]

EXCHANGE_SUFFIX = ".requests"
CONTENT_TYPE = "application/json"  # reqrep.common.serialization.CONTENT_TYPE
DEADLINE_MS = 30_000  # reqrep's default call timeout, 30 s
METHOD = "echo"
REPLY_TYPE = "reply"  # reqrep.common.envelope.REPLY_TYPE
_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclasses.dataclass(frozen=True)
class Property:
    """One thing a request or a reply says. ``usual``: sent by an untraced call with reqrep's
    defaults; ``removable``: the RPC still works without it (else only its bytes are counted);
    ``needed_by``: the guarantee that needs it, read from reqrep's code."""

    name: str
    side: str  # "request" or "reply"
    needed_by: str
    usual: bool = True
    removable: bool = True


PROPERTIES: tuple[Property, ...] = (
    Property(
        "delivery_mode",
        "request",
        "2 = persistent: the request outlives a broker restart (on a classic queue, only "
        "persistent messages do); REQREP_PERSISTENT=0 sends 1",
    ),
    Property(
        "content_type",
        "request",
        "the worker refuses a body it is not told is JSON (BadRequest, envelope.check_request): "
        "foreign clients' requests",
    ),
    Property(
        "correlation_id",
        "request",
        "matches the reply to its call; 32 random hex digits keep it unique across "
        "reconnections and resends (flipped: a short counter instead, as the raw cases send)",
    ),
    Property(
        "reply_to",
        "request",
        "where the reply goes: no RPC without it (bytes only, not run without)",
        removable=False,
    ),
    Property(
        "expiration",
        "request",
        "the broker drops (dead-letters as `expired`) a request whose caller gave up, before "
        "any worker sees it",
    ),
    Property(
        "message_id",
        "request",
        "the idempotency key: a redelivered or resent request is answered from the worker's "
        "reply cache instead of running twice (reqrep sends the correlation id when the caller "
        "gives no key)",
    ),
    Property(
        "type",
        "request",
        "the method name: the worker picks the handler by it (MethodNotFound otherwise)",
    ),
    Property(
        "x-deadline",
        "request",
        "the worker skips a request already late on arrival or when a handler is free "
        "(absolute time: clocks in sync)",
    ),
    Property(
        "mandatory",
        "request",
        "no queue bound: the broker returns the request and the call fails at once with "
        "NoSuchService instead of timing out (a flag bit: no bytes)",
    ),
    Property(
        "exchange",
        "request",
        "requests go to `{ns}requests`, not the default exchange: requestors need write "
        "permission on that exchange only (operations.md, permissions); flipped: the default "
        "exchange",
    ),
    Property(
        "traceparent",
        "request",
        "traced calls only: a handler's calls continue the caller's trace (one trace across "
        "requestor and worker)",
        usual=False,
    ),
    Property(
        "reply.correlation_id",
        "reply",
        "matches the reply to its call: no RPC without it (bytes only, not run without)",
        removable=False,
    ),
    Property(
        "reply.content_type",
        "reply",
        "none in reqrep: the requestor decodes an enveloped reply as JSON whatever it says; "
        "it describes the body to other clients (docs/protocol.md)",
    ),
    Property(
        "reply.type",
        "reply",
        "none for enveloped calls (the requestor ignores it); a plain service's error reply "
        "is told apart by type `error`, a different value",
    ),
    Property(
        "reply.mandatory",
        "reply",
        "a reply whose callback queue is gone comes back and is counted, instead of vanishing "
        "(a flag bit: no bytes)",
    ),
    Property(
        "reply.user_id",
        "reply",
        "signed replies only (REQREP_SIGN_REPLIES): the broker checks it is the worker's "
        "login, so a requestor can trust replies from some users only",
        usual=False,
    ),
)
NAMES = tuple(prop.name for prop in PROPERTIES)
# What docs/protocol.md lists that is not measured here, and why.
NOT_MEASURED = {
    "tracestate": "sent only with a traceparent, when a tracer set one: its size is the tracer's",
    "x-reqrep-headers": "the caller's own headers: their size is the application's",
}


def sends(name: str, flipped: Collection[str]) -> bool:
    """Whether ``name`` is on: its usual state, unless flipped."""
    prop = next(p for p in PROPERTIES if p.name == name)
    return prop.usual != (name in flipped)


def request_properties(
    flipped: Collection[str],
    *,
    correlation_id: str,
    reply_to: str,
    durable: bool,
    now: float | None = None,
) -> pika.BasicProperties:
    """A request's properties, as reqrep's requestor would set them (``requestor/_io.py``)."""
    on = {name for name in NAMES if sends(name, flipped)}
    now = time.time() if now is None else now
    headers: dict[str, object] = {}
    if "x-deadline" in on:
        headers["x-deadline"] = int(now * 1000) + DEADLINE_MS
    if "traceparent" in on:
        headers["traceparent"] = f"00-{_TRACE_ID}-{random.getrandbits(64):016x}-01"
    return pika.BasicProperties(
        content_type=CONTENT_TYPE if "content_type" in on else None,
        headers=headers or None,
        delivery_mode=(2 if durable else 1) if "delivery_mode" in on else None,
        correlation_id=correlation_id,
        reply_to=reply_to,
        expiration=str(DEADLINE_MS) if "expiration" in on else None,
        message_id=correlation_id if "message_id" in on else None,
        type=METHOD if "type" in on else None,
    )


def reply_properties(
    flipped: Collection[str], *, correlation_id: str, user_id: str | None
) -> pika.BasicProperties:
    """A reply's properties, as reqrep's worker would set them (``worker/replies.py``)."""
    on = {name for name in NAMES if sends(name, flipped)}
    return pika.BasicProperties(
        content_type=CONTENT_TYPE if "reply.content_type" in on else None,
        correlation_id=correlation_id,
        type=REPLY_TYPE if "reply.type" in on else None,
        user_id=user_id if "reply.user_id" in on else None,
    )


def new_correlation_id(flipped: Collection[str], counter: int) -> str:
    """reqrep's 32 random hex digits, or (flipped) the raw cases' counter."""
    return os.urandom(16).hex() if sends("correlation_id", flipped) else str(counter)


def username() -> str:
    return str(pika.URLParameters(amqp_url()).credentials.username)


class PropsServer(Server):
    def __init__(self, queue: str, durable: bool, flipped: frozenset[str]) -> None:
        super().__init__(queue, durable, batch_acks=True)
        self.flipped = flipped
        self.exchange = queue + EXCHANGE_SUFFIX
        self.user_id = username()

    def _declared(self) -> None:
        assert self.channel is not None
        channel = self.channel
        channel.exchange_declare(
            self.exchange,
            "direct",
            durable=True,
            callback=lambda _f: channel.queue_bind(
                self.queue, self.exchange, self.queue, callback=lambda _f: self._bound()
            ),
        )

    def _bound(self) -> None:
        super()._declared()  # prefetch, then consume

    def _publish_reply(self, reply_to: str, correlation_id: str, body: bytes) -> None:
        assert self.channel is not None
        properties = reply_properties(
            self.flipped, correlation_id=correlation_id, user_id=self.user_id
        )
        mandatory = sends("reply.mandatory", self.flipped)
        self.channel.basic_publish("", reply_to, body, properties, mandatory=mandatory)


class PropsClient(Client):
    def __init__(
        self,
        queue: str,
        durable: bool,
        flipped: frozenset[str],
        *,
        window: Window,
        outstanding: int,
        payload: int,
    ) -> None:
        super().__init__(queue, durable, window=window, outstanding=outstanding, payload=payload)
        self.flipped = flipped
        self.exchange = queue + EXCHANGE_SUFFIX if sends("exchange", flipped) else ""

    def _publish(self) -> None:
        self.next_id += 1
        correlation_id = new_correlation_id(self.flipped, self.next_id)
        self.pending[correlation_id] = time.perf_counter()
        self._send(correlation_id, self.body)

    def _send(self, correlation_id: str, body: bytes) -> None:
        assert self.channel is not None
        properties = request_properties(
            self.flipped,
            correlation_id=correlation_id,
            reply_to=self.reply_queue,
            durable=self.durable,
        )
        mandatory = sends("mandatory", self.flipped)
        self.channel.basic_publish(self.exchange, self.queue, body, properties, mandatory)
        self.published += 1


def main() -> None:
    parser = case_parser(__doc__ or "")
    parser.add_argument("--flip", action="append", choices=NAMES, default=[], metavar="NAME")
    args = parser.parse_args()
    arm_deadline(args.max_seconds)
    coalesce_writes()
    flipped = frozenset(args.flip)
    if args.role == "server":
        server = PropsServer(args.queue, args.durable, flipped)
        previous = signal.signal(signal.SIGTERM, lambda _s, _f: server.stop_threadsafe())
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if server.failure:
            say(f"raw-props server: {server.failure}", err=True)
            raise SystemExit(1)
        return
    window = Window(args.warmup, args.seconds)
    client = PropsClient(
        args.queue,
        args.durable,
        flipped,
        window=window,
        outstanding=args.outstanding,
        payload=args.payload,
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
        flipped=sorted(flipped),
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
