"""Recent replies by idempotency key, so a retried or redelivered request is not run twice.

The window is per worker process: bounded in entries and in age. A duplicate that reaches another
process, or arrives after its entry was evicted, runs again. A store shared by all workers
(Redis, a database table with a unique key) would close that gap at the cost of a round trip per
request.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["ReplyCache"]


class ReplyCache:
    """Reply bodies by idempotency key, at most ``max_entries``, each for ``ttl`` seconds.

    Threads: the worker's I/O thread only.
    """

    def __init__(self, max_entries: int = 10_000, ttl: float = 300.0) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, body: bytes) -> None:
        if self._max <= 0:
            return
        self._entries[key] = (time.monotonic() + self._ttl, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
