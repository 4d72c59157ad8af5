"""``FaultProxy``: its lifecycle, its faults, the hand-off of control changes to the loop thread,
and the loop thread's select loop (which hands I/O to ``Forwarder``)."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from bench.faultproxy._forward import Forwarder
from bench.faultproxy._links import close_socket

T = TypeVar("T")

MAX_LATENCY = 30.0
"""Upper limit for ``set_latency`` (seconds)."""
CONTROL_TIMEOUT = 5.0
"""Seconds a control method waits for the loop thread to apply it."""
STOP_TIMEOUT = 5.0
"""Seconds ``stop()`` waits for the loop thread to finish."""
LISTEN_BACKLOG = 64

_LISTENER = "listener"
_WAKE = "wake"


def _loopback_ipv4(host: str, what: str) -> str:
    """Return ``host`` if it is an IPv4 loopback literal such as ``127.0.0.1``, else raise."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 loopback address, got {host!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"{what} must be an IPv4 loopback address, got {host!r}")
    return host


class _Command(Generic[T]):
    """A control change for the loop thread to apply; the caller waits on ``done``."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Apply the change (loop thread, or the caller when no loop is running)."""
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the waiting caller
            self.error = exc
        finally:
            self.done.set()


class FaultProxy:
    """A loopback TCP proxy with switchable faults. ``bench.faultproxy`` describes its threads.

    Usage::

        with FaultProxy(("127.0.0.1", 5672)) as proxy:
            url = f"amqp://guest:guest@{proxy.url_netloc}/%2F"
            ...
            proxy.cut()

    Control methods (``set_latency``, ``cut``, ``blackhole``, ``refuse``) and the properties
    are thread-safe; call them from the test thread. They may also be called before
    ``start()`` or after ``stop()``, when they apply directly.
    """

    def __init__(self, upstream: tuple[str, int], *, listen_host: str = "127.0.0.1") -> None:
        """Configure, without any socket yet. Called by the test thread."""
        host, port = upstream
        _loopback_ipv4(host, "upstream host")
        if not 0 < port < 65536:
            raise ValueError(f"upstream port must be 1-65535, got {port!r}")
        self._upstream = (host, port)
        self._listen_host = _loopback_ipv4(listen_host, "listen_host")

        # Guarded by _lock (shared between the test thread and the loop thread).
        self._lock = threading.RLock()
        self._commands: list[_Command[Any]] = []
        self._live = 0  # client sockets currently open
        self._running = False  # the loop thread accepts commands
        self._stopping = False
        self._started = False
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None

        # Set once by start() before the loop thread exists; read-only afterwards.
        self._port: int | None = None
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None

        # Owned by the loop thread while it runs (by the caller, under _lock, otherwise).
        self._fwd = Forwarder(self._upstream, self._count_client)
        self._error: BaseException | None = None

    # -- lifecycle (test thread) -------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind an ephemeral loopback port and start the loop thread. Called by the test thread.

        Returns self, so ``with FaultProxy(...).start() as proxy`` works. One start per proxy.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("FaultProxy.start() called twice")
            self._started = True
        with contextlib.ExitStack() as undo:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            undo.callback(listener.close)
            listener.bind((self._listen_host, 0))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
            wake_r, wake_w = socket.socketpair()
            undo.callback(wake_r.close)
            undo.callback(wake_w.close)
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            sel = selectors.DefaultSelector()
            undo.callback(sel.close)
            sel.register(listener, selectors.EVENT_READ, _LISTENER)
            sel.register(wake_r, selectors.EVENT_READ, _WAKE)
            self._port = int(listener.getsockname()[1])
            thread = threading.Thread(
                target=self._run, name=f"FaultProxy-{self._port}", daemon=True
            )
            undo.pop_all()
        self._listener, self._wake_r, self._sel = listener, wake_r, sel
        self._fwd.sel = sel
        with self._lock:
            self._wake_w = wake_w
            self._thread = thread
            self._running = True
        thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and join the loop thread (at most
        ``STOP_TIMEOUT`` seconds). Called by the test thread; safe to call more than once.

        Raises RuntimeError if the loop thread does not finish in time, or if it had failed.
        """
        with self._lock:
            thread = self._thread
            if self._running:
                self._stopping = True
                self._wake_locked()
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"FaultProxy loop did not stop within {STOP_TIMEOUT}s")
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("FaultProxy loop thread failed") from error

    def __enter__(self) -> FaultProxy:
        """Start the proxy unless already started. Called by the test thread."""
        with self._lock:
            started = self._started
        return self if started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy. Called by the test thread."""
        self.stop()

    # -- properties (any thread) -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (after ``start()``). Any thread."""
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def url_netloc(self) -> str:
        """``host:port`` to put in a client URL, e.g. ``127.0.0.1:40123``. Any thread."""
        return f"{self._listen_host}:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy. Any thread.

        A client connection counts from when the loop thread accepts it, which can be a moment
        after the client's ``connect()`` returns.
        """
        with self._lock:
            return self._live

    # -- faults (test thread; applied by the loop thread) ------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk forwarded, in both directions, by ``seconds`` (0 = none).

        Called by the test thread. Applies to bytes the proxy reads after this returns; chunks
        already delayed keep their time, and order within each direction is always kept.
        """
        value = float(seconds)
        if not (math.isfinite(value) and 0.0 <= value <= MAX_LATENCY):
            raise ValueError(f"latency must be between 0 and {MAX_LATENCY} s, got {seconds!r}")

        def apply() -> None:
            self._fwd.latency = value

        self._call(apply)

    def cut(self) -> int:
        """Reset (RST) both sides of every current connection. Called by the test thread.

        Returns how many client connections were cut. New connections are still accepted.
        When this returns, the client sockets have already been reset.
        """
        return self._call(self._fwd.cut_all)

    def blackhole(self, on: bool = True) -> None:
        """While on, keep connections open but silently drop all bytes both ways.

        Called by the test thread. New connections are accepted (and connected upstream) but
        their bytes are dropped too. Like a real partition, a close or reset by one side is
        not passed on while on; when turned off, the surviving side of such a connection is
        reset (as a peer that forgot the connection would).
        """

        def apply() -> None:
            self._fwd.blackhole = bool(on)

        self._call(apply)

    def refuse(self, on: bool = True) -> None:
        """While on, accept new connections and reset them at once (a broker that is down).

        Called by the test thread. Existing connections are not affected.
        """

        def apply() -> None:
            self._fwd.refuse = bool(on)

        self._call(apply)

    # -- control plumbing (test thread) ------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and wait (bounded) for it. Called by the test thread.

        Without a running loop (before start, after stop) ``fn`` runs here, under the lock.
        """
        command = _Command(fn)
        with self._lock:
            queued = self._running
            if queued:
                self._commands.append(command)
                self._wake_locked()
            else:
                command.run()
        if queued and not command.done.wait(CONTROL_TIMEOUT):
            raise TimeoutError(f"FaultProxy loop did not apply a change within {CONTROL_TIMEOUT}s")
        if command.error is not None:
            raise command.error
        return cast(T, command.result)  # run() set it, as it raised nothing

    def _wake_locked(self) -> None:
        """Wake the loop thread. Caller holds ``_lock`` (so the socket cannot close under it)."""
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is already pending) or closed
                self._wake_w.send(b"\0")

    # -- the select loop (loop thread) -------------------------------------------------------

    def _run(self) -> None:
        """Body of the loop thread: run until stopped; record any failure for ``stop()``."""
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported by stop(), not lost in a thread
            self._error = exc
        finally:
            self._shutdown()

    def _loop(self) -> None:
        """Wait for I/O, control changes or the next due chunk; handle them; repeat."""
        assert self._sel is not None
        sel = self._sel
        while True:
            events = sel.select(self._next_timeout())
            now = time.monotonic()
            # Drain wake-ups *before* taking the command queue: a command queued after the
            # drain either is taken below or leaves a fresh wake-up byte for the next select.
            if any(key.data is _WAKE for key, _ in events):
                self._drain_wake()
            if self._apply_commands():
                return
            for key, mask in events:
                if key.data is _LISTENER:
                    assert self._listener is not None
                    self._fwd.accept(self._listener, now)
                elif key.data is not _WAKE:
                    self._fwd.on_event(key.data, mask, now)
            self._fwd.housekeeping(now)

    def _apply_commands(self) -> bool:
        """Apply queued control changes; return True if the loop should stop."""
        with self._lock:
            commands, self._commands = self._commands, []
            stopping = self._stopping
        for command in commands:
            command.run()
        return stopping

    def _next_timeout(self) -> float | None:
        """Seconds until the next delayed chunk, connect or drain deadline; None if none."""
        deadline = self._fwd.next_deadline()
        if deadline == math.inf:
            return None  # nothing timed: sleep until I/O or a wake-up
        return max(0.0, deadline - time.monotonic())

    def _drain_wake(self) -> None:
        """Empty the wake-up socket (the bytes only mean "look at the command queue")."""
        assert self._wake_r is not None
        for _ in range(64):
            try:
                if not self._wake_r.recv(4096):
                    return
            except OSError:  # BlockingIOError: drained
                return

    def _count_client(self, delta: int) -> None:
        """Adjust the open-client count read by ``connections``."""
        with self._lock:
            self._live += delta

    def _shutdown(self) -> None:
        """Last thing the loop thread does: close every socket, answer queued commands."""
        with self._lock:
            self._running = False
            commands, self._commands = self._commands, []
            wake_w, self._wake_w = self._wake_w, None
        self._fwd.close_all()
        with self._lock:
            self._live = 0
        for sock in (self._listener, self._wake_r, wake_w):
            if sock is not None:
                close_socket(sock, rst=False)
        if self._sel is not None:
            with contextlib.suppress(OSError):
                self._sel.close()
        for command in commands:  # nothing left to change; let the callers return
            command.run()
