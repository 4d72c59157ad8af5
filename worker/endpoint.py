"""A small HTTP endpoint beside a worker: ``/healthz`` and, with metrics enabled, ``/metrics``.

``/healthz`` answers 200 ``consuming`` while the worker's consumer is registered with the
broker, and 503 otherwise: before it has connected, while it reconnects, once it drains or the
broker cancelled its consumer. ``/metrics`` answers whatever ``metrics`` renders (Prometheus'
text format).

Whoever can reach the port can open connections to it, so what they cost is bounded: the
server is one asyncio event loop on one thread (``reqrep-http-<port>``), not a thread per
connection; a connection has ``READ_TIMEOUT`` seconds to send its request line and headers (at
most ``MAX_HEAD`` bytes), then is closed; at most ``MAX_CONNECTIONS`` are open at once, and
more are closed at once. Clients that reset or time out are counted and logged one line per
kind per interval, without a traceback. It listens on 127.0.0.1 unless told otherwise
(``--http-host 0.0.0.0`` in a container, where the probe comes from outside).

Threads: ``start`` and ``stop`` on the controlling thread; requests are answered on the
endpoint's own thread, which only reads ``health()`` and calls ``metrics()``, both of which are
safe from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from reqrep.common.errors import ConfigError
from reqrep.common.logthrottle import LogThrottle

__all__ = ["MAX_CONNECTIONS", "MAX_HEAD", "READ_TIMEOUT", "Endpoint"]

log = logging.getLogger("reqrep.worker")

READ_TIMEOUT = 5.0  # seconds a client has to send its request's head
MAX_HEAD = 8192  # bytes of request line and headers read at most
MAX_CONNECTIONS = 256  # open at once; more are closed without an answer
_TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS.update({500: "Internal Server Error", 503: "Service Unavailable"})
# What a connection closed unanswered is logged as (one line per kind and interval).
_BUSY = f"HTTP endpoint: more than {MAX_CONNECTIONS} connections at once: closed unanswered"
_SLOW = f"HTTP endpoint: a client sent no request within {READ_TIMEOUT:g}s: closed"
_LARGE = f"HTTP endpoint: a request head over {MAX_HEAD} bytes: closed"
_GONE = "HTTP endpoint: a client went away before its answer"


class Endpoint:
    """Serves ``/healthz`` (if ``health`` is given) and ``/metrics`` (if ``metrics`` is)."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        health: Callable[[], bool] | None = None,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
    ) -> None:
        self._health = health
        self._metrics = metrics
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._socket = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            raise ConfigError(f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from None
        self._port = int(self._socket.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._open = 0  # connections being served (loop thread)
        self._throttled = LogThrottle(log)
        self.dropped = 0  # connections closed unanswered: too many, too slow, or reset
        self._thread = threading.Thread(
            target=self._run, name=f"reqrep-http-{self.port}", daemon=True
        )

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> Endpoint:
        ready = threading.Event()
        self._thread_ready = ready
        self._thread.start()
        ready.wait(10)
        log.info("serving %s on port %d", self._paths(), self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        elif not self._loop.is_closed():  # never started
            self._loop.close()
        with contextlib.suppress(OSError):
            self._socket.close()

    # -- the endpoint's thread ------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, sock=self._socket, limit=MAX_HEAD)
            )
            loop.call_soon(self._thread_ready.set)
            loop.run_forever()
            self._server.close()
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2))
        finally:
            self._thread_ready.set()
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            self._drop(_BUSY)
            writer.close()
            return
        self._open += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            status, body, content_type = self._answer(head)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            self._drop(_SLOW)
        except asyncio.LimitOverrunError:
            self._drop(_LARGE)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._drop(_GONE)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _drop(self, why: str) -> None:
        """Count a connection closed unanswered; one log line per kind per interval."""
        self.dropped += 1
        self._throttled.info(why)

    def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return 400, b"bad request\n", _TEXT
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", _TEXT
        path = target.split("?", 1)[0]
        try:
            return self._route(path)
        except Exception:
            log.exception("HTTP %s failed", path)
            return 500, b"error\n", _TEXT

    def _route(self, path: str) -> tuple[int, bytes, str]:
        if path == "/healthz" and self._health is not None:
            if self._health():
                return 200, b"consuming\n", _TEXT
            return 503, b"not consuming\n", _TEXT
        if path == "/metrics" and self._metrics is not None:
            body, content_type = self._metrics()
            return 200, body, content_type
        return 404, b"not found\n", _TEXT

    def _paths(self) -> str:
        paths = [p for p, f in (("/healthz", self._health), ("/metrics", self._metrics)) if f]
        return " and ".join(paths)
