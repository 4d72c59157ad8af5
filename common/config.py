"""Settings shared by requestors and workers.

Nothing is read at import time: ``Settings.from_env()`` reads the environment when it is called,
and explicit arguments win over the environment. The password in the URL never appears in a repr,
a log line or an exception: use ``redacted_url`` wherever the URL is shown. ``url`` may list
several brokers (full URLs separated by commas; see ``common/addresses.py``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from reqrep.common import topology
from reqrep.common.addresses import redact_url, split_urls
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
    "dedupe_bytes": ("REQREP_DEDUPE_BYTES", int),
    "max_pending": ("REQREP_MAX_PENDING", int),
    "tls_ca": ("REQREP_TLS_CA", str),
    "tls_cert": ("REQREP_TLS_CERT", str),
    "tls_key": ("REQREP_TLS_KEY", str),
    "tls_key_password": ("REQREP_TLS_KEY_PASSWORD", str),
    "tls_server_name": ("REQREP_TLS_SERVER_NAME", str),
    "wait_for_workers": ("REQREP_WAIT_FOR_WORKERS", _flag),
    "fail_fast": ("REQREP_FAIL_FAST", _flag),
    "dlq_max_length": ("REQREP_DLQ_MAX_LENGTH", int),
    "inline_budget": ("REQREP_INLINE_BUDGET", float),
}
# Settings whose variable, set and empty, means an empty value rather than the default.
_EMPTY_IS_A_VALUE = frozenset({"queue_prefix"})
_TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key", "tls_key_password", "tls_server_name")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Connection and call settings.

    ``url`` is an AMQP URL (``amqp://user:password@host:port/vhost``), or several separated by
    commas (the nodes of a cluster; a sequence of URLs is joined so); ``timeout`` the default call
    timeout in seconds; ``queue_prefix`` + service name is a service's request queue (an empty
    prefix, also ``REQREP_QUEUE_PREFIX=`` set and empty, names it by the service alone; reqrep's
    exchanges then keep the names of the default prefix: ``topology.namespace``).
    ``reconnect_max`` caps the backoff between reconnection attempts; ``max_message_bytes`` bounds
    request and reply bodies, checked on both sides; a request whose worker died
    ``max_redeliveries`` times is refused as poison on its next delivery.
    ``sign_replies`` makes workers stamp replies with their broker user (``user_id``), which the
    broker verifies, so requestors can accept replies from trusted users only.
    ``persistent=False`` trades durability for speed: requests are transient and neither side
    uses publisher confirms (a worker acks right after writing the reply, which the broker reads
    first on that channel); a request the broker loses is then a CallTimeout, not an error.
    ``dedupe_bytes`` bounds the memory of a worker's reply cache (0 turns it off).
    ``max_pending`` bounds a requestor's calls in flight (held ones included): one more fails at
    once with TooManyPending. ``tls_*`` apply to ``amqps://`` URLs (see ``reqrep.common.tls``);
    ``tls_key_password`` never appears in a repr.
    ``wait_for_workers=False`` (the default) makes a call to a service whose queue has no
    consumer fail at once with NoWorkers; ``True`` lets it wait in the queue for a worker.
    ``fail_fast=True`` makes a requestor's calls fail at once with BrokerUnreachable while its
    connection is down, instead of being held (within their deadline) until it is back.
    ``dlq_max_length`` caps a service's dead-letter queue (the oldest are dropped); like every
    queue argument it takes effect when workers first declare the queue.
    ``inline_budget`` (seconds) is how long an inline handler (``inline=True``: run on the
    worker's I/O thread) may run before the worker logs where it is and counts an overrun.
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
    dedupe_bytes: int = 64 * 1024 * 1024
    max_pending: int = 10_000
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_key_password: str | None = dataclasses.field(default=None, repr=False)
    tls_server_name: str | None = None
    wait_for_workers: bool = False
    dlq_max_length: int = topology.DEAD_LETTER_MAX_LENGTH
    fail_fast: bool = False
    inline_budget: float = 0.010

    def __post_init__(self) -> None:
        # A sequence of URLs is kept as the one string AMQP_URL would hold.
        object.__setattr__(self, "url", ",".join(split_urls(self.url)))
        check_seconds("timeout", self.timeout)
        check_seconds("connect_timeout", self.connect_timeout)
        if isinstance(self.heartbeat, bool) or not isinstance(self.heartbeat, int):
            raise ConfigError(f"heartbeat must be whole seconds, got {self.heartbeat!r}")
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be >= 0 seconds, got {self.heartbeat!r}")
        if not isinstance(self.queue_prefix, str):
            raise ConfigError(f"queue_prefix must be a string, got {self.queue_prefix!r}")
        check_seconds("reconnect_max", self.reconnect_max)
        check_seconds("inline_budget", self.inline_budget)
        for name in ("max_message_bytes", "max_redeliveries", "max_pending", "dlq_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.dedupe_bytes, bool) or not isinstance(self.dedupe_bytes, int):
            raise ConfigError(f"dedupe_bytes must be a whole number, got {self.dedupe_bytes!r}")
        if self.dedupe_bytes < 0:
            raise ConfigError(f"dedupe_bytes must be >= 0, got {self.dedupe_bytes!r}")
        for name in ("sign_replies", "persistent", "wait_for_workers", "fail_fast"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in _TLS_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string or None")
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError(f"queue_type must be one of {QUEUE_TYPES}, got {self.queue_type!r}")

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={_shown(f, getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.name != "url"
        )
        return f"Settings(url={self.redacted_url!r}, {fields})"

    @property
    def urls(self) -> tuple[str, ...]:
        """The broker URLs, in the order given (one, or a cluster's nodes)."""
        return split_urls(self.url)

    @property
    def username(self) -> str:
        """The broker user of the URLs (guest when they name none, as pika assumes)."""
        try:
            user = urlsplit(self.urls[0]).username
        except ValueError:
            return ""
        return unquote(user) if user else "guest"

    @property
    def redacted_url(self) -> str:
        """The URL(s) with the password hidden; safe to log."""
        return ",".join(redact_url(url) for url in self.urls)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); non-None ``overrides`` win.

        A variable set to the empty string counts as unset, except ``REQREP_QUEUE_PREFIX``:
        empty, it means no prefix."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (var, kind) in _ENV_FIELDS.items():
            raw = env.get(var)
            if raw is None or (raw == "" and name not in _EMPTY_IS_A_VALUE):
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
        """The name of ``service``'s request queue; ConfigError if it is too long for one."""
        return topology.check_queue_name(topology.request_queue(self.queue_prefix, service))


def _shown(field: dataclasses.Field[Any], value: object) -> str:
    """A field's value for a repr; secrets (``repr=False``) only say whether they are set."""
    return repr(value) if field.repr or value is None else "'***'"


def check_seconds(name: str, value: object) -> None:
    """A finite, positive number of seconds: every wait in reqrep ends."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number of seconds > 0, got {value!r}")
