"""Process exit codes of the ``reqrep`` command, one per kind of failure.

Scripts can tell "the service is not deployed" from "the call took too long" without parsing
text. README.md and docs/operations.md list them; keep them in step.
"""

from __future__ import annotations

from reqrep.common.errors import (
    BrokerUnreachable,
    CallTimeout,
    ConfigError,
    MethodNotFound,
    NoSuchService,
    NoWorkers,
    RemoteError,
    ReqrepConnectionError,
    ReqrepError,
)

__all__ = [
    "BAD_ARGUMENTS",
    "BROKER_UNREACHABLE",
    "METHOD_NOT_FOUND",
    "NO_SUCH_SERVICE",
    "NO_WORKERS",
    "OK",
    "OTHER_ERROR",
    "REFUSED",
    "REMOTE_ERROR",
    "TIMEOUT",
    "for_error",
]

OK = 0
BAD_ARGUMENTS = 2  # also click's code for usage errors
TIMEOUT = 3
REMOTE_ERROR = 4  # the handler raised (or the worker could not read the request)
METHOD_NOT_FOUND = 5
NO_SUCH_SERVICE = 6
BROKER_UNREACHABLE = 7  # could not connect, or the connection was lost
OTHER_ERROR = 8  # any other reqrep error (publish rejected, malformed reply, closed)
REFUSED = 9  # the broker refused the login, the vhost or the set-up: trying again cannot help
NO_WORKERS = 10  # the service's queue exists but no worker consumes it

_ORDER: tuple[tuple[type[ReqrepError], int], ...] = (
    (ConfigError, BAD_ARGUMENTS),
    (CallTimeout, TIMEOUT),
    (MethodNotFound, METHOD_NOT_FOUND),
    (NoSuchService, NO_SUCH_SERVICE),
    (NoWorkers, NO_WORKERS),
    (BrokerUnreachable, BROKER_UNREACHABLE),
    (ReqrepConnectionError, BROKER_UNREACHABLE),
    (RemoteError, REMOTE_ERROR),
)


def for_error(error: ReqrepError) -> int:
    """The exit code for ``error`` (most specific class first)."""
    if isinstance(error, ReqrepConnectionError) and error.permanent:
        return REFUSED
    for cls, code in _ORDER:
        if isinstance(error, cls):
            return code
    return OTHER_ERROR
