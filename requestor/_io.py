"""The requestor's I/O side: publishes calls and routes replies, on the I/O thread of its Link.

It declares the exclusive, server-named callback queue, consumes replies from it, and publishes
requests to the requests exchange (``topology.request_exchange``), routed by the request
queue's name, with ``mandatory=True`` on a channel in confirm mode. Why both: a request to a queue
that does not exist is otherwise dropped by the broker without a word, and the caller would wait
out its whole timeout. With ``mandatory`` the broker returns it (312 NO_ROUTE) and the call
fails at once with NoSuchService; confirms add a nack for requests the broker accepted but could
not keep.

When the connection drops, the callback queue dies with it (it is exclusive), so no reply to a
request already sent can arrive any more: those calls fail at once with ConnectionLost, except
calls marked retryable, which are sent again after the reconnection with the same idempotency
key and a ``reply_to`` naming the new callback queue. Calls made while reconnecting are held,
within their own deadline, and go out once the connection is back. The same holds while the
broker blocks the connection (a memory or disk alarm): requests are held, not written into a
socket the broker no longer reads, and go out when it unblocks; a call whose deadline passes
first fails with CallTimeout saying why.

A nack means the broker did not queue the request. The channel is then replaced (on RabbitMQ
3.10 a channel that first published to a quorum queue while its leader was down has every later
publish nacked, while a new channel works), at most once per ``NACK_CHANNEL_PAUSE``: a nack
sooner than that gets it replaced when the pause is over. A retryable call is sent again after
a short pause, or at once on the new channel, within its deadline; other calls fail with
PublishRejected. The callback queue is declared without auto-delete, so it outlives a replaced
channel: replies to calls in flight still arrive.

A request over the broker's ``max_message_size`` makes the broker close the channel (406), not
nack the publish. The channel is replaced and the connection stays: the call that was too large
fails with MessageTooLarge naming the broker's limit (later ones fail before they are sent);
requests published after it on the closed channel were dropped by the broker unseen, so they
are sent again; those published before it were queued, and their replies still come.

Deadlines do not depend on the connection: the sweep that fails due calls starts with the I/O
thread, before the first connection.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque

from reqrep.common import topology
from reqrep.common._link import Link, LinkOwner
from reqrep.common._transport import (
    Channel,
    Confirm,
    Delivery,
    Failure,
    Properties,
    PublishError,
    QueueInfo,
    Returned,
    Transport,
)
from reqrep.common.config import Settings
from reqrep.common.errors import (
    BrokerUnreachable,
    CallError,
    ClosedError,
    ConnectionLost,
    MessageTooLarge,
    NoSuchService,
    PublishRejected,
    ReqrepError,
)
from reqrep.common.observe import Probe
from reqrep.requestor._calls import Call, CallState, ReplyHandler
from reqrep.requestor._cancel import CancelSender
from reqrep.requestor._presence import WorkerPresence

__all__ = ["DEADLINE_HEADER", "RequestorIO"]

log = logging.getLogger("reqrep.requestor")

# How often the I/O thread fails calls whose deadline passed. Blocking calls wait with their own
# exact timeout; this bounds how late an async call's future learns of its timeout.
SWEEP_INTERVAL = 0.1
DEADLINE_HEADER = "x-deadline"  # absolute deadline, Unix time in milliseconds
# After a nack the channel is replaced, at most once in this many seconds: a queue that refuses
# every publish (x-overflow=reject-publish) must not make the requestor churn channels.
NACK_CHANNEL_PAUSE = 1.0
# RabbitMQ's words when a message is over its max_message_size (406 PRECONDITION_FAILED).
_TOO_LARGE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")
_NOT_FOUND = 404
# After the broker said the requests exchange does not exist, calls fail at once for this long
# (rather than close a channel each), then the next one tries again: a worker may have made it.
NO_EXCHANGE_PAUSE = 1.0


class RequestorIO(LinkOwner):
    """Publishes calls and routes replies into a ReplyHandler.

    Threads: ``publish`` from any caller thread (it only queues work); ``start``/``stop`` from
    the Requestor's controlling thread; every other method on the I/O thread of the Link it
    holds (the Link calls the ``LinkOwner`` methods there).
    """

    def __init__(
        self,
        settings: Settings,
        replies: ReplyHandler,
        *,
        name: str,
        transport: Transport,
        trusted_repliers: frozenset[str] | None = None,
        probe: Probe | None = None,
    ) -> None:
        self._settings = settings
        self._replies = replies
        self._trusted = trusted_repliers
        self._probe = probe if probe is not None else Probe("requestor", observers=())
        self.link = Link(settings, self, name=name, transport=transport)
        self.reply_queue = ""  # read from any thread; written on the I/O thread
        self._published = 0  # publishes on this channel == the last confirm tag
        self._unconfirmed: deque[Call] = deque()  # this channel's calls awaiting a confirm
        self._keep_queue = False  # the channel was replaced: the callback queue lives on
        self._last_replaced = -math.inf  # when the channel was last replaced after a nack
        self._replacing = False  # a replacement put off after a nack is due
        self._broker_limit: int | None = None  # the broker's max_message_size, once learnt
        self._exchange = topology.request_exchange(settings.queue_prefix)
        self._no_exchange_until = -math.inf  # the exchange was missing: fail calls until then
        self._cancels = CancelSender(settings.queue_prefix, self.link.open_extra_channel)
        self._presence = (  # fail fast with NoWorkers unless the caller would rather wait
            None
            if settings.wait_for_workers
            else WorkerPresence(self.link.open_extra_channel, self.link.call_later)
        )

    def publish(self, call: Call) -> None:
        """Queue a call for publishing (any thread); raises ClosedError once closed."""
        self.link.submit(lambda: self._publish(call))

    def cancel(self, call: Call) -> None:
        """Tell the workers that ``call``, forgotten already, was cancelled (any thread); raises
        ClosedError once closed."""
        self.link.submit(lambda: self._cancels.send(call))

    # -- LinkOwner (I/O thread) ---------------------------------------------------------------

    def on_thread_start(self) -> None:
        self.link.call_later(SWEEP_INTERVAL, self._sweep)

    def setup(self, channel: Channel) -> None:
        self._published = 0
        self._unconfirmed.clear()
        channel.on_return(self.link.guarded(self._on_return))
        if self._settings.persistent:
            channel.confirm(self.link.guarded(self._on_confirm), self._declare)
        else:  # mandatory returns need no confirms: NoSuchService still fails at once
            self._declare()

    def on_channel_closed(self, failure: Failure) -> None:
        self._keep_queue = True  # the connection stays, and its callback queue with it
        self._sort_out_unconfirmed(failure)

    def on_recovered(self) -> None:
        self._probe.reconnected()
        if self._presence is not None:  # the workers are probably reconnecting too
            self._presence.recovered(self._settings.reconnect_max + 1.0)
        self._publish_held()

    def on_unblocked(self) -> None:
        self._publish_held()

    def on_lost(self, error: ReqrepError) -> None:
        """Fail the calls whose replies can no longer arrive (sent on the lost connection, whose
        callback queue died with it), except those that may be sent again. Calls not sent yet
        are not touched: they go out on the next connection."""
        self._keep_queue = False
        self._unconfirmed.clear()
        self._cancels.reset()
        if self._presence is not None:
            self._presence.reset()
        stranded, unsent = [], []
        for call in self._replies.live():
            if call.state not in (CallState.UNCONFIRMED, CallState.SENT):
                if call.fail_fast:  # not held for the next connection
                    unsent.append(call)
                continue
            if call.retries > 0 and not call.fail_fast:
                call.retries -= 1
                call.state = CallState.HELD
            else:
                stranded.append(call)
        lost = ConnectionLost(f"{error} (the request may or may not have been run)")
        failed = self._replies.fail_many(stranded, lost)
        self._replies.fail_many(unsent, self.unreachable())
        if failed:
            log.warning("%d pending calls failed: %s", failed, error)

    def on_closed(self) -> None:
        """The I/O thread is ending (closed, or crashed): no live call can end otherwise now."""
        error = self.link.error or ClosedError("the requestor's connection was closed")
        self._replies.fail_all(type(error)(f"{error} (the request may or may not have been run)"))

    # -- the callback queue -------------------------------------------------------------------

    def _declare(self) -> None:
        channel = self.link.channel
        if channel is None:
            return
        if self._keep_queue:  # a replaced channel: the connection's callback queue is still there
            self._keep_queue = False
            self._consume_replies(channel)
            return
        # Not auto-delete: the queue must outlive a replaced channel. Exclusive: it goes with
        # the connection.
        channel.declare_queue("", exclusive=True, on_ok=self._on_declared)

    def _on_declared(self, info: QueueInfo) -> None:
        self.reply_queue = info.queue
        if self.link.channel is not None:
            self._consume_replies(self.link.channel)

    def _consume_replies(self, channel: Channel) -> None:
        channel.consume(
            self.reply_queue,
            self._on_reply_guarded,
            auto_ack=True,
            exclusive=True,
            on_ok=lambda _tag: self._on_consuming(),
        )

    def _on_consuming(self) -> None:
        self.link.ready()
        self._cancels.prepare()  # a cancel then goes out at once, before a close that follows

    def _on_reply_guarded(self, delivery: Delivery) -> None:
        """A reply we cannot handle fails its own call, not the connection (and every call)."""
        try:
            self._on_reply(delivery)
        except Exception as exc:
            cid = delivery.properties.correlation_id
            log.exception("could not handle reply %r", cid)
            if isinstance(cid, str):
                self._replies.fail(cid, CallError(f"could not handle the reply: {exc!r}"))

    def _on_reply(self, delivery: Delivery) -> None:
        properties = delivery.properties
        if properties.undecodable is not None:
            self._replies.discard_undecodable(properties.undecodable)
            return
        if self._trusted is not None and properties.user_id not in self._trusted:
            self._replies.discard_untrusted(properties.correlation_id, properties.user_id)
            return
        body = delivery.body
        if len(body) > self._settings.max_message_bytes:
            cid = properties.correlation_id
            self._replies.fail(
                cid if isinstance(cid, str) else "",
                MessageTooLarge(
                    f"reply of {len(body)} bytes exceeds max_message_bytes="
                    f"{self._settings.max_message_bytes}"
                ),
            )
            return
        # A deadline that passed before this reply was read wins, although the sweep has not
        # run yet: a call never returns a result after its timeout (the sweep alone would let
        # a reply up to SWEEP_INTERVAL late through, and a handler that stops when it sees the
        # deadline pass answers just then). Only the heap's due entries cost anything.
        self._replies.expire_due(time.monotonic(), self.why_unsent)
        self._replies.resolve(properties.correlation_id, body, properties.type)

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, call: Call) -> None:
        if call.state is CallState.DONE:
            return
        # While the broker blocks us (a resource alarm) a check might never be answered: the
        # call is held instead, and checked when it is published after the unblock.
        if self._presence is not None and self.link.is_open and self.link.blocked is None:
            cid = call.correlation_id
            self._presence.gate(
                call.queue,
                call.service,
                lambda: self._send(call),
                lambda error: self._replies.fail(cid, error),
            )
        else:
            self._send(call)

    def _publish_held(self) -> None:
        """Send the calls held for a channel, and those waiting out a pause to be sent again
        after a nack: a new channel is what they waited for (their timers then do nothing)."""
        for call in self._replies.live():
            if call.state is CallState.HELD:
                self._publish(call)
            elif call.state is CallState.RETRYING:
                call.state = CallState.NEW
                self._publish(call)

    def _send(self, call: Call) -> None:
        if call.state is CallState.DONE:
            return
        channel = self.link.channel
        if channel is None or not self.link.is_open or self.link.blocked is not None:
            self._hold(call)
            return
        if self._broker_limit is not None and len(call.body) > self._broker_limit:
            self._replies.fail(call.correlation_id, _too_large(len(call.body), self._broker_limit))
            return
        if time.monotonic() < self._no_exchange_until and not call.plain:
            self._replies.fail(call.correlation_id, self._no_exchange(call.service))
            return
        left_ms = math.ceil((call.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return  # the sweep ends it with CallTimeout
        properties = Properties(
            content_type=call.content_type,
            headers={DEADLINE_HEADER: call.deadline_ms, **call.headers, **call.app_headers},
            delivery_mode=2 if self._settings.persistent else 1,
            correlation_id=call.correlation_id,
            reply_to=self.reply_queue,
            expiration=str(left_ms),
            message_id=call.message_id,
            type=call.method or None,
        )
        # A plain call goes to its queue through the default exchange, as plain clients do.
        exchange = "" if call.plain else self._exchange
        try:
            channel.publish(exchange, call.queue, call.body, properties, mandatory=True)
        except PublishError:
            call.state = CallState.HELD  # never sent: it goes out after the recovery
            return
        call.generation = self.link.generation
        call.sent_to = self.reply_queue
        if self._settings.persistent:
            self._published += 1
            call.tag = self._published
            call.state = CallState.UNCONFIRMED
            self._unconfirmed.append(call)
        else:
            call.state = CallState.SENT

    def _hold(self, call: Call) -> None:
        """No channel to send ``call`` on now: hold it for the next one, or, if it is a
        fail-fast call and no connection is up, fail it at once."""
        if call.fail_fast and not self.link.up:
            self._replies.fail(call.correlation_id, self.unreachable())
        else:
            call.state = CallState.HELD

    def _on_return(self, returned: Returned) -> None:
        cid = returned.properties.correlation_id
        log.debug("request %s returned: %s %s", cid, returned.reply_code, returned.reply_text)
        if isinstance(cid, str) and cid:
            call = self._replies.get(cid)
            queue, prefix = returned.routing_key, self._settings.queue_prefix
            service = queue[len(prefix) :] if prefix and queue.startswith(prefix) else queue
            self._replies.fail(cid, NoSuchService(call.service if call is not None else service))

    def _on_confirm(self, confirm: Confirm) -> None:
        settled = self._settle(confirm.tag, confirm.multiple)
        if confirm.ack:
            for call in settled:
                if call.state is CallState.UNCONFIRMED:
                    call.state = CallState.SENT
            return
        now = time.monotonic()
        for call in settled:
            if call.state is not CallState.UNCONFIRMED:
                continue
            if not self._retry(call, now):
                self._replies.fail(
                    call.correlation_id, PublishRejected("the broker refused the request (nack)")
                )
        wait = self._last_replaced + NACK_CHANNEL_PAUSE - now
        if wait <= 0:
            self._replace_nacking_channel()
        elif not self._replacing:
            # Not now (at most once per pause), but once the pause is over: the channel may
            # nack all it gets (RabbitMQ 3.10), and a later nack may be a second away.
            self._replacing = True
            generation = self.link.generation
            self.link.call_later(wait, lambda: self._replace_nacking_channel(generation))

    def _replace_nacking_channel(self, generation: int | None = None) -> None:
        """Replace the channel after a nack (``generation``: only if it is still that one)."""
        self._replacing = False
        if generation is not None and (generation != self.link.generation or not self.link.is_open):
            return  # replaced meanwhile, or the connection went: the new channel is fresh
        now = time.monotonic()
        self._last_replaced = now
        # Confirms of the old channel die with it: send retryable calls again rather than
        # wait for an answer that may never come (their key makes a duplicate harmless);
        # the others may have been queued, and wait for their replies.
        for call in self._unconfirmed:
            if call.state is CallState.UNCONFIRMED and not self._retry(call, now):
                call.state = CallState.SENT
        self._unconfirmed.clear()  # a late confirm of the closing channel settles nothing
        self._keep_queue = True
        self.link.reopen_channel()

    def _settle(self, tag: int, multiple: bool) -> list[Call]:
        """The calls a confirm of ``tag`` settles (tags are in publishing order)."""
        unconfirmed = self._unconfirmed
        if multiple:
            settled = []
            while unconfirmed and unconfirmed[0].tag <= tag:
                settled.append(unconfirmed.popleft())
            return settled
        if unconfirmed and unconfirmed[0].tag == tag:
            return [unconfirmed.popleft()]
        for call in unconfirmed:
            if call.tag == tag:
                unconfirmed.remove(call)
                return [call]
        return []

    def _retry(self, call: Call, now: float) -> bool:
        """Send a refused (or in doubt) call again after a pause, if it may be; say whether."""
        if call.retries <= 0 or call.deadline <= now:
            return False
        # Not queued, so safe to send again: after a pause that grows with each refusal.
        call.retries -= 1
        call.rejections += 1
        call.state = CallState.RETRYING
        pause = min(1.0, 0.05 * 2 ** min(call.rejections, 5))
        self.link.call_later(pause, lambda: self._resend(call))
        return True

    def _resend(self, call: Call) -> None:
        if call.state is CallState.RETRYING:
            call.state = CallState.NEW
            self._publish(call)

    def _no_exchange(self, service: str) -> NoSuchService:
        error = NoSuchService(service)
        error.args = (
            f"{error} (the requests exchange {self._exchange!r} does not exist: no worker of "
            "this protocol version has started under this prefix)",
        )
        return error

    def _sort_out_unconfirmed(self, failure: Failure) -> None:
        """The broker closed the channel under calls it had not confirmed (see the module
        docstring); tell them apart by the publish that closed it, if the broker named it."""
        unconfirmed, self._unconfirmed = list(self._unconfirmed), deque()
        if failure.code == _NOT_FOUND and self._exchange in failure.text:
            # Every request goes to the requests exchange: none of them was queued.
            self._no_exchange_until = time.monotonic() + NO_EXCHANGE_PAUSE
            for call in unconfirmed:
                self._replies.fail(call.correlation_id, self._no_exchange(call.service))
            return
        found = _TOO_LARGE.search(failure.text)
        culprit = None
        if found is not None:
            size, limit = int(found.group(1)), int(found.group(2))
            self._broker_limit = limit
            culprit = next((c for c in unconfirmed if len(c.body) == size), None)
        if culprit is None:  # which publish closed it is not known
            now = time.monotonic()
            for call in unconfirmed:
                if call.state is CallState.UNCONFIRMED and not self._retry(call, now):
                    call.state = CallState.SENT  # it may have been queued: its reply may come
            return
        assert self._broker_limit is not None  # noqa: S101 - set with the culprit
        after = False
        for call in unconfirmed:
            if call is culprit:
                after = True
                self._replies.fail(call.correlation_id, _too_large(size, self._broker_limit))
            elif after and call.state is CallState.UNCONFIRMED:
                call.state = CallState.HELD  # dropped unseen with the channel: send it again
            elif call.state is CallState.UNCONFIRMED:
                call.state = CallState.SENT  # queued before the channel closed

    # -- deadlines ----------------------------------------------------------------------------

    def _sweep(self) -> None:
        """End the calls that are due (a heap: the cost is theirs, not every call's). Runs every
        SWEEP_INTERVAL for the thread's life."""
        try:
            self._replies.expire_due(time.monotonic(), self.why_unsent)
        finally:
            self.link.call_later(SWEEP_INTERVAL, self._sweep)

    def unreachable(self, what: str = "the fail-fast call") -> BrokerUnreachable:
        """The error of a fail-fast call (or ``what``) while no connection is up (any
        thread)."""
        return BrokerUnreachable(
            f"{self.link.name}: no connection to the broker ({self.link.address}; reconnecting): "
            f"{what} was not sent"
        )

    def why_unsent(self, call: Call) -> str | None:
        """Why ``call`` never went out, if it did not: what its CallTimeout should say. Any
        thread (it reads the call's state and the Link's, a moment stale at worst)."""
        if call.state not in (CallState.HELD, CallState.RETRYING):
            return None
        if call.rejections:
            why = f"the broker refused the request (nack) {call.rejections} times"
        elif self.link.blocked is not None:
            why = f"the broker blocked publishing ({self.link.blocked})"
        else:
            why = "the broker connection was down"
        return f"no reply from {call.what}: {why} until the call's deadline"


def _too_large(size: int, limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        f"request of {size} bytes exceeds the broker's max_message_size={limit} (set "
        f"REQREP_MAX_MESSAGE_BYTES to at most the broker's limit)"
    )
