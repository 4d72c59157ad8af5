"""The worker's I/O thread: declares the topology, consumes and admits requests, drains.

Publishing replies and settling requests (ack after the reply's confirm) is the other half of
this thread's work; it lives in ``worker/replies.py``, which ``Consumer`` extends.

Before a request reaches a handler thread it is judged here, cheaply, by the rules of
``worker/admission.py`` and this worker's reply cache (a duplicate of a request answered or
running here gets the same reply).

The broker cancels the consumer (``basic.cancel``) when the queue is deleted or its node goes
away. The worker logs it and replaces its channel, which declares the queue again and consumes
again; while draining, a cancelled consumer counts as stopped (nothing more can arrive).

Delivery tags belong to one channel. After a reconnection the broker redelivers whatever was
unacknowledged, so results of requests from an older channel are only cached, never acked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from reqrep.common import envelope, topology, tracecontext
from reqrep.common._pika_decode import undecodable
from reqrep.common._pika_deliver import confirm_delivery
from reqrep.common.config import Settings
from reqrep.common.connection import State
from reqrep.common.errors import ReqrepError
from reqrep.common.observe import Probe
from reqrep.worker import admission
from reqrep.worker._declare import chain, declare_steps
from reqrep.worker.dedupe import ReplyCache
from reqrep.worker.job import Job, Waiter
from reqrep.worker.replies import ConsumerStats, ReplyPublisher
from reqrep.worker.service import Service

__all__ = ["Consumer", "ConsumerStats", "Job"]

log = logging.getLogger("reqrep.worker")

CACHE_SWEEP_INTERVAL = 5.0  # seconds between sweeps of the reply cache's expired entries


class Consumer(ReplyPublisher):
    """Consumes one service's request queue.

    Threads: ``reply``, ``skip`` and ``drain`` may be called from any thread and only queue
    work; ``dispatch``, ``on_closed`` and ``on_setup`` (given by the Worker) are called on the
    I/O thread and must not block. Everything else runs on the I/O thread.
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
        on_setup: Callable[[Any], None] | None = None,
        probe: Probe | None = None,
    ) -> None:
        super().__init__(settings, name=name)
        self._on_setup = on_setup  # given each new connection once consuming (control channel)
        self.queue = settings.request_queue(service.name)
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
        self._probe = probe if probe is not None else Probe("worker", service.name, observers=())

    def reply(self, job: Job, body: bytes, *, ran: bool = True) -> None:
        """Publish ``body`` as the reply to ``job`` (and its twins), then ack once confirmed.
        Only a reply that came from running the handler (``ran``) is cached. Any thread."""
        self.submit(lambda: self._complete_job(job, body, ran=ran))

    def skip(self, job: Job) -> None:
        """Acknowledge ``job`` (and its waiting twins) without a reply: it expired before a
        handler thread picked it up. Any thread."""
        self.submit(lambda: self._skip_expired(job))

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
            and not (self._draining or self._cancelled)
        )

    # -- I/O thread: set-up -------------------------------------------------------------------

    def _setup(self, channel: Any) -> None:
        self._reset_replies(channel)
        channel.add_on_cancel_callback(self.guarded(self._on_broker_cancel))
        steps = declare_steps(
            channel,
            self._settings,
            self.queue,
            prefetch=self._prefetch,
            confirm=lambda done: self._confirm(channel, done),
            consume=self._consume,
        )
        chain(steps, self._after_setup)

    def _confirm(self, channel: Any, done: Callable[[Any], None]) -> None:
        if self._settings.persistent:
            confirm_delivery(channel, self.guarded(self._on_confirm), done)  # pika's, short road
        else:
            done(None)

    def _consume(self, done: Callable[[Any], None]) -> None:
        if self._draining:  # reconnected while draining: take nothing new
            done(None)
            return
        self._consumer_tag = self.channel.basic_consume(self.queue, self._on_request, callback=done)

    def _on_recovered(self) -> None:
        self._probe.reconnected()

    def _after_setup(self) -> None:
        if not self._sweeping:  # once: the I/O loop, and its timers, outlive connections
            self._sweeping = True
            self.call_later(CACHE_SWEEP_INTERVAL, self._sweep_cache)
        self._ready()
        if self._on_setup is not None:
            self._on_setup(self._connection)

    @property
    def in_flight(self) -> int:
        """Requests delivered on this channel and not yet settled (I/O thread)."""
        return len(self._unsettled)

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
            if self.state not in (State.CLOSING, State.CLOSED):
                self.call_later(CACHE_SWEEP_INTERVAL, self._sweep_cache)

    # -- I/O thread: requests -----------------------------------------------------------------

    def _on_request(self, _channel: Any, deliver: Any, props: Any, body: bytes) -> None:
        tag, generation = deliver.delivery_tag, self.generation
        self.stats.received += 1
        self._unsettled.add(tag)
        if (reason := undecodable(props)) is not None:  # see common/_pika_decode.py
            self.stats.undecodable += 1
            self._throttled.warning(
                "rejected request (tag %s) whose properties cannot be decoded (%s): dead-lettered",
                tag,
                reason,
            )
            self._settle(tag, generation, requeue=False)
            return
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
            self._throttled.warning(
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
        # Scoped by service and method: the same key sent to another method is another request.
        key = (
            (self._service.name, delivery.method, delivery.message_id)
            if delivery.message_id
            else None
        )
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
                delivery.message_id or None,
                body,
                found,
                verdict.deadline_ms,
                delivery.redelivered,
                verdict.delivery_count,
                key,
                tracecontext.extract(delivery.headers),
            )
        )

    def _answer_duplicate(self, key: Hashable, tag: int, delivery: admission.Delivery) -> bool:
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
            waiters.append(Waiter(tag, self.generation, delivery.reply_to, delivery.correlation_id))
            return True
        return False

    def _refuse_poison(self, tag: int, props: Any, verdict: admission.Poison) -> None:
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
        self._publish_reply(tag, props.reply_to, props.correlation_id, body, reject=True)

    # -- I/O thread: finished jobs and draining ------------------------------------------------

    def _complete_job(self, job: Job, body: bytes, *, ran: bool = True) -> None:
        waiters: list[Waiter] = []
        if job.cache_key is not None:
            if ran:
                self._cache.put(job.cache_key, body)
            waiters = self._running.pop(job.cache_key, [])
        if job.generation == self.generation and self.is_open:
            self._publish_reply(job.tag, job.reply_to, job.correlation_id, body)
        else:
            self.stats.stale += 1
            self._probe.skipped(job.method, "stale")
        for waiter in waiters:
            if waiter.generation == self.generation:
                self._publish_reply(waiter.tag, waiter.reply_to, waiter.correlation_id, body)

    def _skip_expired(self, job: Job) -> None:
        self.stats.expired += 1
        self._probe.skipped(job.method, "expired")
        self._settle(job.tag, job.generation, ack=True)
        waiters = self._running.pop(job.cache_key, []) if job.cache_key is not None else []
        for waiter in waiters:  # twins of the same call share its deadline
            self.stats.expired += 1
            self._settle(waiter.tag, waiter.generation, ack=True)

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

    def _on_broker_cancel(self, _frame: Any) -> None:
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
            len(self._unsettled),
        )
        self._reopen_channel()

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
        self._forget_replies()
        if self._draining:
            self._cancelled = True  # the consumer died with the channel
        self._check_drained()

    def _on_closed(self) -> None:
        self._notify_closed()
