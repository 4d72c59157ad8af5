"""The worker's I/O side: declares the topology, consumes and admits requests, drains.

``Consumer`` owns the worker's Link (its connection and I/O thread; for a native worker, a Link
hosted on the worker's handler loop instead) and holds the reply side,
``Replies`` (``worker/replies.py``): publishing replies and settling requests (ack after the
reply's confirm).

Before a request reaches a handler thread it is judged here, cheaply, by the rules of
``worker/admission.py`` and this worker's reply cache (a duplicate of a request answered or
running here gets the same reply).

A consumer can stall without a word: on RabbitMQ 3.10, after a quorum queue lost its quorum,
the broker kept a prefetch's worth of requests as delivered to a consumer that never received
them, and sent nothing more. So a watchdog looks every ``watchdog`` seconds: if the queue has
requests ready while nothing has reached this worker for that long and it holds none, it
replaces its channel (the broker then requeues what it thought delivered) and consumes again,
and counts it (``ConsumerStats.consumer_restarts``).

The broker cancels the consumer (``basic.cancel``) when the queue is deleted or its node goes
away. The worker logs it and replaces its channel, which declares the queue again and consumes
again; while draining, a cancelled consumer counts as stopped (nothing more can arrive).

Delivery tags belong to one channel. After a reconnection the broker redelivers whatever was
unacknowledged, so results of requests from an older channel are only cached, never acked.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Hashable

from reqrep.common import callheaders, envelope, topology, tracecontext
from reqrep.common._link import Link, LinkOwner, State
from reqrep.common._transport import (
    AsyncioLoop,
    Channel,
    Connection,
    Delivery,
    Failure,
    QueueInfo,
    Transport,
)
from reqrep.common.config import Settings
from reqrep.common.errors import ReqrepError
from reqrep.common.observe import Probe
from reqrep.worker import admission, plain
from reqrep.worker._declare import chain, declare_steps
from reqrep.worker.aio import HandlerLoop
from reqrep.worker.cancel import Cancellations
from reqrep.worker.dedupe import ReplyCache
from reqrep.worker.job import Job, Waiter
from reqrep.worker.plain import PlainService
from reqrep.worker.replies import ConsumerStats, Replies
from reqrep.worker.service import Service

__all__ = ["Consumer", "ConsumerStats", "Job"]

log = logging.getLogger("reqrep.worker")

CACHE_SWEEP_INTERVAL = 5.0  # seconds between sweeps of the reply cache's expired entries
WATCHDOG = 15.0  # seconds without a delivery, with requests ready, before consuming again


class Consumer(LinkOwner):
    """Consumes one service's request queue.

    Threads: ``start``, ``stop``, ``reply``, ``skip`` and ``drain`` may be called from any
    thread (the last three only queue work), ``reply_now`` and ``skip_now`` only on the I/O
    thread; ``dispatch``, ``on_closed`` and ``on_setup`` (given by the Worker) are called on
    the I/O thread and must not block. Everything else runs on the I/O thread of the Link this
    Consumer holds (with ``host``, on that handler loop's thread, where the Link is hosted: its
    "I/O thread" below).
    """

    def __init__(
        self,
        settings: Settings,
        service: Service | PlainService,
        *,
        prefetch: int,
        dispatch: Callable[[Job], None],
        on_closed: Callable[[], None],
        name: str,
        transport: Transport,
        cache: ReplyCache | None = None,
        on_setup: Callable[[Connection], None] | None = None,
        probe: Probe | None = None,
        watchdog: float = WATCHDOG,
        cancels: Cancellations | None = None,
        host: HandlerLoop | None = None,
    ) -> None:
        self._settings = settings
        self._host = host  # the handler loop the connection lives on (a native worker), if any
        self._cancels = cancels if cancels is not None else Cancellations()
        self._watchdog = watchdog
        self._last_delivery = time.monotonic()  # or the start of the current consumer
        self._on_setup = on_setup  # given each new connection once consuming (control channel)
        self.queue = plain.queue_of(service, settings)
        # A plain service's one handler serves every request, whatever its ``type``.
        self._plain = service if isinstance(service, PlainService) else None
        self._plain_method = self._plain.method if self._plain is not None else None
        self.drained = threading.Event()
        self._service = service
        self._prefetch = prefetch
        self._dispatch = dispatch
        self._notify_closed = on_closed
        self._cache = cache if cache is not None else ReplyCache()
        self._consumer_tag: str | None = None
        self._draining = False
        self._cancelled = False  # the broker confirmed our consumer is cancelled
        self._sweeping = False  # the reply cache's sweep timer runs
        self._running: dict[Hashable, list[Waiter]] = {}  # cache key -> duplicates waiting
        self._holding = False  # inline replies' writes are held until the loop's turn ends
        self._probe = probe if probe is not None else Probe("worker", service.name, observers=())
        self.stats = ConsumerStats()
        self.link = Link(settings, self, name=name, transport=transport)
        self._replies = Replies(
            self.link,
            settings,
            self.queue,
            stats=self.stats,
            probe=self._probe,
            on_settled=self._check_drained,
            plain=self._plain is not None,
        )
        self._throttled = self._replies.throttled
        self._declare_steps = (
            declare_steps
            if self._plain is None
            else functools.partial(plain.declare_steps, open_channel=self.link.open_extra_channel)
        )

    # -- any thread -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def state(self) -> State:
        return self.link.state

    @property
    def address(self) -> str:
        return self.link.address

    @property
    def reconnects(self) -> int:
        return self.link.reconnects

    @property
    def blocked(self) -> str | None:
        return self.link.blocked

    def start(self, *, persist: bool = False) -> None:
        host = self._host
        if host is None:
            self.link.start(persist=persist)
        else:  # the connection lives on the handler loop: no I/O thread
            self.link.start_on(AsyncioLoop(host.loop, thread=host.ident), persist=persist)

    def stop(self, timeout: float = 10.0) -> None:
        self.link.stop(timeout)
        host = self._host
        waits = host is not None and threading.get_ident() != host.ident  # not on its own loop
        if waits and not self.link.ended.wait(timeout):
            log.warning("%s: not closed within %.1fs", self.link.name, timeout)

    def reply(self, job: Job, body: bytes, *, ran: bool = True) -> None:
        """Publish ``body`` as the reply to ``job`` (and its twins), then ack once confirmed.
        Only a reply that came from running the handler (``ran``) is cached. Any thread."""
        self.link.submit(lambda: self._complete_job(job, body, ran=ran))

    def reply_now(self, job: Job, body: bytes, *, ran: bool = True) -> None:
        """As ``reply``, at once: the I/O thread only (an inline handler's reply). The writes
        of one turn of the I/O loop (the replies to the requests of one read, their acks) are
        held and leave in one piece at its end, as a batch of tasks' do."""
        connection = self.link.connection
        if connection is None or self._holding or self.link.batching:
            self._complete_job(job, body, ran=ran)
            return
        connection.hold_writes()
        self._holding = True
        try:
            self._complete_job(job, body, ran=ran)
        finally:
            # Timers run once the loop has handled what it read; an ack queued above comes
            # first (flush_acks), and its flush sends the reply along.
            self.link.call_later(0, lambda: self._release_writes(connection))

    def _release_writes(self, connection: Connection) -> None:
        self._holding = False
        connection.flush_writes()

    def skip_now(self, job: Job, reason: str) -> None:
        """As ``skip``, at once: the I/O thread only (an inline job at pickup)."""
        self._skip(job, reason)

    def skip(self, job: Job, reason: str = "expired") -> None:
        """Acknowledge ``job`` (and its waiting twins) without a reply: it expired before a
        handler thread picked it up, or its caller cancelled it (``reason`` says which). Any
        thread."""
        self.link.submit(lambda: self._skip(job, reason))

    def drain(self) -> None:
        """Stop taking requests; ``drained`` is set once every received one is answered.

        What was delivered before the broker confirmed the cancel is run, not requeued: it is
        here already, and requeueing it could leave it waiting for a worker that is not there.
        """
        self.link.submit(self._begin_drain)

    @property
    def consuming(self) -> bool:
        """True while the broker is delivering this queue to us (any thread may ask)."""
        return (
            self.link.state is State.OPEN
            and self._consumer_tag is not None
            and not (self._draining or self._cancelled)
        )

    # -- LinkOwner (I/O thread) ---------------------------------------------------------------

    def setup(self, channel: Channel) -> None:
        self._replies.reset(channel)
        self._consumer_tag = None
        channel.on_cancel(self.link.guarded(self._on_broker_cancel))
        steps = self._declare_steps(
            channel,
            self._settings,
            self.queue,
            prefetch=self._prefetch,
            confirm=lambda done: self._confirm(channel, done),
            consume=lambda done: self._consume(channel, done),
        )
        chain(steps, self._after_setup)

    def _confirm(self, channel: Channel, done: Callable[[], None]) -> None:
        if self._settings.persistent:
            channel.confirm(self.link.guarded(self._replies.on_confirm), done)
        else:
            done()

    def _consume(self, channel: Channel, done: Callable[[], None]) -> None:
        if self._draining:  # reconnected while draining: take nothing new
            done()
            return
        self._last_delivery = time.monotonic()
        self._consumer_tag = channel.consume(
            self.queue, self._on_request, on_ok=lambda _tag: done()
        )

    def on_recovered(self) -> None:
        self._probe.reconnected()

    def on_channel_closed(self, failure: Failure) -> None:
        self._replies.learn_limit(failure)
        self._lose_channel()

    def after_tasks(self) -> None:
        # Replies settled by this batch of tasks (no confirms): their acks join the replies'
        # write instead of following in a send of their own.
        if self._replies.acks:
            self._replies.flush_acks()

    def _after_setup(self) -> None:
        if not self._sweeping:  # once: the I/O loop, and its timers, outlive connections
            self._sweeping = True
            self.link.call_later(CACHE_SWEEP_INTERVAL, self._sweep_cache)
            self.link.call_later(self._watchdog, self._watch)
        self.link.ready()
        connection = self.link.connection
        if self._on_setup is not None and connection is not None:
            self._on_setup(connection)

    @property
    def in_flight(self) -> int:
        """Requests delivered on this channel and not yet settled (I/O thread)."""
        return len(self._replies.unsettled)

    @property
    def draining(self) -> bool:
        return self._draining

    def _sweep_cache(self) -> None:
        """Free the reply cache's expired entries even when no request comes to do it."""
        try:
            self._cache.sweep()
        except Exception:
            log.exception("sweeping the reply cache failed")
        finally:
            if self.link.state not in (State.CLOSING, State.CLOSED):
                self.link.call_later(CACHE_SWEEP_INTERVAL, self._sweep_cache)

    def _watch(self) -> None:
        """The watchdog's look (see the module docstring); again every ``watchdog`` seconds."""
        try:
            idle = time.monotonic() - self._last_delivery
            if self.consuming and idle >= self._watchdog and not self._replies.unsettled:
                self.link.open_extra_channel(self._ask_ready)
        except Exception:
            log.debug("watchdog: no look this time", exc_info=True)
        finally:
            if self.link.state not in (State.CLOSING, State.CLOSED):
                self.link.call_later(self._watchdog, self._watch)

    def _ask_ready(self, channel: Channel) -> None:
        def answered(info: QueueInfo) -> None:
            channel.close()
            stalled = time.monotonic() - self._last_delivery >= self._watchdog
            if info.messages > 0 and stalled and self.consuming and not self._replies.unsettled:
                self.stats.consumer_restarts += 1
                self._probe.consumer_restarted()
                log.warning(
                    "%s has %d requests ready, but none has reached this worker for %.0fs: "
                    "consuming again on a new channel",
                    self.queue,
                    info.messages,
                    time.monotonic() - self._last_delivery,
                )
                self.link.reopen_channel()

        channel.declare_queue(self.queue, passive=True, on_ok=answered)

    # -- I/O thread: requests -----------------------------------------------------------------

    def _on_request(self, message: Delivery) -> None:
        self._last_delivery = time.monotonic()
        tag, generation = message.tag, self.link.generation
        self.stats.received += 1
        self._replies.unsettled.add(tag)
        reason = message.properties.undecodable
        if reason is not None:  # see common/_transport/_pika_fast.py, the guard
            self.stats.undecodable += 1
            self._throttled.warning(
                "rejected request (tag %s) whose properties cannot be decoded (%s): dead-lettered",
                tag,
                reason,
            )
            self._replies.settle(tag, generation, requeue=False)
            return
        try:
            self._judge(tag, generation, message)
        except Exception:
            # Whatever a message holds, it must not take the connection down (the broker would
            # redeliver the message to do the same again).
            log.exception("rejected request (tag %s) that could not be judged", tag)
            self.stats.rejected += 1
            self._replies.settle(tag, generation, requeue=False)

    def _judge(self, tag: int, generation: int, message: Delivery) -> None:
        props, body = message.properties, message.body
        log.debug("request %s: %r (tag %s)", props.correlation_id, props.type, tag)
        self._probe.received(props.type, message.redelivered)
        delivery = admission.Delivery(
            method=props.type if self._plain_method is None else self._plain_method,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            content_type=props.content_type,
            message_id=props.message_id,
            headers=props.headers,
            redelivered=message.redelivered,
            size=len(body),
        )
        verdict = admission.screen(delivery, self._settings, time.time() * 1000)
        if isinstance(verdict, admission.Unanswerable):
            self._throttled.warning(
                "rejected request without %s (tag %s, type %r): it cannot be answered",
                verdict.missing,
                tag,
                props.type,
            )
            self.stats.rejected += 1
            self._probe.skipped(props.type, "unanswerable")
            self._replies.settle(tag, generation, requeue=False)
        elif isinstance(verdict, admission.Expired):
            self.stats.expired += 1
            self._probe.skipped(props.type, "expired")
            self._replies.settle(tag, generation, ack=True)
        elif isinstance(verdict, admission.Poison):
            self._refuse_poison(tag, message, verdict)
        else:
            self._admit(tag, generation, delivery, verdict, message)

    def _admit(
        self,
        tag: int,
        generation: int,
        delivery: admission.Delivery,
        verdict: admission.Passed,
        message: Delivery,
    ) -> None:
        # Scoped by service and method: the same key sent to another method is another request.
        key = (
            (self._service.name, delivery.method, delivery.message_id)
            if delivery.message_id
            else None
        )
        if key is not None and self._answer_duplicate(key, tag, delivery, message):
            return
        if self._cancels.taken_back(delivery.reply_to, delivery.correlation_id):
            self.stats.cancelled += 1  # cancelled while it waited in the queue
            self._probe.skipped(delivery.method, "cancelled")
            self._replies.settle(tag, generation, ack=True)
            return
        service = self._service
        found = (
            plain.classify(delivery, service, self._settings)
            if isinstance(service, PlainService)
            else admission.classify(delivery, service, self._settings)
        )
        if isinstance(found, envelope.ErrorInfo):
            error = envelope.error_body(found)
            self._probe.answered(delivery.method, found.code)
            self._replies.publish(
                tag, delivery.reply_to, delivery.correlation_id, error, request=message
            )
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
                delivery.message_id or None,
                message.body,
                found,
                verdict.deadline_ms,
                delivery.redelivered,
                verdict.delivery_count,
                key,
                tracecontext.extract(delivery.headers),
                message,
                callheaders.extract(delivery.headers),
                self._cancels.start(delivery.reply_to, delivery.correlation_id),
            )
        )

    def _answer_duplicate(
        self, key: Hashable, tag: int, delivery: admission.Delivery, message: Delivery
    ) -> bool:
        cached = self._cache.get(key)
        if cached is not None:
            self.stats.deduplicated += 1
            self._probe.dedupe_hit(delivery.method)
            self._replies.publish(
                tag, delivery.reply_to, delivery.correlation_id, cached, request=message
            )
            return True
        waiters = self._running.get(key)
        if waiters is not None:
            self.stats.deduplicated += 1
            self._probe.dedupe_hit(delivery.method)
            waiters.append(
                Waiter(
                    tag, self.link.generation, delivery.reply_to, delivery.correlation_id, message
                )
            )
            return True
        return False

    def _refuse_poison(self, tag: int, message: Delivery, verdict: admission.Poison) -> None:
        props = message.properties
        self.stats.poisoned += 1
        self._probe.poisoned(props.type)
        log.error(
            "poison request %s (%r) delivered %d times, its workers died on the %d before: "
            "refused and dead-lettered to %s",
            props.correlation_id,
            props.type,
            verdict.deliveries,
            verdict.deliveries - 1,
            topology.dead_letter_queue(self.queue),
        )
        body = envelope.error_body(verdict.error)
        self._replies.publish(tag, props.reply_to, props.correlation_id, body, reject=True)

    # -- I/O thread: finished jobs and draining ------------------------------------------------

    def _complete_job(self, job: Job, body: bytes, *, ran: bool = True) -> None:
        self._cancels.finish(job.reply_to, job.correlation_id)
        waiters: list[Waiter] = []
        if job.cache_key is not None:
            if ran:
                self._cache.put(job.cache_key, body)
            waiters = self._running.pop(job.cache_key, [])
        generation = self.link.generation
        if job.generation == generation and self.link.is_open:
            self._replies.publish(
                job.tag, job.reply_to, job.correlation_id, body, request=job.delivery
            )
        else:
            self.stats.stale += 1
            self._probe.skipped(job.method, "stale")
        for waiter in waiters:
            if waiter.generation == generation:
                self._replies.publish(
                    waiter.tag,
                    waiter.reply_to,
                    waiter.correlation_id,
                    body,
                    request=waiter.delivery,
                )

    def _skip(self, job: Job, reason: str) -> None:
        self._cancels.finish(job.reply_to, job.correlation_id)
        waiters = self._running.pop(job.cache_key, []) if job.cache_key is not None else []
        # Twins of the same call share its deadline, and its caller.
        for tag, generation in [(job.tag, job.generation)] + [
            (w.tag, w.generation) for w in waiters
        ]:
            if reason == "cancelled":
                self.stats.cancelled += 1
            else:
                self.stats.expired += 1
            self._replies.settle(tag, generation, ack=True)
        self._probe.skipped(job.method, reason)

    def _begin_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("draining: %d requests in flight", len(self._replies.unsettled))
        channel = self.link.channel
        if self.link.is_open and channel is not None and self._consumer_tag is not None:
            # Deliveries sent before the broker saw the cancel arrive before its CancelOk.
            channel.cancel(self._consumer_tag, self._on_cancelled)
        else:
            self._on_cancelled()

    def _on_broker_cancel(self, _consumer_tag: str) -> None:
        """The broker cancelled our consumer: the queue was deleted, or its node went away."""
        self._consumer_tag = None  # pika forgot it too: cancelling it would never be answered
        if self._draining:
            log.info("the broker cancelled the consumer of %s while draining", self.queue)
            self._on_cancelled()
            return
        log.warning(
            "the broker cancelled the consumer of %s (queue deleted, or its node went away): "
            "declaring and consuming again on a new channel; %d requests in flight will be "
            "redelivered",
            self.queue,
            len(self._replies.unsettled),
        )
        self.link.reopen_channel()

    def _on_cancelled(self) -> None:
        self._cancelled = True
        self._check_drained()

    def _check_drained(self) -> None:
        replies = self._replies
        if self._draining and self._cancelled and not replies.unsettled and not replies.acks:
            self.drained.set()

    def on_lost(self, error: ReqrepError) -> None:
        self._lose_channel()

    def _lose_channel(self) -> None:
        unsettled = self._replies.unsettled
        if unsettled:
            log.warning(
                "%d requests in flight on the lost channel will be redelivered", len(unsettled)
            )
        self._replies.forget()
        self._consumer_tag = None
        if self._draining:
            self._cancelled = True  # the consumer died with the channel
        self._check_drained()

    def on_closed(self) -> None:
        self._notify_closed()
