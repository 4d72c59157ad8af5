"""What a refused set-up means: the broker's words, turned into the error a user can act on.

A worker declares its queues and exchanges before it consumes. When the broker refuses a
declaration, the channel closes with a reply code and text; retrying cannot help, so start-up
fails with an error that says why, by its type:

- 403 ACCESS_REFUSED: ``AccessRefused`` (the user's permissions do not cover the name);
- 406 PRECONDITION_FAILED, ``inequivalent arg 'A' for queue 'Q'``: ``TopologyConflict``,
  naming the queue (or exchange) and the argument (a queue another program declared first);
- anything else: ``ConnectionLost`` marked ``permanent``, with the broker's words.
"""

from __future__ import annotations

import re

from reqrep.common._transport import Failure
from reqrep.common.errors import (
    AccessRefused,
    ConnectionLost,
    ReqrepConnectionError,
    TopologyConflict,
)

__all__ = ["setup_refused"]

_ACCESS_REFUSED, _PRECONDITION_FAILED = 403, 406
# RabbitMQ's words (3.10 and 4.x; the in-memory broker says the same).
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']*)' for (?P<kind>queue|exchange) '(?P<name>[^']*)'"
    r" in vhost '[^']*'(?:: received (?P<received>.+?) but current is (?P<current>.+))?$"
)


def setup_refused(where: str, failure: Failure) -> ReqrepConnectionError:
    """The error for a channel the broker closed while a worker set up its topology."""
    if failure.code == _ACCESS_REFUSED:
        return AccessRefused(f"{where}: {failure.text}")
    found = _INEQUIVALENT.search(failure.text) if failure.code == _PRECONDITION_FAILED else None
    if found is None:
        return ConnectionLost(f"{where}: channel closed: {failure.text}", permanent=True)
    kind, name, argument = found["kind"], found["name"], found["argument"]
    differs = (
        f"the broker has {found['current']}, this worker declares {found['received']}"
        if found["current"] is not None
        else "it differs"
    )
    advice = (
        "serve a queue another program owns as a PlainService (it takes the queue as it is), "
        "or delete the queue, or give the worker the settings it was declared with"
        if kind == "queue"
        else "delete the exchange, or use another queue prefix"
    )
    return TopologyConflict(
        f"{where}: {kind} {name!r} exists with other arguments: {argument!r} differs "
        f"({differs}); {advice} (406 PRECONDITION_FAILED)",
        kind=kind,
        name=name,
        argument=argument,
    )
