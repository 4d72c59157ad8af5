"""Broadcast (``requestor/broadcast.py``, ``worker/broadcast.py``) over the in-memory broker: a
call every worker answers, each reply tagged by its worker. The twin against RabbitMQ, with
worker processes and one of them killed, is tests/integration/test_broadcast.py."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from reqrep.common import ConfigError, NoSuchService, RemoteError, Settings
from reqrep.requestor import AsyncRequestor, Requestor
from reqrep.testing import MemoryBroker
from reqrep.worker import PlainService, Service, Worker

URL = "amqp://guest:guest@memory/%2F"


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def settings() -> Settings:
    return Settings(url=URL, timeout=5.0, connect_timeout=2.0)


def _service(
    name: str, hold: threading.Event | None = None, started: threading.Event | None = None
) -> Service:
    service = Service(name)
    served = threading.local()

    @service.handler
    def whoami(payload: Any) -> dict[str, Any]:
        return {"pid": os.getpid(), "payload": payload, "thread": id(served)}

    @service.handler
    def stuck(_payload: Any) -> str:
        if hold is None:
            return "quick"
        if started is not None:
            started.set()
        hold.wait(10)  # this worker's handler is stuck until the test lets it go
        return "late"

    @service.handler
    def fail(_payload: Any) -> None:
        raise ValueError("not here")

    return service


@pytest.fixture
def workers(broker: MemoryBroker, settings: Settings) -> Iterator[list[Worker]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                Worker(_service("fleet"), settings=settings, transport=broker.transport)
            )
            for _ in range(3)
        ]


def test_every_worker_answers_once_tagged_by_its_id(
    broker: MemoryBroker, settings: Settings, workers: list[Worker]
) -> None:
    with Requestor(settings=settings, service="fleet", transport=broker.transport) as rq:
        gathered = rq.broadcast("whoami", {"n": 1}, timeout=5)
        assert len(gathered.replies) == 3
        assert gathered.missing == []
        ids = {w.id for w in workers}
        assert {r.worker for r in gathered.replies} == ids
        for reply in gathered.replies:
            assert reply.ok
            assert reply.value()["payload"] == {"n": 1}
            assert reply.info is not None
            assert (reply.info.id, reply.info.service) == (reply.worker, "fleet")
        assert set(gathered.results()) == ids
        # Errors are replies too, each with its worker.
        failed = rq.broadcast("fail", timeout=5)
        assert len(failed.replies) == 3
        assert all(isinstance(r.error, RemoteError) for r in failed.replies)
        with pytest.raises(RemoteError, match="not here"):
            failed.replies[0].value()
        assert {r.worker for r in rq.broadcast("nosuch", timeout=5).replies} == ids


def test_it_ends_at_min_replies_or_says_who_did_not_reply(
    broker: MemoryBroker, settings: Settings
) -> None:
    hold = threading.Event()
    with (
        Worker(_service("fleet"), settings=settings, transport=broker.transport) as quick,
        Worker(_service("fleet", hold), settings=settings, transport=broker.transport) as stuck,
        Requestor(settings=settings, service="fleet", transport=broker.transport) as rq,
    ):
        first = rq.broadcast("whoami", timeout=5, min_replies=1)
        assert len(first.replies) == 1
        partial = rq.broadcast("stuck", timeout=1.5)
        hold.set()
    [reply] = partial.replies
    [missing] = partial.missing  # it answered the ping: it is live, and did not reply in time
    assert (reply.worker, reply.result) == (quick.id, "quick")
    assert missing.id == stuck.id


def test_several_services_and_asyncio(
    broker: MemoryBroker, settings: Settings, workers: list[Worker], aio_native: bool
) -> None:
    async def main() -> int:
        async with AsyncRequestor(
            settings=settings, transport=broker.transport, native=aio_native
        ) as arq:
            gathered = await arq.broadcast("whoami", service=["fleet", "other"], timeout=5)
            return len(gathered.replies)

    with Worker(_service("other"), settings=settings, transport=broker.transport):
        assert asyncio.run(asyncio.wait_for(main(), 10)) == 4


def test_what_a_broadcast_refuses(broker: MemoryBroker, settings: Settings) -> None:
    plain = PlainService("plain-q")
    plain.handler(lambda body: body)
    with Requestor(settings=settings, transport=broker.transport) as rq:
        with pytest.raises(NoSuchService):  # no worker ever ran: no control exchange
            rq.broadcast("whoami", service="fleet", timeout=1)
        with pytest.raises(ConfigError):
            rq.broadcast("whoami", service=[], timeout=1)
        with pytest.raises(ConfigError):
            rq.broadcast("whoami", service="fleet", min_replies=0)
        with Worker(plain, settings=settings, transport=broker.transport):
            [reply] = rq.broadcast("anything", service="plain-q", timeout=2).replies
        assert reply.error is not None
        assert reply.error.code == "method_not_found"  # plain services take no broadcasts


def test_a_worker_runs_at_most_its_concurrency_in_broadcasts(
    broker: MemoryBroker, settings: Settings
) -> None:
    """Whoever may publish to the control exchange cannot queue handler runs without end."""
    hold, started = threading.Event(), threading.Event()
    service = _service("fleet", hold, started)
    with (
        Worker(service, settings=settings, concurrency=1, transport=broker.transport),
        Requestor(settings=settings, service="fleet", transport=broker.transport) as rq,
    ):
        first = threading.Thread(target=lambda: rq.broadcast("stuck", timeout=5))
        first.start()
        try:
            assert started.wait(5)
            [busy] = rq.broadcast("whoami", timeout=2, min_replies=1).replies
        finally:
            hold.set()
            first.join(10)
        assert busy.error is not None
        assert busy.error.type == "TooManyPending"
        [after] = rq.broadcast("whoami", timeout=2, min_replies=1).replies  # it is free again
        assert after.ok


def test_a_cancelled_await_ends_the_broadcast_at_once(
    broker: MemoryBroker, settings: Settings, aio_native: bool
) -> None:
    hold, started = threading.Event(), threading.Event()

    def answer_queues() -> int:
        return sum(name.startswith("amq.gen-") for name in broker.queue_names())

    async def main() -> None:
        async with AsyncRequestor(
            settings=settings, service="fleet", transport=broker.transport, native=aio_native
        ) as arq:
            task = asyncio.ensure_future(arq.broadcast("stuck", timeout=30))
            while not started.is_set():
                await asyncio.sleep(0.01)
            assert answer_queues() == 2  # the requestor's callback queue, and the broadcast's
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            while answer_queues() > 1:  # the broadcast's queue goes with its channel
                await asyncio.sleep(0.01)

    with Worker(_service("fleet", hold, started), settings=settings, transport=broker.transport):
        try:
            asyncio.run(asyncio.wait_for(main(), 10))
        finally:
            hold.set()


def test_an_inline_handler_answers_a_broadcast_on_each_workers_io_thread(
    broker: MemoryBroker, settings: Settings
) -> None:
    service = Service("quick")

    @service.handler("where", inline=True)
    def where(payload: Any) -> str:
        return threading.current_thread().name

    with ExitStack() as stack:
        workers = [
            stack.enter_context(Worker(service, settings=settings, transport=broker.transport))
            for _ in range(2)
        ]
        with Requestor(settings=settings, service="quick", transport=broker.transport) as rq:
            gathered = rq.broadcast("where", timeout=5)
    assert {r.worker for r in gathered.replies} == {w.id for w in workers}
    assert {r.value() for r in gathered.replies} == {w.name for w in workers}
