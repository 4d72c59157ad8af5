"""A small HTTP endpoint beside a worker: ``/healthz`` and, with metrics enabled, ``/metrics``.

``/healthz`` answers 200 ``consuming`` while the worker's consumer is registered with the
broker, and 503 otherwise: before it has connected, while it reconnects, once it drains or the
broker cancelled its consumer. ``/metrics`` answers whatever ``metrics`` renders (Prometheus'
text format). The standard library's HTTP server, so a worker needs nothing more for health.

Threads: ``start`` and ``stop`` on the controlling thread; requests are answered on the
endpoint's own thread (``reqrep-http-<port>``), which only reads ``health()`` and calls
``metrics()``, both of which are safe from any thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reqrep.common.errors import ConfigError

__all__ = ["Endpoint"]

log = logging.getLogger("reqrep.worker")


class Endpoint:
    """Serves ``/healthz`` (if ``health`` is given) and ``/metrics`` (if ``metrics`` is)."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - scraped and probed from outside the container
        health: Callable[[], bool] | None = None,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
    ) -> None:
        self._health = health
        self._metrics = metrics
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as exc:
            raise ConfigError(f"cannot serve HTTP on {host}:{port}: {exc.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"reqrep-http-{port}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Endpoint:
        self._thread.start()
        log.info("serving %s on port %d", self._paths(), self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _paths(self) -> str:
        paths = [p for p, f in (("/healthz", self._health), ("/metrics", self._metrics)) if f]
        return " and ".join(paths)

    def _answer(self, path: str) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        if path == "/healthz" and self._health is not None:
            if self._health():
                return 200, b"consuming\n", "text/plain; charset=utf-8"
            return 503, b"not consuming\n", "text/plain; charset=utf-8"
        if path == "/metrics" and self._metrics is not None:
            body, content_type = self._metrics()
            return 200, body, content_type
        return 404, b"not found\n", "text/plain; charset=utf-8"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    status, body, content_type = endpoint._answer(self.path)
                except Exception:
                    log.exception("HTTP %s failed", self.path)
                    status, body, content_type = 500, b"error\n", "text/plain; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("HTTP %s", format % args)

        return Handler
