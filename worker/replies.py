"""The worker's reply side: publish replies, match confirms, settle (ack/reject/requeue) requests.

A request is acknowledged only after the broker has confirmed its reply, so a worker that dies
between running a handler and replying leaves the request to be redelivered, never lost.
Replies go out with ``mandatory=True``: a reply whose callback queue is gone (the requestor
disconnected) comes back and is counted, instead of vanishing without a trace.

Delivery tags belong to one channel: a settlement for a tag of an older channel is dropped (the
broker redelivers that request on the new channel).

A reply the broker nacks (it could not keep it: e.g. the callback queue is full and rejects
publishes) requeues its request, so it runs (or is answered from the reply cache) again. That is
bounded: after ``REPLY_ATTEMPTS`` refused replies to the same request the request is rejected
without requeueing, i.e. dead-lettered, with one log line (none per attempt). The count travels
with the request, not in this process's memory: the requeue goes back to the queue, and any
worker process may take it next. So the request is republished (not requeued) with the count in
its ``x-reqrep-refused`` header, and acked once the broker has confirmed the copy; replies
refused by every process of a service add up to ``REPLY_ATTEMPTS`` in all. Requeues alone could
not bound it: RabbitMQ 4.3 no longer counts them toward a quorum queue's delivery limit, and
classic queues have none.

A reply over the broker's ``max_message_size`` closes the channel (406) instead of being nacked:
the channel's deliveries go back to the queue and the broker's limit is learnt from its words, so
the redelivered request is answered with a MessageTooLarge error reply (which fits) instead of
closing the channel again.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
from collections.abc import Callable
from typing import Any

from reqrep.common import envelope
from reqrep.common._link import Link
from reqrep.common._transport import Channel, Confirm, Delivery, Failure, Properties, PublishError
from reqrep.common._transport import Returned as ReturnedReply
from reqrep.common.config import Settings
from reqrep.common.logthrottle import LogThrottle
from reqrep.common.observe import Probe
from reqrep.common.plain import ERROR_TYPE, PlainReply
from reqrep.common.serialization import CONTENT_TYPE

__all__ = ["REFUSED_HEADER", "REPLY_ATTEMPTS", "ConsumerStats", "Replies"]

log = logging.getLogger("reqrep.worker")

REPLY_ATTEMPTS = 3  # refused (nacked) replies to one request before it is dead-lettered
REFUSED_HEADER = "x-reqrep-refused"  # replies to this request the broker refused so far
_TOO_LARGE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")


@dataclasses.dataclass
class ConsumerStats:
    """Counters, written on the I/O thread (``inline_overruns`` on the inline watchdog's);
    reads from elsewhere may be a moment stale."""

    received: int = 0
    replied: int = 0
    rejected: int = 0  # unanswerable (no reply_to / correlation_id): dead-lettered
    requeued: int = 0
    expired: int = 0  # past their deadline on arrival or when a handler thread was free: not run
    poisoned: int = 0  # delivered too often: refused and dead-lettered
    deduplicated: int = 0  # answered from the reply cache or by a running twin
    stale: int = 0  # finished after their channel was lost: cached, not acked
    replies_returned: int = 0  # the requestor's callback queue no longer existed
    undecodable: int = 0  # properties that could not be decoded: dead-lettered, not run
    replies_refused: int = 0  # replies the broker nacked (their request was sent around again)
    refused_dead_lettered: int = 0  # requests dead-lettered after REPLY_ATTEMPTS refused replies
    replies_too_large: int = 0  # replies over the broker's max_message_size: an error instead
    consumer_restarts: int = 0  # stalled consumers the watchdog replaced
    cancelled: int = 0  # cancelled by their callers: acknowledged, no reply (worker/cancel.py)
    inline_overruns: int = 0  # inline handlers over their budget (counted by worker/inline.py)


@dataclasses.dataclass(frozen=True)
class _Sent:
    """A publish waiting for its confirm: the request it settles, and what to do once kept."""

    request_tag: int
    reject: bool  # dead-letter the request once the reply is kept (a poison request)
    copy: bool = False  # a copy of the request (a refused reply's retry), not a reply
    request: Delivery | None = None  # the request, for a refused reply's retry


class Replies:
    """Publishes replies and settles the requests they answer, on the Link's current channel.

    Threads: every method runs on the I/O thread of the Link. The consumer calls ``reset``
    when a channel is set up, ``forget`` when it is lost, and ``learn_limit`` when the broker
    closed the channel; ``on_settled`` (the consumer's) is called whenever a request was settled.
    """

    def __init__(
        self,
        link: Link,
        settings: Settings,
        queue: str,
        *,
        stats: ConsumerStats,
        probe: Probe,
        on_settled: Callable[[], None],
        plain: bool = False,
    ) -> None:
        self._link = link
        self._plain = plain  # replies to plain requests (common/plain.py)
        self._settings = settings
        self._queue = queue
        self.stats = stats
        self._probe = probe
        self._on_settled = on_settled
        self.unsettled: set[int] = set()  # this channel's request tags not yet settled
        self.acks: list[int] = []  # settled tags whose ack goes out at the end of this turn
        self._published = 0
        self._pending: dict[int, _Sent] = {}  # a publish's confirm tag -> what it settles
        self._user_id = settings.username if settings.sign_replies else None
        self._broker_limit: int | None = None  # the broker's max_message_size, once learnt
        self.throttled = LogThrottle(log)  # for what hostile traffic can make happen often

    def reset(self, channel: Channel) -> None:
        self.forget()
        self._published = 0
        channel.on_return(self._link.guarded(self._on_return))

    def forget(self) -> None:
        self.unsettled.clear()
        self.acks.clear()
        self._pending.clear()

    def learn_limit(self, failure: Failure) -> None:
        """The broker closed the channel; if a message was over its ``max_message_size``,
        replies larger than that are answered with an error from now on."""
        found = _TOO_LARGE.search(failure.text)
        if found is not None:
            self._broker_limit = int(found.group(2))
            log.error(
                "a reply of %s bytes was over the broker's max_message_size=%s: replies larger "
                "than that are answered with MessageTooLarge from now on (set "
                "REQREP_MAX_MESSAGE_BYTES to at most the broker's limit)",
                found.group(1),
                found.group(2),
            )

    def publish(
        self,
        tag: int,
        reply_to: str,
        correlation_id: str,
        body: bytes,
        *,
        reject: bool = False,
        request: Delivery | None = None,
    ) -> None:
        """Publish ``body`` as the reply to request ``tag``; settle the request once the broker
        has it. ``request`` (when the worker has it) lets a refused reply send it around
        again."""
        channel = self._link.channel
        if channel is None or not self._link.is_open:
            return  # the channel is gone, and with it this delivery: the broker redelivers
        if self._broker_limit is not None and len(body) > self._broker_limit:
            self.stats.replies_too_large += 1
            body = envelope.error_body(
                envelope.ErrorInfo(
                    envelope.HANDLER_ERROR,
                    "MessageTooLarge",
                    f"the reply of {len(body)} bytes exceeds the broker's max_message_size="
                    f"{self._broker_limit}",
                )
            )
        content_type, kind = self._kind_of(body)
        properties = Properties(
            content_type=content_type,
            correlation_id=correlation_id,
            type=kind,
            # The broker refuses a user_id that is not the connection's own user (406): a
            # requestor that trusts it knows which user sent the reply.
            user_id=self._user_id,
        )
        try:
            channel.publish("", reply_to, body, properties, mandatory=True)
        except PublishError:
            log.warning("could not publish reply %r; it will be redelivered", correlation_id)
            return
        if not self._settings.persistent:
            # No confirms: the broker reads the reply before the ack that follows it here.
            if not reject:
                self.stats.replied += 1
            self.settle(tag, self._link.generation, ack=not reject, requeue=False)
            return
        self._published += 1
        self._pending[self._published] = _Sent(tag, reject, request=request)

    def _kind_of(self, body: bytes) -> tuple[str | None, str | None]:
        """A reply's content type and AMQP type: an envelope's, or a plain reply's (its own
        content type, or an error object typed ``error``)."""
        if isinstance(body, PlainReply):
            return body.content_type, None
        if self._plain:
            return CONTENT_TYPE, ERROR_TYPE
        return CONTENT_TYPE, envelope.REPLY_TYPE

    def on_confirm(self, confirm: Confirm) -> None:
        if confirm.multiple:  # tags are in publishing order: the settled ones come first
            tags = list(itertools.takewhile(lambda t: t <= confirm.tag, self._pending))
        else:
            tags = [confirm.tag] if confirm.tag in self._pending else []
        generation = self._link.generation
        for confirm_tag in tags:
            sent = self._pending.pop(confirm_tag)
            if sent.copy:  # a refused reply's request, sent around again
                if confirm.ack:
                    self.settle(sent.request_tag, generation, ack=True)
                else:  # not even the copy was kept: give the request back as it is
                    self.settle(sent.request_tag, generation, requeue=True)
            elif not confirm.ack:  # the reply was not kept
                self._on_refused(sent)
            elif sent.reject:
                self.settle(sent.request_tag, generation, requeue=False)
            else:
                self.stats.replied += 1
                self.settle(sent.request_tag, generation, ack=True)

    def _on_refused(self, sent: _Sent) -> None:
        """Send the request around again (let it run again rather than lose it), a bounded
        number of times in all; then dead-letter it."""
        self.stats.replies_refused += 1
        request = sent.request
        generation = self._link.generation
        headers = request.properties.headers if request is not None else None
        refused = _count(headers) + 1
        if sent.reject or request is None or refused >= REPLY_ATTEMPTS:
            if not sent.reject:
                self.stats.refused_dead_lettered += 1
                self.throttled.log(  # one line per request, and a flood of them is counted
                    logging.ERROR,
                    "reply %r to %r refused by the broker %d times: request dead-lettered",
                    getattr(request and request.properties, "correlation_id", None),
                    getattr(request and request.properties, "reply_to", None),
                    refused,
                )
            self.settle(sent.request_tag, generation, requeue=False)
            return
        channel = self._link.channel
        if channel is None:
            return
        log.debug("reply refused by the broker; its request goes round again (%d)", refused)
        props = request.properties
        copy = Properties(
            **{**vars(props), "headers": {**(headers or {}), REFUSED_HEADER: refused}}
        )
        try:
            channel.publish("", self._queue, request.body, copy, mandatory=False)
        except PublishError:
            return  # the channel is going: the broker redelivers the request
        self.stats.requeued += 1
        self._published += 1
        self._pending[self._published] = _Sent(sent.request_tag, False, copy=True)

    def _on_return(self, returned: ReturnedReply) -> None:
        self.stats.replies_returned += 1
        self._probe.reply_returned()
        self.throttled.info(
            "reply %s returned (%s %s): the requestor's queue %r is gone",
            returned.properties.correlation_id,
            returned.reply_code,
            returned.reply_text,
            returned.routing_key,
        )

    def settle(
        self, tag: int, generation: int, *, ack: bool = False, requeue: bool = False
    ) -> None:
        """Ack, requeue or reject (dead-letter) request ``tag`` of channel ``generation``; a
        tag of an older channel, or one settled already, is left alone."""
        channel = self._link.channel
        if (
            generation != self._link.generation
            or tag not in self.unsettled
            or channel is None
            or not self._link.is_open
        ):
            return  # that delivery died with its channel
        self.unsettled.discard(tag)
        if ack:
            self._queue_ack(tag)
        elif requeue:
            self.stats.requeued += 1
            channel.nack(tag, requeue=True)
        else:
            channel.reject(tag, requeue=False)
        self._on_settled()

    def _queue_ack(self, tag: int) -> None:
        """Ack soon, together with the other acks of this turn of the I/O loop: one
        ``basic.ack(multiple)`` can settle a run of requests in one frame."""
        if not self.acks and not self._link.batching:  # a batch's acks go out with it
            self._link.call_later(0, self.flush_acks)
        self.acks.append(tag)

    def flush_acks(self) -> None:
        acks, self.acks = sorted(self.acks), []
        channel = self._link.channel
        connection = self._link.connection
        if not acks or channel is None or not self._link.is_open:
            return
        # multiple=True acks every unacked tag up to N: only safe below the lowest tag that
        # is still being worked on.
        lowest_open = min(self.unsettled) if self.unsettled else acks[-1] + 1
        run = [t for t in acks if t < lowest_open]
        if connection is not None:
            connection.hold_writes()
        try:
            if run:
                channel.ack(run[-1], multiple=len(run) > 1)
            for tag in acks[len(run) :]:
                channel.ack(tag)
        finally:
            if connection is not None:
                connection.flush_writes()  # now, not a turn of the loop later
        self._on_settled()


def _count(headers: Any) -> int:
    """The refused-reply count a request carries (0 when absent or not a small integer)."""
    value = headers.get(REFUSED_HEADER) if isinstance(headers, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1000:
        return 0
    return value
