"""ConnectionThread without a broker: its guards and the errors it builds from settings."""

from __future__ import annotations

import pytest

from reqrep.common import ConfigError, Settings
from reqrep.common.connection import ConnectionThread


def test_a_bad_url_error_does_not_quote_ssl_options() -> None:
    url = "amqps://u:pw@host/?ssl_options={'password':'k3y'}&ssl_options={'password':'k3y'}"
    with pytest.raises(ConfigError) as info:
        ConnectionThread(Settings(url=url), name="t")
    assert "k3y" not in str(info.value)


def test_a_guarded_callback_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_frame: object) -> None:
        raise RuntimeError("bug in a callback")

    ConnectionThread(Settings(), name="t").guarded(boom)("frame")
    assert "bug in a callback" in caplog.text
