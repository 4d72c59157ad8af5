"""Operator tools: which workers are alive (ping), how each service's queues stand (status),
and the dead-letter queues (list, show, replay, purge; see ``_dead_letters.py``).

``Admin`` is for short sessions (the ``reqrep`` command, scripts), not for the request path: it
holds one pika ``BlockingConnection``, owned by the thread that uses it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import pika
import pika.exceptions

from reqrep.common import control, envelope, topology
from reqrep.common._pika_params import describe, parameters
from reqrep.common.config import Settings, check_seconds
from reqrep.common.control import WorkerInfo
from reqrep.common.errors import (
    BrokerUnreachable,
    ClosedError,
    ConnectionLost,
    NoSuchService,
    NoWorkers,
    ReqrepError,
)
from reqrep.common.serialization import CONTENT_TYPE
from reqrep.requestor import _dead_letters
from reqrep.requestor._dead_letters import DeadLetter, Replayed

__all__ = ["Admin", "DeadLetter", "Replayed", "ServiceStatus", "WorkerInfo"]

log = logging.getLogger("reqrep.admin")

_NOT_FOUND = 404
MAX_ANSWERS = 10_000  # a ping collects at most this many answers


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


class Admin:
    """A short operator session with the broker.

    Threads: one thread only; it owns the connection. ``with Admin(...) as admin:`` or
    ``open()``/``close()``.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(url=url)
        name = f"reqrep-admin-{os.getpid()}"
        # pika's BlockingConnection tries each address of a cluster in turn.
        self._params = [parameters(self.settings, url, name) for url in self.settings.urls]
        self._connection: Any = None

    def __repr__(self) -> str:
        return f"<Admin url={self.settings.redacted_url!r}>"

    def open(self) -> Admin:
        if self._connection is None:
            try:
                self._connection = pika.BlockingConnection(self._params)
            except pika.exceptions.AMQPError as exc:
                where = self.settings.redacted_url
                raise BrokerUnreachable(f"{where}: {describe(exc, self.settings)}") from None
        return self

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            connection.close()

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
        exchange = topology.control_exchange(self.settings.queue_prefix)
        cid = os.urandom(16).hex()
        answers: list[WorkerInfo] = []

        def on_answer(_channel: Any, _deliver: Any, props: Any, body: bytes) -> None:
            if props.correlation_id != cid or len(answers) >= limit:
                return
            try:
                answers.append(WorkerInfo.from_wire(envelope.decode_reply(body)))
            except ReqrepError as exc:
                log.warning("ignored a malformed ping answer: %s", exc)

        with self._channel() as channel:
            channel.exchange_declare(exchange, exchange_type="direct", durable=True)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.basic_consume(queue, on_answer, auto_ack=True)
            properties = pika.BasicProperties(
                type=control.PING,
                reply_to=queue,
                correlation_id=cid,
                content_type=CONTENT_TYPE,
                expiration=str(max(1, int(timeout * 1000))),
            )
            keys = [control.service_key(s) for s in services] if services else [control.ALL]
            for key in dict.fromkeys(keys):
                channel.basic_publish(exchange, key, b"null", properties)
            deadline = time.monotonic() + timeout
            while len(answers) < limit and (left := deadline - time.monotonic()) > 0:
                self._conn().process_data_events(time_limit=left)
        return sorted(answers, key=lambda w: (w.service, w.host, w.pid, w.connection))

    def status(self, services: Sequence[str] = (), *, timeout: float = 1.0) -> list[ServiceStatus]:
        """The named ``services``, or else every service whose workers answer a ping.

        A service whose workers are all down answers no ping: name it to see it.
        """
        workers = self.ping(services, timeout=timeout)
        names = list(dict.fromkeys([*services, *sorted({w.service for w in workers})]))
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
        try:
            with self._channel() as channel:
                ok = channel.queue_declare(queue, passive=True).method
                return int(ok.message_count), int(ok.consumer_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == _NOT_FOUND:
                return None
            raise ConnectionLost(f"checking {queue!r}: {describe(exc)}") from None

    # -- dead letters -------------------------------------------------------------------------

    def dead_letters(self, service: str, *, limit: int = 10) -> list[DeadLetter]:
        """The first ``limit`` dead letters of ``service``, handed back to their queue."""
        _dead_letters.check_limit(limit)
        self._dead_counts(service)
        with self._channel() as channel:
            return _dead_letters.peek(channel, self._dead_queue(service), limit)

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
        queue = self.settings.request_queue(service)
        counts = self.queue_counts(queue)
        if counts is None:
            raise NoSuchService(service)
        if counts[1] == 0 and not self.settings.wait_for_workers:
            raise NoWorkers(service)
        self._dead_counts(service)
        with self._channel() as channel:
            return _dead_letters.replay(
                self._conn(),
                channel,
                _dead_letters.Target(
                    service=service,
                    queue=queue,
                    dead_queue=topology.dead_letter_queue(queue),
                    timeout=seconds,
                    persistent=self.settings.persistent,
                ),
                limit,
            )

    def purge(self, service: str, *, limit: int | None = 10) -> int:
        """Remove the first ``limit`` dead letters of ``service`` (all if ``limit`` is None);
        returns how many were removed."""
        if limit is not None:
            _dead_letters.check_limit(limit)
        self._dead_counts(service)
        with self._channel() as channel:
            return _dead_letters.purge(channel, self._dead_queue(service), limit)

    # -- plumbing -----------------------------------------------------------------------------

    def _dead_queue(self, service: str) -> str:
        return topology.dead_letter_queue(self.settings.request_queue(service))

    def _dead_counts(self, service: str) -> tuple[int, int]:
        """The dead-letter queue's counts; NoSuchService if it does not exist."""
        counts = self.queue_counts(self._dead_queue(service))
        if counts is None:
            raise NoSuchService(service)
        return counts

    def _conn(self) -> Any:
        if self._connection is None:
            raise ClosedError("Admin is not open (use `with Admin(...)` or open())")
        return self._connection

    @contextmanager
    def _channel(self) -> Iterator[Any]:
        try:
            channel = self._conn().channel()
        except pika.exceptions.AMQPError as exc:
            raise ConnectionLost(f"{self.settings.redacted_url}: {describe(exc)}") from None
        try:
            yield channel
        except pika.exceptions.AMQPConnectionError as exc:
            raise ConnectionLost(f"{self.settings.redacted_url}: {describe(exc)}") from None
        finally:
            if channel.is_open:
                channel.close()
