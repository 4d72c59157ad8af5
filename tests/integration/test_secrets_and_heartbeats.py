"""No password in logs at DEBUG; heartbeats survive handlers that run for many intervals."""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from reqrep.common import BrokerUnreachable, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Service, Worker


@pytest.fixture(scope="module")
def secret_url(amqp_url: str) -> Iterator[tuple[str, str]]:
    """A broker user whose password appears nowhere else (guest's equals its user name)."""
    user, password = f"reqrep-test-{secrets.token_hex(4)}", f"pw-{secrets.token_hex(12)}"
    subprocess.run(
        ["rabbitmqctl", "-q", "add_user", user, password],
        check=True,
        timeout=60,
        capture_output=True,
    )
    try:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", "/", user, ".*", ".*", ".*"],
            check=True,
            timeout=60,
            capture_output=True,
        )
        host = urlsplit(amqp_url)
        yield f"amqp://{user}:{password}@{host.hostname}:{host.port or 5672}/%2F", password
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], check=True, timeout=60, capture_output=True
        )


def _fail(_payload: object) -> None:
    raise ValueError("no")


def _block(seconds: float) -> float:
    time.sleep(seconds)  # holds its handler thread, as CPU-bound or blocking code would
    return seconds


class Everything(logging.Handler):
    """Formats every record, exceptions included, as a deployment's log file would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("pika", "reqrep"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_password_never_logged_at_debug(
    secret_url: tuple[str, str], prefix: str, service_name: str, all_logs: Everything
) -> None:
    url, password = secret_url
    settings = Settings(url=url, queue_prefix=prefix, timeout=10, connect_timeout=3)
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    service.add("fail", _fail)
    with (
        Worker(service, settings=settings, concurrency=2) as worker,
        Requestor(settings=settings, service=service_name) as rq,
    ):
        assert rq.call("echo", "hi") == "hi"
        with pytest.raises(Exception, match="no"):
            rq.call("fail")
        texts = [repr(rq), repr(worker), repr(settings), str(settings)]
    wrong = settings.replace(url=url.replace(password, password + "-wrong"))
    with pytest.raises(BrokerUnreachable) as info, Requestor(settings=wrong, service="x"):
        pass
    texts.append(str(info.value))
    logged = "\n".join(all_logs.text)
    assert "DEBUG" in logged  # records at DEBUG were captured, from both pika and reqrep
    assert "pika" in logged
    assert "reqrep" in logged
    for text in [logged, *texts]:
        assert password not in text


def test_heartbeats_survive_a_long_handler(amqp_url: str, prefix: str, service_name: str) -> None:
    """Heartbeat 1 s; the handler holds its thread for 5 s (the broker closes a connection
    after missing about two intervals). The worker's connection must never drop."""
    url = f"{amqp_url}?heartbeat=1" if "?" not in amqp_url else f"{amqp_url}&heartbeat=1"
    settings = Settings(url=url, queue_prefix=prefix, timeout=30)
    service = Service(service_name)
    service.add("block", _block)
    with (
        Worker(service, settings=settings, concurrency=1) as worker,
        Requestor(settings=settings, service=service_name) as rq,
    ):
        assert rq.call("block", 5) == 5
        assert (worker.reconnects, rq.reconnects) == (0, 0)
        assert worker.stats.received == 1  # delivered once: never redelivered
