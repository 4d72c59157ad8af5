"""The transport seam: what reqrep needs from a connection to a broker, and nothing more.

Two transports implement it: pika's (``_pika.py``, the only module of reqrep that imports pika)
and an in-memory broker for tests (``_memory.py``). Everything above the seam (``common/_link.py``,
the requestor, the worker, the operator's session) is written against these protocols and the
types of ``_types.py``.

Threads. A ``Loop`` runs callbacks on one thread, the connection's I/O thread (or, for a
connection hosted on a caller's asyncio loop, ``AsyncioLoop``, the thread that runs that
loop). Every method of ``Connection`` and ``Channel``, and every callback they make, runs on
that thread; the only
method another thread may call is ``Loop.call_soon_threadsafe``. This is pika's rule, kept for
both transports so that code above the seam cannot depend on the in-memory one being laxer.

Closed channels. Every method of a ``Channel`` that is not open raises PublishError (nothing
was sent); no transport's own exception type crosses the seam.

Callbacks. AMQP is asynchronous: a method that asks the broker something takes ``on_ok``, called
with the answer when it comes. A refusal closes the channel instead (AMQP's way: 404 for a passive
declare of a missing queue, 406 for a queue declared with other arguments): the channel's
``on_close`` callbacks get the ``Failure``, and ``on_ok`` is never called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from reqrep.common._transport._types import (
    Confirm,
    Delivery,
    Failure,
    Properties,
    QueueInfo,
    Returned,
)

__all__ = ["Address", "Channel", "Connection", "Loop", "Transport"]


class Loop(Protocol):
    """An event loop owned by one thread (``run`` runs it there until ``stop``). A hosted loop
    (``AsyncioLoop``) is run by its owner instead: ``run`` and ``stop`` are not for it."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        """Run ``fn`` on the loop after ``delay`` seconds; returns a handle for ``cancel``."""

    def cancel(self, handle: object) -> None:
        """Cancel a ``call_later`` that has not run yet (a handle that ran is ignored)."""

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop soon. The one method any thread may call."""

    def run(self) -> None:
        """Run callbacks until ``stop``; exceptions that callbacks raise propagate out of it."""

    def stop(self) -> None:
        """Make ``run`` return after the current callback (loop thread)."""

    def close(self) -> None:
        """Release the loop's resources once ``run`` has returned for good."""


class Address(Protocol):
    """One broker address, ready to connect to; ``shown`` is safe to log (no password)."""

    @property
    def shown(self) -> str: ...


class Connection(Protocol):
    """One connection to the broker (loop thread only)."""

    @property
    def is_open(self) -> bool:
        """Open and usable: not still opening, closing or closed."""

    def open_channel(self, on_open: Callable[[Channel], None]) -> None:
        """Open a channel; ``on_open`` gets it. Raises PublishError if the connection is not
        open."""

    def close(self) -> None:
        """Ask the broker to close the connection (``on_closed`` follows)."""

    def abandon(self) -> None:
        """Drop the socket at once, without a word to the broker (its loop is gone, or the
        broker no longer reads from us)."""

    def hold_writes(self) -> None:
        """Until ``flush_writes``, only buffer what is written: a batch of publishes and acks
        then leaves in one piece. A transport may ignore it."""

    def flush_writes(self) -> None:
        """Send what was buffered now, and end a hold."""


class Channel(Protocol):
    """One AMQP channel (loop thread only)."""

    @property
    def number(self) -> int: ...

    @property
    def is_open(self) -> bool: ...

    def on_close(self, fn: Callable[[Channel, Failure], None]) -> None:
        """Call ``fn`` once when the channel closes, for whatever reason."""

    def on_return(self, fn: Callable[[Returned], None]) -> None:
        """Call ``fn`` for every mandatory publish that no queue took."""

    def on_cancel(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(consumer_tag)`` when the broker cancels a consumer (its queue was deleted,
        or its node went away)."""

    def qos(self, prefetch: int, on_ok: Callable[[], None]) -> None:
        """At most ``prefetch`` unacknowledged deliveries on this channel's consumers."""

    def confirm(self, on_confirm: Callable[[Confirm], None], on_ok: Callable[[], None]) -> None:
        """Turn on publisher confirms; every later publish is confirmed through ``on_confirm``."""

    def declare_exchange(
        self, name: str, *, kind: str, durable: bool, on_ok: Callable[[], None]
    ) -> None: ...

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        on_ok: Callable[[QueueInfo], None],
    ) -> None:
        """Declare (or with ``passive`` only look up) a queue; ``""`` lets the broker name it."""

    def bind_queue(
        self, queue: str, exchange: str, routing_key: str, on_ok: Callable[[], None]
    ) -> None: ...

    def delete_queue(self, name: str, on_ok: Callable[[], None]) -> None: ...

    def delete_exchange(self, name: str, on_ok: Callable[[], None]) -> None: ...

    def purge_queue(self, name: str, on_ok: Callable[[int], None]) -> None:
        """Remove every ready message of ``name``; ``on_ok`` gets how many."""

    def consume(
        self,
        queue: str,
        on_delivery: Callable[[Delivery], None],
        *,
        auto_ack: bool = False,
        exclusive: bool = False,
        on_ok: Callable[[str], None],
    ) -> str:
        """Start a consumer; returns its tag at once (``on_ok`` gets it again when the broker
        has registered it). Deliveries may arrive before ``on_ok``."""

    def cancel(self, consumer_tag: str, on_ok: Callable[[], None]) -> None:
        """Stop a consumer. Deliveries the broker sent before it saw the cancel come back
        before ``on_ok`` and are not handed to ``on_delivery``: unacknowledged ones go back to
        the queue (with ``auto_ack`` they are lost). A tag the channel no longer knows (the
        broker cancelled it already) never gets ``on_ok``: do not wait for one."""

    def get(self, queue: str, on_result: Callable[[Delivery | None], None]) -> None:
        """Take one message (``basic.get``, not acknowledged: ack or nack it), or None."""

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = False,
    ) -> None:
        """Write a message. Raises PublishError (nothing sent) if the channel is not open."""

    def ack(self, tag: int, *, multiple: bool = False) -> None: ...

    def nack(self, tag: int, *, multiple: bool = False, requeue: bool = True) -> None: ...

    def reject(self, tag: int, *, requeue: bool) -> None: ...

    def close(self) -> None:
        """Close the channel (``on_close`` follows)."""


class Transport(Protocol):
    """Makes loops and connections of one kind (pika's, or the in-memory broker's).

    Threads: ``address`` on the caller's thread (so that a bad URL or TLS file is an error
    where the user made the object); ``new_loop`` on any; ``connect`` on the loop's thread.
    """

    @property
    def name(self) -> str: ...

    def address(self, settings: Any, url: str, connection_name: str) -> Address:
        """Check ``url`` and the settings that apply to it; ConfigError if they are wrong."""

    def new_loop(self) -> Loop: ...

    def connect(
        self,
        loop: Loop,
        address: Address,
        *,
        on_open: Callable[[Connection], None],
        on_open_failed: Callable[[Connection, Failure], None],
        on_closed: Callable[[Connection, Failure], None],
        on_blocked: Callable[[Connection, str], None],
        on_unblocked: Callable[[Connection], None],
    ) -> Connection:
        """Start connecting (loop thread; ``loop`` is one of ``new_loop``, or an
        ``AsyncioLoop``: the connection is then hosted on that asyncio loop). Exactly one of
        ``on_open`` and ``on_open_failed`` follows; after ``on_open``, ``on_closed`` follows
        once when the connection ends. ``on_blocked`` / ``on_unblocked``: the broker stopped
        (started again) reading what this connection publishes (a memory or disk alarm)."""
