"""One pika connection at a time, owned by one named thread, reconnecting on its own.

pika's connections are not thread-safe: the only call another thread may make is
``ioloop.add_callback_threadsafe``. ``ConnectionThread`` makes that the only door. Its thread owns
one pika ``IOLoop`` for its whole life, creates each ``SelectConnection`` on it (the callback-loop
adapter: 2.4x ``BlockingConnection``'s throughput under load on our machines), and closes it.
Other threads hand it work with ``submit(fn)``: work is queued and the loop woken once per batch
(the ``TaskQueue`` mixin, ``common/_tasks.py``).

When an open connection drops, the thread reconnects by itself and the subclass declares its
topology again. How attempts go (backoff, several broker addresses, the ``connect_timeout``
deadline of ``start()``, ``persist``) is the ``Attempts`` mixin's, in ``common/_attempts.py``.

``_reopen_channel()`` replaces the channel on the same connection (RabbitMQ 3.10 keeps nacking a
quorum-queue publisher channel that first published while the queue's leader was down; a new
channel works): ``_setup`` runs again on the new channel, as after a reconnection.

Subclass hooks, all on the I/O thread: ``_on_thread_start()`` first, before any connection;
``_setup(channel)`` declares topology and calls ``_ready()``; ``_on_lost(error)`` runs when an open
connection drops; ``_on_recovered()`` after a reconnection is ready; ``_on_blocked(reason)`` /
``_on_unblocked()`` when the broker blocks publishing (a resource alarm); ``_on_closed()`` once,
last.

Every callback the loop runs for us is guarded: timers (``call_later``) and the callbacks
subclasses wrap with ``guarded`` log an exception and carry on, so a bug in one of them can not
end the thread. Closing is bounded: the broker gets ``CLOSE_GRACE`` seconds to answer our close
(none when it blocks the connection, as it then reads nothing from us), then the socket is
dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop

from reqrep.common._attempts import Attempts, State
from reqrep.common._iothread import mark_io_thread
from reqrep.common._pika_decode import tolerate_undecodable_properties
from reqrep.common._pika_deliver import install_fast_deliveries
from reqrep.common._pika_params import describe, parameters
from reqrep.common._pika_reads import install_single_reads
from reqrep.common._pika_writes import coalesce_pika_writes
from reqrep.common._tasks import ACCEPTS_WORK, TaskQueue
from reqrep.common.addresses import shuffled
from reqrep.common.config import Settings
from reqrep.common.errors import (
    BrokerUnreachable,
    ClosedError,
    ConnectionLost,
    ReqrepError,
)

__all__ = ["ConnectionThread", "State"]

log = logging.getLogger("reqrep.connection")

# Seconds the broker has to answer our connection.close before we drop the socket. It answers in
# about a millisecond; a broker that has stopped reading from us (a resource alarm) never does.
CLOSE_GRACE = 1.0


class ConnectionThread(Attempts, TaskQueue):
    """Owns the connection to the broker and the thread that runs it.

    Threads: ``start``, ``stop``, ``submit`` and the properties may be used from any thread.
    Methods starting with ``_`` run on the I/O thread, except ``_run`` (the thread's body).
    """

    def __init__(self, settings: Settings, *, name: str) -> None:
        coalesce_pika_writes()
        tolerate_undecodable_properties()  # a message pika cannot decode must not drop us
        install_fast_deliveries()  # a whole delivery straight to its consumer
        install_single_reads()  # one recv() per readable event
        self._settings = settings
        self._name = name
        # On the caller's thread: a ConfigError is raised here. Shuffled: clients spread out.
        self._urls = shuffled(settings.urls)
        self._params = [parameters(settings, url, name) for url in self._urls]
        self._next_address = 0  # index of the address the next attempt goes to
        self._address = 0  # index of the address of the current (or last) attempt
        self._persist = False
        self._reopening = False  # the channel is being replaced on purpose
        self._opened = False  # the connection was ready since the last _on_lost
        self._lock = threading.Lock()
        self._init_tasks()
        self._state = State.NEW
        self._error: ReqrepError | None = None
        self._settled = threading.Event()  # start() is answered: open, or failed for good
        self._thread: threading.Thread | None = None
        self._ioloop: Any = None
        self._connection: Any = None  # the current SelectConnection (I/O thread only)
        self.channel: Any = None  # its channel while usable (I/O thread only)
        self.generation = 0  # counts channels opened; deliveries of an older one are void
        self._attempts = 0  # failed connection attempts since the last open
        self._retry_timer: Any = None
        self._start_deadline = 0.0
        self._blocked: str | None = None  # why the broker blocks this connection, if it does

    # -- any thread -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> State:
        return self._state

    @property
    def reconnects(self) -> int:
        """How many times a lost connection was re-established."""
        return max(0, self.generation - 1)

    @property
    def blocked(self) -> str | None:
        """Why the broker blocks publishing on this connection (a resource alarm), or None."""
        return self._blocked

    @property
    def error(self) -> ReqrepError | None:
        """Why start() failed, if it did."""
        return self._error

    def start(self, *, persist: bool = False) -> None:
        """Connect and wait until ready, retrying for up to ``connect_timeout`` seconds.

        With ``persist``, only an error a retry cannot fix (a refused login or vhost, refused
        set-up) is raised: at the deadline the thread moves on to RECOVERING, retrying across
        all addresses for as long as it runs, and ``start()`` returns. Waiting for set-up (a
        quorum queue with no leader blocks ``basic.consume``) is then not "connecting".
        """
        with self._lock:
            if self._state is not State.NEW:
                raise ClosedError(f"{self._name}: start() may be called once")
            self._state = State.STARTING
        self._persist = persist
        self._start_deadline = time.monotonic() + self._settings.connect_timeout
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        # The I/O thread gives up by the deadline; the margin covers one attempt in progress.
        if not self._settled.wait(self._settings.connect_timeout * 2 + 5):
            self._error = BrokerUnreachable(f"{self._where()}: timed out while connecting")
        if self._state not in ACCEPTS_WORK:
            self.stop()
            raise self._error or BrokerUnreachable(f"{self._where()}: connection failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection and join the thread (not when called on the I/O thread)."""
        with self._lock:
            if self._state is State.NEW:
                self._state = State.CLOSED
            elif self._state not in (State.CLOSING, State.CLOSED):
                self._state = State.CLOSING
                if self._ioloop is not None:
                    self._ioloop.add_callback_threadsafe(self._close)
        thread = self._thread
        if thread is not None and threading.current_thread() is not thread:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: I/O thread did not stop within %.1fs", self._name, timeout)

    # -- subclass hooks (I/O thread) ----------------------------------------------------------

    def _on_thread_start(self) -> None:
        """The I/O thread has started; no connection exists yet."""

    def _on_blocked(self, reason: str) -> None:
        """The broker stopped reading what this connection publishes (memory or disk alarm)."""

    def _on_unblocked(self) -> None:
        """The broker reads again after ``_on_blocked``."""

    def _setup(self, channel: Any) -> None:
        """Declare topology and start consuming; call ``self._ready()`` when done."""
        self._ready()

    def _on_lost(self, error: ReqrepError) -> None:
        """An open connection dropped; a reconnection follows unless we are stopping."""

    def _on_recovered(self) -> None:
        """A reconnection is ready (``_setup`` has run again)."""

    def _on_closed(self) -> None:
        """The thread is ending; runs last."""

    # -- I/O thread ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """The channel is usable now (I/O thread)."""
        return self._state is State.OPEN and self.channel is not None

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        """Run ``fn`` on the I/O thread after ``delay`` seconds; an exception in it is logged."""
        return self._ioloop.call_later(delay, self.guarded(fn))

    def guarded(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` wrapped so that an exception is logged instead of ending the I/O loop."""

        def run(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("%s: callback %s failed on the I/O thread", self._name, _name(fn))

        return run

    def _ready(self) -> None:
        with self._lock:
            previous = self._state
            if previous in (State.STARTING, State.RECOVERING):
                self._state = State.OPEN
        self._attempts = 0
        first = not self._opened and self.generation == 1
        self._opened = True
        if previous is State.STARTING:
            self._settled.set()
        elif previous is State.RECOVERING:
            log.warning("%s: %s", self._where(), "ready" if first else "ready again")
            self._on_recovered()

    def _reopen_channel(self) -> None:
        """Replace the channel on the same connection; ``_setup`` runs on the new one and
        ``_on_recovered`` follows. Unlike a reconnection, nothing of the connection is lost
        (exclusive queues stay)."""
        channel, connection = self.channel, self._connection
        if self._reopening or channel is None or self._state is not State.OPEN:
            return
        self._reopening = True
        with self._lock:
            self._state = State.RECOVERING
        self.channel = None
        log.warning("%s: replacing the channel", self._where())
        if channel.is_open:
            channel.close()
        elif connection is not None and connection.is_open:
            connection.channel(on_open_callback=self._on_channel_open)

    def _run(self) -> None:
        try:
            mark_io_thread()
            self._ioloop = IOLoop()
            if self._persist:
                self._ioloop.call_later(self._settings.connect_timeout, self._on_persist_deadline)
            self._ioloop.call_later(0, self._connect)
            self._on_thread_start()
            while True:
                try:
                    self._ioloop.start()
                    break
                except Exception as exc:
                    if not self._survive_connect_crash(exc):
                        raise
            if self._connection is not None:  # we gave up on closing it politely
                self._abandon_socket()
        except Exception as exc:
            log.exception("%s: I/O thread crashed", self._name)
            self._error = ConnectionLost(f"{self._where()}: I/O thread crashed: {exc!r}")
            if self._state is State.OPEN:
                self._on_lost(self._error)
            self._abandon_socket()
        finally:
            self._finish()

    def _on_connection_open(self, connection: Any) -> None:
        if connection is not self._connection:  # abandoned after a crash while connecting
            connection.close()
            return
        self._blocked = None
        connection.add_on_connection_blocked_callback(self.guarded(self._on_blocked_frame))
        connection.add_on_connection_unblocked_callback(self.guarded(self._on_unblocked_frame))
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_blocked_frame(self, _connection: Any, frame: Any) -> None:
        self._blocked = str(getattr(frame.method, "reason", "") or "resource alarm")
        log.warning("%s: the broker blocks publishing: %s", self._where(), self._blocked)
        self._on_blocked(self._blocked)

    def _on_unblocked_frame(self, _connection: Any, _frame: Any) -> None:
        if self._blocked is None:
            return
        self._blocked = None
        log.warning("%s: the broker reads again (unblocked)", self._where())
        self._on_unblocked()

    def _on_channel_open(self, channel: Any) -> None:
        self._reopening = False
        self.channel = channel
        self.generation += 1
        channel.add_on_close_callback(self._on_channel_closed)
        self._setup(channel)

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if self.channel is not None and channel is not self.channel:
            return  # a channel already replaced by a new one
        self.channel = None
        if self._state is State.CLOSING or isinstance(reason, pika.exceptions.AMQPConnectionError):
            return  # we are closing, or the whole connection is going: its callback says why
        connection = self._connection
        if self._reopening and connection is not None and connection.is_open:
            connection.channel(on_open_callback=self._on_channel_open)
            return
        # Closed while setting up: the broker refused the set-up (e.g. a queue exists with other
        # arguments), which retrying cannot fix.
        starting = self._state is State.STARTING
        error = ConnectionLost(
            f"{self._where()}: channel closed: {describe(reason)}", permanent=starting
        )
        if starting:
            self._error = error
        else:
            log.warning("%s", error)
        if connection is not None and not (connection.is_closing or connection.is_closed):
            connection.close(reply_text="channel closed")

    def _on_connection_closed(self, connection: Any, reason: BaseException) -> None:
        if connection is not self._connection and self._connection is not None:
            return  # abandoned after a crash while connecting
        self._connection = None
        self.channel = None
        self._reopening = False
        state = self._state
        if state is State.CLOSING:
            self._ioloop.stop()
            return
        error = ConnectionLost(f"{self._where()}: connection lost: {describe(reason)}")
        if state is State.OPEN or self._opened:  # (also: lost while replacing the channel)
            with self._lock:
                self._state = State.RECOVERING
            log.warning("%s; reconnecting", error)
            self._opened = False
            self._on_lost(error)
            self._schedule_retry()
        else:  # closed during set-up
            setup_refused = state is State.STARTING and self._error is not None
            self._retry_or_give_up(self._error or error, fatal=setup_refused)

    def _close(self) -> None:
        if self._retry_timer is not None:
            self._ioloop.remove_timeout(self._retry_timer)
            self._retry_timer = None
        connection = self._connection
        if connection is None or connection.is_closed:
            self._ioloop.stop()
        elif self._blocked is not None:
            log.info("%s: blocked by the broker; dropping the socket", self._name)
            self._ioloop.stop()  # it reads nothing from us, not even our close
        elif not connection.is_closing:
            connection.close()
            self.call_later(CLOSE_GRACE, self._give_up_closing)

    def _give_up_closing(self) -> None:
        if self._connection is not None:
            log.warning("%s: no answer to close within %gs", self._where(), CLOSE_GRACE)
            self._ioloop.stop()  # _run drops the socket

    def _finish(self) -> None:
        with self._lock:
            self._state = State.CLOSED
            dropped = self._drop_tasks()
        if dropped:
            log.debug("%s: %d queued tasks dropped at close", self._name, dropped)
        try:
            self._on_closed()
        finally:
            self._settled.set()
            if self._ioloop is not None:
                self._ioloop.close()


def _name(fn: Callable[..., None]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
