"""OpenTelemetry spans for calls and handlers (the ``otel`` extra).

::

    import reqrep.tracing
    reqrep.tracing.enable()     # before making Workers and Requestors; uses the global
                                # TracerProvider, which the application's SDK set-up configures

Without this, reqrep still carries the W3C ``traceparent`` header from requestor to worker and
restores it around the handler (``reqrep.current().traceparent``). OpenTelemetry is imported
here only when ``enable`` is called. Span names, kinds and attributes: ``reqrep.common._otel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reqrep.common import observe
from reqrep.common.errors import ConfigError

if TYPE_CHECKING:
    from reqrep.common._otel import OtelObserver

__all__ = ["disable", "enable"]

_enabled: list[OtelObserver] = []


def enable(tracer_provider: Any = None) -> OtelObserver:
    """Emit spans through ``tracer_provider`` (default: OpenTelemetry's global provider)."""
    try:
        from reqrep.common._otel import OtelObserver  # noqa: PLC0415 - optional: only when enabled
    except ImportError:
        raise ConfigError(
            "tracing needs the OpenTelemetry API: pip install 'reqrep[otel]'"
        ) from None
    observer = OtelObserver(tracer_provider)
    _enabled.append(observer)
    observe.install(observer)
    return observer


def disable() -> None:
    """Stop emitting spans from Workers and Requestors created afterwards."""
    while _enabled:
        observe.uninstall(_enabled.pop())
