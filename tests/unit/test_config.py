"""Unit tests of common.config: Settings and redact_url. No broker, no network."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from reqrep.common import topology
from reqrep.common.config import DEFAULT_URL, Settings, redact_url
from reqrep.common.errors import ConfigError

PASSWORD = "s3cr3t-pw"  # noqa: S105 - a fake, to check that it never shows
URL = f"amqp://alice:{PASSWORD}@broker.example:5672/%2F"
ENV_VARS = (
    "AMQP_URL",
    "REQREP_TIMEOUT",
    "REQREP_CONNECT_TIMEOUT",
    "REQREP_HEARTBEAT",
    "REQREP_QUEUE_PREFIX",
    "REQREP_QUEUE_TYPE",
)


# -- defaults and validation -------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings()
    assert settings.url == DEFAULT_URL
    assert settings.timeout == 30.0
    assert settings.connect_timeout == 10.0
    assert settings.heartbeat == 30
    assert settings.queue_prefix == "reqrep."
    assert settings.queue_type == "quorum"


def test_default_url_is_valid_amqp() -> None:
    assert DEFAULT_URL.startswith("amqp://")
    assert Settings(url=DEFAULT_URL).url == DEFAULT_URL


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", ""),
        ("url", "http://broker.example/"),
        ("url", "broker.example:5672"),
        ("url", "amqp://"),
        ("url", "amqp://broker.example:99999/"),
        ("url", "amqp://broker.example:port/"),
        ("timeout", 0),
        ("timeout", -1.0),
        ("timeout", math.nan),
        ("connect_timeout", 0),
        ("connect_timeout", -5.0),
        ("heartbeat", -1),
        ("queue_type", "stream"),
        ("queue_type", ""),
        ("inline_budget", 0),
        ("inline_budget", -0.01),
        ("inline_budget", math.inf),
        ("inline_budget", True),
        ("inline_budget", "10ms"),
    ],
)
def test_invalid_values_raise_config_error(field: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        Settings(**{field: value})


def test_config_error_names_the_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"queue_type.*'stream'"):
        Settings(queue_type="stream")


@pytest.mark.parametrize(
    "url",
    [
        "amqps://u:p@broker.example:5671/vhost",
        "amqp://broker.example",
        "amqp://u:p@[::1]:5672/%2F",
    ],
)
def test_valid_urls_are_accepted(url: str) -> None:
    assert Settings(url=url).url == url


def test_heartbeat_zero_disables_and_is_valid() -> None:
    assert Settings(heartbeat=0).heartbeat == 0


def test_classic_queue_type_is_valid() -> None:
    assert Settings(queue_type="classic").queue_type == "classic"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.timeout = 1.0  # type: ignore[misc]


# -- from_env ----------------------------------------------------------------------------------


def test_from_env_reads_every_variable_with_its_type() -> None:
    env = {
        "AMQP_URL": URL,
        "REQREP_TIMEOUT": "2.5",
        "REQREP_CONNECT_TIMEOUT": "3",
        "REQREP_HEARTBEAT": "0",
        "REQREP_QUEUE_PREFIX": "svc.",
        "REQREP_QUEUE_TYPE": "classic",
    }
    settings = Settings.from_env(env)
    assert settings == Settings(
        url=URL,
        timeout=2.5,
        connect_timeout=3.0,
        heartbeat=0,
        queue_prefix="svc.",
        queue_type="classic",
    )
    assert isinstance(settings.heartbeat, int)
    assert isinstance(settings.connect_timeout, float)


def test_the_inline_budget_defaults_to_10_ms_and_comes_from_the_environment() -> None:
    assert Settings().inline_budget == 0.010
    assert Settings.from_env({"REQREP_INLINE_BUDGET": "0.002"}).inline_budget == 0.002
    assert Settings(inline_budget=1).inline_budget == 1


def test_an_inline_budget_error_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"inline_budget.*-1"):
        Settings(inline_budget=-1)


def test_from_env_with_empty_mapping_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_ignores_empty_values() -> None:
    assert Settings.from_env({"REQREP_TIMEOUT": "", "AMQP_URL": ""}) == Settings()


def test_explicit_mapping_is_used_instead_of_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQREP_TIMEOUT", "7")
    assert Settings.from_env({}).timeout == 30.0


def test_from_env_without_mapping_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REQREP_TIMEOUT", "7")
    assert Settings.from_env() == Settings(timeout=7.0)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("REQREP_TIMEOUT", "abc"),
        ("REQREP_TIMEOUT", "1s"),
        ("REQREP_CONNECT_TIMEOUT", "ten"),
        ("REQREP_HEARTBEAT", "1.5"),
        ("REQREP_HEARTBEAT", "x"),
        ("REQREP_INLINE_BUDGET", "10ms"),
    ],
)
def test_from_env_unparsable_value_raises_config_error_naming_it(var: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: raw})
    assert var in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("REQREP_TIMEOUT", "0"),
        ("REQREP_TIMEOUT", "nan"),
        ("REQREP_HEARTBEAT", "-1"),
        ("REQREP_QUEUE_TYPE", "stream"),
        ("AMQP_URL", "http://broker.example/"),
        ("REQREP_INLINE_BUDGET", "0"),
        ("REQREP_INLINE_BUDGET", "-1"),
    ],
)
def test_from_env_parsable_but_invalid_value_raises_config_error(var: str, raw: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({var: raw})


def test_overrides_win_over_env() -> None:
    env = {"REQREP_TIMEOUT": "5", "REQREP_QUEUE_TYPE": "classic"}
    settings = Settings.from_env(env, timeout=9.0, queue_type="quorum")
    assert settings.timeout == 9.0
    assert settings.queue_type == "quorum"


def test_none_overrides_are_ignored() -> None:
    env = {"REQREP_TIMEOUT": "5", "AMQP_URL": URL}
    settings = Settings.from_env(env, timeout=None, url=None)
    assert settings.timeout == 5.0
    assert settings.url == URL


def test_none_override_without_env_keeps_default() -> None:
    assert Settings.from_env({}, heartbeat=None).heartbeat == 30


def test_unknown_override_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="colour"):
        Settings.from_env({}, colour="blue")


def test_override_is_validated() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"REQREP_TIMEOUT": "5"}, timeout=-1.0)


# -- replace and request_queue -----------------------------------------------------------------


def test_replace_applies_changes_and_keeps_the_rest() -> None:
    base = Settings(url=URL, queue_prefix="a.")
    changed = base.replace(timeout=4.0)
    assert changed.timeout == 4.0
    assert changed.url == URL
    assert changed.queue_prefix == "a."
    assert base.timeout == 30.0


def test_replace_ignores_none() -> None:
    base = Settings(timeout=4.0)
    assert base.replace(timeout=None, url=None) == base


def test_replace_validates() -> None:
    with pytest.raises(ConfigError):
        Settings().replace(timeout=0)


def test_request_queue_is_prefix_plus_service() -> None:
    assert Settings().request_queue("demo") == "reqrep.demo"
    assert Settings(queue_prefix="test-1.").request_queue("svc") == "test-1.svc"


def test_an_empty_prefix_in_the_environment_means_no_prefix() -> None:
    """Set and empty, REQREP_QUEUE_PREFIX names queues by the service alone; it used to fall
    back to the default prefix without a word."""
    settings = Settings.from_env({"REQREP_QUEUE_PREFIX": ""})
    assert settings.queue_prefix == ""
    assert settings.request_queue("rpc_queue") == "rpc_queue"
    assert Settings.from_env({}).queue_prefix == "reqrep."


def test_without_a_prefix_reqreps_own_names_keep_the_default_namespace() -> None:
    """No bare ``dlx``, ``control`` or ``requests`` exchange: they say nothing of whose they
    are."""
    assert topology.request_exchange("") == "reqrep.requests"
    assert topology.dead_letter_exchange("") == "reqrep.dlx"
    assert topology.control_exchange("") == "reqrep.control"
    assert topology.control_queue("", "billing", "ab12") == "reqrep.control.billing.ab12"
    assert topology.dead_letter_queue(Settings(queue_prefix="").request_queue("b")) == "b.dead"
    # A prefix of one's own keeps its names as they were.
    assert topology.request_exchange("test-1.") == "test-1.requests"
    assert topology.control_queue("test-1.", "b", "ab12") == "test-1.control.b.ab12"


# -- the password never shows ------------------------------------------------------------------


def test_repr_and_str_hide_the_password() -> None:
    settings = Settings(url=URL, timeout=3.0)
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert PASSWORD not in text
        assert "alice:***@broker.example" in text
        assert "timeout=3.0" in text


def test_repr_of_settings_from_env_hides_the_password() -> None:
    settings = Settings.from_env({"AMQP_URL": URL})
    assert PASSWORD not in repr(settings)


def test_repr_lists_every_field() -> None:
    text = repr(Settings())
    for field in dataclasses.fields(Settings):
        assert f"{field.name}=" in text


def test_repr_shows_url_once() -> None:
    assert repr(Settings(url=URL)).count("url=") == 1


def test_redacted_url_property() -> None:
    assert Settings(url=URL).redacted_url == "amqp://alice:***@broker.example:5672/%2F"


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://alice:{PASSWORD}@broker.example/",
        f"amqp://alice:{PASSWORD}@broker.example:badport/",
        f"amqp://alice:{PASSWORD}@broker.example:99999/",
        f"amqp://alice:{PASSWORD}@/",
    ],
)
def test_config_errors_hide_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(url=url)
    assert PASSWORD not in str(info.value)


def test_config_error_hides_a_password_with_an_unencoded_slash() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(url="amqp://alice:pa/ss@broker.example/")
    assert "pa/ss" not in str(info.value)


def test_infinite_timeout_is_refused() -> None:
    with pytest.raises(ConfigError):
        Settings(timeout=math.inf)


# -- redact_url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, "amqp://alice:***@broker.example:5672/%2F"),
        ("amqps://bob:pw@host/vhost", "amqps://bob:***@host/vhost"),
        ("amqp://alice:pw@[::1]:5672/%2F", "amqp://alice:***@[::1]:5672/%2F"),
        ("amqp://alice:pw@[2001:db8::7]/", "amqp://alice:***@[2001:db8::7]/"),
        ("amqp://alice:p%40ss%3Aw%2Frd@host/", "amqp://alice:***@host/"),
        ("amqp://al%40ice:pw@host/", "amqp://al%40ice:***@host/"),
        ("amqp://alice:@host/", "amqp://alice:***@host/"),
        ("amqp://:pw@host/", "amqp://:***@host/"),
        ("amqp://alice:pw@host?heartbeat=5", "amqp://alice:***@host?heartbeat=5"),
    ],
)
def test_redact_url_hides_the_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_hides_a_percent_encoded_password_in_both_forms() -> None:
    redacted = redact_url("amqp://alice:p%40ss@host/")
    assert "p%40ss" not in redacted
    assert "p@ss" not in redacted


@pytest.mark.parametrize(
    "url",
    ["amqp://alice@host/", "amqp://host:5672/%2F", "amqp://[::1]:5672/", "not a url", ""],
)
def test_redact_url_without_password_is_unchanged(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize(
    "url",
    [f"amqp://alice:{PASSWORD}@host:notaport/", f"amqp://alice:{PASSWORD}@[::1/"],
)
def test_redact_url_of_garbage_still_hides_the_password(url: str) -> None:
    redacted = redact_url(url)
    assert PASSWORD not in redacted
    assert redacted.startswith("amqp://alice:***@")


# -- max_pending and TLS -----------------------------------------------------------------------


def test_max_pending_and_tls_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "REQREP_MAX_PENDING": "50",
            "REQREP_TLS_CA": "/etc/ca.pem",
            "REQREP_TLS_CERT": "/etc/client.pem",
            "REQREP_TLS_KEY": "/etc/client.key",
            "REQREP_TLS_KEY_PASSWORD": "s3cret-key-pw",
            "REQREP_TLS_SERVER_NAME": "broker.example",
        }
    )
    assert settings.max_pending == 50
    assert settings.tls_ca == "/etc/ca.pem"
    assert settings.tls_cert == "/etc/client.pem"
    assert settings.tls_key == "/etc/client.key"
    assert settings.tls_key_password == "s3cret-key-pw"  # noqa: S105 - a test value
    assert settings.tls_server_name == "broker.example"
    assert "s3cret-key-pw" not in repr(settings)
    assert "tls_key_password='***'" in repr(settings)


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_max_pending_must_be_a_positive_whole_number(value: object) -> None:
    with pytest.raises(ConfigError, match="max_pending"):
        Settings(max_pending=value)  # type: ignore[arg-type]


def test_a_tls_key_password_is_never_shown_in_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(tls_key_password="")
    assert "tls_key_password" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "amqps://alice:pw@host/?ssl_options={'password':'k3y'}",
        "amqps://alice:pw@host/?heartbeat=5&ssl_options=%7B%27password%27%3A%27k3y%27%7D",
    ],
)
def test_redact_url_hides_ssl_options(url: str) -> None:
    redacted = redact_url(url)
    assert "k3y" not in redacted
    assert "ssl_options=***" in redacted
    assert "pw" not in redacted
