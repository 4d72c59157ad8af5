"""What a refused set-up becomes (``common/refused.py``): errors a user can act on, by type."""

from __future__ import annotations

import pytest

from reqrep.common import Settings, exitcodes
from reqrep.common._transport import Failure
from reqrep.common.errors import AccessRefused, ConnectionLost, TopologyConflict
from reqrep.common.refused import setup_refused
from reqrep.testing import MemoryBroker
from reqrep.worker import Service, Worker

WHERE = "reqrep-worker-x (amqp://guest:***@127.0.0.1:5672/%2F)"


@pytest.mark.parametrize(
    ("text", "received", "current"),
    [
        (  # RabbitMQ 3.10
            "406 PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'rpc_queue' in "
            "vhost '/': received 'classic' but current is 'quorum'",
            "'classic'",
            "'quorum'",
        ),
        (
            "406 PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue "
            "'rpc_queue' in vhost '/': received the value 'reqrep.dlx' of type 'longstr' but "
            "current is none",
            "the value 'reqrep.dlx' of type 'longstr'",
            "none",
        ),
    ],
)
def test_a_queue_declared_first_with_other_arguments_is_a_topology_conflict(
    text: str, received: str, current: str
) -> None:
    error = setup_refused(WHERE, Failure(text, code=406, by_broker=True))
    assert isinstance(error, TopologyConflict)
    assert (error.kind, error.name) == ("queue", "rpc_queue")
    assert error.argument in text
    assert error.permanent
    assert exitcodes.for_error(error) == exitcodes.REFUSED
    message = str(error)
    assert f"{error.argument!r} differs" in message
    assert f"the broker has {current}, this worker declares {received}" in message
    assert "PlainService" in message  # what to do about it


def test_an_exchange_of_another_kind_is_a_topology_conflict_too() -> None:
    text = (
        "406 PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'reqrep.requests' in "
        "vhost '/': received 'direct' but current is 'topic'"
    )
    error = setup_refused(WHERE, Failure(text, code=406, by_broker=True))
    assert isinstance(error, TopologyConflict)
    assert (error.kind, error.name, error.argument) == ("exchange", "reqrep.requests", "type")


def test_other_refusals_keep_their_own_types() -> None:
    refused = setup_refused(WHERE, Failure("403 ACCESS_REFUSED - no", code=403, by_broker=True))
    assert isinstance(refused, AccessRefused)
    other = setup_refused(WHERE, Failure("406 PRECONDITION_FAILED - odd", code=406))
    assert type(other) is ConnectionLost
    assert other.permanent
    assert "odd" in str(other)


def test_a_worker_refused_its_queue_fails_to_start_naming_the_argument() -> None:
    broker = MemoryBroker()
    service = Service("conflict")
    service.add("echo", lambda payload: payload)
    classic = Settings(connect_timeout=2.0, queue_type="classic")
    with Worker(service, transport=broker.transport, settings=classic):
        pass  # declares reqrep.conflict (and its dead-letter queue) as classic queues
    quorum = Worker(
        service, transport=broker.transport, settings=classic.replace(queue_type="quorum")
    )
    with pytest.raises(TopologyConflict) as info:
        quorum.start()
    # The dead-letter queue is declared first: it is the one named.
    assert (info.value.name, info.value.argument) == ("reqrep.conflict.dead", "x-queue-type")
