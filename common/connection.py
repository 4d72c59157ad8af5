"""One pika connection at a time, owned by one named thread, reconnecting on its own.

pika's connections are not thread-safe: the only call another thread may make is
``ioloop.add_callback_threadsafe``. ``ConnectionThread`` makes that the only door. Its thread owns
one pika ``IOLoop`` for its whole life, creates each ``SelectConnection`` on it (the callback-loop
adapter: 2.4x ``BlockingConnection``'s throughput under load on our machines), and closes it.
Other threads hand it work with ``submit(fn)``: work is queued and the loop woken once per batch.

When an open connection drops, the thread reconnects by itself with capped exponential backoff
and jitter, and the subclass declares its topology again. ``start()`` retries a broker that is
down for at most ``connect_timeout`` seconds, then raises BrokerUnreachable; a refused login or
vhost fails at once (retrying cannot fix it). With ``persist=True`` (workers) ``start()`` does not
give up on what a retry can fix: at the deadline it returns and the thread keeps trying.

Several broker URLs (a cluster): attempts go to them in a shuffled order, and every attempt after
the first moves to the next address, so a reconnection after a node died goes to another node at
once. Errors and logs name the address tried, with its password hidden.

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

import contextlib
import enum
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

from reqrep.common import tls
from reqrep.common._iothread import mark_io_thread
from reqrep.common._pika_decode import tolerate_undecodable_properties
from reqrep.common._pika_writes import coalesce_pika_writes, flush_pika_writes
from reqrep.common.addresses import host_of, redact_url, shuffled
from reqrep.common.config import Settings
from reqrep.common.errors import (
    BrokerUnreachable,
    ClosedError,
    ConfigError,
    ConnectionLost,
    ReqrepError,
)

__all__ = ["ConnectionThread", "State"]

log = logging.getLogger("reqrep.connection")

# Seconds the broker has to answer our connection.close before we drop the socket. It answers in
# about a millisecond; a broker that has stopped reading from us (a resource alarm) never does.
CLOSE_GRACE = 1.0


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    OPEN = "open"
    RECOVERING = "recovering"
    CLOSING = "closing"
    CLOSED = "closed"


_ACCEPTS_WORK = (State.OPEN, State.RECOVERING)
_TASK_ROUNDS = 4  # rounds of newly submitted tasks one wake-up runs before the loop reads again


class ConnectionThread:
    """Owns the connection to the broker and the thread that runs it.

    Threads: ``start``, ``stop``, ``submit`` and the properties may be used from any thread.
    Methods starting with ``_`` run on the I/O thread, except ``_run`` (the thread's body).
    """

    def __init__(self, settings: Settings, *, name: str) -> None:
        coalesce_pika_writes()
        tolerate_undecodable_properties()  # a message pika cannot decode must not drop us
        self._settings = settings
        self._name = name
        # On the caller's thread: a ConfigError is raised here. Shuffled: clients spread out.
        self._urls = shuffled(settings.urls)
        self._params = [_parameters(settings, url, name) for url in self._urls]
        self._next_address = 0  # index of the address the next attempt goes to
        self._address = 0  # index of the address of the current (or last) attempt
        self._persist = False
        self._reopening = False  # the channel is being replaced on purpose
        self._opened = False  # the connection was ready since the last _on_lost
        self._lock = threading.Lock()
        self._tasks: deque[Callable[[], None]] = deque()
        self._wake_pending = False
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
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return redact_url(self._urls[self._address])

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
        if self._state not in _ACCEPTS_WORK:
            self.stop()
            raise self._error or BrokerUnreachable(f"{self._where()}: connection failed")

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon (also while reconnecting); raise once closed."""
        with self._lock:
            if self._state not in _ACCEPTS_WORK:
                raise ClosedError(f"{self._name} is {self._state.value}")
            self._tasks.append(fn)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._ioloop.add_callback_threadsafe(self._run_tasks)

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

    def _after_tasks(self) -> None:
        """A batch of submitted tasks has run; its frames are sent right after this."""

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
        self._settled.set()

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

    def _survive_connect_crash(self, exc: Exception) -> bool:
        """pika can raise out of its loop while a connection attempt meets a peer that just
        closed (``getpeername()`` failed). Nothing was open yet: count it as a failed attempt
        and run the loop again, instead of ending the thread. Say whether that was done."""
        if self._opened or self._state not in (State.STARTING, State.RECOVERING):
            return False
        log.warning("%s: connection attempt crashed (%r); trying again", self._where(), exc)
        self._abandon_socket()
        self._connection = None
        self.channel = None
        self._retry_or_give_up(
            BrokerUnreachable(f"{self._where()}: {_describe(exc, self._settings)}"), fatal=False
        )
        return True

    def _run_tasks(self) -> None:
        # Tasks submitted while a batch runs join the next round here without a wake-up of
        # their own (submit sees _wake_pending still set). After _TASK_ROUNDS rounds the loop
        # gets its turn to read the socket, and a wake-up brings it back for the rest.
        for _round in range(_TASK_ROUNDS):
            with self._lock:
                tasks, self._tasks = self._tasks, deque()
                if not tasks:
                    self._wake_pending = False
                    return
            for task in tasks:
                try:
                    task()
                except Exception:
                    log.exception("%s: task failed on the I/O thread", self._name)
            self._after_tasks()
            flush_pika_writes(self._connection)  # the batch's frames go out now, not a turn later
        self._ioloop.add_callback_threadsafe(self._run_tasks)  # _wake_pending stays set

    def _abandon_socket(self) -> None:
        """After a crash, close the socket ourselves: the loop that would have is gone."""
        transport = getattr(self._connection, "_transport", None)  # pika internals, if present
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _connect(self) -> None:
        self._retry_timer = None
        if self._state in (State.CLOSING, State.CLOSED):
            self._ioloop.stop()
            return
        # Every attempt after the first goes to the next address: a dead node is left at once.
        self._address = self._next_address % len(self._params)
        self._next_address += 1
        self._connection = pika.SelectConnection(
            self._params[self._address],
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

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

    def _on_open_error(self, connection: Any, exc: BaseException) -> None:
        if connection is not self._connection:
            return  # abandoned after a crash while connecting: its retry is scheduled already
        self._connection = None
        cause = _root_cause(exc)
        fatal = tls.is_tls_error(cause) or isinstance(
            cause,
            pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError,
        )
        text = f"{self._where()}: {_describe(exc, self._settings)}"
        if len(self._urls) > 1:
            text += f" (addresses: {', '.join(host_of(url) for url in self._urls)})"
        error = BrokerUnreachable(text, permanent=fatal)
        self._retry_or_give_up(error, fatal=fatal)

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
            f"{self._where()}: channel closed: {_describe(reason)}", permanent=starting
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
        error = ConnectionLost(f"{self._where()}: connection lost: {_describe(reason)}")
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

    def _retry_or_give_up(self, error: ReqrepError, *, fatal: bool) -> None:
        if self._state is State.CLOSING:
            self._ioloop.stop()
        elif self._state is State.STARTING:
            # Keep trying until the start deadline, the last pause cut short to meet it.
            left = self._start_deadline - time.monotonic()
            delay = min(self._next_delay(), left - 0.05)
            if delay <= 0 and self._persist and not fatal:
                self._error = error
                self._on_persist_deadline()
                self._schedule_retry()
            elif fatal or delay <= 0:
                self._error = error
                self._ioloop.stop()
            else:
                log.info("%s; retrying in %.2fs", error, delay)
                self._retry_timer = self._ioloop.call_later(delay, self._connect)
        else:
            if self._attempts in (1, 10) or self._attempts % 50 == 0:
                log.warning("%s (attempt %d); still reconnecting", error, self._attempts)
            self._schedule_retry()

    def _next_delay(self) -> float:
        """Capped exponential backoff with jitter (half to full of the step)."""
        self._attempts += 1
        step = min(self._settings.reconnect_max, 0.1 * float(2 ** min(self._attempts - 1, 16)))
        return step * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    def _schedule_retry(self) -> None:
        self._retry_timer = self._ioloop.call_later(self._next_delay(), self._connect)

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
            dropped = len(self._tasks)
            self._tasks.clear()
        if dropped:
            log.debug("%s: %d queued tasks dropped at close", self._name, dropped)
        try:
            self._on_closed()
        finally:
            self._settled.set()
            if self._ioloop is not None:
                self._ioloop.close()

    def _where(self) -> str:
        return f"{self._name} ({self.address})"


def _parameters(settings: Settings, url: str, name: str) -> Any:
    """pika's parameters for one URL. Overridden whatever the URL says: ``connection_attempts``
    and ``retry_delay`` (reqrep retries itself, across all addresses, with backoff) and
    ``client_properties``; ``heartbeat``, ``socket_timeout`` and ``stack_timeout`` only where
    the URL does not set them (REQREP_HEARTBEAT, and connect_timeout)."""
    try:
        params = pika.URLParameters(url)
    except Exception as exc:  # noqa: BLE001 - pika raises assorted types for a bad URL
        # pika's text may quote the ssl_options argument, which can hold a key password.
        why = type(exc).__name__ if "ssl_options" in url else str(exc)
        raise ConfigError(f"invalid AMQP URL {redact_url(url)!r}: {why}") from None
    if "heartbeat=" not in url:
        params.heartbeat = settings.heartbeat
    params.connection_attempts = 1  # we retry ourselves, with backoff and a deadline
    params.retry_delay = 0
    if "socket_timeout=" not in url:
        params.socket_timeout = settings.connect_timeout
    if "stack_timeout=" not in url:
        params.stack_timeout = settings.connect_timeout
    params.client_properties = {"connection_name": name, "product": "reqrep"}
    if tls.uses_tls_settings(settings):
        if params.ssl_options is None:
            raise ConfigError(
                f"TLS settings (REQREP_TLS_*) need an amqps:// URL, got {settings.redacted_url!r}"
            )
        params.ssl_options = pika.SSLOptions(
            tls.tls_context(settings), server_hostname=settings.tls_server_name or params.host
        )
    return params


def _describe(exc: BaseException, settings: Settings | None = None) -> str:
    """A one-line account of a pika error, with any password scrubbed."""
    exc = _root_cause(exc)
    if tls.is_tls_error(exc):
        text = tls.describe_tls_error(exc)
    elif isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        text = "login refused (check the user name and password)"
    elif isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        text = "access refused (check the vhost and the user's permissions)"
    elif isinstance(exc, AMQPConnectorStackTimeout):
        text = "timed out while connecting"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror.lower()
    else:
        text = f"{type(exc).__name__}: {exc}"
    if settings is not None:
        for secret in (*(_password(url) for url in settings.urls), settings.tls_key_password):
            if secret:
                text = text.replace(secret, "***")
    return text


def _name(fn: Callable[..., None]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _root_cause(exc: BaseException) -> BaseException:
    """Unwrap pika's layers of connection-workflow wrappers."""
    for _ in range(5):
        if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif isinstance(exc, AMQPConnectorPhaseErrorBase):
            exc = exc.exception
        elif (
            isinstance(exc, pika.exceptions.AMQPConnectionError)
            and len(exc.args) == 1
            and isinstance(exc.args[0], BaseException)
        ):
            exc = exc.args[0]
        else:
            break
    return exc


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None
