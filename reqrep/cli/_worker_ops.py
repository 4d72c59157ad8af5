"""The operations side of ``reqrep worker``: metrics, tracing and the HTTP endpoints."""

from __future__ import annotations

import dataclasses

from reqrep.worker.endpoint import Endpoint
from reqrep.worker.server import Worker

__all__ = ["Ops"]


@dataclasses.dataclass
class Ops:
    """What ``--metrics-port``, ``--health-port``, ``--http-host`` and ``--tracing`` ask for.

    Threads: the worker command's main thread.
    """

    metrics_port: int | None
    health_port: int | None
    http_host: str
    tracing: bool
    endpoints: list[Endpoint] = dataclasses.field(default_factory=list)

    def enable(self) -> None:
        """Turn on metrics and tracing (imports their optional packages only if asked)."""
        if self.metrics_port is not None:
            import reqrep.metrics  # noqa: PLC0415 - prometheus_client only when asked for

            reqrep.metrics.enable()
        if self.tracing:
            import reqrep.tracing  # noqa: PLC0415 - OpenTelemetry only when asked for

            reqrep.tracing.enable()

    def serve(self, worker: Worker) -> list[Endpoint]:
        """Start the endpoints: /metrics and /healthz on the metrics port, /healthz on the
        health port (one endpoint if both are the same)."""
        health = lambda: worker.consuming  # noqa: E731 - read on the endpoint's thread
        if self.metrics_port is not None:
            import reqrep.metrics  # noqa: PLC0415 - enabled above

            self.endpoints.append(
                Endpoint(
                    self.metrics_port,
                    host=self.http_host,
                    health=health,
                    metrics=reqrep.metrics.render,
                ).start()
            )
        if self.health_port is not None and self.health_port != self.metrics_port:
            endpoint = Endpoint(self.health_port, host=self.http_host, health=health)
            self.endpoints.append(endpoint.start())
        return self.endpoints

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.stop()
        self.endpoints.clear()
