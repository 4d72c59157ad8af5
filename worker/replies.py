"""The worker's reply side: publish replies, match confirms, settle (ack/reject/requeue) requests.

A request is acknowledged only after the broker has confirmed its reply, so a worker that dies
between running a handler and replying leaves the request to be redelivered, never lost.
Replies go out with ``mandatory=True``: a reply whose callback queue is gone (the requestor
disconnected) comes back and is counted, instead of vanishing without a trace.

Delivery tags belong to one channel: a settlement for a tag of an older channel is dropped (the
broker redelivers that request on the new channel).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pika

from reqrep.common import envelope
from reqrep.common.config import Settings
from reqrep.common.connection import ConnectionThread
from reqrep.common.serialization import CONTENT_TYPE

__all__ = ["ConsumerStats", "ReplyPublisher"]

log = logging.getLogger("reqrep.worker")


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


class ReplyPublisher(ConnectionThread):
    """Publishes replies and settles the requests they answer.

    Threads: every method runs on the I/O thread. Subclasses call ``_reset_replies`` when a
    channel opens and ``_forget_replies`` when it is lost; ``_check_drained`` is their hook,
    called whenever a request was settled.
    """

    def __init__(self, settings: Settings, *, name: str) -> None:
        super().__init__(settings, name=name)
        self.stats = ConsumerStats()
        self._unsettled: set[int] = set()  # this channel's request tags not yet settled
        self._acks: list[int] = []  # settled tags whose ack goes out at the end of this turn
        self._published = 0
        self._reply_for: dict[int, tuple[int, bool]] = {}  # reply tag -> (request tag, reject)
        self._user_id = settings.username if settings.sign_replies else None

    def _check_drained(self) -> None:
        """Hook: a request was settled (I/O thread)."""

    def _reset_replies(self, channel: Any) -> None:
        self._forget_replies()
        self._published = 0
        channel.add_on_return_callback(self._on_return)

    def _forget_replies(self) -> None:
        self._unsettled.clear()
        self._acks.clear()
        self._reply_for.clear()

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
