"""Operator tools: which workers are alive (ping), how each service's queues stand (status),
and the dead-letter queues (list, show, replay, purge; see ``_dead_letters.py``).

``Admin`` is for short sessions (the ``reqrep`` command, scripts), not for the request path. It
holds a Link like the requestor's, so it decodes what the broker sends the same tolerant way and
rides out the same faults; every operation runs on the Link's I/O thread on a channel of its own
(a refusal, such as a 404 for a missing queue or a 403 for a queue the user may not touch,
closes only that channel), and the calling thread waits for it with a deadline that holds
through anything the broker does: a resource alarm (the broker stops reading from a connection
that publishes) ends an operation at its deadline with CallTimeout saying why, and closing then
drops the socket instead of waiting for an answer that cannot come.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, TypeVar

from reqrep.common import control, envelope, topology
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
    pika_transport,
)
from reqrep.common.config import Settings, check_seconds
from reqrep.common.control import WorkerInfo
from reqrep.common.errors import (
    AccessRefused,
    CallTimeout,
    ClosedError,
    ConnectionLost,
    NoSuchService,
    NoWorkers,
    PublishRejected,
    ReqrepError,
)
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.requestor import _dead_letters
from reqrep.requestor._dead_letters import DeadLetter, Replayed, Target

__all__ = ["Admin", "DeadLetter", "Replayed", "ServiceStatus", "WorkerInfo"]

log = logging.getLogger("reqrep.admin")

T = TypeVar("T")
_NOT_FOUND, _ACCESS_REFUSED = 404, 403
MAX_ANSWERS = 10_000  # a ping collects at most this many answers
_FINISH_GRACE = 2.0  # seconds past its own timeout an operation may take to wind up


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """One service's queues as the broker reports them, and its workers as they answered.

    ``exists`` is False when the service has no request queue (the other broker numbers are
    then None); ``dead_letters`` is None when it has no dead-letter queue.
    """

    service: str
    queue: str
    exists: bool
    depth: int | None  # requests ready in the queue (not those delivered and unacked)
    consumers: int | None
    dead_letters: int | None
    workers: int  # worker connections that answered the ping
    in_flight: int  # requests those workers hold (delivered, not yet acked)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Session(LinkOwner):
    """The Admin's Link owner: ready as soon as a channel is open (I/O thread)."""

    def __init__(self) -> None:
        self.link: Link | None = None

    def setup(self, channel: Channel) -> None:
        assert self.link is not None  # noqa: S101 - set right after the Link is made
        self.link.ready()


class _Op:
    """One operation on a channel of its own; its outcome goes to a Future the caller waits
    on. I/O thread, except ``future``, which the caller reads."""

    def __init__(self, admin: Admin) -> None:
        self.future: Future[Any] = Future()
        self.channel: Channel | None = None
        self._where = admin.settings.redacted_url

    def done(self, result: Any = None) -> None:
        if not self.future.done():
            self.future.set_result(result)
        self.close()

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)
        self.close()

    def close(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None and channel.is_open:
            channel.close()

    def failed(self, failure: Failure, what: str) -> ReqrepError:
        if failure.code == _ACCESS_REFUSED:
            return AccessRefused(f"{self._where}: {what}: {failure.text}")
        return ConnectionLost(f"{self._where}: {what}: {failure.text}")


class Admin:
    """A short operator session with the broker.

    Every operation ends by its deadline: ``timeout`` (ping, status: how long answers are
    collected; replay: the replayed requests' deadline), or ``settings.timeout`` for the others.

    Threads: one thread at a time calls the methods; the connection lives on the session's own
    I/O thread. ``with Admin(...) as admin:`` or ``open()``/``close()``.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        settings: Settings | None = None,
        transport: Transport | None = None,
    ) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(url=url)
        self._session = _Session()
        self._link = Link(
            self.settings,
            self._session,
            name=f"reqrep-admin-{os.getpid()}",
            transport=transport if transport is not None else pika_transport(),
        )
        self._session.link = self._link
        self._opened = False

    def __repr__(self) -> str:
        return f"<Admin url={self.settings.redacted_url!r} {self._link.state.value}>"

    def open(self) -> Admin:
        """Connect (BrokerUnreachable if no address lets us in within ``connect_timeout``)."""
        if not self._opened:
            self._opened = True
            self._link.start()
        return self

    def close(self) -> None:
        self._link.stop(self.settings.connect_timeout)

    def __enter__(self) -> Admin:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- discovery ----------------------------------------------------------------------------

    def ping(
        self, services: Sequence[str] = (), *, timeout: float = 1.0, limit: int = MAX_ANSWERS
    ) -> list[WorkerInfo]:
        """Every live worker connection (of ``services`` only, if given) that answers within
        ``timeout`` seconds; at most ``limit`` answers. Waits the whole timeout: nobody knows
        how many workers there are."""
        check_seconds("timeout", timeout)
        keys = [control.service_key(_service(s)) for s in services] if services else [control.ALL]
        collector = _Ping(self, list(dict.fromkeys(keys)), timeout, limit)
        answers: list[WorkerInfo] = self._run(collector.start, timeout, collector.finish)
        return sorted(answers, key=lambda w: (w.service, w.host, w.pid, w.connection))

    def status(self, services: Sequence[str] = (), *, timeout: float = 1.0) -> list[ServiceStatus]:
        """The named ``services``, or else every service whose workers answer a ping.

        A service whose workers are all down answers no ping: name it to see it.
        """
        workers = self.ping(services, timeout=timeout)
        # Names from the answers are the workers' word: only those that are service names.
        found = {w.service for w in workers if _valid(w.service)}
        names = list(dict.fromkeys([*services, *sorted(found)]))
        result = []
        for name in names:
            queue = self.settings.request_queue(name)
            request = self.queue_counts(queue)
            dead = self.queue_counts(topology.dead_letter_queue(queue))
            mine = [w for w in workers if w.service == name]
            result.append(
                ServiceStatus(
                    service=name,
                    queue=queue,
                    exists=request is not None,
                    depth=None if request is None else request[0],
                    consumers=None if request is None else request[1],
                    dead_letters=None if dead is None else dead[0],
                    workers=len(mine),
                    in_flight=sum(w.in_flight for w in mine),
                )
            )
        return result

    def queue_counts(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of ``queue``, or None if it does not exist."""

        def look(op: _Op) -> None:
            def answered(info: QueueInfo) -> None:
                op.done((info.messages, info.consumers))

            def closed(failure: Failure) -> None:
                if failure.code == _NOT_FOUND:
                    op.done(None)
                else:
                    op.fail(op.failed(failure, f"checking {queue!r}"))

            self._on_channel(
                op, closed, lambda ch: ch.declare_queue(queue, passive=True, on_ok=answered)
            )

        result: tuple[int, int] | None = self._run(look, self.settings.timeout)
        return result

    # -- dead letters -------------------------------------------------------------------------

    def dead_letters(self, service: str, *, limit: int = 10) -> list[DeadLetter]:
        """The first ``limit`` dead letters of ``service``, handed back to their queue."""
        _dead_letters.check_limit(limit)
        queue = self._dead_queue(service)
        self._dead_counts(service)
        letters: list[DeadLetter] = []

        def peek(op: _Op) -> None:
            last_tag: list[int] = []

            def take(channel: Channel) -> None:
                if len(letters) >= limit:
                    give_back(channel)
                    return
                channel.get(queue, lambda d: got(channel, d))

            def got(channel: Channel, delivery: Delivery | None) -> None:
                if delivery is None:
                    give_back(channel)
                    return
                letters.append(DeadLetter.read(delivery.properties, delivery.body))
                last_tag[:] = [delivery.tag]
                take(channel)

            def give_back(channel: Channel) -> None:
                if last_tag and channel.is_open:
                    channel.nack(last_tag[0], multiple=True, requeue=True)
                op.done(letters)

            self._on_channel(op, lambda f: op.fail(op.failed(f, f"reading {queue!r}")), take)

        result: list[DeadLetter] = self._run(peek, self.settings.timeout)
        return result

    def replay(
        self, service: str, *, limit: int = 10, timeout: float | None = None
    ) -> list[Replayed]:
        """Move up to ``limit`` dead letters back to the request queue, each with a fresh
        deadline of ``timeout`` seconds, and wait (up to that deadline) for their replies.

        Like a call: NoSuchService without a request queue, NoWorkers if nothing consumes it
        (unless the settings say ``wait_for_workers``).
        """
        seconds = self.settings.timeout if timeout is None else timeout
        check_seconds("timeout", seconds)
        _dead_letters.check_limit(limit)
        queue = self.settings.request_queue(_service(service))
        counts = self.queue_counts(queue)
        if counts is None:
            raise NoSuchService(service)
        if counts[1] == 0 and not self.settings.wait_for_workers:
            raise NoWorkers(service)
        self._dead_counts(service)
        target = Target(
            service=service,
            exchange=topology.request_exchange(self.settings.queue_prefix),
            queue=queue,
            dead_queue=topology.dead_letter_queue(queue),
            timeout=seconds,
            persistent=self.settings.persistent,
        )
        replay = _Replay(self, target, limit)
        outcomes: list[Replayed] = self._run(replay.start, seconds, replay.finish)
        return outcomes

    def purge(self, service: str, *, limit: int | None = 10) -> int:
        """Remove the first ``limit`` dead letters of ``service`` (all if ``limit`` is None);
        returns how many were removed."""
        if limit is not None:
            _dead_letters.check_limit(limit)
        queue = self._dead_queue(service)
        self._dead_counts(service)

        def remove(op: _Op) -> None:
            removed = [0]

            def take(channel: Channel) -> None:
                if limit is None:
                    channel.purge_queue(queue, op.done)
                elif removed[0] >= limit:
                    op.done(removed[0])
                else:
                    channel.get(queue, lambda d: got(channel, d))

            def got(channel: Channel, delivery: Delivery | None) -> None:
                if delivery is None:
                    op.done(removed[0])
                    return
                channel.ack(delivery.tag)
                removed[0] += 1
                take(channel)

            self._on_channel(op, lambda f: op.fail(op.failed(f, f"purging {queue!r}")), take)

        result: int = self._run(remove, self.settings.timeout)
        return result

    def delete_service(self, service: str) -> None:
        """Delete ``service``'s request and dead-letter queues, and the exchanges of this
        settings' prefix (for tests that made them under a prefix of their own). With an empty
        prefix the exchanges are those of the default one, shared: they stay."""
        queue = self.settings.request_queue(service)
        prefix = self.settings.queue_prefix

        def delete(op: _Op) -> None:
            def exchanges(channel: Channel) -> None:
                if not prefix:
                    op.done()
                    return
                channel.delete_exchange(
                    topology.dead_letter_exchange(prefix),
                    lambda: channel.delete_exchange(
                        topology.control_exchange(prefix),
                        lambda: channel.delete_exchange(topology.request_exchange(prefix), op.done),
                    ),
                )

            def steps(channel: Channel) -> None:
                channel.delete_queue(
                    queue,
                    lambda: channel.delete_queue(
                        topology.dead_letter_queue(queue), lambda: exchanges(channel)
                    ),
                )

            self._on_channel(op, lambda f: op.fail(op.failed(f, "deleting")), steps)

        self._run(delete, self.settings.timeout)

    # -- plumbing -----------------------------------------------------------------------------

    def _dead_queue(self, service: str) -> str:
        return topology.dead_letter_queue(self.settings.request_queue(_service(service)))

    def _dead_counts(self, service: str) -> tuple[int, int]:
        """The dead-letter queue's counts; NoSuchService if it does not exist."""
        counts = self.queue_counts(self._dead_queue(service))
        if counts is None:
            raise NoSuchService(service)
        return counts

    def _on_channel(
        self,
        op: _Op,
        on_closed: Callable[[Failure], None],
        then: Callable[[Channel], None],
    ) -> None:
        """Open the operation's channel (I/O thread); ``on_closed`` if the broker closes it."""

        def opened(channel: Channel) -> None:
            op.channel = channel

            def closed(_channel: Channel, failure: Failure) -> None:
                if op.future.done():
                    return
                op.channel = None
                if failure.with_connection:
                    op.fail(ConnectionLost(f"{self.settings.redacted_url}: {failure.text}"))
                else:
                    on_closed(failure)

            channel.on_close(closed)
            then(channel)

        try:
            self._link.open_extra_channel(opened)
        except ReqrepError as exc:
            op.fail(exc)

    def _run(
        self,
        start: Callable[[_Op], None],
        timeout: float,
        finish: Callable[[_Op], None] | None = None,
    ) -> Any:
        """Run an operation on the I/O thread and wait for it, ``timeout`` seconds at most (and
        then a little more while ``finish`` winds it up)."""
        if not self._opened:
            raise ClosedError("Admin is not open (use `with Admin(...)` or open())")
        op = _Op(self)

        def begin() -> None:
            try:
                start(op)
            except ReqrepError as exc:
                op.fail(exc)
            except Exception as exc:
                log.exception("admin operation failed")
                op.fail(ReqrepError(f"admin operation failed: {exc!r}"))

        self._link.submit(begin)
        try:
            return op.future.result(timeout)
        except FutureTimeout:
            if finish is None:
                raise self._late(op, timeout) from None
        self._link.submit(lambda: finish(op))
        try:
            return op.future.result(_FINISH_GRACE)
        except FutureTimeout:
            raise self._late(op, timeout) from None

    def _late(self, op: _Op, timeout: float) -> CallTimeout:
        self._link.submit(op.close)
        blocked = self._link.blocked
        why = f": the broker blocks publishing ({blocked})" if blocked else ""
        return CallTimeout(f"{self.settings.redacted_url}: no answer within {timeout:g}s{why}")


def _service(name: str) -> str:
    return topology.check_name("service", name)


def _valid(name: str) -> bool:
    try:
        topology.check_name("service", name)
    except ReqrepError:
        return False
    return True


class _Ping:
    """Collects ping answers until ``finish`` (I/O thread)."""

    def __init__(self, admin: Admin, keys: list[str], timeout: float, limit: int) -> None:
        self._admin = admin
        self._keys = keys
        self._timeout = timeout
        self._limit = limit
        self._cid = os.urandom(16).hex()
        self._answers: list[WorkerInfo] = []

    def start(self, op: _Op) -> None:
        exchange = topology.control_exchange(self._admin.settings.queue_prefix)

        def on_answer(delivery: Delivery) -> None:
            props = delivery.properties
            if props.correlation_id != self._cid or len(self._answers) >= self._limit:
                return
            try:
                self._answers.append(WorkerInfo.from_wire(envelope.decode_reply(delivery.body)))
            except ReqrepError as exc:
                log.warning("ignored a malformed ping answer: %s", exc)

        def declared(channel: Channel, info: QueueInfo) -> None:
            channel.consume(info.queue, on_answer, auto_ack=True, on_ok=lambda _t: send(info))

        def send(info: QueueInfo) -> None:
            channel = op.channel
            if channel is None:
                return
            properties = Properties(
                type=control.PING,
                reply_to=info.queue,
                correlation_id=self._cid,
                content_type=CONTENT_TYPE,
                expiration=str(max(1, int(self._timeout * 1000))),
            )
            for key in self._keys:
                try:
                    channel.publish(exchange, key, b"null", properties)
                except PublishError as exc:
                    op.fail(ConnectionLost(f"ping not sent: {exc}"))
                    return

        def begin(channel: Channel) -> None:
            channel.declare_exchange(
                exchange,
                kind="direct",
                durable=True,
                on_ok=lambda: channel.declare_queue(
                    "", exclusive=True, auto_delete=True, on_ok=lambda i: declared(channel, i)
                ),
            )

        self._admin._on_channel(op, lambda f: op.fail(op.failed(f, "ping")), begin)

    def finish(self, op: _Op) -> None:
        blocked = self._admin._link.blocked
        if blocked is not None and not self._answers:
            op.fail(CallTimeout(f"no ping could be sent: the broker blocks publishing ({blocked})"))
        else:
            op.done(self._answers)


class _Replay:
    """Moves dead letters to the request queue one at a time, each acknowledged once its copy
    is confirmed, then collects the replies until ``finish`` (I/O thread)."""

    def __init__(self, admin: Admin, target: Target, limit: int) -> None:
        self._admin = admin
        self._target = target
        self._limit = limit
        self._deadline_ms = int((time.time() + target.timeout) * 1000)
        self._sent: list[tuple[str, str | None]] = []  # (correlation id, method), in order
        self._waiting: dict[str, deque[int]] = {}  # correlation id -> its outcomes still due
        self._outcomes: dict[int, Replayed] = {}
        self._in_flight: Delivery | None = None  # the dead letter whose copy awaits its confirm
        self._returned = False
        self._reply_queue = ""
        self._op: _Op | None = None

    def start(self, op: _Op) -> None:
        self._op = op

        def begin(channel: Channel) -> None:
            channel.on_return(self._on_return)
            channel.confirm(
                lambda c: self._on_confirm(op, channel, c),
                lambda: channel.declare_queue(
                    "", exclusive=True, auto_delete=True, on_ok=lambda i: declared(channel, i)
                ),
            )

        def declared(channel: Channel, info: QueueInfo) -> None:
            self._reply_queue = info.queue
            channel.consume(
                info.queue, self._on_reply, auto_ack=True, on_ok=lambda _t: self._next(op, channel)
            )

        self._admin._on_channel(op, lambda f: op.fail(op.failed(f, "replay")), begin)

    def _next(self, op: _Op, channel: Channel) -> None:
        if len(self._sent) >= self._limit:
            self._check_done(op)
            return
        channel.get(self._target.dead_queue, lambda d: self._got(op, channel, d))

    def _got(self, op: _Op, channel: Channel, delivery: Delivery | None) -> None:
        if delivery is None:
            self._limit = len(self._sent)  # no more dead letters
            self._check_done(op)
            return
        props = delivery.properties
        cid = (
            props.correlation_id
            if isinstance(props.correlation_id, str) and props.correlation_id
            else f"replay-{os.urandom(8).hex()}"
        )
        fresh = _dead_letters.fresh_properties(
            props, cid, self._reply_queue, self._target, self._deadline_ms
        )
        self._in_flight = delivery
        self._returned = False
        try:
            channel.publish(
                self._target.exchange, self._target.queue, delivery.body, fresh, mandatory=True
            )
        except PublishError as exc:
            op.fail(ConnectionLost(f"replay not sent: {exc}"))
            return
        method = props.type if isinstance(props.type, str) else None
        self._sent.append((cid, method))
        self._waiting.setdefault(cid, deque()).append(len(self._sent) - 1)

    def _on_return(self, _returned: Returned) -> None:
        self._returned = True  # the confirm follows: it decides

    def _on_confirm(self, op: _Op, channel: Channel, confirm: Confirm) -> None:
        delivery = self._in_flight
        self._in_flight = None
        if delivery is None:
            return
        if self._returned or not confirm.ack:
            channel.nack(delivery.tag, requeue=True)  # back to the dead-letter queue
            self._sent.pop()
            error: ReqrepError = (
                NoSuchService(self._target.service)
                if self._returned
                else PublishRejected("the broker refused a replayed request (nack)")
            )
            op.fail(error)
            return
        channel.ack(delivery.tag)
        self._next(op, channel)

    def _on_reply(self, delivery: Delivery) -> None:
        cid = delivery.properties.correlation_id
        due = self._waiting.get(cid) if isinstance(cid, str) else None
        if not due:
            return
        index = due.popleft()
        self._outcomes[index] = _dead_letters.outcome(cid, self._sent[index][1], delivery.body)
        if self._op is not None:
            self._check_done(self._op)

    def _check_done(self, op: _Op) -> None:
        if len(self._outcomes) >= len(self._sent) >= self._limit:
            self.finish(op)

    def finish(self, op: _Op) -> None:
        blocked = self._admin._link.blocked
        if blocked is not None and self._in_flight is not None:
            # Its copy was never confirmed: the dead letter goes back with the channel.
            op.fail(CallTimeout(f"replay not sent: the broker blocks publishing ({blocked})"))
            return
        op.done(
            [
                self._outcomes.get(i) or Replayed(cid, method, "no reply")
                for i, (cid, method) in enumerate(self._sent)
            ]
        )
