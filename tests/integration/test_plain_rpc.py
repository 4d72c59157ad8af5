"""Plain AMQP RPC with code nobody on this project wrote: the RabbitMQ tutorial's RPC client and
server (``tests/third_party/rabbitmq_tutorials/``, unmodified), against reqrep's plain mode both
ways, and the failure modes a new user met before it existed."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from reqrep.common import ForeignReply, RemoteError, Settings, TopologyConflict
from reqrep.requestor import AsyncRequestor, Requestor
from reqrep.worker import PlainService, Worker, current
from reqrep.worker.demo import build
from tests import tutorials
from tests.support import Admin, wait_until

FIB_30 = 832040
CLIENT_TIMEOUT = 60.0  # the tutorial client waits for its reply forever: bound it here


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@pytest.fixture
def rpc_queue(admin: Admin) -> Iterator[str]:
    """The tutorial's queue, ``rpc_queue`` (both scripts name it): gone before and after."""
    for name in (tutorials.QUEUE, f"{tutorials.QUEUE}.dead"):
        admin.delete_queue(name)
    yield tutorials.QUEUE
    for name in (tutorials.QUEUE, f"{tutorials.QUEUE}.dead"):
        admin.delete_queue(name)


@pytest.fixture
def tutorial_server(amqp_url: str, admin: Admin, rpc_queue: str) -> Iterator[None]:
    """The tutorial's server, consuming ``rpc_queue`` (which it declares: durable, quorum)."""
    server = _serving(amqp_url, admin)
    try:
        yield
    finally:
        tutorials.stop_server(server)


def _serving(amqp_url: str, admin: Admin) -> subprocess.Popen[str]:
    server = tutorials.start_server(amqp_url)
    try:
        wait_until(
            lambda: (
                admin.queue_exists(tutorials.QUEUE) and admin.consumer_count(tutorials.QUEUE) == 1
            ),
            30,
            "the tutorial server to consume rpc_queue",
        )
    except BaseException:
        tutorials.stop_server(server)
        raise
    return server


def fib_service() -> PlainService:
    service = PlainService(tutorials.QUEUE)

    @service.handler
    def fib_of(body: bytes) -> bytes:  # the tutorial's wire: a number as text, both ways
        assert current().method == "fib_of"
        return str(fib(int(body))).encode()

    return service


def test_the_tutorial_client_gets_its_answer_from_a_plain_worker(
    amqp_url: str, settings: Settings, rpc_queue: str
) -> None:
    """It used to publish to a queue nobody served and hang forever."""
    with Worker(fib_service(), settings=settings, concurrency=2) as worker:
        assert worker.queue == rpc_queue  # named verbatim, under no prefix
        done = tutorials.run_client(amqp_url, CLIENT_TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert f" [.] Got {FIB_30}" in done.stdout
        assert worker.stats.replied == 1


def test_a_plain_worker_takes_the_queue_another_program_declared_as_it_is(
    amqp_url: str, admin: Admin, settings: Settings, rpc_queue: str
) -> None:
    """The tutorial's server declared ``rpc_queue`` (quorum) first; a worker that would declare
    it classic takes it as it is, instead of failing on PRECONDITION_FAILED."""
    tutorials.stop_server(_serving(amqp_url, admin))  # its queue stays: it is durable
    classic = settings.replace(queue_type="classic")
    with Worker(fib_service(), settings=classic, concurrency=2) as worker:
        done = tutorials.run_client(amqp_url, CLIENT_TIMEOUT)
        assert f" [.] Got {FIB_30}" in done.stdout, done.stderr
        assert worker.stats.replied == 1
    assert admin.queue_exists(rpc_queue)


def test_an_enveloped_worker_on_the_tutorials_queue_names_the_argument(
    amqp_url: str, tutorial_server: None
) -> None:
    """It used to die with ConnectionLost (exit 9) on PRECONDITION_FAILED."""
    settings = Settings(url=amqp_url, queue_prefix="", connect_timeout=5.0)
    with pytest.raises(TopologyConflict) as info:
        Worker(build(tutorials.QUEUE), settings=settings, concurrency=1).start()
    assert (info.value.kind, info.value.name) == ("queue", tutorials.QUEUE)
    assert f"{info.value.argument!r} differs" in str(info.value)
    assert "PlainService" in str(info.value)


def test_the_tutorial_client_reads_what_an_enveloped_worker_expects(
    amqp_url: str, rpc_queue: str
) -> None:
    """A plain request that reaches an enveloped queue is answered with an error that says
    what reqrep expects, as text the plain client shows (it cannot make a number of it)."""
    settings = Settings(url=amqp_url, queue_prefix="", connect_timeout=5.0)
    with Worker(build(rpc_queue), settings=settings, concurrency=1) as worker:
        done = tutorials.run_client(amqp_url, CLIENT_TIMEOUT)
        assert worker.stats.replied == 1
    assert done.returncode != 0
    assert "ValueError" in done.stderr
    # int() quotes the first 200 characters of what it could not read: the start of the text.
    assert "request has no method: reqrep expects the method" in done.stderr


def test_a_plain_handler_gets_text_json_or_bytes_and_its_errors_come_back_typed(
    amqp_url: str, admin: Admin, settings: Settings, service_name: str
) -> None:
    service = PlainService(service_name)
    seen: list[Any] = []

    @service.handler
    async def echo(body: Any) -> Any:  # async handlers work in plain mode too
        seen.append(body)
        if body == "fail":
            raise ValueError("no such thing")
        return body

    try:
        with (
            Worker(service, settings=settings, concurrency=2),
            Requestor(settings=settings) as rq,
        ):
            assert rq.call_plain(service_name, b"\x00raw") == b"\x00raw"
            assert rq.call_plain(service_name, "text") == b"text"
            assert rq.call_plain(service_name, {"a": [1]}) == b'{"a":[1]}'
            with pytest.raises(RemoteError, match="no such thing") as info:
                rq.call_plain(service_name, "fail")
            assert info.value.type == "ValueError"
        assert seen == [b"\x00raw", "text", {"a": [1]}, "fail"]
    finally:
        admin.delete_queue(service_name)


def test_a_plain_call_gets_the_tutorial_servers_answer(
    settings: Settings, tutorial_server: None, caplog: pytest.LogCaptureFixture, aio_native: bool
) -> None:
    with Requestor(settings=settings, timeout=10) as rq:
        assert rq.call_plain(tutorials.QUEUE, b"30") == str(FIB_30).encode()
        assert rq.call_plain(tutorials.QUEUE, "10") == b"55"

    async def main() -> bytes:
        async with AsyncRequestor(native=aio_native, settings=settings, timeout=10) as arq:
            return await arq.call_plain(tutorials.QUEUE, b"20")

    assert asyncio.run(main()) == b"6765"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_enveloped_call_answered_by_the_tutorial_server_keeps_the_value(
    settings: Settings, admin: Admin, tutorial_server: None
) -> None:
    """A reqrep call routed to the tutorial's server (its queue bound to reqrep's requests
    exchange) used to fail with "malformed reply", the value lost."""
    bare = settings.replace(queue_prefix="")
    exchange = "reqrep.requests"
    admin.channel.exchange_declare(exchange, "direct", durable=True)
    admin.channel.queue_bind(tutorials.QUEUE, exchange, tutorials.QUEUE)
    try:
        with (
            Requestor(settings=bare, service=tutorials.QUEUE) as rq,
            pytest.raises(ForeignReply) as info,
        ):
            rq.call("fib", 30)  # the body is JSON 30: the tutorial's int() reads it
        assert info.value.body == str(FIB_30).encode()
        assert "not reqrep's envelope" in str(info.value)
        assert "call_plain" in str(info.value)
    finally:
        admin.channel.queue_unbind(tutorials.QUEUE, exchange, tutorials.QUEUE)
