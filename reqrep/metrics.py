"""Prometheus metrics for applications that embed reqrep (the ``metrics`` extra).

::

    import reqrep.metrics
    reqrep.metrics.enable()               # before making Workers and Requestors
    prometheus_client.start_http_server(9100)   # or serve reqrep.metrics.render() yourself

``enable`` registers reqrep's metrics (docs/operations.md, "Metrics") in a prometheus_client
registry (the default one unless given) and makes every Worker and Requestor created
afterwards update them. prometheus_client is imported here only when ``enable`` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reqrep.common import observe
from reqrep.common.errors import ConfigError

if TYPE_CHECKING:
    from reqrep.common._prometheus import PrometheusObserver

__all__ = ["disable", "enable", "render"]

_enabled: dict[int, PrometheusObserver] = {}  # id(registry) -> its observer


def enable(registry: Any = None) -> PrometheusObserver:
    """Count into ``registry`` (default: prometheus_client's global REGISTRY); idempotent."""
    try:
        import prometheus_client  # noqa: PLC0415 - optional: imported only when enabled
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'reqrep[metrics]'") from None
    from reqrep.common._prometheus import PrometheusObserver  # noqa: PLC0415 - same reason

    target = prometheus_client.REGISTRY if registry is None else registry
    observer = _enabled.get(id(target))
    if observer is None:
        observer = _enabled[id(target)] = PrometheusObserver(target)
    observe.install(observer)
    return observer


def disable(registry: Any = None) -> None:
    """Stop counting into ``registry`` for Workers and Requestors created afterwards."""
    import prometheus_client  # noqa: PLC0415 - optional, and enabled before

    target = prometheus_client.REGISTRY if registry is None else registry
    observer = _enabled.get(id(target))
    if observer is not None:
        observe.uninstall(observer)


def render(registry: Any = None) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type (for an HTTP endpoint)."""
    import prometheus_client  # noqa: PLC0415 - optional, and enabled before

    target = prometheus_client.REGISTRY if registry is None else registry
    return prometheus_client.generate_latest(target), prometheus_client.CONTENT_TYPE_LATEST
