"""Broker addresses: one AMQP URL, or several for a RabbitMQ cluster.

``AMQP_URL``, ``--url`` and ``url=`` take one URL or several *full* URLs separated by commas::

    amqp://app:pw@rabbit1:5672/%2F,amqp://app:pw@rabbit2:5672/%2F,amqp://app:pw@rabbit3:5672/%2F

In Python ``url=`` may also be a sequence of URL strings. A connection tries the addresses in a
shuffled order (so that clients spread over the nodes) and moves to the next one on every
reconnection (so that a dead node is left at once). Every URL of a list must name the same user
and vhost: they are the nodes of one cluster.

A list is split only where a comma is followed by ``amqp://`` or ``amqps://``; a comma anywhere
else (``amqp://u:p@h1:5672,h2:5672/``, a host list in one URL) is refused with a ConfigError that
says how to write the list. The password never appears in a message: see ``redact_url``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from reqrep.common.errors import ConfigError

__all__ = ["check_url", "host_of", "join_urls", "redact_url", "shuffled", "split_urls"]

_SEPARATOR = re.compile(r"\s*,\s*(?=amqps?://)", re.IGNORECASE)
_EXAMPLE = "amqp://user:password@host1:5672/%2F,amqp://user:password@host2:5672/%2F"


_SSL_OPTIONS = re.compile(r"([?&;]ssl_options=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Works on the raw text rather than a URL parser's idea of it: a password with an unencoded
    ``/``, ``?``, ``#`` or ``@`` confuses parsers, and must still never be shown.
    """
    if not isinstance(url, str):
        return "<not a url>"
    # pika's ssl_options query argument may carry a key password: hide all of it.
    url = _SSL_OPTIONS.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "<unparsable url>"
    if "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


def split_urls(value: object) -> tuple[str, ...]:
    """The URLs of ``value`` (one URL, a comma-separated list, or a sequence), each checked.

    Raises ConfigError for an empty list, an empty entry, a URL that is not AMQP, a host list
    inside one URL, or URLs that name different users or vhosts.
    """
    if isinstance(value, str):
        parts = [p.strip() for p in _SEPARATOR.split(value.strip())] if value.strip() else []
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        parts = [p.strip() for v in value for p in _SEPARATOR.split(v.strip())]
    else:
        raise ConfigError(
            f"AMQP URL must be a string or a sequence of strings, got {type(value).__name__}"
        )
    if not parts or parts == [""]:
        raise ConfigError("AMQP URL is empty (set AMQP_URL or pass url=...)")
    for position, url in enumerate(parts, 1):
        where = f" (URL {position} of {len(parts)})" if len(parts) > 1 else ""
        check_url(url, where)
    _check_same_login(parts)
    return tuple(parts)


def join_urls(value: str | Sequence[str]) -> str:
    """One string for ``value`` (a URL, a list, or a sequence): the form AMQP_URL takes."""
    return ",".join(split_urls(value))


def check_url(url: str, where: str = "") -> None:
    """Raise ConfigError unless ``url`` is one usable AMQP URL."""
    if not url:
        raise ConfigError(f"empty entry in the AMQP URL list{where}: write {_EXAMPLE}")
    if "," in url.split("?", 1)[0]:
        raise ConfigError(
            f"AMQP URL {redact_url(url)!r}{where} lists several hosts in one URL: give each "
            f"broker its own full URL, separated by commas, e.g. {_EXAMPLE}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigError(f"invalid AMQP URL {redact_url(url)!r}{where}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(
            f"AMQP URL must start with amqp:// or amqps://, got {redact_url(url)!r}{where}"
        )
    if not parts.hostname:
        raise ConfigError(f"AMQP URL has no host: {redact_url(url)!r}{where}")


def host_of(url: str) -> str:
    """``host:port`` of ``url``, for messages (no user, no password)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def shuffled(urls: Sequence[str]) -> list[str]:
    """``urls`` in a random order: clients given the same list spread over the nodes."""
    order = list(urls)
    random.shuffle(order)
    return order


def _check_same_login(urls: list[str]) -> None:
    if len(urls) < 2:
        return
    logins = {(_user(u), _vhost(u)) for u in urls}
    if len(logins) > 1:
        raise ConfigError(
            "the URLs of a list must name the same user and vhost (they are one cluster's "
            f"nodes); got {', '.join(redact_url(u) for u in urls)}"
        )


def _vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _user(url: str) -> str:
    user = urlsplit(url).username
    return unquote(user) if user else "guest"
