"""Connection attempts: which address each goes to, backoff between them, when to give up.

The half of ``ConnectionThread`` (``common/connection.py``) that gets a connection, kept apart
from the half that uses one. All of it runs on the I/O thread, except the ``address`` property.

When an open connection drops, the thread reconnects by itself with capped exponential backoff
and jitter, and the subclass declares its topology again. ``start()`` retries a broker that is
down for at most ``connect_timeout`` seconds, then raises BrokerUnreachable; a refused login or
vhost fails at once (retrying cannot fix it). With ``persist=True`` (workers) ``start()`` does not
give up on what a retry can fix: at the deadline it returns and the thread keeps trying.

Several broker URLs (a cluster): attempts go to them in a shuffled order, and every attempt after
the first moves to the next address, so a reconnection after a node died goes to another node at
once. Errors and logs name the address tried, with its password hidden.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pika

from reqrep.common._pika_deliver import use_fast_deliveries
from reqrep.common._pika_params import describe, is_refusal
from reqrep.common.addresses import host_of, redact_url
from reqrep.common.config import Settings
from reqrep.common.errors import BrokerUnreachable, ReqrepError

__all__ = ["Attempts", "State"]

log = logging.getLogger("reqrep.connection")


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    OPEN = "open"
    RECOVERING = "recovering"
    CLOSING = "closing"
    CLOSED = "closed"


class Attempts:
    """Mixin of ``ConnectionThread``: connecting, retrying, and giving up.

    Threads: ``address`` may be read from any thread; every other method runs on the I/O thread.
    The attributes below are set by ``ConnectionThread.__init__``.
    """

    _settings: Settings
    _name: str
    _urls: list[str]
    _params: list[Any]
    _next_address: int  # index of the address the next attempt goes to
    _address: int  # index of the address of the current (or last) attempt
    _persist: bool
    _opened: bool
    _lock: threading.Lock
    _state: State
    _error: ReqrepError | None
    _settled: threading.Event
    _ioloop: Any
    _connection: Any
    channel: Any
    _attempts: int  # failed connection attempts since the last open
    _retry_timer: Any
    _start_deadline: float
    _on_connection_open: Callable[[Any], None]
    _on_connection_closed: Callable[[Any, BaseException], None]

    @property
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return redact_url(self._urls[self._address])

    def _where(self) -> str:
        return f"{self._name} ({self.address})"

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
        use_fast_deliveries(self._connection)

    def _on_open_error(self, connection: Any, exc: BaseException) -> None:
        if connection is not self._connection:
            return  # abandoned after a crash while connecting: its retry is scheduled already
        self._connection = None
        fatal = is_refusal(exc)
        text = f"{self._where()}: {describe(exc, self._settings)}"
        if len(self._urls) > 1:
            text += f" (addresses: {', '.join(host_of(url) for url in self._urls)})"
        error = BrokerUnreachable(text, permanent=fatal)
        self._retry_or_give_up(error, fatal=fatal)

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
            BrokerUnreachable(f"{self._where()}: {describe(exc, self._settings)}"), fatal=False
        )
        return True

    def _abandon_socket(self) -> None:
        """After a crash, close the socket ourselves: the loop that would have is gone."""
        transport = getattr(self._connection, "_transport", None)  # pika internals, if present
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
