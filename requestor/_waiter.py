"""CallWaiter: where a blocking ``call()`` waits for its outcome, without a Future.

``call()`` never shows its caller a Future, so it need not pay for one: a
``concurrent.futures.Future`` brings a ``Condition`` over an ``RLock``, a fresh waiter lock per
``result()``, and a ``notify_all`` under the condition, which the woken caller must then take
again while the I/O thread may still hold it. A CallWaiter is one plain lock, taken at birth
and let go by whoever completes the call: one futex wake, nothing to contend for.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["CallWaiter"]


class CallWaiter:
    """The outcome of one blocking call, handed from the thread that completes it.

    Threads: ``deliver`` (a ``Deliver`` hook, called at most once by the ``ReplyHandler``) on the
    completing thread: the I/O thread, or a caller's on ``close()`` or on its own timeout;
    ``wait`` and ``outcome`` on the calling thread only.
    """

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()  # held until the outcome is in
        self._result: Any = None
        self._error: BaseException | None = None

    def deliver(self, result: Any, error: BaseException | None) -> None:
        # The fields are written before the release, and read after the waiter's acquire: the
        # lock orders them.
        self._result = result
        self._error = error
        self._done.release()

    def wait(self, timeout: float) -> bool:
        """Block until the outcome is in, for at most ``timeout`` seconds; False if it is not."""
        return self._done.acquire(True, timeout)

    def outcome(self) -> Any:
        """The call's result, or its error raised (only after ``wait`` returned True)."""
        error = self._error
        if error is not None:
            self._error = None  # no cycle through the traceback this raise adds
            raise error
        return self._result
