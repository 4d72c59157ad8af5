"""A floor, not a contender: bare pika with reqrep's threading model and nothing else.

``python -m bench.cases.raw_threaded client|server --queue Q --mode serial|threads [--durable]``

reqrep keeps pika on one I/O thread per connection, runs callers and handlers on other threads,
and hands work between them. This case does exactly those hand-offs with the least code around
them, so its distance from ``raw-pika`` (or the tutorial) is what the threading model alone
costs on the machine it runs on; reqrep's own distance is that plus everything else it does.

- Client: an I/O thread owns a ``SelectConnection`` (a ``raw_pika`` loop). A caller appends its
  request to an outbox and wakes the I/O thread with ``add_callback_threadsafe`` (once per batch,
  as reqrep does), then waits on reqrep's ``CallWaiter``; the I/O thread publishes, and hands
  the reply to the caller's waiter when it comes. ``--mode serial``: one caller, one call at a
  time; ``--mode threads``: ``--outstanding`` caller threads, each calling in a loop.
- Server: the ``raw_pika`` server, but each request goes to reqrep's ``HandlerPool`` of
  ``--handlers`` threads; a handler echoes the body and hands the reply back to the I/O thread
  the same way (once per batch), which publishes it and acks the request (``--durable``: once
  the reply is confirmed, as in ``raw-pika-durable``).

The waiter and the pool are reqrep's own, so that the floor keeps doing the hops reqrep does.
No JSON, no headers, no deadlines, no admission, no futures: only the hops.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
import pika.spec

from bench.cases import (
    DRAIN_SECONDS,
    Window,
    arm_deadline,
    case_parser,
    raw_body,
    say,
)
from bench.cases._raw_loop import coalesce_writes
from bench.cases.raw_pika import Requester, Server
from reqrep.requestor._waiter import CallWaiter
from reqrep.worker.pool import HandlerPool

__all__ = ["main"]

CALL_TIMEOUT = 30.0
READY_TIMEOUT = 30.0

Reply = tuple[int, str, str, bytes]  # request tag, reply_to, correlation id, body


class Handoff:
    """Work handed to a connection's I/O thread: appended under a lock, run in batches.

    Threads: ``put`` from any thread; the batches run on the I/O thread.
    """

    def __init__(self, connection: pika.SelectConnection, run: Callable[[Any], None]) -> None:
        self._connection = connection
        self._run = run
        self._lock = threading.Lock()
        self._items: collections.deque[Any] = collections.deque()

    def put(self, item: Any) -> None:
        with self._lock:
            wake = not self._items
            self._items.append(item)
        if wake:  # one wake-up per batch: later items join the batch already announced
            self._connection.ioloop.add_callback_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        for item in items:
            self._run(item)


class ThreadedServer(Server):
    """``raw_pika.Server`` whose requests are answered on handler threads.

    Threads: pika's callbacks and ``_answer_one`` on the I/O thread; ``_handle`` on handlers.
    """

    def __init__(self, queue: str, durable: bool, *, batch_acks: bool, handlers: int) -> None:
        super().__init__(queue, durable, batch_acks=batch_acks)
        self.replies = Handoff(self.connection, self._answer_one)
        self.jobs: HandlerPool[Reply] = HandlerPool(handlers, self.replies.put)  # an echo
        self.jobs.start()

    def _on_request(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        self.jobs.submit(
            (method.delivery_tag, properties.reply_to, properties.correlation_id, body)
        )

    def _answer_one(self, reply: Reply) -> None:
        if self.channel is not None and self.channel.is_open:
            self._answer(*reply)

    def close_handlers(self) -> None:
        self.jobs.shutdown()


class ThreadedClient(Requester):
    """Callers on any thread; pika on the I/O thread (``run``), started by ``start``.

    Threads: ``call`` from any number of caller threads; everything else on the I/O thread.
    """

    def __init__(self, queue: str, durable: bool) -> None:
        super().__init__(queue, durable)
        self.ready = threading.Event()
        self.ids = itertools.count(1)
        self.waiting: dict[str, CallWaiter] = {}
        self.outbox = Handoff(self.connection, self._publish)
        self.thread = threading.Thread(target=self._run_loop, name="io", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(READY_TIMEOUT):
            raise RuntimeError(self.failure or "the client did not get ready")

    def _run_loop(self) -> None:
        self.run()
        self.ready.set()  # a failed connection must not leave start() waiting

    def call(self, body: bytes) -> bytes:
        correlation_id = str(next(self.ids))
        waiter = CallWaiter()
        self.waiting[correlation_id] = waiter
        self.outbox.put((correlation_id, body))
        if not waiter.wait(CALL_TIMEOUT):
            self.waiting.pop(correlation_id, None)
            raise TimeoutError(f"no reply within {CALL_TIMEOUT:g}s")
        reply: bytes = waiter.outcome()
        return reply

    def _consuming(self) -> None:
        self.ready.set()

    def _publish(self, request: tuple[str, bytes]) -> None:
        self._send(*request)

    def _on_reply(
        self,
        _channel: pika.channel.Channel,
        _method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        waiter = self.waiting.pop(properties.correlation_id, None)
        if waiter is not None:
            waiter.deliver(body, None)


def _call_loop(client: ThreadedClient, window: Window, body: bytes) -> None:
    while window.running() and window.errors <= 100:
        started = time.perf_counter()
        try:
            client.call(body)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            window.error(exc)
            continue
        window.done(started, time.perf_counter())


def run_client(args: Any) -> None:
    window = Window(args.warmup, args.seconds)
    client = ThreadedClient(args.queue, args.durable)
    try:
        client.start()
        callers = 1 if args.mode == "serial" else args.outstanding
        window.begin()
        threads = [
            threading.Thread(target=_call_loop, args=(client, window, raw_body(args.payload)))
            for _ in range(callers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(window.warmup + window.seconds + DRAIN_SECONDS + CALL_TIMEOUT)
        window.tick()
    finally:
        client.stop_threadsafe()
        client.thread.join(DRAIN_SECONDS)
    if client.failure:
        window.error(client.failure)
    window.report(
        outstanding=1 if args.mode == "serial" else args.outstanding,
        unfinished=len(client.waiting),
        confirmed=client.confirmed if args.durable else None,
    )


def main() -> None:
    parser = case_parser(__doc__ or "")
    parser.add_argument("--mode", choices=["serial", "threads"], default="threads")
    parser.add_argument("--handlers", type=int, default=64, help="the server's handler threads")
    parser.add_argument("--tuned", action="store_true", help="coalesced writes and batched acks")
    args = parser.parse_args()
    arm_deadline(args.max_seconds)
    if args.tuned:
        coalesce_writes()
    if args.role == "client":
        run_client(args)
        return
    server = ThreadedServer(
        args.queue, args.durable, batch_acks=args.tuned, handlers=max(1, args.handlers)
    )
    previous = signal.signal(signal.SIGTERM, lambda _s, _f: server.stop_threadsafe())
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close_handlers()
    if server.failure:
        say(f"raw-threaded server: {server.failure}", err=True)
        raise SystemExit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
