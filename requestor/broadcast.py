"""Broadcast (scatter-gather): one call to every live worker of one or more services, and their
replies, each tagged by the worker that sent it.

How one broadcast goes (the wire is in ``common/control.py`` and docs/protocol.md):

1. On a channel of its own on the requestor's connection, it declares a queue for the answers
   (server-named, exclusive, auto-delete: one per broadcast, so no other broadcast's answers
   and no rate limit of another asker's queue get in the way) and consumes it.
2. It publishes, for each service ``S``, a ``ping`` and then the ``broadcast`` itself to
   ``{ns}control`` with the routing key ``service.S``. Each worker gets the ping first and
   answers it at once, from its I/O thread, then runs the broadcast and answers that when its
   handler is done. Every answer carries the worker's id (``x-reqrep-worker``).
3. The workers that answer the ping within ``DISCOVERY`` seconds (or the timeout, if shorter)
   are the live ones. The broadcast ends when each of them has replied, when ``min_replies``
   replies are in, or at the timeout, whichever comes first. A worker that answered the ping
   and not the broadcast by then is reported ``missing``: it died, or is slow, or is stuck.

Nobody knows how many workers there are: a worker whose ping answer comes after the discovery
window still counts if its reply comes before the end, and one that dies before its ping answer
has left it is not known at all (nobody can tell it from a worker that never was).

Threads: ``Gather`` runs on the requestor's I/O thread; its outcome goes to a
``concurrent.futures.Future`` that the caller waits on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from reqrep.common import control, envelope, serialization, topology, tracecontext
from reqrep.common._link import Link
from reqrep.common._transport import Channel, Delivery, Failure, Properties, PublishError, QueueInfo
from reqrep.common.config import Settings
from reqrep.common.control import WorkerInfo
from reqrep.common.errors import (
    AccessRefused,
    ClosedError,
    ConnectionLost,
    NoSuchService,
    RemoteError,
    ReqrepError,
    SerializationError,
)

__all__ = ["DISCOVERY", "BroadcastReply", "BroadcastResult", "Gather"]

log = logging.getLogger("reqrep.requestor")

DISCOVERY = 1.0  # seconds the workers have to answer the ping: those that do are the live ones
_DEADLINE_HEADER = "x-deadline"
_NOT_FOUND, _ACCESS_REFUSED = 404, 403


@dataclasses.dataclass(frozen=True)
class BroadcastReply:
    """One worker's reply: ``worker`` is its id (``WorkerInfo.id``), ``info`` what it said in
    answer to the ping (host, pid, service...; None if that answer did not come), and either
    ``result`` or ``error``, as a call would have given them."""

    worker: str
    info: WorkerInfo | None
    result: Any = None
    error: RemoteError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def value(self) -> Any:
        """The result, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.result


@dataclasses.dataclass(frozen=True)
class BroadcastResult:
    """What a broadcast gathered: ``replies``, in the order they came, and ``missing``, the
    workers that answered the ping but did not reply in time."""

    replies: list[BroadcastReply]
    missing: list[WorkerInfo]

    def results(self) -> dict[str, Any]:
        """The successful replies' results, by worker id."""
        return {r.worker: r.result for r in self.replies if r.ok}


class Gather:
    """One broadcast, from its channel to its outcome (I/O thread; see the module docstring).

    ``future`` completes with a ``BroadcastResult``, or with the error that stopped it (the
    connection went, the broker refused the control exchange).
    """

    def __init__(
        self,
        link: Link,
        settings: Settings,
        services: Sequence[str],
        method: str,
        body: bytes,
        *,
        timeout: float,
        min_replies: int | None,
    ) -> None:
        self.future: Future[BroadcastResult] = Future()
        self._link = link
        self._exchange = topology.control_exchange(settings.queue_prefix)
        self._services = list(services)
        self._method = method
        self._body = body
        self._timeout = timeout
        self._min_replies = min_replies
        self._deadline = time.monotonic() + timeout
        self._deadline_ms = int((time.time() + timeout) * 1000)
        self._trace = tracecontext.outgoing()
        self._cid = os.urandom(16).hex()
        self._ping_cid = f"{self._cid}.ping"
        self._channel: Channel | None = None
        self._workers: dict[str, WorkerInfo] = {}  # id -> its ping answer
        self._replies: dict[str, BroadcastReply] = {}  # id -> its reply, in arrival order
        self._discovered = False  # the discovery window has passed
        self._over = False  # finished, failed or abandoned: nothing more happens
        self._timers: list[object] = []
        self.future.add_done_callback(self._on_future_done)

    def start(self) -> None:
        """Open the broadcast's channel (I/O thread)."""
        try:
            self._link.open_extra_channel(self._on_open)
        except ReqrepError as exc:
            self._fail(exc)
            return
        self._timers.append(self._link.call_later(self._timeout, self._finish))
        self._timers.append(
            self._link.call_later(min(DISCOVERY, self._timeout), self._end_discovery)
        )

    def _on_open(self, channel: Channel) -> None:
        if self._over:
            channel.close()
            return
        self._channel = channel
        channel.on_close(self._on_close)
        channel.declare_queue(
            "",
            exclusive=True,
            auto_delete=True,
            on_ok=lambda info: self._on_declared(channel, info),
        )

    def _on_declared(self, channel: Channel, info: QueueInfo) -> None:
        channel.consume(
            info.queue, self._on_answer, auto_ack=True, on_ok=lambda _tag: self._send(info.queue)
        )

    def _send(self, reply_to: str) -> None:
        channel = self._channel
        if channel is None:
            return
        left_ms = max(1, math.ceil((self._deadline - time.monotonic()) * 1000))
        ping = self._properties(control.PING, self._ping_cid, reply_to, left_ms)
        call = self._properties(control.BROADCAST, self._cid, reply_to, left_ms)
        call.headers = {
            control.METHOD_HEADER: self._method,
            _DEADLINE_HEADER: self._deadline_ms,
            **self._trace,
        }
        try:
            for service in self._services:
                key = control.service_key(service)
                channel.publish(self._exchange, key, b"null", ping)
                channel.publish(self._exchange, key, self._body, call)
        except PublishError as exc:
            self._fail(ConnectionLost(f"broadcast not sent: {exc}"))

    @staticmethod
    def _properties(kind: str, correlation_id: str, reply_to: str, left_ms: int) -> Properties:
        return Properties(
            type=kind,
            content_type=serialization.CONTENT_TYPE,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration=str(left_ms),
        )

    def _on_answer(self, delivery: Delivery) -> None:
        props = delivery.properties
        headers = props.headers if isinstance(props.headers, dict) else {}
        worker = headers.get(control.WORKER_HEADER)
        worker = worker if isinstance(worker, str) else ""
        try:
            if props.correlation_id == self._ping_cid:
                info = WorkerInfo.from_wire(envelope.decode_reply(delivery.body))
                self._workers[info.id or worker] = info
            elif props.correlation_id == self._cid and worker not in self._replies:
                self._replies[worker] = self._reply(worker, delivery.body)
            else:
                return  # not ours, or a second reply from one worker: dropped
        except (SerializationError, RemoteError) as exc:
            log.warning("ignored a malformed answer to a broadcast: %s", exc)
            return
        self._check_done()

    def _reply(self, worker: str, body: bytes) -> BroadcastReply:
        info = self._workers.get(worker)
        try:
            result = envelope.decode_reply(body)
        except RemoteError as error:
            return BroadcastReply(worker, info, error=error)
        return BroadcastReply(worker, info, result=result)

    def _end_discovery(self) -> None:
        self._discovered = True
        self._check_done()

    def _check_done(self) -> None:
        enough = self._min_replies is not None and len(self._replies) >= self._min_replies
        everyone = self._discovered and all(w in self._replies for w in self._workers)
        if enough or everyone:
            self._finish()

    def _finish(self) -> None:
        if self._over:
            return
        replies = [
            dataclasses.replace(r, info=r.info or self._workers.get(r.worker))
            for r in self._replies.values()
        ]
        missing = [info for wid, info in self._workers.items() if wid not in self._replies]
        self._close()
        with contextlib.suppress(InvalidStateError):  # its awaiter gave up (cancelled it)
            self.future.set_result(BroadcastResult(replies, missing))

    def _on_close(self, channel: Channel, failure: Failure) -> None:
        if self._over or channel is not self._channel:
            return
        self._channel = None
        if failure.with_connection:
            self._fail(ConnectionLost(f"broadcast: {failure.text}"))
        elif failure.code == _NOT_FOUND:  # no control exchange: no worker ever ran here
            self._fail(NoSuchService(", ".join(self._services)))
        elif failure.code == _ACCESS_REFUSED:
            self._fail(AccessRefused(f"broadcast: {failure.text}"))
        else:
            self._fail(ConnectionLost(f"broadcast: {failure.text}"))

    def _fail(self, error: ReqrepError) -> None:
        if self._over:
            return
        self._close()
        with contextlib.suppress(InvalidStateError):
            self.future.set_exception(error)

    def _on_future_done(self, future: Future[BroadcastResult]) -> None:
        """Any thread: a future cancelled by its waiter (an asyncio task cancelled) ends the
        broadcast now, on the I/O thread."""
        if future.cancelled():
            with contextlib.suppress(ClosedError):
                self._link.submit(self._close)

    def _close(self) -> None:
        self._over = True
        for timer in self._timers:
            self._link.cancel(timer)
        self._timers.clear()
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            channel.close()
