"""A request on its way from the worker's I/O thread to a handler thread, and its twins.

``Consumer`` (``worker/consumer.py``) makes a ``Job`` of each admitted request and hands it to
the handler pool (``worker/execute.py``); a duplicate delivery of a request still running here
waits as a ``Waiter`` for the same reply. Both are immutable: any thread may read them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable

from reqrep.common._transport import Delivery
from reqrep.worker.cancel import CancelSignal
from reqrep.worker.service import Handler

__all__ = ["Job", "Waiter"]


@dataclasses.dataclass(frozen=True)
class Job:
    """One request to run: what a handler thread needs, and what the reply needs."""

    tag: int
    generation: int
    method: str
    correlation_id: str
    reply_to: str
    message_id: str | None
    body: bytes
    handler: Handler
    deadline_ms: int | None = None
    redelivered: bool = False
    delivery_count: int = 0
    cache_key: Hashable = None  # (service, method, message_id) when it has a message_id
    trace: dict[str, str] = dataclasses.field(default_factory=dict)  # W3C trace headers
    delivery: Delivery | None = None  # the request as delivered (to send it round again)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # the caller's own
    cancel: CancelSignal | None = None  # set when its caller cancels it (worker/cancel.py)
    # Where a broadcast's reply goes (worker/broadcast.py), instead of the request's reply
    # path (None: it gets none, it was skipped); any thread.
    answer: Callable[[bytes | None], None] | None = None


@dataclasses.dataclass(frozen=True)
class Waiter:
    """A duplicate delivery waiting for the same key's running job."""

    tag: int
    generation: int
    reply_to: str
    correlation_id: str
    delivery: Delivery | None = None
