"""The worker's I/O thread: consumes the request queue, publishes replies, acknowledges.

A request is acknowledged only after the broker has confirmed its reply, so a worker that dies
between running a handler and replying leaves the request to be redelivered, never lost.
Replies go out with ``mandatory=True``: a reply whose callback queue is gone (the requestor
disconnected) comes back and is counted, instead of vanishing without a trace.

Before a request reaches a handler thread it is judged here, cheaply, by the rules of
``worker/admission.py`` and this worker's reply cache (a duplicate of a request answered or
running here gets the same reply).

Delivery tags belong to one channel. After a reconnection the broker redelivers whatever was
unacknowledged, so results of requests from an older channel are only cached, never acked.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pika

from reqrep.common import envelope, topology, tracecontext
from reqrep.common.config import Settings
from reqrep.common.connection import ConnectionThread, State
from reqrep.common.errors import ReqrepError
from reqrep.common.observe import Probe
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.worker import admission
from reqrep.worker.dedupe import ReplyCache
from reqrep.worker.service import Handler, Service

__all__ = ["Consumer", "ConsumerStats", "Job"]

log = logging.getLogger("reqrep.worker")


@dataclasses.dataclass(frozen=True)
class Job:
    """One request to run: what a handler thread needs, and what the reply needs."""

    tag: int
    generation: int
    method: str
    correlation_id: str
    reply_to: str
    message_id: str | None
    body: bytes
    handler: Handler
    deadline_ms: int | None = None
    redelivered: bool = False
    delivery_count: int = 0
    trace: dict[str, str] = dataclasses.field(default_factory=dict)  # W3C trace headers


@dataclasses.dataclass(frozen=True)
class _Waiter:
    """A duplicate delivery waiting for the same key's running job."""

    tag: int
    generation: int
    reply_to: str
    correlation_id: str


@dataclasses.dataclass
class ConsumerStats:
    """Counters, written on the I/O thread; reads from elsewhere may be a moment stale."""

    received: int = 0
    replied: int = 0
    rejected: int = 0  # unanswerable (no reply_to / correlation_id): dead-lettered
    requeued: int = 0
    expired: int = 0  # past their deadline on arrival: not run
    poisoned: int = 0  # delivered too often: refused and dead-lettered
    deduplicated: int = 0  # answered from the reply cache or by a running twin
    stale: int = 0  # finished after their channel was lost: cached, not acked
    replies_returned: int = 0  # the requestor's callback queue no longer existed


class Consumer(ConnectionThread):
    """Consumes one service's request queue.

    Threads: ``reply`` and ``drain`` may be called from any thread and only queue
    work; ``dispatch`` and ``on_closed`` (given by the Worker) are called on the I/O thread and
    must not block. Everything else runs on the I/O thread.
    """

    def __init__(
        self,
        settings: Settings,
        service: Service,
        *,
        prefetch: int,
        dispatch: Callable[[Job], None],
        on_closed: Callable[[], None],
        name: str,
        cache: ReplyCache | None = None,
        probe: Probe | None = None,
    ) -> None:
        super().__init__(settings, name=name)
        self.queue = settings.request_queue(service.name)
        self.stats = ConsumerStats()
        self.drained = threading.Event()
        self._service = service
        self._prefetch = prefetch
        self._dispatch = dispatch
        self._notify_closed = on_closed
        self._cache = cache if cache is not None else ReplyCache()
        self._consumer_tag: str | None = None
        self._draining = False
        self._cancelled = False  # the broker confirmed our consumer is cancelled
        self._unsettled: set[int] = set()  # this channel's request tags not yet settled
        self._acks: list[int] = []  # settled tags whose ack goes out at the end of this turn
        self._published = 0
        self._reply_for: dict[int, tuple[int, bool]] = {}  # reply tag -> (request tag, reject)
        self._running: dict[str, list[_Waiter]] = {}  # idempotency key -> duplicates waiting
        self._user_id = settings.username if settings.sign_replies else None
        self._probe = probe if probe is not None else Probe("worker", service.name, observers=())
        self._broker_cancelled = False  # the broker cancelled our consumer (queue deleted?)

    def reply(self, job: Job, body: bytes) -> None:
        """Publish ``body`` as the reply to ``job`` (and its twins), then ack once confirmed."""
        self.submit(lambda: self._complete_job(job, body))

    def drain(self) -> None:
        """Stop taking requests; ``drained`` is set once every received one is answered.

        What was delivered before the broker confirmed the cancel is run, not requeued: it is
        here already, and requeueing it could leave it waiting for a worker that is not there.
        """
        self.submit(self._begin_drain)

    @property
    def consuming(self) -> bool:
        """True while the broker is delivering this queue to us (any thread may ask)."""
        return (
            self.state is State.OPEN
            and self._consumer_tag is not None
            and not (self._draining or self._cancelled or self._broker_cancelled)
        )

    # -- I/O thread: set-up -------------------------------------------------------------------

    def _setup(self, channel: Any) -> None:
        self._unsettled.clear()
        self._acks.clear()
        self._reply_for.clear()
        self._published = 0
        channel.add_on_return_callback(self._on_return)
        channel.add_on_cancel_callback(self._on_broker_cancel)
        prefix, settings = self._settings.queue_prefix, self._settings
        dlx, dlq = topology.dead_letter_exchange(prefix), topology.dead_letter_queue(self.queue)
        steps: list[Callable[[Callable[[Any], None]], None]] = [
            lambda done: channel.basic_qos(prefetch_count=self._prefetch, callback=done),
            lambda done: self._confirm(channel, done),
            lambda done: channel.exchange_declare(
                dlx, exchange_type="direct", durable=True, callback=done
            ),
            lambda done: channel.queue_declare(
                dlq,
                durable=True,
                arguments=topology.dead_letter_queue_arguments(settings.queue_type),
                callback=done,
            ),
            lambda done: channel.queue_bind(dlq, dlx, routing_key=dlq, callback=done),
            lambda done: channel.queue_declare(
                self.queue,
                durable=True,
                arguments=topology.request_queue_arguments(
                    prefix=prefix,
                    queue=self.queue,
                    queue_type=settings.queue_type,
                    max_redeliveries=settings.max_redeliveries,
                ),
                callback=done,
            ),
            self._consume,
        ]
        _chain(steps, self._after_setup)

    def _confirm(self, channel: Any, done: Callable[[Any], None]) -> None:
        if self._settings.persistent:
            channel.confirm_delivery(self._on_confirm, callback=done)
        else:
            done(None)

    def _consume(self, done: Callable[[Any], None]) -> None:
        if self._draining:  # reconnected while draining: take nothing new
            done(None)
            return
        self._broker_cancelled = False
        self._consumer_tag = self.channel.basic_consume(self.queue, self._on_request, callback=done)

    def _on_broker_cancel(self, _frame: Any) -> None:
        self._broker_cancelled = True
        log.warning("the broker cancelled the consumer of %s (queue deleted?)", self.queue)

    def _on_recovered(self) -> None:
        self._probe.reconnected()

    def _after_setup(self) -> None:
        self._ready()

    # -- I/O thread: requests -----------------------------------------------------------------

    def _on_request(self, _channel: Any, deliver: Any, props: Any, body: bytes) -> None:
        tag, generation = deliver.delivery_tag, self.generation
        self.stats.received += 1
        self._unsettled.add(tag)
        try:
            self._judge(tag, generation, deliver, props, body)
        except Exception:
            # Whatever a message holds, it must not take the connection down (pika would drop
            # it, and the broker redeliver the message to do the same again).
            log.exception("rejected request (tag %s) that could not be judged", tag)
            self.stats.rejected += 1
            self._settle(tag, generation, requeue=False)

    def _judge(self, tag: int, generation: int, deliver: Any, props: Any, body: bytes) -> None:
        log.debug("request %s: %r (tag %s)", props.correlation_id, props.type, tag)
        self._probe.received(props.type, bool(deliver.redelivered))
        delivery = admission.Delivery(
            method=props.type,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            content_type=props.content_type,
            message_id=props.message_id,
            headers=props.headers,
            redelivered=bool(deliver.redelivered),
            size=len(body),
        )
        verdict = admission.screen(delivery, self._settings, time.time() * 1000)
        if isinstance(verdict, admission.Unanswerable):
            log.warning(
                "rejected request without %s (tag %s, type %r): it cannot be answered",
                verdict.missing,
                tag,
                props.type,
            )
            self.stats.rejected += 1
            self._probe.skipped(props.type, "unanswerable")
            self._settle(tag, generation, requeue=False)
        elif isinstance(verdict, admission.Expired):
            self.stats.expired += 1
            self._probe.skipped(props.type, "expired")
            self._settle(tag, generation, ack=True)
        elif isinstance(verdict, admission.Poison):
            self._refuse_poison(tag, props, verdict)
        else:
            self._admit(tag, generation, delivery, verdict, body)

    def _admit(
        self,
        tag: int,
        generation: int,
        delivery: admission.Delivery,
        verdict: admission.Passed,
        body: bytes,
    ) -> None:
        key = delivery.message_id or None
        if key is not None and self._answer_duplicate(key, tag, delivery):
            return
        found = admission.classify(delivery, self._service, self._settings)
        if isinstance(found, envelope.ErrorInfo):
            error = envelope.error_body(found)
            self._probe.answered(delivery.method, found.code)
            self._publish_reply(tag, delivery.reply_to, delivery.correlation_id, error)
            return
        if key is not None:
            self._running[key] = []
        self._dispatch(
            Job(
                tag,
                generation,
                delivery.method,
                delivery.correlation_id,
                delivery.reply_to,
                key,
                body,
                found,
                verdict.deadline_ms,
                delivery.redelivered,
                verdict.delivery_count,
                tracecontext.extract(delivery.headers),
            )
        )

    def _answer_duplicate(self, key: str, tag: int, delivery: admission.Delivery) -> bool:
        cached = self._cache.get(key)
        if cached is not None:
            self.stats.deduplicated += 1
            self._probe.dedupe_hit(delivery.method)
            self._publish_reply(tag, delivery.reply_to, delivery.correlation_id, cached)
            return True
        waiters = self._running.get(key)
        if waiters is not None:
            self.stats.deduplicated += 1
            self._probe.dedupe_hit(delivery.method)
            waiters.append(
                _Waiter(tag, self.generation, delivery.reply_to, delivery.correlation_id)
            )
            return True
        return False

    def _refuse_poison(self, tag: int, props: Any, verdict: admission.Poison) -> None:
        self.stats.poisoned += 1
        self._probe.poisoned(props.type)
        log.error(
            "poison request %s (%r) delivered %d times; its workers died each time: "
            "refused and dead-lettered to %s",
            props.correlation_id,
            props.type,
            verdict.deliveries,
            topology.dead_letter_queue(self.queue),
        )
        body = envelope.error_body(verdict.error)
        self._publish_reply(tag, props.reply_to, props.correlation_id, body, reject=True)

    # -- I/O thread: replies and settling -----------------------------------------------------

    def _complete_job(self, job: Job, body: bytes) -> None:
        waiters: list[_Waiter] = []
        if job.message_id is not None:
            self._cache.put(job.message_id, body)
            waiters = self._running.pop(job.message_id, [])
        if job.generation == self.generation and self.is_open:
            self._publish_reply(job.tag, job.reply_to, job.correlation_id, body)
        else:
            self.stats.stale += 1
            self._probe.skipped(job.method, "stale")
        for waiter in waiters:
            if waiter.generation == self.generation:
                self._publish_reply(waiter.tag, waiter.reply_to, waiter.correlation_id, body)

    def _publish_reply(
        self, tag: int, reply_to: str, correlation_id: str, body: bytes, *, reject: bool = False
    ) -> None:
        if not self.is_open:
            return  # the channel is gone, and with it this delivery: the broker redelivers
        properties = pika.BasicProperties(
            correlation_id=correlation_id,
            content_type=CONTENT_TYPE,
            type=envelope.REPLY_TYPE,
            # The broker refuses a user_id that is not the connection's own user (406): a
            # requestor that trusts it knows which user sent the reply.
            user_id=self._user_id,
        )
        try:
            self.channel.basic_publish("", reply_to, body, properties, mandatory=True)
        except Exception:
            if self.is_open:  # the channel is fine: this reply cannot be sent at all
                log.exception("could not publish reply %r; request rejected", correlation_id)
                self._settle(tag, self.generation, requeue=False)
            else:  # the channel is going: the broker redelivers the request
                log.warning("could not publish reply %r; it will be redelivered", correlation_id)
            return
        if not self._settings.persistent:
            # No confirms: the broker reads the reply before the ack that follows it here.
            if not reject:
                self.stats.replied += 1
            self._settle(tag, self.generation, ack=not reject, requeue=False)
            return
        self._published += 1
        self._reply_for[self._published] = (tag, reject)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            tags = [t for t in self._reply_for if t <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._reply_for else []
        for reply_tag in tags:
            request_tag, reject = self._reply_for.pop(reply_tag)
            if nacked:  # the reply was not kept: let the request run again rather than lose it
                log.warning("reply nacked by the broker; requeueing request %s", request_tag)
                self._settle(request_tag, self.generation, requeue=True)
            elif reject:
                self._settle(request_tag, self.generation, requeue=False)
            else:
                self.stats.replied += 1
                self._settle(request_tag, self.generation, ack=True)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self.stats.replies_returned += 1
        self._probe.reply_returned()
        log.info(
            "reply %s returned (%s %s): the requestor's queue %r is gone",
            properties.correlation_id,
            method.reply_code,
            method.reply_text,
            method.routing_key,
        )

    def _settle(
        self, tag: int, generation: int, *, ack: bool = False, requeue: bool = False
    ) -> None:
        if generation != self.generation or tag not in self._unsettled or not self.is_open:
            return  # that delivery died with its channel
        self._unsettled.discard(tag)
        if ack:
            self._queue_ack(tag)
        elif requeue:
            self.stats.requeued += 1
            self.channel.basic_nack(tag, requeue=True)
        else:
            self.channel.basic_reject(tag, requeue=False)
        self._check_drained()

    def _queue_ack(self, tag: int) -> None:
        """Ack soon, together with the other acks of this turn of the I/O loop: one
        ``basic_ack(multiple=True)`` can settle a run of requests in one frame."""
        if not self._acks:
            self.call_later(0, self._flush_acks)
        self._acks.append(tag)

    def _flush_acks(self) -> None:
        acks, self._acks = sorted(self._acks), []
        if not acks or not self.is_open:
            return
        # multiple=True acks every unacked tag up to N: only safe below the lowest tag that
        # is still being worked on.
        lowest_open = min(self._unsettled) if self._unsettled else acks[-1] + 1
        run = [t for t in acks if t < lowest_open]
        if run:
            self.channel.basic_ack(run[-1], multiple=len(run) > 1)
        for tag in acks[len(run) :]:
            self.channel.basic_ack(tag)
        self._check_drained()

    def _begin_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("draining: %d requests in flight", len(self._unsettled))
        if self.is_open and self._consumer_tag is not None:
            # Deliveries sent before the broker saw the cancel arrive before its CancelOk.
            self.channel.basic_cancel(self._consumer_tag, callback=self._on_cancelled)
        else:
            self._on_cancelled()

    def _on_cancelled(self, _frame: Any = None) -> None:
        self._cancelled = True
        self._check_drained()

    def _check_drained(self) -> None:
        if self._draining and self._cancelled and not self._unsettled and not self._acks:
            self.drained.set()

    def _on_lost(self, error: ReqrepError) -> None:
        if self._unsettled:
            log.warning(
                "%d requests in flight on the lost channel will be redelivered",
                len(self._unsettled),
            )
        self._unsettled.clear()
        self._acks.clear()
        self._reply_for.clear()
        if self._draining:
            self._cancelled = True  # the consumer died with the channel
        self._check_drained()

    def _on_closed(self) -> None:
        self._notify_closed()


def _chain(steps: list[Callable[[Callable[[Any], None]], None]], then: Callable[[], None]) -> None:
    """Run asynchronous pika steps one after another; each gets the callback that starts the
    next (pika calls it with the reply frame, which we ignore)."""
    if not steps:
        then()
        return
    first, rest = steps[0], steps[1:]

    def next_step(_frame: Any = None) -> None:
        _chain(rest, then)

    first(next_step)
