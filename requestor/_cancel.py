"""Telling the workers that a call was cancelled: the requestor's side of ``worker/cancel.py``.

When its caller cancels a call (an AsyncRequestor task cancelled, ``Future.cancel()``), the
requestor forgets the call at once and, if its request went out, publishes a ``cancel`` control
message: to ``{ns}control``, routing key ``service.<S>``, with the call's ``correlation_id`` and
the ``reply_to`` its request carried (the two name the call), its deadline in ``x-deadline``,
an ``expiration`` of the time left (a cancel is no use after the deadline, which workers know
already), not mandatory, body ``null``. Every worker of the service gets it; the one that holds
the call stops it, the others remember it until the deadline in case it comes to them.

It goes out on a channel of its own, opened with each connection: publishing to the control
exchange needs a permission that not every requestor user has (403), and the exchange exists
only once a worker has run (404); either closes the channel it happens on, and must not take
the calls' channel with it. A cancel that cannot be published is logged, never raised: the call
was forgotten already, and its worker finishes it as it would have.

Threads: every method on the requestor's I/O thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from reqrep.common import control, topology
from reqrep.common._transport import Channel, Failure, Properties, PublishError
from reqrep.common.errors import ReqrepError
from reqrep.common.logthrottle import LogThrottle
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.requestor._calls import Call

__all__ = ["DEADLINE_HEADER", "CancelSender"]

log = logging.getLogger("reqrep.requestor")

DEADLINE_HEADER = "x-deadline"


class CancelSender:
    """Publishes the cancels of a requestor's calls on a channel of their own.

    ``open_channel(on_open)`` opens a channel on the current connection (raising if there is
    none): the Link's ``open_extra_channel``.
    """

    def __init__(
        self, prefix: str, open_channel: Callable[[Callable[[Channel], None]], None]
    ) -> None:
        self._exchange = topology.control_exchange(prefix)
        self._open_channel = open_channel
        self._channel: Channel | None = None
        self._opening = False
        self._waiting: list[Call] = []  # cancels made while the channel opens
        self._throttled = LogThrottle(log)
        self.sent = 0

    def prepare(self) -> None:
        """Open the channel now, if none is open or opening (each new connection)."""
        if self._opening or (self._channel is not None and self._channel.is_open):
            return
        self._opening = True
        try:
            self._open_channel(self._on_open)
        except ReqrepError as exc:  # no connection: the calls' requests went with it
            self._opening = False
            self._waiting.clear()
            log.debug("cancels not sent: %s", exc)

    def send(self, call: Call) -> None:
        """Tell the workers of ``call``'s service that it was cancelled, if it was sent."""
        if not call.sent_to:
            return  # never published: no worker has it
        if self._channel is not None and self._channel.is_open:
            self._publish(self._channel, call)
            return
        self._waiting.append(call)
        self.prepare()

    def reset(self) -> None:
        """The connection is gone, and the channel with it."""
        self._channel = None
        self._opening = False
        self._waiting.clear()

    def _on_open(self, channel: Channel) -> None:
        self._opening = False
        self._channel = channel
        channel.on_close(self._on_close)
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            self._publish(channel, call)

    def _on_close(self, channel: Channel, failure: Failure) -> None:
        if channel is self._channel:
            self._channel = None
        if failure.by_broker and not failure.with_connection:
            self._throttled.warning(
                "a cancel was refused (%s): the workers finish cancelled calls; a requestor "
                "needs write permission on %s to cancel them",
                failure,
                self._exchange,
            )

    def _publish(self, channel: Channel, call: Call) -> None:
        left_ms = math.ceil((call.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return  # past its deadline: the workers skip it by that alone
        properties = Properties(
            content_type=CONTENT_TYPE,
            headers={DEADLINE_HEADER: call.deadline_ms},
            correlation_id=call.correlation_id,
            reply_to=call.sent_to,
            expiration=str(left_ms),
            type=control.CANCEL,
        )
        try:
            channel.publish(self._exchange, control.service_key(call.service), b"null", properties)
        except PublishError:
            return  # the channel is closing; _on_close says why
        self.sent += 1
