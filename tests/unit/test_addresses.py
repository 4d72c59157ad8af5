"""Unit tests of common.addresses and of Settings with several broker URLs. No broker."""

from __future__ import annotations

from typing import Any

import pytest

from reqrep.common.addresses import host_of, join_urls, shuffled, split_urls
from reqrep.common.config import Settings
from reqrep.common.errors import ConfigError

PASSWORD = "s3cr3t-pw"  # noqa: S105 - a fake, to check that it never shows
U1 = f"amqp://app:{PASSWORD}@rabbit1:5672/%2F"
U2 = f"amqp://app:{PASSWORD}@rabbit2:5673/%2F"
U3 = f"amqps://app:{PASSWORD}@rabbit3/%2F"


def test_one_url_is_a_list_of_one() -> None:
    assert split_urls(U1) == (U1,)


@pytest.mark.parametrize(
    "value",
    [
        f"{U1},{U2},{U3}",
        f"{U1}, {U2} ,{U3}",
        [U1, U2, U3],
        (U1, U2, U3),
        [f"{U1},{U2}", U3],
    ],
)
def test_several_full_urls(value: Any) -> None:
    assert split_urls(value) == (U1, U2, U3)


def test_a_comma_inside_the_query_does_not_split() -> None:
    url = "amqps://app:pw@rabbit1/%2F?ssl_options={'a':1,'b':2}"
    assert split_urls(f"{url},{U1.replace(PASSWORD, 'pw')}")[0] == url


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ([], "empty"),
        (f"{U1},", "several hosts"),  # a trailing comma is a host list in the last URL's path
        (f"amqp://app:{PASSWORD}@rabbit1:5672,rabbit2:5673/%2F", "several hosts"),
        (f"{U1},rabbit2:5673", "several hosts"),
        (f"{U1},http://rabbit2/", "several hosts"),
        ([U1, ""], "empty entry"),
        ([U1, "ftp://x"], r"amqp://.*URL 2 of 2"),
        ([U1, 5], "sequence of strings"),
        (42, "sequence of strings"),
        ([U1, U1.replace("app:", "other:")], "same user and vhost"),
        ([U1, U1.replace("%2F", "prod")], "same user and vhost"),
    ],
)
def test_bad_lists_get_a_clear_config_error(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        split_urls(value)
    assert PASSWORD not in str(info.value)


def test_vhost_spellings_of_the_default_are_the_same() -> None:
    assert len(split_urls(["amqp://h1:5672", "amqp://h2:5672/%2F"])) == 2


def test_join_urls_gives_the_amqp_url_form() -> None:
    assert join_urls([U1, U2]) == f"{U1},{U2}"


def test_host_of_names_host_and_port_only() -> None:
    assert host_of(U1) == "rabbit1:5672"
    assert host_of(U3) == "rabbit3:5671"
    assert host_of("amqp://u:p@[::1]:5680/") == "[::1]:5680"


def test_shuffled_keeps_every_url_and_varies_the_order() -> None:
    urls = [f"amqp://h{i}:5672/" for i in range(6)]
    orders = {tuple(shuffled(urls)) for _ in range(50)}
    assert all(sorted(order) == sorted(urls) for order in orders)
    assert len(orders) > 1


def test_settings_accept_a_sequence_and_keep_the_amqp_url_form() -> None:
    settings = Settings(url=[U1, U2])  # type: ignore[arg-type]  # sequences are accepted too
    assert settings.url == f"{U1},{U2}"
    assert settings.urls == (U1, U2)
    assert settings.username == "app"
    assert settings.replace(url=[U3.replace("amqps", "amqp")]).urls == (
        U3.replace("amqps", "amqp"),
    )


def test_settings_from_env_with_a_list() -> None:
    settings = Settings.from_env({"AMQP_URL": f"{U1},{U2}"})
    assert settings.urls == (U1, U2)
    assert settings.redacted_url == U1.replace(PASSWORD, "***") + "," + U2.replace(PASSWORD, "***")
    assert PASSWORD not in repr(settings)


def test_settings_from_env_with_a_host_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="several hosts") as info:
        Settings.from_env({"AMQP_URL": f"amqp://g:{PASSWORD}@h:5731,h:5732/%2F"})
    assert PASSWORD not in str(info.value)
