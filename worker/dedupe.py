"""Recent replies by idempotency key, so a retried or redelivered request is not run twice.

The window is per worker process: bounded in entries, in bytes and in age. A duplicate that
reaches another process, or arrives after its entry was evicted or expired, runs again. A store
shared by all workers (Redis, a database table with a unique key) would close that gap at the
cost of a round trip per request.

Keys are scoped by service and method (``(service, method, message_id)``): the same idempotency
key sent to another method is another request. Only replies that came from running the handler
are cached (a request refused before its handler ran, e.g. a body that is not JSON, can be sent
again corrected under the same key).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["ENTRY_OVERHEAD", "ReplyCache"]

ENTRY_OVERHEAD = 200  # bytes an entry costs besides its body and key (tuple, dict slot, floats)


class ReplyCache:
    """Reply bodies by key (the worker's: ``(service, method, message_id)``), at most
    ``max_entries`` and ``max_bytes`` of them, each for ``ttl`` seconds.

    The oldest entries go first when a bound is reached; expired ones are dropped (and their
    memory freed) by ``sweep``, which ``put`` also runs, and ``get`` when the entry it finds
    has expired: every entry lives exactly ``ttl``, so the expired ones are always the oldest.
    ``max_entries`` or ``max_bytes`` of 0 turns caching off.

    Threads: the worker's I/O thread only.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        ttl: float = 300.0,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # key -> (expires, body, cost against max_bytes)
        self._entries: OrderedDict[Hashable, tuple[float, bytes, int]] = OrderedDict()
        self._max = max_entries
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """What the cached entries cost, as counted against ``max_bytes``."""
        return self._bytes

    def get(self, key: Hashable) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():  # it and everything older
            self.sweep()
            return None
        return entry[1]

    def put(self, key: Hashable, body: bytes) -> None:
        now = self._clock()
        self._sweep(now)
        cost = _cost(key, body)
        if self._max <= 0 or cost > self._max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (now + self._ttl, body, cost)
        self._bytes += cost
        while len(self._entries) > self._max or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def sweep(self) -> int:
        """Drop the expired entries; return how many."""
        return self._sweep(self._clock())

    def _sweep(self, now: float) -> int:
        dropped = 0
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if entries[key][0] > now:
                break
            self._drop(key)
            dropped += 1
        return dropped

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._entries.pop(key)[2]


def _cost(key: Hashable, body: bytes) -> int:
    cost = len(body) + ENTRY_OVERHEAD
    for part in key if isinstance(key, tuple) else (key,):
        if isinstance(part, str | bytes):
            cost += len(part)
    return cost
