"""A worker in another language, written from docs/protocol.md's topology tables alone, shares a
queue with Python workers: whichever declares first, nobody gets 406 PRECONDITION_FAILED.

The declarations below are hard-coded from the protocol document (not imported from
``common/topology.py``), and the test checks that the document still says what they say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pytest

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _declare_as_documented(url: str, prefix: str, service: str, queue_type: str) -> None:
    """What the protocol's topology tables tell a foreign worker to declare."""
    queue, dead, dlx = f"{prefix}{service}", f"{prefix}{service}.dead", f"{prefix}dlx"
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": dlx,
        "x-dead-letter-routing-key": dead,
    }
    if queue_type == "quorum":
        arguments["x-delivery-limit"] = 7  # max_redeliveries (5) + 2
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(
            dlx, exchange_type="direct", durable=True, auto_delete=False, internal=False
        )
        channel.queue_declare(
            dead,
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={"x-queue-type": queue_type, "x-max-length": 10000},
        )
        channel.queue_bind(dead, dlx, routing_key=dead)
        channel.queue_declare(
            queue, durable=True, exclusive=False, auto_delete=False, arguments=arguments
        )
        requests = f"{prefix}requests"
        channel.exchange_declare(
            requests, exchange_type="direct", durable=True, auto_delete=False, internal=False
        )
        channel.queue_bind(queue, requests, routing_key=queue)
    finally:
        connection.close()


@pytest.fixture(params=["quorum", "classic"])
def queue_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_protocol_documents_these_declarations() -> None:
    text = PROTOCOL.read_text()
    for row in (
        "| `{ns}dlx` | exchange, type `direct`, durable, not auto-delete, not internal | none |",
        "| `{prefix}S.dead` | queue, durable, not exclusive, not auto-delete | `x-queue-type`: "
        "same as the request queue's; `x-max-length`: `10000` (integer) |",
        "| binding | `{prefix}S.dead` to `{ns}dlx` | routing key `{prefix}S.dead` | none |",
        "| request queue | `{prefix}S` | queue, durable, not exclusive, not auto-delete |",
        "| `{ns}requests` | exchange, type `direct`, durable, not auto-delete, not internal |",
        "| binding | `{prefix}S` to `{ns}requests` | routing key `{prefix}S` | none |",
        "| `x-dead-letter-exchange` | `{ns}dlx` |",
        "| `x-dead-letter-routing-key` | `{prefix}S.dead` |",
        "**`7`** with the default `REQREP_MAX_REDELIVERIES=5`",
    ):
        assert row in text, row


@pytest.mark.parametrize("foreign_first", [True, False], ids=["foreign-first", "python-first"])
def test_a_foreign_worker_and_python_workers_share_the_queue(
    settings: Settings, service_name: str, queue_type: str, foreign_first: bool
) -> None:
    settings = settings.replace(queue_type=queue_type)
    prefix, url = settings.queue_prefix, settings.url
    if foreign_first:
        _declare_as_documented(url, prefix, service_name, queue_type)
    with (
        Worker(build(service_name), settings=settings, concurrency=2),
        Requestor(settings=settings, service=service_name) as rq,
    ):
        if not foreign_first:  # the foreign worker starts beside a running Python worker
            _declare_as_documented(url, prefix, service_name, queue_type)
        assert rq.call("echo", {"shared": queue_type}, timeout=10) == {"shared": queue_type}
        with Worker(build(service_name), settings=settings, concurrency=1):  # a second one
            assert rq.call("add", {"a": 2, "b": 3}, timeout=10) == 5
