"""Work handed to an I/O thread: queued under a lock, with one wake-up per batch.

The half of ``ConnectionThread`` (``common/connection.py``) through which other threads reach
its I/O thread. ``submit(fn)`` appends to a queue and wakes pika's loop with
``add_callback_threadsafe`` only if no wake-up is pending, so a burst of calls costs one wake-up,
not one each. Tasks submitted while a batch runs join the next round of the same wake-up (up to
``TASK_ROUNDS`` rounds, then the loop reads the socket and comes back). After each round the
subclass's ``_after_tasks`` hook runs (a worker sends the round's acks there) and the round's
frames are sent at once (``flush_pika_writes``), not a turn of the loop later.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from reqrep.common._attempts import State
from reqrep.common._pika_writes import flush_pika_writes, hold_pika_writes
from reqrep.common.errors import ClosedError

__all__ = ["ACCEPTS_WORK", "TaskQueue"]

log = logging.getLogger("reqrep.connection")

ACCEPTS_WORK = (State.OPEN, State.RECOVERING)  # states in which submit() queues work
TASK_ROUNDS = 4  # rounds of newly submitted tasks one wake-up runs before the loop reads again


class TaskQueue:
    """The queue of work for an I/O thread (a mixin of ``ConnectionThread``).

    Threads: ``submit`` from any thread; ``_run_tasks`` and ``_after_tasks`` on the I/O thread.
    The host class provides ``_lock`` (guarding ``_state`` and the queue), ``_state``,
    ``_ioloop``, ``_connection`` and ``_name``.
    """

    _lock: threading.Lock
    _state: State
    _ioloop: Any
    _connection: Any
    _name: str

    def _init_tasks(self) -> None:
        self._tasks: deque[Callable[[], None]] = deque()
        self._wake_pending = False
        self._batching = False  # submitted tasks run now; _after_tasks follows them (I/O thread)

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon (also while reconnecting); raise once closed."""
        with self._lock:
            if self._state not in ACCEPTS_WORK:
                raise ClosedError(f"{self._name} is {self._state.value}")
            self._tasks.append(fn)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._ioloop.add_callback_threadsafe(self._run_tasks)

    def _after_tasks(self) -> None:
        """Hook: a batch of submitted tasks has run; its frames are sent right after this."""

    def _drop_tasks(self) -> int:
        """Forget the tasks still queued (the thread is ending, under ``_lock``); how many."""
        dropped = len(self._tasks)
        self._tasks.clear()
        return dropped

    def _run_tasks(self) -> None:
        # Tasks submitted while a batch runs join the next round here without a wake-up of
        # their own (submit sees _wake_pending still set). After TASK_ROUNDS rounds the loop
        # gets its turn to read the socket, and a wake-up brings it back for the rest.
        for _round in range(TASK_ROUNDS):
            with self._lock:
                tasks, self._tasks = self._tasks, deque()
                if not tasks:
                    self._wake_pending = False
                    return
            self._batching = True
            hold_pika_writes(self._connection)  # the round's frames go out in one piece, below
            try:
                for task in tasks:
                    try:
                        task()
                    except Exception:
                        log.exception("%s: task failed on the I/O thread", self._name)
                self._after_tasks()
            finally:
                self._batching = False
                flush_pika_writes(self._connection)  # now, not a turn of the loop later
        self._ioloop.add_callback_threadsafe(self._run_tasks)  # _wake_pending stays set
