"""The in-memory broker (``_memory.py``): what it does beyond what the conformance suite pins
against RabbitMQ (``tests/integration/test_transport_conformance.py``), with no broker.

Faults (alarms, forced closes, stop and start, logins), the 4.x answers where RabbitMQ's
versions differ, the client side's pika-like rules, threads, and reprs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from reqrep.common import Settings
from reqrep.common._transport import (
    Confirm,
    Delivery,
    Properties,
    PublishError,
    QueueInfo,
    Transport,
)
from reqrep.common._transport._memory import MemoryAddress, MemoryBroker
from reqrep.common.errors import ConfigError
from tests.transport_harness import (
    TIMEOUT,
    Chan,
    ChannelClosed,
    Client,
    ConnectFailed,
    drained,
    take,
)

URL = "memory://"


class Clients:
    """Connections to one broker, closed after the test; no callback may have raised."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.made: list[Client] = []

    def __call__(self, url: str = URL, name: str = "test", settings: Any = None) -> Client:
        client = Client(self.broker.transport, url, settings or Settings(), name)
        self.made.append(client)
        return client

    def finish(self) -> None:
        for client in self.made:
            if client.io.stopped:
                continue
            if client.closed.done() or not client.is_open():
                client.io.stop()
            else:
                client.close()
        assert [e for c in self.made for e in c.io.errors] == []


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def connect(broker: MemoryBroker) -> Iterator[Clients]:
    clients = Clients(broker)
    yield clients
    clients.finish()


@pytest.fixture
def channel(connect: Clients) -> Chan:
    return connect().channel()


def declared(channel: Chan, name: str, **options: Any) -> str:
    return channel.declare_queue(name, **options).queue


def publish_confirmed(channel: Chan, queue: str, *bodies: bytes, **props: Any) -> None:
    if channel.confirms.empty() and "confirm" not in channel.events:
        channel.events.append("confirm")
        channel.confirm()
    for body in bodies:
        channel.publish("", queue, body, Properties(**props))
    for _ in bodies:
        assert channel.next_confirm().ack


def dead_lettering(channel: Chan, **arguments: Any) -> tuple[str, str]:
    """A queue "src" dead-lettering (through the default exchange) into a queue "dead"."""
    dead = declared(channel, "dead")
    dlx = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    return declared(channel, "src", arguments={**dlx, **arguments}), dead


def bodies(channel: Chan, queue: str, most: int = 100) -> list[bytes]:
    """Every ready message of ``queue`` (``most`` at the most), taken and acked."""
    got: list[bytes] = []
    for _ in range(most):
        delivery = channel.get(queue)
        if delivery is None:
            break
        got.append(delivery.body)
        channel.ack(delivery.tag)
    return got


def on_loop(client: Client, fn: Callable[[], None]) -> None:
    client.io.call(fn)


# -- the transport and its addresses ---------------------------------------------------------------


def test_the_transport_meets_the_protocol(broker: MemoryBroker) -> None:
    transport: Transport = broker.transport  # checked by mypy
    assert transport.name == "memory"
    assert broker.transport is transport


def test_any_url_is_taken_and_shown_without_its_password(broker: MemoryBroker) -> None:
    transport = broker.transport
    for url in ("memory://", "amqp://guest:s3cret@rabbit:5672/%2F", "whatever"):
        address = transport.address(Settings(), url, "name")
        assert "s3cret" not in address.shown
        assert "s3cret" not in repr(address)
    address = transport.address(Settings(), "amqp://guest:s3cret@rabbit/", "name")
    assert address.shown == "amqp://guest:***@rabbit/"
    with pytest.raises(ConfigError):
        transport.address(Settings(), b"memory://", "name")  # type: ignore[arg-type]


def test_the_login_user_comes_from_the_settings(connect: Clients) -> None:
    settings = Settings(url="amqp://alice:pw@host/")
    client = connect("memory://", settings=settings)
    assert connect.broker.connection_names() == ["test"]
    channel = client.channel()
    name = declared(channel, "", exclusive=True)
    channel.publish("", name, b"x", Properties(user_id="alice"))
    channel.sync()
    assert channel.is_open()


def test_no_repr_shows_a_password(connect: Clients) -> None:
    broker = MemoryBroker(users={"guest": "s3cret"})
    transport = broker.transport
    address = transport.address(Settings(), "amqp://guest:s3cret@h/", "n")
    client = Client(transport, "amqp://guest:s3cret@h/", Settings(), "n")
    connect.made.append(client)
    channel = client.channel()
    shown = [repr(x) for x in (broker, transport, address, client.connection, channel.channel)]
    assert all("s3cret" not in text for text in shown), shown
    assert "1 users" in repr(broker)


def test_failure_texts_are_scrubbed_of_the_urls_password(connect: Clients) -> None:
    for url, shown in (("amqp://guest:guest@h/", "***"), ("memory://", "guest")):
        channel = connect(url).channel()
        channel.publish("", "q", b"x", Properties(user_id="intruder"))
        assert channel.expect_closed().text.endswith(f"but authenticated user was '{shown}'")


def test_a_users_table_refuses_a_wrong_password_for_good() -> None:
    broker = MemoryBroker(users={"guest": "right"})
    with pytest.raises(ConnectFailed) as failed:
        Client(broker.transport, "amqp://guest:wrong@h/", Settings(), "n")
    assert failed.value.failure.refused
    assert failed.value.failure.text == "login refused (check the user name and password)"
    with pytest.raises(ConnectFailed):
        Client(broker.transport, "amqp://guest:wrong@h/", Settings(url="amqp://bob:right@h/"), "n")
    Client(broker.transport, "amqp://guest:right@h/", Settings(), "n").close()


def test_without_a_users_table_any_login_is_let_in(broker: MemoryBroker) -> None:
    Client(broker.transport, "amqp://who:ever@h/", Settings(), "n").close()


# -- connections and channels ----------------------------------------------------------------------


def test_closing_a_connection_closes_its_channels_first(connect: Clients) -> None:
    client = connect()
    channel = client.channel()
    failure = client.close()
    assert (failure.code, failure.text, failure.by_broker) == (200, "200 Normal shutdown", False)
    assert failure.with_connection
    closed = channel.expect_closed()
    assert (closed.code, closed.with_connection) == (200, False)  # pika: ChannelClosedByClient


def test_a_connection_closed_before_it_opened_reports_a_failed_open(broker: MemoryBroker) -> None:
    client_failure: Future[Any] = Future()
    from tests.transport_harness import LoopThread  # noqa: PLC0415 - only this test needs it

    io = LoopThread(broker.transport, "early")
    address = broker.transport.address(Settings(), URL, "early")

    def connect_and_close() -> None:
        connection = broker.transport.connect(
            io.loop,
            address,
            on_open=lambda _c: client_failure.set_result("opened"),
            on_open_failed=lambda _c, f: client_failure.set_result(f),
            on_closed=lambda _c, f: client_failure.set_result(("closed", f)),
            on_blocked=lambda _c, _r: None,
            on_unblocked=lambda _c: None,
        )
        connection.close()

    io.call(connect_and_close)
    failure = client_failure.result(TIMEOUT)
    assert failure.text == "connection open aborted: 200 Normal shutdown"
    io.stop()


def test_using_a_closed_channel_or_connection_raises(connect: Clients) -> None:
    client = connect()
    channel = client.channel()
    channel.close()
    with pytest.raises(PublishError):
        channel.publish("", "q", b"x")
    with pytest.raises(PublishError):
        channel.ack(1)
    client.io.call(client.connection.close)
    client.closed.result(TIMEOUT)
    with pytest.raises(PublishError):
        client.io.call(lambda: client.connection.open_channel(lambda _ch: None))


def test_a_refusal_closes_the_channel_not_the_connection(connect: Clients) -> None:
    client = connect()
    with pytest.raises(ChannelClosed) as closed:
        client.channel().declare_queue("missing", passive=True)
    assert closed.value.failure.by_broker
    assert not closed.value.failure.with_connection
    assert client.is_open()
    assert client.channel().declare_queue("", exclusive=True).messages == 0


def test_channel_numbers_reuse_the_lowest_free(connect: Clients) -> None:
    client = connect()
    first, second = client.channel(), client.channel()
    assert (first.channel.number, second.channel.number) == (1, 2)
    first.close()
    assert client.channel().channel.number == 1


def test_only_the_loop_thread_may_use_a_connection(connect: Clients) -> None:
    client = connect()
    channel = client.channel()
    with pytest.raises(RuntimeError, match="only its loop's thread"):
        channel.channel.publish("", "q", b"x", Properties())
    with pytest.raises(RuntimeError, match="only its loop's thread"):
        client.connection.close()


def test_callbacks_run_on_the_receivers_loop_thread_never_inline(connect: Clients) -> None:
    publisher, receiver = connect(name="publisher"), connect(name="receiver")
    receiving = receiver.channel()
    name = declared(receiving, "", exclusive=True)
    threads: Future[int] = Future()
    receiver.io.call(
        lambda: receiving.channel.consume(
            name,
            lambda _d: threads.set_result(threading.get_ident()),
            auto_ack=True,
            on_ok=lambda _tag: None,
        )
    )
    publishing = publisher.channel()
    answered: list[str] = []

    def publish_and_declare() -> None:
        publishing.channel.publish("", name, b"x", Properties())
        publishing.channel.declare_queue(
            "", exclusive=True, on_ok=lambda _info: answered.append("ok")
        )
        answered.append("returned")  # the answer comes later, on a turn of the loop

    publisher.io.call(publish_and_declare)
    assert threads.result(TIMEOUT) == receiver.io.ident
    publishing.sync()
    assert answered == ["returned", "ok"]


def test_holding_and_flushing_writes_changes_nothing(connect: Clients) -> None:
    client = connect()
    channel = client.channel()
    name = declared(channel, "", exclusive=True)
    channel.confirm()
    on_loop(client, client.connection.hold_writes)
    channel.publish("", name, b"x")
    assert channel.next_confirm().ack  # held or not, it went
    on_loop(client, client.connection.flush_writes)


# -- faults ----------------------------------------------------------------------------------------


def test_close_connections_is_rabbitmqctl_close_connection(connect: Clients) -> None:
    broker = connect.broker
    keep, drop = connect(name="keep"), connect(name="drop")
    owned = declared(drop.channel(), "", exclusive=True)
    shared = declared(keep.channel(), "shared")
    getting = drop.channel()
    publish_confirmed(getting, shared, b"m")
    assert getting.get(shared) is not None
    assert broker.close_connections("maintenance", code=320, name="drop") == 1
    failure = drop.closed.result(TIMEOUT)
    assert failure.text == "320 CONNECTION_FORCED - maintenance"
    assert (failure.by_broker, failure.with_connection, failure.refused) == (True, True, False)
    assert broker.queue_info(owned) is None  # its exclusive queue went with it
    assert broker.queue_info(shared) == QueueInfo(shared, 1, 0)  # its unacked came back
    assert keep.is_open()
    assert broker.close_connections("all of them", code=541) == 1
    assert keep.closed.result(TIMEOUT).text == "541 INTERNAL_ERROR - all of them"


def test_a_stopped_broker_refuses_connections_until_started(connect: Clients) -> None:
    broker = connect.broker
    client = connect()
    broker.stop()
    failure = client.closed.result(TIMEOUT)
    assert failure.text == (
        "320 CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    )
    assert failure.by_broker
    with pytest.raises(ConnectFailed) as failed:
        Client(broker.transport, URL, Settings(), "while-down")
    assert failed.value.failure.text == "connection refused"
    assert not failed.value.failure.refused  # retrying can help
    broker.start()
    assert connect().is_open()


def test_a_restart_keeps_what_rabbitmq_keeps(connect: Clients) -> None:
    broker = connect.broker
    channel = connect().channel()
    declared(channel, "durable", durable=True)
    declared(channel, "transient")
    declared(channel, "mine", exclusive=True)
    declared(channel, "quorum", durable=True, arguments={"x-queue-type": "quorum"})
    channel.declare_exchange("kept", "direct", durable=True)
    channel.declare_exchange("lost", "direct")
    channel.bind("durable", "kept", "k")
    for queue in ("durable", "transient", "quorum"):
        publish_confirmed(channel, queue, b"persistent", delivery_mode=2)
        publish_confirmed(channel, queue, b"transient")
    taken = channel.get("durable")  # unacked at the stop: requeued first, so it stays
    assert taken is not None
    broker.stop()
    broker.start()
    channel = connect().channel()
    assert sorted(broker.queue_names()) == ["durable", "quorum"]
    assert bodies(channel, "durable") == [b"persistent"]
    assert bodies(channel, "quorum") == [b"persistent", b"transient"]
    channel.declare_exchange("kept", "direct", durable=True)
    channel.confirm()
    channel.publish("kept", "k", b"routed")
    assert channel.next_confirm().ack
    assert bodies(channel, "durable") == [b"routed"]
    channel.publish("lost", "k", b"x")
    assert channel.expect_closed().code == 404


def test_an_alarm_holds_a_connections_publishes_and_what_follows(connect: Clients) -> None:
    broker = connect.broker
    client = connect()
    channel = client.channel()
    name = declared(channel, "q")
    channel.confirm()
    broker.block("memory alarm")
    assert take(client.blocked) == "memory alarm"
    channel.sync()  # nothing published yet: the broker still reads
    channel.publish("", name, b"held")
    declared_later: Future[QueueInfo] = Future()
    client.io.call(
        lambda: channel.channel.declare_queue(name, passive=True, on_ok=declared_later.set_result)
    )
    late = connect(name="late")  # a connection made during the alarm hears of it too
    assert take(late.blocked) == "memory alarm"
    assert broker.queue_info(name) == QueueInfo(name, 0, 0)  # not read, not done
    assert channel.confirms.empty()
    assert not declared_later.done()
    broker.unblock()
    take(client.unblocked)
    take(late.unblocked)
    assert channel.next_confirm() == Confirm(1, False, True)
    assert declared_later.result(TIMEOUT) == QueueInfo(name, 1, 0)


def test_abandoning_a_connection_is_the_peer_vanishing(connect: Clients) -> None:
    broker = connect.broker
    watcher, gone = connect(name="watcher"), connect(name="gone")
    shared = declared(watcher.channel(), "shared")
    watching = watcher.channel()
    publish_confirmed(watching, shared, b"m")
    vanishing = gone.channel()
    owned = declared(vanishing, "", exclusive=True)
    assert vanishing.get(shared) is not None
    gone.abandon()
    assert broker.queue_info(owned) is None
    again = watching.get(shared)
    assert again is not None
    assert again.redelivered
    assert not gone.closed.done()  # no callback on the abandoning side
    assert broker.connection_names() == ["watcher"]


# -- the client side keeps pika's rules ------------------------------------------------------------


def test_values_arrive_as_pika_decodes_them(channel: Chan) -> None:
    name = declared(channel, "", exclusive=True)
    when = datetime(2024, 5, 6, 7, 8, 9, 999999)  # naive: pika takes it as UTC
    headers = {
        "text": "é",
        "raw": b"\xff\x00",
        "int": 2**40,
        "flag": True,
        "none": None,
        "list": [1, "two", [3]],
        "table": {"nested": {"deep": 1}},
        "price": Decimal("1.50"),
        "when": when,
    }
    publish_confirmed(channel, name, b"x", headers=headers, correlation_id=b"utf-8 bytes")
    delivery = channel.get(name)
    assert delivery is not None
    got = delivery.properties.headers
    assert got["when"] == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    assert got["price"] == Decimal("1.5")
    assert {k: v for k, v in got.items() if k not in ("when", "price")} == {
        k: v for k, v in headers.items() if k not in ("when", "price")
    }
    assert delivery.properties.correlation_id == "utf-8 bytes"  # a short string: str if UTF-8


def test_what_pika_cannot_encode_is_not_published(channel: Chan) -> None:
    for properties in (
        Properties(headers={"t": (1, 2)}),
        Properties(headers={"f": 1.5}),
        Properties(headers={"big": 2**64}),
        Properties(correlation_id="x" * 256),
        Properties(delivery_mode=256),
        Properties(headers=["not", "a", "table"]),
    ):
        with pytest.raises(PublishError, match="not published"):
            channel.publish("", "q", b"x", properties)
    with pytest.raises(PublishError, match="not declared"):
        channel.declare_queue("q", arguments={"x-bad": {1, 2}})
    assert channel.is_open()


def test_a_receiver_cannot_change_what_another_receives(channel: Chan) -> None:
    channel.declare_exchange("fan", "fanout")
    first, second = declared(channel, "first"), declared(channel, "second")
    channel.bind(first, "fan", "")
    channel.bind(second, "fan", "")
    channel.confirm()
    channel.publish("fan", "", b"x", Properties(headers={"list": [1]}))
    assert channel.next_confirm().ack
    one = channel.get(first)
    assert one is not None
    one.properties.headers["list"].append(2)
    other = channel.get(second)
    assert other is not None
    assert other.properties.headers == {"list": [1]}


def test_cancelling_an_unknown_consumer_warns_and_never_answers(
    channel: Chan, caplog: pytest.LogCaptureFixture
) -> None:
    answered: list[str] = []
    with caplog.at_level(logging.WARNING, logger="reqrep.connection"):
        channel.client.io.call(
            lambda: channel.channel.cancel("ctag-none", lambda: answered.append("ok"))
        )
    channel.sync()
    assert answered == []  # pika's rule: it logs and sends nothing
    assert "no such consumer" in caplog.text


def test_deliveries_after_a_channel_close_are_not_handed_over(connect: Clients) -> None:
    client = connect()
    setup = client.channel()
    name = declared(setup, "q")
    publish_confirmed(setup, name, *(b"%d" % n for n in range(5)))
    consuming = client.channel()
    seen: list[bytes] = []

    def consume_and_close() -> None:
        consuming.channel.consume(name, lambda d: seen.append(d.body), on_ok=lambda _t: None)
        consuming.channel.close()  # the deliveries already posted are dropped

    client.io.call(consume_and_close)
    consuming.expect_closed()
    assert seen == []
    assert [d.redelivered for d in [setup.get(name) for _ in range(5)] if d] == [True] * 5


def test_a_broker_cancel_reaches_on_cancel_and_forgets_the_consumer(channel: Chan) -> None:
    name = declared(channel, "q")
    consumer = channel.consume(name)
    channel.delete_queue(name)
    assert take(channel.cancels) == consumer.tag
    answered: list[str] = []
    channel.client.io.call(
        lambda: channel.channel.cancel(consumer.tag, lambda: answered.append("ok"))
    )
    channel.sync()
    assert answered == []


# -- 4.x where RabbitMQ's versions differ ----------------------------------------------------------


def test_a_quorum_queue_4x_style(channel: Chan) -> None:
    name = declared(channel, "qq", durable=True, arguments={"x-queue-type": "quorum"})
    publish_confirmed(channel, name, b"a", b"b", b"c")
    a, b = channel.get(name), channel.get(name)
    assert a is not None
    assert b is not None
    assert a.properties.headers is None  # no x-delivery-count on a first delivery
    channel.nack(b.tag)
    channel.nack(a.tag)
    # Returned messages go ahead of the rest, in the order they came back.
    again = [channel.get(name) for _ in range(3)]
    assert [(d.body, d.properties.headers) for d in again if d] == [
        (b"b", {"x-delivery-count": 1}),
        (b"a", {"x-delivery-count": 1}),
        (b"c", None),
    ]
    with pytest.raises(ChannelClosed) as closed:
        channel.declare_queue(name, durable=True)
    assert closed.value.failure.text.endswith("received 'classic' but current is 'quorum'")


def test_a_quorum_queue_has_a_delivery_limit_of_20_unless_told(connect: Clients) -> None:
    channel = connect().channel()
    dead = declared(channel, "dead")
    dlx = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    for name, limit in (("default", None), ("unlimited", -1)):
        arguments: dict[str, Any] = {"x-queue-type": "quorum", **dlx}
        if limit is not None:
            arguments["x-delivery-limit"] = limit
        declared(channel, name, durable=True, arguments=arguments)
        publish_confirmed(channel, name, name.encode())
    for _ in range(21):
        for name in ("default", "unlimited"):
            delivery = channel.get(name)
            assert delivery is not None
            channel.nack(delivery.tag)
    assert channel.get("default") is None  # 21 deliveries, then dead-lettered
    assert bodies(channel, dead) == [b"default"]
    assert channel.get("unlimited") is not None


def test_dead_lettering_adds_the_last_death_headers(channel: Chan) -> None:
    source, dead = dead_lettering(channel)
    publish_confirmed(channel, source, b"x")
    delivery = channel.get(source)
    assert delivery is not None
    channel.reject(delivery.tag, requeue=False)
    dead_one = channel.get(dead)
    assert dead_one is not None
    headers = dead_one.properties.headers
    assert (headers["x-last-death-reason"], headers["x-last-death-queue"]) == ("rejected", source)
    assert headers["x-last-death-exchange"] == ""


def test_an_unknown_exchange_kind_closes_the_channel_4x_style(channel: Chan) -> None:
    with pytest.raises(ChannelClosed) as closed:
        channel.declare_exchange("x", "nosuch")
    assert closed.value.failure.text == "406 PRECONDITION_FAILED - invalid exchange type 'nosuch'"


# -- messages and queues ---------------------------------------------------------------------------


def test_a_message_expires_at_the_head_only(channel: Chan) -> None:
    source, dead = dead_lettering(channel)
    consumer = channel.consume(dead, auto_ack=True)
    publish_confirmed(channel, source, b"long", expiration="60000")
    publish_confirmed(channel, source, b"short", expiration="1")
    channel.sync()
    assert channel.declare_queue(source, passive=True).messages == 2  # it waits behind "long"
    head = channel.get(source)
    assert head is not None
    assert head.body == b"long"
    assert consumer.next().body == b"short"  # expired the moment it reached the head
    channel.ack(head.tag)


def test_a_ttl_of_zero_reaches_a_waiting_consumer_and_expires_otherwise(channel: Chan) -> None:
    source, dead = dead_lettering(channel, **{"x-message-ttl": 0})
    publish_confirmed(channel, source, b"nobody waits")
    consumer = channel.consume(source, auto_ack=True)
    publish_confirmed(channel, source, b"taken")
    assert consumer.next().body == b"taken"
    assert bodies(channel, dead) == [b"nobody waits"]


def deadline_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Brokers' deadline threads started since ``before`` (other tests' brokers have theirs)."""
    return [
        t
        for t in threading.enumerate()
        if t.name == "reqrep-memory-broker-deadlines" and t not in before
    ]


def test_a_dead_letter_cycle_without_a_client_is_cut(channel: Chan) -> None:
    # ping's dead letters go to pong (and a witness); pong's go back to ping: a cycle.
    channel.declare_exchange("to-pong", "fanout")
    for name, exchange, key in (("ping", "to-pong", ""), ("pong", "", "ping")):
        declared(
            channel,
            name,
            arguments={
                "x-dead-letter-exchange": exchange,
                "x-dead-letter-routing-key": key,
                "x-message-ttl": 1,
            },
        )
    witness = declared(channel, "witness")
    channel.bind("pong", "to-pong", "")
    channel.bind(witness, "to-pong", "")
    before = set(threading.enumerate())
    publish_confirmed(channel, "ping", b"ball")
    for thread in deadline_threads(before):  # it ends once no deadline waits: the ball is gone
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    info = [channel.declare_queue(n, passive=True).messages for n in ("ping", "pong")]
    assert info == [0, 0]
    seen = channel.get(witness)
    assert seen is not None
    assert [d["queue"] for d in seen.properties.headers["x-death"]] == ["ping"]


def test_a_full_queue_can_dead_letter_what_it_refuses(channel: Chan) -> None:
    source, dead = dead_lettering(
        channel, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    )
    channel.confirm()
    channel.publish("", source, b"kept")
    channel.publish("", source, b"refused")
    assert [channel.next_confirm().ack for _ in range(2)] == [True, False]
    assert bodies(channel, dead) == [b"refused"]


def test_a_requeue_can_push_the_head_out_of_a_full_queue(channel: Chan) -> None:
    name = declared(channel, "q", arguments={"x-max-length": 2})
    publish_confirmed(channel, name, b"a", b"b")
    a = channel.get(name)
    assert a is not None
    publish_confirmed(channel, name, b"c")
    channel.nack(a.tag)
    assert bodies(channel, name) == [b"b", b"c"]  # as RabbitMQ 3.10 and 4.0 do


def test_settling_many_at_once(channel: Chan) -> None:
    name = declared(channel, "q")
    publish_confirmed(channel, name, b"a", b"b", b"c")
    tags = [d.tag for d in [channel.get(name) for _ in range(3)] if d]
    assert tags == [1, 2, 3]
    channel.nack(2, multiple=True)  # 1 and 2 go back
    assert channel.declare_queue(name, passive=True).messages == 2
    again = channel.get(name)
    assert again is not None
    assert (again.body, again.tag) == (b"a", 4)
    channel.ack(0, multiple=True)  # everything outstanding: 3 and 4
    channel.sync()
    assert bodies(channel, name) == [b"b"]
    channel.ack(999, multiple=True)
    assert channel.expect_closed().text == "406 PRECONDITION_FAILED - unknown delivery tag 999"


def test_qos_applies_to_consumers_made_after_it(channel: Chan) -> None:
    name = declared(channel, "q")
    publish_confirmed(channel, name, *(b"%d" % n for n in range(4)))
    channel.qos(1)
    narrow = channel.consume(name)
    narrow.next()
    channel.qos(3)  # the first consumer keeps its one
    channel.sync()
    assert narrow.deliveries.empty()
    wide = channel.consume(name)
    assert [wide.next().body for _ in range(3)] == [b"1", b"2", b"3"]


def test_headers_and_default_exchanges_route(channel: Chan) -> None:
    name = declared(channel, "q")
    channel.bind(name, "amq.headers", "")
    channel.confirm()
    channel.publish("amq.headers", "anything", b"h")
    channel.publish("amq.default", name, b"d")
    assert [channel.next_confirm().ack for _ in range(2)] == [True, True]
    assert bodies(channel, name) == [b"h", b"d"]


def test_a_deleted_exchange_takes_its_bindings(channel: Chan) -> None:
    name = declared(channel, "q")
    channel.declare_exchange("x", "direct")
    channel.bind(name, "x", "k")
    channel.delete_exchange("x")
    channel.declare_exchange("x", "direct")
    channel.confirm()
    channel.publish("x", "k", b"lost", mandatory=True)
    assert take(channel.returns).routing_key == "k"
    with pytest.raises(ChannelClosed) as closed:
        channel.delete_exchange("amq.direct")
    assert closed.value.failure.code == 403


def test_inspection(connect: Clients) -> None:
    broker = connect.broker
    channel = connect(name="inspector").channel()
    name = declared(channel, "q")
    channel.consume(name)
    assert broker.queue_info(name) == QueueInfo(name, 0, 1)
    assert broker.queue_info("nope") is None
    assert broker.queue_names() == [name]
    assert broker.connection_names() == ["inspector"]
    assert broker.is_running


def test_many_publishers_on_many_threads_lose_nothing(connect: Clients) -> None:
    receiver = connect(name="receiver").channel()
    name = declared(receiver, "q")
    count = 0
    done = threading.Event()

    def delivered(delivery: Delivery) -> None:
        nonlocal count
        receiver.channel.ack(delivery.tag)
        count += 1
        if count == 8 * 200:
            done.set()

    receiver.client.io.call(
        lambda: receiver.channel.consume(name, delivered, on_ok=lambda _t: None)
    )
    publishers = [connect(name=f"p{n}").channel() for n in range(8)]
    threads = [
        threading.Thread(target=publish_confirmed, args=(p, name, *(b"m",) * 200))
        for p in publishers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert done.wait(TIMEOUT)
    receiver.sync()
    assert connect.broker.queue_info(name) == QueueInfo(name, 0, 1)


def test_the_deadline_thread_runs_only_while_deadlines_wait(channel: Chan) -> None:
    name = declared(channel, "", exclusive=True)
    before = set(threading.enumerate())
    publish_confirmed(channel, name, b"x", expiration="200")
    threads = deadline_threads(before)
    assert len(threads) == 1
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert channel.get(name) is None
    assert drained(channel.returns) == []


def test_an_address_of_another_transport_is_refused(broker: MemoryBroker) -> None:
    class Foreign:
        shown = "amqp://elsewhere/"

    with pytest.raises(TypeError):
        broker.transport.connect(
            broker.transport.new_loop(),
            Foreign(),
            on_open=lambda _c: None,
            on_open_failed=lambda _c, _f: None,
            on_closed=lambda _c, _f: None,
            on_blocked=lambda _c, _r: None,
            on_unblocked=lambda _c: None,
        )
    assert isinstance(broker.transport.address(Settings(), URL, "n"), MemoryAddress)
