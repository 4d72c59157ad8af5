"""pika's connection parameters for one broker URL, and pika's errors told in one line.

Both sides use these where they open a connection: ``ConnectionThread`` for its long-lived
connection, ``requestor/admin.py`` for its short blocking ones. Nothing here keeps state.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

from reqrep.common import tls
from reqrep.common.addresses import redact_url
from reqrep.common.config import Settings
from reqrep.common.errors import ConfigError

__all__ = ["describe", "is_refusal", "parameters", "root_cause"]


def parameters(settings: Settings, url: str, name: str) -> Any:
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


def describe(exc: BaseException, settings: Settings | None = None) -> str:
    """A one-line account of a pika error, with any password scrubbed."""
    exc = root_cause(exc)
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


def is_refusal(exc: BaseException) -> bool:
    """Whether a failed connection attempt was refused for good: a TLS failure, or a login or
    vhost the broker refused. Retrying cannot fix these."""
    cause = root_cause(exc)
    return tls.is_tls_error(cause) or isinstance(
        cause,
        pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError,
    )


def root_cause(exc: BaseException) -> BaseException:
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
