"""TLS for ``amqps://`` URLs: the SSL context built from the ``tls_*`` settings.

The settings name files (``tls_ca``: the CA bundle that signed the broker's certificate;
``tls_cert``/``tls_key``: a client certificate, for brokers that ask for one) and the name the
broker's certificate must carry (``tls_server_name``, by default the URL's host). Without
``tls_ca`` the system's CAs are trusted. Files are read when the connection's parameters are
built, on the caller's thread, so a missing or unreadable file is a ConfigError at once.

The key's password is a secret: it is never part of an error message, a log line or a repr.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from reqrep.common.errors import ConfigError

if TYPE_CHECKING:
    from reqrep.common.config import Settings

__all__ = ["describe_tls_error", "is_tls_error", "tls_context", "uses_tls_settings"]


def uses_tls_settings(settings: Settings) -> bool:
    return any((settings.tls_ca, settings.tls_cert, settings.tls_key, settings.tls_server_name))


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name."""
    if settings.tls_key and not settings.tls_cert:
        raise ConfigError("tls_key is set without tls_cert (REQREP_TLS_CERT)")
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read tls_ca {settings.tls_ca!r}: {_reason(exc)}") from None
    if settings.tls_cert:
        try:
            context.load_cert_chain(
                settings.tls_cert,
                settings.tls_key or None,
                password=settings.tls_key_password or None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the client certificate {settings.tls_cert!r} / key "
                f"{settings.tls_key!r}: {_reason(exc)} (wrong key password?)"
            ) from None
    return context


def is_tls_error(exc: BaseException) -> bool:
    """A TLS handshake failure: retrying with the same settings cannot fix it."""
    return isinstance(exc, ssl.SSLError | ssl.CertificateError)


def describe_tls_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was refused: {exc.verify_message or _reason(exc)}"
    return f"TLS handshake failed: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
