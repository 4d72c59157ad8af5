"""One pika connection, owned by one named thread.

pika's connections are not thread-safe: the only call another thread may make is
``ioloop.add_callback_threadsafe``. ``ConnectionThread`` makes that the only door. Its thread
creates the connection, runs pika's callback loop (``SelectConnection``, 2.4x the throughput of
``BlockingConnection`` under load on our machines), and closes it. Other threads hand it work with
``submit(fn)``; work is queued and the loop is woken once per batch, not once per call.

Subclasses open their channel's topology in ``_setup(channel)`` and call ``_ready()`` when they
can serve; ``_on_lost(error)`` runs once if the connection ends without ``stop()``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

from common.config import Settings
from common.errors import BrokerUnreachable, ClosedError, ConfigError, ConnectionLost, ReqrepError

__all__ = ["ConnectionThread", "State"]

log = logging.getLogger("reqrep.connection")


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionThread:
    """Owns one ``SelectConnection`` and one channel on a dedicated thread.

    Threads: ``start``, ``stop``, ``submit``, ``state`` and ``error`` may be called from any
    thread. Every method whose name starts with ``_`` runs on the I/O thread, except ``_run``
    (the thread's body) and the helpers of ``start``/``stop``/``submit``.
    """

    def __init__(self, settings: Settings, *, name: str) -> None:
        self._settings = settings
        self._name = name
        self._params = _parameters(settings, name)  # on the caller's thread: ConfigError here
        self._lock = threading.Lock()
        self._tasks: deque[Callable[[], None]] = deque()
        self._wake_pending = False
        self._state = State.NEW
        self._error: ReqrepError | None = None
        self._settled = threading.Event()  # set once ready or failed
        self._thread: threading.Thread | None = None
        self._connection: Any = None  # pika.SelectConnection, I/O thread only
        self.channel: Any = None  # pika Channel, I/O thread only

    # -- any thread -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> ReqrepError | None:
        """Why the connection ended, if it ended badly."""
        return self._error

    def start(self) -> None:
        """Connect and wait until the subclass is ready; raise BrokerUnreachable if not."""
        with self._lock:
            if self._state is not State.NEW:
                raise ClosedError(f"{self._name}: start() may be called once")
            self._state = State.CONNECTING
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        # pika's stack_timeout bounds the connect; the extra second covers our own set-up.
        if not self._settled.wait(self._settings.connect_timeout + 1.0):
            self._fail(BrokerUnreachable(f"{self._where()}: timed out while connecting"))
            self.stop()
        if self._state is not State.OPEN:
            raise self._error or BrokerUnreachable(f"{self._where()}: connection failed")

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon; raise if the connection is not open."""
        with self._lock:
            if self._state is not State.OPEN:
                raise self._unusable()
            self._tasks.append(fn)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._connection.ioloop.add_callback_threadsafe(self._run_tasks)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection and join the thread (not when called on the I/O thread)."""
        with self._lock:
            state = self._state
            if state in (State.NEW, State.CLOSED):
                self._state = State.CLOSED
            elif state in (State.CONNECTING, State.OPEN):
                self._state = State.CLOSING
                if self._connection is not None:
                    self._connection.ioloop.add_callback_threadsafe(self._close)
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: I/O thread did not stop within %.1fs", self._name, timeout)

    # -- subclass hooks (I/O thread) ----------------------------------------------------------

    def _setup(self, channel: Any) -> None:
        """Declare topology and start consuming; call ``self._ready()`` when done."""
        self._ready()

    def _on_lost(self, error: ReqrepError) -> None:
        """The connection ended without stop(): fail whatever waits on it."""

    def _on_closed(self) -> None:
        """The connection is closed, for any reason; runs last on the I/O thread."""

    # -- I/O thread ---------------------------------------------------------------------------

    def _ready(self) -> None:
        with self._lock:
            if self._state is State.CONNECTING:
                self._state = State.OPEN
        log.debug("%s: ready", self._name)
        self._settled.set()

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        """Schedule ``fn`` on the I/O thread after ``delay`` seconds (I/O thread only)."""
        return self._connection.ioloop.call_later(delay, fn)

    def _run(self) -> None:
        try:
            self._connection = pika.SelectConnection(
                self._params,
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_connection_closed,
            )
            if self._state is State.CLOSING:  # stop() came before the connection existed
                self._close()
            self._connection.ioloop.start()
        except Exception as exc:
            log.exception("%s: I/O thread crashed", self._name)
            self._fail(ConnectionLost(f"{self._where()}: I/O thread crashed: {exc!r}"))
        finally:
            self._finish()

    def _run_tasks(self) -> None:
        with self._lock:
            tasks, self._tasks = self._tasks, deque()
            self._wake_pending = False
        for task in tasks:
            try:
                task()
            except Exception:
                log.exception("%s: task failed on the I/O thread", self._name)

    def _on_connection_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        self._setup(channel)

    def _on_open_error(self, _connection: Any, exc: BaseException) -> None:
        self._fail(BrokerUnreachable(f"{self._where()}: {_describe(exc, self._settings)}"))
        self._connection.ioloop.stop()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if self._state is State.CLOSING:
            return
        if isinstance(reason, pika.exceptions.AMQPConnectionError):
            return  # the whole connection is going: _on_connection_closed tells why
        self._fail(ConnectionLost(f"{self._where()}: channel closed: {_describe(reason)}"))
        if not (self._connection.is_closing or self._connection.is_closed):
            self._connection.close(reply_text="channel closed")

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        if self._state is not State.CLOSING:
            self._fail(ConnectionLost(f"{self._where()}: connection lost: {_describe(reason)}"))
        self._connection.ioloop.stop()

    def _close(self) -> None:
        connection = self._connection
        if connection.is_closing or connection.is_closed:
            return
        connection.close()

    def _fail(self, error: ReqrepError) -> None:
        """Record the first error; tell the subclass if we had been open."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            was_open = self._state is State.OPEN
            if self._state is not State.CLOSED:
                self._state = State.CLOSING
        # A failed connect is raised to the caller of start(); a lost connection is news.
        log.log(logging.WARNING if was_open else logging.DEBUG, "%s", error)
        self._settled.set()
        if was_open:
            self._on_lost(error)

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
            if self._connection is not None:
                self._connection.ioloop.close()

    def _unusable(self) -> ReqrepError:
        # A fresh exception each time: re-raising one instance would grow its traceback.
        if self._error is not None:
            return type(self._error)(str(self._error))
        return ClosedError(f"{self._name} is {self._state.value}")

    def _where(self) -> str:
        return f"{self._name} ({self._settings.redacted_url})"


def _parameters(settings: Settings, name: str) -> Any:
    try:
        params = pika.URLParameters(settings.url)
    except Exception as exc:  # noqa: BLE001 - pika raises assorted types for a bad URL
        raise ConfigError(f"invalid AMQP URL {settings.redacted_url!r}: {exc}") from None
    if "heartbeat=" not in settings.url:
        params.heartbeat = settings.heartbeat
    params.connection_attempts = 1
    params.socket_timeout = settings.connect_timeout
    params.stack_timeout = settings.connect_timeout
    params.client_properties = {"connection_name": name, "product": "reqrep"}
    return params


def _describe(exc: BaseException, settings: Settings | None = None) -> str:
    """A one-line account of a pika error, with any password scrubbed."""
    exc = _root_cause(exc)
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
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
        password = _password(settings.url)
        if password:
            text = text.replace(password, "***")
    return text


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
