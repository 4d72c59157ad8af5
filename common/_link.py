"""Link: one connection to the broker, kept open by one named I/O thread (or hosted on a loop).

A broker connection is not thread-safe (pika's rule, kept by both transports): its loop thread
alone may touch it, and other threads hand it work with ``Loop.call_soon_threadsafe``. A
``Link`` makes that the only door: its thread owns one ``Loop`` for its whole life, opens each
connection on it, and closes it. Other threads call ``submit(fn)``: work is queued under a lock
and the loop is woken once per batch, so a burst of calls costs one wake-up; tasks submitted
while a batch runs join the next round of the same wake-up (up to ``TASK_ROUNDS`` rounds, then
the loop reads the socket and comes back). The writes of a round leave in one piece.

The Link does not know what its connection is for: its owner (a ``LinkOwner``: the requestor's
I/O side, a worker's consumer, an operator's session) is told, on the I/O thread, when a channel
is ready to set up, when the connection was lost or is back, when the broker blocks it, and when
the thread ends. The owner holds the Link; nothing inherits from it.

Connecting. ``start()`` tries the broker URLs in a shuffled order (clients spread over a
cluster's nodes), each attempt after the first at the next address (a dead node is left at
once), with capped exponential backoff and jitter, for up to ``connect_timeout``. A refusal (a
login, vhost or TLS certificate refused) cannot be fixed by retrying that address, but another
address may still work: start-up fails for it only once every address has refused. With
``persist`` (workers), what a retry can fix never fails ``start()``: at the deadline it returns
and the thread keeps trying. An open connection that drops is re-established the same way,
forever, until ``stop()``.

Channels. The connection's channel is replaced when it closes under us while the connection
stays (a publish over the broker's ``max_message_size``, a refused declaration): the owner is
told, sets up the new channel, and the other work of the connection goes on; replacements
back off if the broker keeps closing channels. ``reopen_channel()`` replaces it on purpose
(RabbitMQ 3.10 keeps nacking a quorum-queue publisher channel that first published while the
queue's leader was down; a new channel works). Each new channel bumps ``generation``: delivery
tags belong to one channel, so work of an older generation is void.

Hosted. ``start_hosted(loop)`` runs the Link on an event loop it does not own (an
``AsyncioLoop``: the caller's asyncio loop) instead of a thread of its own: the same connecting,
channels and recovery, driven by that loop. ``submit`` from the loop's thread then runs the work
at once (its writes are held and go out in one piece at the end of the loop's turn); from another
thread it goes through ``call_soon_threadsafe``. Nothing of a hosted Link blocks: ``start_hosted``
and ``stop`` return at once, and callbacks say when it is settled and when it has ended.

Closing is bounded: the broker gets ``CLOSE_GRACE`` seconds to answer our close (none while it
blocks the connection, as it then reads nothing from us), then the socket is dropped. Every
callback the loop runs for us is guarded: an exception is logged and the loop goes on.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from reqrep.common._iothread import mark_io_thread
from reqrep.common._transport import Address, Channel, Connection, Failure, Loop, Transport
from reqrep.common.addresses import host_of, redact_url, shuffled
from reqrep.common.config import Settings
from reqrep.common.errors import BrokerUnreachable, ClosedError, ConnectionLost, ReqrepError
from reqrep.common.refused import setup_refused

__all__ = ["CLOSE_GRACE", "TASK_ROUNDS", "Link", "LinkOwner", "State"]

log = logging.getLogger("reqrep.connection")

# Seconds the broker has to answer our connection.close before we drop the socket. It answers in
# about a millisecond; a broker that has stopped reading from us (a resource alarm) never does.
CLOSE_GRACE = 1.0
TASK_ROUNDS = 4  # rounds of newly submitted tasks one wake-up runs before the loop reads again
_REOPEN_PAUSE_MAX = 5.0  # seconds: the longest pause between channels the broker keeps closing


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    OPEN = "open"
    RECOVERING = "recovering"
    CLOSING = "closing"
    CLOSED = "closed"


ACCEPTS_WORK = (State.OPEN, State.RECOVERING)  # states in which submit() queues work


class LinkOwner(Protocol):
    """What a Link tells its owner. Every method runs on the I/O thread and must not block;
    the bodies here do nothing, so an owner defines only what it needs."""

    def on_thread_start(self) -> None:
        """The I/O thread has started; no connection exists yet."""
        return None

    def setup(self, channel: Channel) -> None:
        """A new channel (after a connection, or a replaced channel): declare what is needed
        and call ``link.ready()`` when done."""
        return None

    def on_channel_closed(self, failure: Failure) -> None:
        """The broker closed the channel while the connection stays; a new one follows
        (``setup``, then ``on_recovered``). Exclusive queues are still there."""
        return None

    def on_lost(self, error: ReqrepError) -> None:
        """An open connection dropped (and its exclusive queues with it); a reconnection
        follows unless the Link is stopping."""
        return None

    def on_recovered(self) -> None:
        """A new connection or channel is set up and ready again."""
        return None

    def on_blocked(self, reason: str) -> None:
        """The broker stopped reading what this connection publishes (a resource alarm)."""
        return None

    def on_unblocked(self) -> None:
        """The broker reads again after ``on_blocked``."""
        return None

    def after_tasks(self) -> None:
        """A round of submitted tasks has run; its writes are sent right after this."""
        return None

    def on_closed(self) -> None:
        """The thread is ending (closed, or crashed); runs last."""
        return None


class Link:
    """One connection to the broker, kept open, and the thread that owns it.

    Threads: ``start``, ``stop``, ``submit`` and the properties ``name``, ``state``,
    ``address``, ``reconnects``, ``up``, ``blocked`` and ``error`` from any thread. Everything else
    (``channel``, ``connection``, ``generation``, ``is_open``, ``call_later``, ``cancel``,
    ``guarded``, ``ready``, ``reopen_channel``, ``open_extra_channel``, ``batching``) on the
    I/O thread only.
    """

    def __init__(
        self,
        settings: Settings,
        owner: LinkOwner,
        *,
        name: str,
        transport: Transport,
        urls: Sequence[str] | None = None,
    ) -> None:
        self._settings = settings
        self._owner = owner
        self._name = name
        self._transport = transport
        # On the caller's thread: a ConfigError (a bad URL, an unreadable TLS file) is raised
        # here. Shuffled: clients given the same list spread out.
        self._urls = shuffled(settings.urls if urls is None else urls)
        self._addresses: list[Address] = [transport.address(settings, u, name) for u in self._urls]
        self._lock = threading.Lock()  # guards _state, the task queue and _wake_pending
        self._state = State.NEW
        self._error: ReqrepError | None = None
        self._settled = threading.Event()  # start() is answered: open, or failed for good
        self._ended = threading.Event()  # the Link has ended: _finish ran
        self._halting = False  # hosted: _end_hosted is on its way
        self._hosted = False  # on a loop the Link does not own (start_hosted): no thread
        self._on_settled: Callable[[], None] | None = None  # hosted: start is answered
        self._on_end: list[Callable[[], None]] = []  # hosted: run once the Link has ended
        self._held: Connection | None = None  # hosted: holds its writes until the turn ends
        self._thread: threading.Thread | None = None
        self._loop: Loop | None = None
        self._persist = False
        self._start_deadline = 0.0
        # -- connecting (I/O thread) --
        self._next_address = 0  # index of the address the next attempt goes to
        self._address = 0  # index of the address of the current (or last) attempt
        self._attempts = 0  # failed connection attempts since the last open
        self._refused: dict[int, ReqrepError] = {}  # addresses that refused us while starting
        self._retry_timer: object | None = None
        self._opened = False  # the connection was ready since the last loss
        self.connection: Connection | None = None
        # -- the channel (I/O thread) --
        self.channel: Channel | None = None  # while usable
        self.generation = 0  # counts channels opened; work of an older channel is void
        self._reopening = False  # the channel is being replaced
        self._reopen_delay = 0.0  # grows while the broker keeps closing our channels
        self._blocked: str | None = None  # why the broker blocks this connection, if it does
        self._up = False  # a connection is open (read from any thread: ``up``)
        # -- tasks --
        self._tasks: deque[Callable[[], None]] = deque()
        self._wake_pending = False
        self.batching = False  # submitted tasks are running; after_tasks follows them

    def __repr__(self) -> str:
        return f"<Link {self._name} {self._state.value} {self.address}>"

    # -- any thread -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> State:
        return self._state

    @property
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return redact_url(self._urls[self._address])

    @property
    def reconnects(self) -> int:
        """How many times a lost connection (or channel) was re-established."""
        return max(0, self.generation - 1)

    @property
    def up(self) -> bool:
        """Whether a connection is open now (its channel may be being replaced): what a
        fail-fast call asks before it is sent."""
        return self._up and self._state in ACCEPTS_WORK

    @property
    def blocked(self) -> str | None:
        """Why the broker blocks publishing on this connection (a resource alarm), or None."""
        return self._blocked

    @property
    def error(self) -> ReqrepError | None:
        """Why start() failed, or why the thread ended, if it did."""
        return self._error

    def start(self, *, persist: bool = False) -> None:
        """Connect and wait until ready, retrying for up to ``connect_timeout`` seconds.

        With ``persist``, only an error a retry cannot fix (every address refused the login,
        vhost or certificate; refused set-up) is raised: at the deadline the thread moves on
        to RECOVERING, retrying for as long as it runs, and ``start()`` returns.
        """
        with self._lock:
            if self._state is not State.NEW:
                raise ClosedError(f"{self._name}: start() may be called once")
            self._state = State.STARTING
        self._persist = persist
        self._start_deadline = time.monotonic() + self._settings.connect_timeout
        self._loop = self._transport.new_loop()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        # The I/O thread gives up by the deadline; the margin covers one attempt in progress.
        if not self._settled.wait(self._settings.connect_timeout * 2 + 5):
            self._error = BrokerUnreachable(f"{self._where()}: timed out while connecting")
        if self._state not in ACCEPTS_WORK:
            self.stop()
            raise self._error or BrokerUnreachable(f"{self._where()}: connection failed")

    def start_hosted(
        self, loop: Loop, settled: Callable[[], None], *, persist: bool = False
    ) -> None:
        """Start on ``loop``, which its caller owns and runs (an ``AsyncioLoop``), with no thread
        of the Link's own (loop thread). Returns at once; ``settled`` runs on the loop once the
        start is answered: ``state`` is then OPEN (or RECOVERING, with ``persist``, as for
        ``start``), or CLOSED with ``error`` saying why. The caller bounds the wait itself
        (``connect_timeout`` is kept as by ``start``)."""
        with self._lock:
            if self._state is not State.NEW:
                raise ClosedError(f"{self._name}: start() may be called once")
            self._state = State.STARTING
        self._hosted = True
        self._persist = persist
        self._on_settled = settled
        self._start_deadline = time.monotonic() + self._settings.connect_timeout
        self._loop = loop
        if persist:
            loop.call_later(self._settings.connect_timeout, self._on_persist_deadline)
        loop.call_later(0, self._connect)
        self._owner.on_thread_start()

    def start_on(self, loop: Loop, *, persist: bool = False) -> None:
        """``start``, hosted on ``loop`` (an ``AsyncioLoop`` another thread runs): from a
        thread that is not the loop's, which waits and raises as ``start`` does."""
        loop.call_soon_threadsafe(lambda: self.start_hosted(loop, lambda: None, persist=persist))
        if not self._settled.wait(self._settings.connect_timeout * 2 + 5):
            self._error = BrokerUnreachable(f"{self._where()}: timed out while connecting")
        if self._state not in ACCEPTS_WORK:
            self.stop()
            raise self._error or BrokerUnreachable(f"{self._where()}: connection failed")

    @property
    def ended(self) -> threading.Event:
        """Set once the Link has ended (closed, or its thread crashed); any thread."""
        return self._ended

    @property
    def hosted(self) -> bool:
        """Started with ``start_hosted``: on its caller's loop, without a thread."""
        return self._hosted

    def when_ended(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once a hosted Link has ended (at once if it has); loop thread."""
        if self._state is State.CLOSED:
            fn()
        else:
            self._on_end.append(fn)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection and join the thread (not when called on the I/O thread). A
        hosted Link is only told to close: ``when_ended`` says when it has."""
        with self._lock:
            if self._state is State.NEW:
                self._state = State.CLOSED
            elif self._state not in (State.CLOSING, State.CLOSED):
                self._state = State.CLOSING
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._close)
        thread = self._thread
        if thread is not None and threading.current_thread() is not thread:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: I/O thread did not stop within %.1fs", self._name, timeout)

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon (also while reconnecting); ClosedError once
        closed. Tasks run in the order submitted; one that raises is logged."""
        if self._hosted:
            self._submit_hosted(fn)
            return
        with self._lock:
            if self._state not in ACCEPTS_WORK:
                raise ClosedError(f"{self._name} is {self._state.value}")
            self._tasks.append(fn)
            if self._wake_pending:
                return
            self._wake_pending = True
        loop = self._loop
        assert loop is not None  # noqa: S101 - set before the state accepts work
        loop.call_soon_threadsafe(self._run_tasks)

    def _submit_hosted(self, fn: Callable[[], None]) -> None:
        if self._state not in ACCEPTS_WORK:
            raise ClosedError(f"{self._name} is {self._state.value}")
        loop = self._loop
        assert loop is not None  # noqa: S101 - set before the state accepts work
        if getattr(loop, "in_loop_thread", lambda: False)():
            self._run_hosted(fn)
        else:
            loop.call_soon_threadsafe(lambda: self._run_hosted(fn))

    def _run_hosted(self, fn: Callable[[], None]) -> None:
        """Run a submitted task now, on the hosting loop: the first of a turn holds the
        connection's writes, and the end of the turn (``_end_round``) sends them in one piece."""
        if self._state is State.CLOSED:
            return  # as a threaded Link drops the tasks queued at its end
        if not self._wake_pending:
            self._wake_pending = True
            self.batching = True
            connection = self._held = self.connection
            if connection is not None:
                connection.hold_writes()
            assert self._loop is not None  # noqa: S101 - hosted: the loop is set
            self._loop.call_later(0, self._end_round)
        try:
            fn()
        except Exception:
            log.exception("%s: task failed on the hosting loop", self._name)

    def _end_round(self) -> None:
        self._wake_pending = False
        try:
            self._owner.after_tasks()
        except Exception:
            log.exception("%s: after_tasks failed on the hosting loop", self._name)
        finally:
            self.batching = False
            connection, self._held = self._held, None
            if connection is not None:
                connection.flush_writes()

    # -- I/O thread ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """The channel is usable now."""
        return self._state is State.OPEN and self.channel is not None

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        """Run ``fn`` on the I/O thread after ``delay`` seconds; an exception in it is logged."""
        assert self._loop is not None  # noqa: S101 - the I/O thread has a loop
        return self._loop.call_later(delay, self.guarded(fn))

    def cancel(self, handle: object) -> None:
        assert self._loop is not None  # noqa: S101 - the I/O thread has a loop
        self._loop.cancel(handle)

    def guarded(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` wrapped so that an exception is logged instead of ending the I/O loop."""

        def run(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("%s: callback %s failed on the I/O thread", self._name, _name(fn))

        return run

    def ready(self) -> None:
        """The owner has set up the channel: the Link is open (again)."""
        with self._lock:
            previous = self._state
            if previous in (State.STARTING, State.RECOVERING):
                self._state = State.OPEN
        self._attempts = 0
        first = not self._opened and self.generation == 1
        self._opened = True
        if previous is State.STARTING:
            self._settle()
        elif previous is State.RECOVERING:
            log.warning("%s: %s", self._where(), "ready" if first else "ready again")
            self._owner.on_recovered()

    def reopen_channel(self) -> None:
        """Replace the channel on the same connection: ``setup`` runs on the new one and
        ``on_recovered`` follows. Nothing of the connection is lost (exclusive queues stay)."""
        channel = self.channel
        if self._reopening or channel is None or self._state is not State.OPEN:
            return
        self._reopening = True
        with self._lock:
            self._state = State.RECOVERING
        self.channel = None
        log.warning("%s: replacing the channel", self._where())
        if channel.is_open:
            channel.close()  # _on_channel_closed opens the next one
        else:
            self._open_channel()

    def open_extra_channel(self, on_open: Callable[[Channel], None]) -> None:
        """Open a second channel on the current connection, for work whose failures must not
        touch the main channel; raises ConnectionLost if there is no open connection."""
        connection = self.connection
        if connection is None or not connection.is_open:
            raise ConnectionLost(f"{self._where()}: no open connection")
        try:
            connection.open_channel(self.guarded(on_open))
        except Exception as exc:  # noqa: BLE001 - the transport says why it cannot
            raise ConnectionLost(f"{self._where()}: {exc}") from None

    # -- the thread ---------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self._name} ({self.address})"

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 - start() made it
        try:
            mark_io_thread()
            if self._persist:
                loop.call_later(self._settings.connect_timeout, self._on_persist_deadline)
            loop.call_later(0, self._connect)
            self._owner.on_thread_start()
            while True:
                try:
                    loop.run()
                    break
                except Exception as exc:
                    if not self._survive_connect_crash(exc):
                        raise
            if self.connection is not None:  # we gave up on closing it politely
                self.connection.abandon()
        except Exception as exc:
            log.exception("%s: I/O thread crashed", self._name)
            self._error = ConnectionLost(f"{self._where()}: I/O thread crashed: {exc!r}")
            if self._state is State.OPEN:
                self._owner.on_lost(self._error)
            if self.connection is not None:
                self.connection.abandon()
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._state = State.CLOSED
            dropped = len(self._tasks)
            self._tasks.clear()
        if dropped:
            log.debug("%s: %d queued tasks dropped at close", self._name, dropped)
        try:
            self._owner.on_closed()
        finally:
            self._ended.set()
            self._settle()
            if self._loop is not None:
                self._loop.close()
            ended, self._on_end = self._on_end, []
            for fn in ended:
                try:
                    fn()
                except Exception:
                    log.exception("%s: an end callback failed", self._name)

    def _settle(self) -> None:
        """start() is answered (open, or failed for good)."""
        self._settled.set()
        settled, self._on_settled = self._on_settled, None
        if settled is not None:
            settled()

    def _halt(self) -> None:
        """End the loop's work for this Link: a thread's loop stops (``_run`` then finishes);
        a hosted Link, whose loop goes on, finishes on its next turn."""
        loop = self._loop
        assert loop is not None  # noqa: S101 - the I/O thread has a loop
        if not self._hosted:
            loop.stop()
        elif not self._halting:
            self._halting = True
            loop.call_later(0, self._end_hosted)

    def _end_hosted(self) -> None:
        if self.connection is not None:  # we gave up on closing it politely
            self.connection.abandon()
        self._finish()

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
            connection = self.connection
            self.batching = True
            if connection is not None:
                connection.hold_writes()  # the round's frames go out in one piece, below
            try:
                for task in tasks:
                    try:
                        task()
                    except Exception:
                        log.exception("%s: task failed on the I/O thread", self._name)
                self._owner.after_tasks()
            finally:
                self.batching = False
                if connection is not None:
                    connection.flush_writes()  # now, not a turn of the loop later
        assert self._loop is not None  # noqa: S101 - the I/O thread has a loop
        self._loop.call_soon_threadsafe(self._run_tasks)  # _wake_pending stays set

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry_timer = None
        loop = self._loop
        assert loop is not None  # noqa: S101 - the I/O thread has a loop
        if self._state in (State.CLOSING, State.CLOSED):
            self._halt()
            return
        # Every attempt after the first goes to the next address: a dead node is left at once.
        self._address = self._next_address % len(self._addresses)
        self._next_address += 1
        self.connection = self._transport.connect(
            loop,
            self._addresses[self._address],
            on_open=self.guarded(self._on_connection_open),
            on_open_failed=self.guarded(self._on_open_failed),
            on_closed=self.guarded(self._on_connection_closed),
            on_blocked=self.guarded(self._on_blocked),
            on_unblocked=self.guarded(self._on_unblocked),
        )

    def _on_connection_open(self, connection: Connection) -> None:
        if connection is not self.connection:  # abandoned after a crash while connecting
            connection.close()
            return
        self._blocked = None
        self._refused.clear()
        self._up = True
        self._open_channel()

    def _on_open_failed(self, connection: Connection, failure: Failure) -> None:
        if connection is not self.connection:
            return  # abandoned after a crash while connecting: its retry is scheduled already
        self.connection = None
        text = f"{self._where()}: {failure.text}"
        if len(self._urls) > 1:
            text += f" (addresses: {', '.join(host_of(url) for url in self._urls)})"
        error = BrokerUnreachable(text, permanent=failure.refused)
        if failure.refused:
            self._refused[self._address] = error
        # A refusal is for good only once every address has refused: another node of the list
        # may still let us in (one refused URL must not stop the others).
        fatal = len(self._refused) == len(self._addresses)
        upcoming = self._next_address % len(self._addresses)
        self._retry_or_give_up(
            error, fatal=fatal, skip=failure.refused and upcoming not in self._refused
        )

    def _retry_or_give_up(self, error: ReqrepError, *, fatal: bool, skip: bool = False) -> None:
        """After a failed attempt: try again (the next address at once after a refusal, else
        after a backoff), or end the start-up."""
        loop = self._loop
        assert loop is not None  # noqa: S101 - the I/O thread has a loop
        if self._state is State.CLOSING:
            self._halt()
        elif self._state is State.STARTING:
            # Keep trying until the start deadline, the last pause cut short to meet it.
            left = self._start_deadline - time.monotonic() - 0.05
            delay = min(self._next_delay(skip=skip), left)
            if fatal:
                self._error = error
                self._halt()
            elif left <= 0 and self._persist:
                self._error = error
                self._on_persist_deadline()
                self._schedule_retry()
            elif left <= 0:
                # Time is up: a refusal says more than the last dead port would.
                self._error = next(iter(self._refused.values()), error)
                self._halt()
            else:
                log.info("%s; retrying in %.2fs", error, delay)
                self._retry_timer = loop.call_later(delay, self._connect)
        else:
            if self._attempts in (1, 10) or self._attempts % 50 == 0:
                log.warning("%s (attempt %d); still reconnecting", error, self._attempts)
            self._schedule_retry(skip=skip)

    def _next_delay(self, *, skip: bool = False) -> float:
        """Capped exponential backoff with jitter (half to full of the step); none with
        ``skip`` (an address refused us: the next one is tried at once)."""
        self._attempts += 1
        if skip:
            return 0.0
        step = min(self._settings.reconnect_max, 0.1 * float(2 ** min(self._attempts - 1, 16)))
        return step * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    def _schedule_retry(self, *, skip: bool = False) -> None:
        assert self._loop is not None  # noqa: S101 - the I/O thread has a loop
        self._retry_timer = self._loop.call_later(self._next_delay(skip=skip), self._connect)

    def _on_persist_deadline(self) -> None:
        """The start deadline of a persistent start passed: stop counting, keep trying."""
        if self._state is not State.STARTING:
            return
        with self._lock:
            self._state = State.RECOVERING
        reason = str(self._error) if self._error is not None else f"{self._where()}: set-up"
        self._error = None
        log.warning(
            "%s; not ready after %gs, still trying (%d addresses)",
            reason,
            self._settings.connect_timeout,
            len(self._urls),
        )
        self._settle()

    def _survive_connect_crash(self, exc: Exception) -> bool:
        """A transport can raise out of its loop while a connection attempt meets a peer that
        just closed (pika: ``getpeername()`` failed). Nothing was open yet: count it as a failed
        attempt and run the loop again, instead of ending the thread. Say whether that was done."""
        if self._opened or self._state not in (State.STARTING, State.RECOVERING):
            return False
        log.warning("%s: connection attempt crashed (%r); trying again", self._where(), exc)
        if self.connection is not None:
            self.connection.abandon()
        self._up = False
        self.connection = None
        self.channel = None
        self._retry_or_give_up(BrokerUnreachable(f"{self._where()}: {exc!r}"), fatal=False)
        return True

    # -- the open connection ------------------------------------------------------------------

    def _open_channel(self) -> None:
        connection = self.connection
        if connection is None or not connection.is_open:
            return  # the connection's own close follows
        try:
            connection.open_channel(self.guarded(self._on_channel_open))
        except Exception as exc:  # noqa: BLE001 - it is closing: its callback says why
            log.debug("%s: no channel: %s", self._where(), exc)

    def _on_channel_open(self, channel: Channel) -> None:
        self._reopening = False
        self.channel = channel
        self.generation += 1
        channel.on_close(self.guarded(self._on_channel_closed))
        self._owner.setup(channel)

    def _on_channel_closed(self, channel: Channel, failure: Failure) -> None:
        if self.channel is not None and channel is not self.channel:
            return  # a channel already replaced by a new one
        self.channel = None
        if self._state in (State.CLOSING, State.CLOSED) or failure.with_connection:
            return  # we are closing, or the whole connection is going: its callback says why
        if self._reopening:
            self._open_channel()
            return
        if self._state is State.STARTING:
            # The broker refused the set-up (e.g. a queue exists with other arguments), which
            # retrying cannot fix.
            self._error = setup_refused(self._where(), failure)
            if self.connection is not None:
                self.connection.close()
            return
        # The connection stays: replace the channel, and leave the rest of its work alone.
        log.warning(
            "%s: channel closed by the broker: %s; opening a new one", self._where(), failure
        )
        with self._lock:
            if self._state is State.OPEN:
                self._state = State.RECOVERING
        self._owner.on_channel_closed(failure)
        self._reopening = True
        delay, self._reopen_delay = (
            self._reopen_delay,
            min(_REOPEN_PAUSE_MAX, max(0.1, self._reopen_delay * 2)),
        )
        self.call_later(delay, self._open_channel)

    def _on_connection_closed(self, connection: Connection, failure: Failure) -> None:
        if connection is not self.connection and self.connection is not None:
            return  # abandoned after a crash while connecting
        if self._state is State.CLOSED:
            return  # a hosted Link that ended: its loop still told us of the socket's end
        self._up = False
        self.connection = None
        self.channel = None
        self._reopening = False
        self._reopen_delay = 0.0
        state = self._state
        if state is State.CLOSING:
            assert self._loop is not None  # noqa: S101 - the I/O thread has a loop
            self._halt()
            return
        error = ConnectionLost(f"{self._where()}: connection lost: {failure.text}")
        if state is State.OPEN or self._opened:  # (also: lost while replacing the channel)
            with self._lock:
                self._state = State.RECOVERING
            log.warning("%s; reconnecting", error)
            self._opened = False
            self._owner.on_lost(error)
            self._schedule_retry()
        else:  # closed during set-up
            refused = state is State.STARTING and self._error is not None
            self._retry_or_give_up(self._error or error, fatal=refused)

    def _on_blocked(self, _connection: Connection, reason: str) -> None:
        self._blocked = reason
        log.warning("%s: the broker blocks publishing: %s", self._where(), reason)
        self._owner.on_blocked(reason)

    def _on_unblocked(self, _connection: Connection) -> None:
        if self._blocked is None:
            return
        self._blocked = None
        log.warning("%s: the broker reads again (unblocked)", self._where())
        self._owner.on_unblocked()

    def _close(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 - the I/O thread has a loop
        if self._retry_timer is not None:
            loop.cancel(self._retry_timer)
            self._retry_timer = None
        connection = self.connection
        if connection is None:
            self._halt()
        elif self._blocked is not None:
            log.info("%s: blocked by the broker; dropping the socket", self._name)
            self._halt()  # it reads nothing from us, not even our close
        else:
            with contextlib.suppress(Exception):
                connection.close()
            self.call_later(CLOSE_GRACE, self._give_up_closing)

    def _give_up_closing(self) -> None:
        if self.connection is not None:
            log.warning("%s: no answer to close within %gs", self._where(), CLOSE_GRACE)
            assert self._loop is not None  # noqa: S101 - the I/O thread has a loop
            self._halt()  # _run drops the socket


def _name(fn: Callable[..., None]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
