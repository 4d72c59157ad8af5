"""The control protocol: how tools find the live workers (``reqrep ping``).

Control requests never touch a service's request queue, so they never change the order of its
requests and are answered even while every handler thread is busy:

- The exchange ``Pcontrol`` (prefix ``P``, default ``reqrep.``): direct, durable.
- Each worker connection declares one exclusive, auto-delete queue named
  ``Pcontrol.<S>.<random hex>`` (under the prefix, so that worker permissions cover it; at most
  100 pings kept, the oldest dropped) and binds it to that exchange twice: with the key ``all``
  and with ``service.<S>`` for its service ``S``. It consumes it on its own channel of the
  worker's connection, with a prefetch of 10 and acks: the queue lives exactly as long as the
  worker's connection.
- A control request: routing key ``all`` or ``service.<S>``, ``type`` = ``ping``, ``reply_to``
  and ``correlation_id`` as for a call, ``expiration`` (ms) no longer than the asker waits;
  body ``null``.
- The answer goes to ``reply_to`` (default exchange, not mandatory) if it looks like an asker's
  queue (``amq.gen-...`` or ``amq.rabbitmq.reply-to``), at most 5 a second per asker and 500 in
  all (``worker/control.py``), with the request's
  ``correlation_id``, ``type`` = ``reply``, body ``{"ok": true, "result": <WorkerInfo>}``; an
  unknown control ``type`` is answered with a ``method_not_found`` error reply.

An asker cannot know how many workers there are: it collects answers until its timeout.

A ``cancel`` (``type`` = ``cancel``, routing key ``service.<S>``) tells the workers of ``S`` that
the call its ``reply_to`` and ``correlation_id`` name was cancelled by its caller; its header
``x-deadline`` is the call's deadline. It is never answered (``worker/cancel.py``).

A ``broadcast`` (``type`` = ``broadcast``, the method in the header ``x-reqrep-method``, the
payload as the body, like a request's) runs the method on every worker of ``S``; each answers
with the reply a call would get (``worker/broadcast.py``). Every answer carries the header
``x-reqrep-worker``: the answering worker's ``WorkerInfo.id``, which ties a broadcast's replies
to the workers that answered the ping sent beside it (``requestor/broadcast.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from typing import Any

from reqrep.common.errors import SerializationError

__all__ = [
    "ALL",
    "BROADCAST",
    "CANCEL",
    "METHOD_HEADER",
    "PING",
    "WORKER_HEADER",
    "WorkerInfo",
    "reqrep_version",
    "service_key",
]

ALL = "all"
PING = "ping"
CANCEL = "cancel"  # a caller cancelled a call: never answered (worker/cancel.py)
BROADCAST = "broadcast"  # a call to every worker: answered by each (worker/broadcast.py)
METHOD_HEADER = "x-reqrep-method"  # a broadcast's method
WORKER_HEADER = "x-reqrep-worker"  # on every answer: the answering worker's ``WorkerInfo.id``


def service_key(service: str) -> str:
    """The routing key that reaches the workers of ``service`` only."""
    return f"service.{service}"


@functools.cache
def reqrep_version() -> str:
    """The installed package's version (read once: every ping answer carries it)."""
    try:
        return importlib.metadata.version("reqrep")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself in answer to a ping.

    ``in_flight`` counts requests delivered to it and not yet acknowledged (running, or waiting
    for a handler thread); ``stats`` are its ConsumerStats counters.
    """

    service: str
    queue: str
    host: str
    pid: int
    version: str
    uptime: float  # seconds since the worker started
    in_flight: int
    concurrency: int
    prefetch: int
    draining: bool
    connection: str  # the worker's connection_name on the broker
    reconnects: int = 0
    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    id: str = ""  # this worker's random id, its control queue's last part (x-reqrep-worker)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> WorkerInfo:
        """Read an answer; fields this version does not know are ignored, missing ones
        (from an older worker) take neutral values."""
        if not isinstance(data, dict):
            raise SerializationError(f"a worker's answer is not an object: {type(data).__name__}")
        values: dict[str, Any] = {}
        for name, kind in _KINDS.items():
            value = data.get(name)
            values[name] = value if isinstance(value, kind) else _NEUTRAL[kind]
        stats = data.get("stats")
        values["stats"] = (
            {str(k): v for k, v in stats.items() if isinstance(v, int)}
            if isinstance(stats, dict)
            else {}
        )
        return cls(**values)


_KINDS: dict[str, type | tuple[type, ...]] = {
    "service": str,
    "queue": str,
    "host": str,
    "pid": int,
    "version": str,
    "uptime": (int, float),
    "in_flight": int,
    "concurrency": int,
    "prefetch": int,
    "draining": bool,
    "connection": str,
    "reconnects": int,
    "id": str,
}
_NEUTRAL: dict[type | tuple[type, ...], Any] = {
    str: "",
    int: 0,
    (int, float): 0.0,
    bool: False,
}
