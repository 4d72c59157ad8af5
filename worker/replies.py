"""The worker's reply side: publish replies, match confirms, settle (ack/reject/requeue) requests.

A request is acknowledged only after the broker has confirmed its reply, so a worker that dies
between running a handler and replying leaves the request to be redelivered, never lost.
Replies go out with ``mandatory=True``: a reply whose callback queue is gone (the requestor
disconnected) comes back and is counted, instead of vanishing without a trace.

Delivery tags belong to one channel: a settlement for a tag of an older channel is dropped (the
broker redelivers that request on the new channel).

A reply the broker nacks (it could not keep it: e.g. the callback queue is full and rejects
publishes) requeues its request, so it runs (or is answered from the reply cache) again. That is
bounded: after ``REPLY_ATTEMPTS`` refused replies to the same request (``reply_to`` +
``correlation_id``) the request is rejected without requeueing, i.e. dead-lettered, with one log
line (none per attempt). Requeues alone cannot bound it: RabbitMQ 4.3 no longer counts them
toward a quorum queue's delivery limit, and classic queues have none.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections import OrderedDict
from typing import Any

import pika

from reqrep.common import envelope
from reqrep.common._pika_props import ReplyProperties
from reqrep.common._pika_publish import ack, publish
from reqrep.common._pika_writes import flush_pika_writes, hold_pika_writes
from reqrep.common.config import Settings
from reqrep.common.connection import ConnectionThread
from reqrep.common.logthrottle import LogThrottle
from reqrep.common.observe import Probe
from reqrep.common.serialization import CONTENT_TYPE

__all__ = ["REPLY_ATTEMPTS", "ConsumerStats", "ReplyPublisher"]

log = logging.getLogger("reqrep.worker")

REPLY_ATTEMPTS = 3  # refused (nacked) replies to one request before it is dead-lettered
_REMEMBER_REFUSED = 10_000  # requests whose refused replies are counted, most recent first


@dataclasses.dataclass
class ConsumerStats:
    """Counters, written on the I/O thread; reads from elsewhere may be a moment stale."""

    received: int = 0
    replied: int = 0
    rejected: int = 0  # unanswerable (no reply_to / correlation_id): dead-lettered
    requeued: int = 0
    expired: int = 0  # past their deadline on arrival or when a handler thread was free: not run
    poisoned: int = 0  # delivered too often: refused and dead-lettered
    deduplicated: int = 0  # answered from the reply cache or by a running twin
    stale: int = 0  # finished after their channel was lost: cached, not acked
    replies_returned: int = 0  # the requestor's callback queue no longer existed
    undecodable: int = 0  # properties pika could not decode: dead-lettered, not run
    replies_refused: int = 0  # replies the broker nacked (their request was requeued)
    refused_dead_lettered: int = 0  # requests dead-lettered after REPLY_ATTEMPTS refused replies


@dataclasses.dataclass(frozen=True)
class _Sent:
    """A reply waiting for its confirm: the request it answers, and what to do once kept."""

    request_tag: int
    reject: bool  # dead-letter the request once the reply is kept (a poison request)
    key: tuple[str, str]  # (reply_to, correlation_id): the request across redeliveries


class ReplyPublisher(ConnectionThread):
    """Publishes replies and settles the requests they answer.

    Threads: every method runs on the I/O thread. Subclasses call ``_reset_replies`` when a
    channel opens and ``_forget_replies`` when it is lost; ``_check_drained`` is their hook,
    called whenever a request was settled.
    """

    _probe: Probe  # the subclass's: it reports to the installed observers

    def __init__(self, settings: Settings, *, name: str) -> None:
        super().__init__(settings, name=name)
        self.stats = ConsumerStats()
        self._unsettled: set[int] = set()  # this channel's request tags not yet settled
        self._acks: list[int] = []  # settled tags whose ack goes out at the end of this turn
        self._published = 0
        self._reply_for: dict[int, _Sent] = {}  # reply's confirm tag -> what it answers
        # (reply_to, correlation_id) -> replies refused so far; survives reconnections.
        self._refused: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._user_id = settings.username if settings.sign_replies else None
        self._throttled = LogThrottle(log)  # for what hostile traffic can make happen often

    def _check_drained(self) -> None:
        """Hook: a request was settled (I/O thread)."""

    def _reset_replies(self, channel: Any) -> None:
        self._forget_replies()
        self._published = 0
        channel.add_on_return_callback(self.guarded(self._on_return))

    def _forget_replies(self) -> None:
        self._unsettled.clear()
        self._acks.clear()
        self._reply_for.clear()

    def _publish_reply(
        self, tag: int, reply_to: str, correlation_id: str, body: bytes, *, reject: bool = False
    ) -> None:
        if not self.is_open:
            return  # the channel is gone, and with it this delivery: the broker redelivers
        properties = ReplyProperties(  # all but the correlation id's bytes are reused
            correlation_id=correlation_id,
            content_type=CONTENT_TYPE,
            type=envelope.REPLY_TYPE,
            # The broker refuses a user_id that is not the connection's own user (406): a
            # requestor that trusts it knows which user sent the reply.
            user_id=self._user_id,
        )
        try:
            publish(self.channel, "", reply_to, body, properties, mandatory=True)
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
        self._reply_for[self._published] = _Sent(tag, reject, (reply_to, correlation_id))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:  # tags are in publishing order: the settled ones come first
            tags = list(itertools.takewhile(lambda t: t <= method.delivery_tag, self._reply_for))
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._reply_for else []
        for reply_tag in tags:
            sent = self._reply_for.pop(reply_tag)
            if nacked:  # the reply was not kept
                self._on_refused(sent)
                continue
            self._refused.pop(sent.key, None)
            if sent.reject:
                self._settle(sent.request_tag, self.generation, requeue=False)
            else:
                self.stats.replied += 1
                self._settle(sent.request_tag, self.generation, ack=True)

    def _on_refused(self, sent: _Sent) -> None:
        """Requeue the request (let it run again rather than lose it), a bounded number of
        times; then dead-letter it."""
        self.stats.replies_refused += 1
        attempts = self._refused.pop(sent.key, 0) + 1
        reply_to, correlation_id = sent.key
        if sent.reject or attempts >= REPLY_ATTEMPTS:
            if not sent.reject:
                self.stats.refused_dead_lettered += 1
                self._throttled.log(  # one line per request, and a flood of them is counted
                    logging.ERROR,
                    "reply %r to %r refused by the broker %d times: request dead-lettered",
                    correlation_id,
                    reply_to,
                    attempts,
                )
            self._settle(sent.request_tag, self.generation, requeue=False)
            return
        self._refused[sent.key] = attempts
        while len(self._refused) > _REMEMBER_REFUSED:
            self._refused.popitem(last=False)
        log.debug(
            "reply %r to %r refused by the broker; requeueing its request (attempt %d of %d)",
            correlation_id,
            reply_to,
            attempts,
            REPLY_ATTEMPTS,
        )
        self._settle(sent.request_tag, self.generation, requeue=True)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self.stats.replies_returned += 1
        self._probe.reply_returned()
        self._throttled.info(
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

    def _after_tasks(self) -> None:
        # Replies settled by this batch of tasks (no confirms): their acks join the replies'
        # write instead of following in a send of their own.
        if self._acks:
            self._flush_acks()

    def _queue_ack(self, tag: int) -> None:
        """Ack soon, together with the other acks of this turn of the I/O loop: one
        ``basic_ack(multiple=True)`` can settle a run of requests in one frame."""
        if not self._acks and not self._batching:  # a batch's acks go out with _after_tasks
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
        hold_pika_writes(self._connection)
        try:
            if run:
                ack(self.channel, run[-1], multiple=len(run) > 1)
            for tag in acks[len(run) :]:
                ack(self.channel, tag, multiple=False)
        finally:
            flush_pika_writes(self._connection)  # now, not a turn of the loop later
        self._check_drained()
