"""A client in "any language" can call a reqrep worker by following docs/protocol.md alone.

The client here is bare pika: it imports nothing from ``requestor`` or ``common``, and builds every
queue name, property and body from the protocol document. The ``demo_worker`` fixture only gets a
real worker running for it to talk to.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from reqrep.worker import Worker
from tests.support import BareReplyQueue

WAIT = 10.0  # seconds: the longest any test waits for a reply
JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Reply:
    """One reply as it came off the wire."""

    properties: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class ForeignClient(BareReplyQueue):
    """A requestor written from the protocol document with nothing but an AMQP client.

    One BlockingConnection, one channel in confirm mode, an exclusive server-named callback queue.
    """

    def __init__(self, url: str) -> None:
        self.replies: dict[str, Reply] = {}
        self.arrivals: list[str] = []
        super().__init__(url, confirm=True)
        self.reply_queue = self.queue

    def _on_reply(self, _channel: Any, _deliver: Any, properties: Any, body: bytes) -> None:
        self.arrivals.append(properties.correlation_id)
        self.replies[properties.correlation_id] = Reply(properties, body)

    def send(
        self,
        queue: str,
        method: str | None,
        body: bytes,
        *,
        content_type: str | None = JSON,
    ) -> str:
        """Publish one request as the document describes; return its correlation id.

        Only the required properties are set (``delivery_mode`` and ``message_id`` are optional).
        ``method`` and ``content_type`` may be None to send a deliberately malformed request.
        """
        correlation_id = uuid.uuid4().hex
        properties = pika.BasicProperties(
            type=method,
            correlation_id=correlation_id,
            reply_to=self.reply_queue,
            content_type=content_type,
        )
        self.channel.basic_publish("", queue, body, properties, mandatory=True)
        return correlation_id

    def call(self, queue: str, method: str, payload: Any) -> Reply:
        """Send a JSON payload and wait for its reply."""
        correlation_id = self.send(queue, method, json.dumps(payload).encode("utf-8"))
        return self.wait([correlation_id])[correlation_id]

    def wait(self, correlation_ids: list[str], timeout: float = WAIT) -> dict[str, Reply]:
        """The replies to ``correlation_ids``; fails the test if they are not all in by then."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [c for c in correlation_ids if c not in self.replies]
            remaining = deadline - time.monotonic()
            if not missing or remaining <= 0:
                break
            self.connection.process_data_events(time_limit=min(remaining, 0.5))
        assert not missing, f"no reply within {timeout}s for {missing}"
        return {c: self.replies[c] for c in correlation_ids}


@pytest.fixture
def queue(settings: Any, service_name: str) -> str:
    """The service's request queue, named as the document says: prefix + service name."""
    return f"{settings.queue_prefix}{service_name}"


@pytest.fixture
def client(amqp_url: str) -> Iterator[ForeignClient]:
    with ForeignClient(amqp_url) as foreign:
        yield foreign


def assert_reply_properties(reply: Reply, correlation_id: str) -> None:
    assert reply.properties.correlation_id == correlation_id
    assert reply.properties.content_type == JSON
    assert reply.properties.type == "reply"


def assert_error(reply: Reply, code: str) -> dict[str, Any]:
    """Check the error reply shape the document promises; return its ``error`` object."""
    body = reply.json()
    assert isinstance(body, dict)
    assert body["ok"] is False
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    assert isinstance(error["details"], dict)
    return error


def test_echo_call(demo_worker: Worker, client: ForeignClient, queue: str) -> None:
    payload = {"text": "héllo ✓", "values": [1, 2.5, None, True, "x"], "nested": {"k": []}}
    correlation_id = client.send(queue, "echo", json.dumps(payload).encode("utf-8"))
    reply = client.wait([correlation_id])[correlation_id]

    assert_reply_properties(reply, correlation_id)
    assert reply.json() == {"ok": True, "result": payload}


def test_add_call(demo_worker: Worker, client: ForeignClient, queue: str) -> None:
    assert client.call(queue, "add", {"a": 2, "b": 40}).json() == {"ok": True, "result": 42}


def test_charset_parameter_and_null_payload_are_accepted(
    demo_worker: Worker, client: ForeignClient, queue: str
) -> None:
    correlation_id = client.send(
        queue, "echo", b"null", content_type="application/json; charset=utf-8"
    )
    reply = client.wait([correlation_id])[correlation_id]

    assert_reply_properties(reply, correlation_id)
    assert reply.json() == {"ok": True, "result": None}


def test_handler_error(demo_worker: Worker, client: ForeignClient, queue: str) -> None:
    correlation_id = client.send(queue, "fail", json.dumps({"message": "boom 💥"}).encode("utf-8"))
    reply = client.wait([correlation_id])[correlation_id]

    assert_reply_properties(reply, correlation_id)
    error = assert_error(reply, "handler_error")
    assert error["type"] == "DemoError"
    assert error["message"] == "boom 💥"


def test_unknown_method(demo_worker: Worker, client: ForeignClient, queue: str) -> None:
    reply = client.call(queue, "no_such_method", {"x": 1})

    error = assert_error(reply, "method_not_found")
    assert "echo" in error["details"]["methods"]
    assert sorted(error["details"]["methods"]) == demo_worker.service.methods


@pytest.mark.parametrize(
    "malformed",
    [
        pytest.param(("echo", b"{not json", JSON), id="body-not-json"),
        pytest.param(("echo", b'{"a": NaN}', JSON), id="body-with-nan"),
        pytest.param(("echo", b"\xff\xfe not utf-8", JSON), id="body-not-utf8"),
        pytest.param(("echo", b"", JSON), id="empty-body"),
        pytest.param(("echo", b'{"x": 1}', "text/plain"), id="wrong-content-type"),
        pytest.param(("echo", b'{"x": 1}', None), id="no-content-type"),
        pytest.param((None, b'{"x": 1}', JSON), id="no-type"),
    ],
)
def test_bad_request(
    demo_worker: Worker,
    client: ForeignClient,
    queue: str,
    malformed: tuple[str | None, bytes, str | None],
) -> None:
    """A malformed request is answered (not dropped) with code ``bad_request``.

    ``malformed`` is (``type`` property, body, ``content_type`` property).
    """
    method, body, content_type = malformed
    correlation_id = client.send(queue, method, body, content_type=content_type)
    reply = client.wait([correlation_id])[correlation_id]

    assert_reply_properties(reply, correlation_id)
    assert_error(reply, "bad_request")


def test_pipelined_requests_are_matched_by_correlation_id(
    demo_worker: Worker, client: ForeignClient, queue: str
) -> None:
    # The sleeps finish in the reverse of the order they were sent (the worker runs 4 at once),
    # so replies can come back in any order: only the correlation id ties them to requests.
    requests: list[tuple[str, Any, Any]] = [
        ("sleep", {"seconds": 0.6}, {"slept": 0.6}),
        ("sleep", {"seconds": 0.3}, {"slept": 0.3}),
        ("sleep", {"seconds": 0.0}, {"slept": 0.0}),
    ]
    requests += [("echo", {"i": i}, {"i": i}) for i in range(5)]
    requests += [("add", {"a": i, "b": 100}, i + 100) for i in range(5)]

    sent = {
        client.send(queue, method, json.dumps(payload).encode("utf-8")): expected
        for method, payload, expected in requests
    }
    assert len(sent) == len(requests), "correlation ids must be distinct"
    replies = client.wait(list(sent))

    for correlation_id, expected in sent.items():
        reply = replies[correlation_id]
        assert_reply_properties(reply, correlation_id)
        assert reply.json() == {"ok": True, "result": expected}
    assert sorted(client.arrivals) == sorted(sent), "exactly one reply per request"


def test_missing_service_is_unroutable(amqp_url: str, client: ForeignClient, queue: str) -> None:
    # No worker for this service: its request queue was never declared.
    with pytest.raises(pika.exceptions.UnroutableError) as caught:
        client.send(queue, "echo", b"null")

    (returned,) = caught.value.messages
    assert returned.method.reply_code == 312  # NO_ROUTE
    assert returned.method.routing_key == queue

    # The failed request did not create the queue as a side effect.
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
            channel.queue_declare(queue, passive=True)
        assert missing.value.reply_code == 404
