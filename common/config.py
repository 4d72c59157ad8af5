"""Settings shared by requestors and workers.

Nothing is read at import time: ``Settings.from_env()`` reads the environment when it is called,
and explicit arguments win over the environment. The password in the URL never appears in a repr,
a log line or an exception: use ``redacted_url`` wherever the URL is shown.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from reqrep.common import topology
from reqrep.common.errors import ConfigError

__all__ = ["DEFAULT_URL", "QUEUE_TYPES", "Settings", "check_seconds", "redact_url"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE_TYPES = ("quorum", "classic")


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_flag.__name__ = "boolean (1/0, true/false, yes/no, on/off)"

_ENV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "url": ("AMQP_URL", str),
    "timeout": ("REQREP_TIMEOUT", float),
    "connect_timeout": ("REQREP_CONNECT_TIMEOUT", float),
    "heartbeat": ("REQREP_HEARTBEAT", int),
    "queue_prefix": ("REQREP_QUEUE_PREFIX", str),
    "queue_type": ("REQREP_QUEUE_TYPE", str),
    "reconnect_max": ("REQREP_RECONNECT_MAX", float),
    "max_message_bytes": ("REQREP_MAX_MESSAGE_BYTES", int),
    "max_redeliveries": ("REQREP_MAX_REDELIVERIES", int),
    "sign_replies": ("REQREP_SIGN_REPLIES", _flag),
    "persistent": ("REQREP_PERSISTENT", _flag),
    "wait_for_workers": ("REQREP_WAIT_FOR_WORKERS", _flag),
    "dlq_max_length": ("REQREP_DLQ_MAX_LENGTH", int),
}


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Works on the raw text rather than a URL parser's idea of it: a password with an unencoded
    ``/``, ``?``, ``#`` or ``@`` confuses parsers, and must still never be shown.
    """
    if not isinstance(url, str):
        return "<not a url>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "<unparsable url>"
    if "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Connection and call settings.

    ``url`` is an AMQP URL (``amqp://user:password@host:port/vhost``); ``timeout`` the default call
    timeout in seconds; ``queue_prefix`` + service name is a service's request queue.
    ``reconnect_max`` caps the backoff between reconnection attempts; ``max_message_bytes`` bounds
    request and reply bodies, checked on both sides; a request delivered more than
    ``max_redeliveries`` times again (its worker died each time) is refused as poison.
    ``sign_replies`` makes workers stamp replies with their broker user (``user_id``), which the
    broker verifies, so requestors can accept replies from trusted users only.
    ``persistent=False`` trades durability for speed: requests are transient and neither side
    uses publisher confirms (a worker acks right after writing the reply, which the broker reads
    first on that channel); a request the broker loses is then a CallTimeout, not an error.
    ``wait_for_workers=False`` (the default) makes a call to a service whose queue has no
    consumer fail at once with NoWorkers; ``True`` lets it wait in the queue for a worker.
    ``dlq_max_length`` caps a service's dead-letter queue (the oldest are dropped); like every
    queue argument it takes effect when workers first declare the queue.
    """

    url: str = dataclasses.field(default=DEFAULT_URL, repr=False)
    timeout: float = 30.0
    connect_timeout: float = 10.0
    heartbeat: int = 30
    queue_prefix: str = "reqrep."
    queue_type: str = "quorum"
    reconnect_max: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_redeliveries: int = 5
    sign_replies: bool = False
    persistent: bool = True
    wait_for_workers: bool = False
    dlq_max_length: int = topology.DEAD_LETTER_MAX_LENGTH

    def __post_init__(self) -> None:
        _check_url(self.url)
        check_seconds("timeout", self.timeout)
        check_seconds("connect_timeout", self.connect_timeout)
        if isinstance(self.heartbeat, bool) or not isinstance(self.heartbeat, int):
            raise ConfigError(f"heartbeat must be whole seconds, got {self.heartbeat!r}")
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be >= 0 seconds, got {self.heartbeat!r}")
        if not isinstance(self.queue_prefix, str):
            raise ConfigError(f"queue_prefix must be a string, got {self.queue_prefix!r}")
        check_seconds("reconnect_max", self.reconnect_max)
        for name in ("max_message_bytes", "max_redeliveries", "dlq_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("sign_replies", "persistent", "wait_for_workers"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError(f"queue_type must be one of {QUEUE_TYPES}, got {self.queue_type!r}")

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        return f"Settings(url={self.redacted_url!r}, {fields})"

    @property
    def username(self) -> str:
        """The broker user of the URL (guest when the URL names none, as pika assumes)."""
        try:
            user = urlsplit(self.url).username
        except ValueError:
            return ""
        return unquote(user) if user else "guest"

    @property
    def redacted_url(self) -> str:
        """The URL with its password hidden; safe to log."""
        return redact_url(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); non-None ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (var, kind) in _ENV_FIELDS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def request_queue(self, service: str) -> str:
        """The name of ``service``'s request queue."""
        return topology.request_queue(self.queue_prefix, service)


def check_seconds(name: str, value: object) -> None:
    """A finite, positive number of seconds: every wait in reqrep ends."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number of seconds > 0, got {value!r}")


def _check_url(url: str) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError("AMQP URL is empty (set AMQP_URL or pass url=...)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigError(f"invalid AMQP URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"AMQP URL must start with amqp:// or amqps://, got {redact_url(url)!r}")
    if not parts.hostname:
        raise ConfigError(f"AMQP URL has no host: {redact_url(url)!r}")
