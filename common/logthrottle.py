"""One log line per kind of event and interval, with a count, instead of one line per event.

A flood of hostile or unlucky traffic (10,000 replies returned, a forged reply a millisecond)
must not turn into a flood of log lines: that costs the I/O thread its time and buries what
matters. ``LogThrottle`` logs the first event of a kind at once; later ones within ``interval``
seconds are only counted, and the count rides on the next line of that kind
("... [and 9,999 more like this in 10s]"). Counters in the components' stats keep the exact
numbers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most one line per ``interval`` seconds per message template, to one logger.

    Threads: any; a lock guards the counts.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # template -> when its last line was written
        self._suppressed: dict[str, int] = {}  # template -> events since then, not written

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a line of this ``msg`` was written within the interval;
        True if written."""
        if not self._log.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            last = self._last.get(msg)
            if last is not None and now - last < self._interval:
                self._suppressed[msg] = self._suppressed.get(msg, 0) + 1
                return False
            self._last[msg] = now
            skipped = self._suppressed.pop(msg, 0)
            if len(self._last) > 1000:  # templates are few; never let them grow without bound
                self._last = {msg: now}
        if skipped:
            since = now - last if last is not None else 0.0
            self._log.log(level, msg + " [and %d more like this in %.0fs]", *args, skipped, since)
        else:
            self._log.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, msg, *args)
