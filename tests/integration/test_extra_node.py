"""Tests on a private RabbitMQ node (``scripts/rmq-node.sh``), never the shared broker: a memory
alarm (``connection.blocked``) and a TLS listener with a CA and certificates made here.

They need root and ``rabbitmq-server`` (skipped otherwise, failed with ``CI=true``); starting the
node takes 10-20 s, once for the module.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid

import pika
import pytest
from click.testing import CliRunner

from reqrep.cli._call import call_command
from reqrep.common import BrokerUnreachable, CallTimeout, ConfigError, Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.extra_node import Alarm, ExtraNode, TlsFiles
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.extra_node, pytest.mark.timeout(240)]

# -- connection.blocked ------------------------------------------------------------------------


def test_blocked_calls_time_out_on_time_and_close_is_prompt(
    node_settings: Settings, alarm: Alarm, caplog: pytest.LogCaptureFixture
) -> None:
    with Worker(build("demo"), settings=node_settings, concurrency=2):
        rq = Requestor(settings=node_settings, service="demo").open()
        try:
            assert rq.call("echo", 1) == 1
            alarm.on()
            with pytest.raises(CallTimeout):
                rq.call("echo", 2, timeout=1)  # this publish gets the connection blocked
            wait_until(lambda: rq.blocked is not None, 10, "connection.blocked")
            # Held, not written into a socket the broker does not read; the error says why.
            with pytest.raises(CallTimeout, match="blocked publishing"):
                rq.call_async("echo", 3, timeout=0.5).result(5)
        finally:
            with caplog.at_level(logging.INFO, logger="reqrep.connection"):
                rq.close()
        # It took 10 s: a close the broker never read. Now the socket is dropped at once.
        assert "blocked by the broker; dropping the socket" in caplog.text
        assert not any(t.name == rq.name for t in threading.enumerate())
        alarm.off()


def test_held_calls_go_out_when_the_broker_unblocks(node_settings: Settings, alarm: Alarm) -> None:
    with (
        Worker(build("demo"), settings=node_settings, concurrency=2),
        Requestor(settings=node_settings, service="demo") as rq,
    ):
        alarm.on()
        with pytest.raises(CallTimeout):
            rq.call("echo", "gets us blocked", timeout=0.5)
        wait_until(lambda: rq.blocked is not None, 10, "connection.blocked")
        held = rq.call_async("echo", "held", timeout=30)
        alarm.off()
        assert held.result(20) == "held"
        assert rq.call("echo", "after") == "after"


def test_cli_call_ends_at_its_timeout_and_closes_at_once(
    node: ExtraNode, node_settings: Settings, alarm: Alarm, caplog: pytest.LogCaptureFixture
) -> None:
    """Run in-process (click's runner), so that the log of its close can be read. It took 13 s:
    a close that waited for the broker's answer, which a blocked connection never gets.

    The request queue exists, without a worker, and the call is told to wait for one: so the
    request is published into the blocked connection (not refused at once by the NoWorkers
    check, which an alarm does not block)."""
    queue = node_settings.request_queue("demo")
    requests = f"{node_settings.queue_prefix}requests"
    with pika.BlockingConnection(pika.URLParameters(node.url)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue)  # bound as a worker binds it
        channel.exchange_declare(requests, exchange_type="direct", durable=True)
        channel.queue_bind(queue, requests, routing_key=queue)
    alarm.on()
    env = {"AMQP_URL": node.url, "REQREP_QUEUE_PREFIX": node_settings.queue_prefix}
    with caplog.at_level(logging.INFO, logger="reqrep.connection"):
        result = CliRunner().invoke(
            call_command, ["echo", "1", "--timeout", "3", "--wait-for-workers"], env=env
        )
    assert result.exit_code == 3, result.output  # timeout
    assert "blocked by the broker; dropping the socket" in caplog.text  # no wait at the close


def test_sigtermed_worker_exits_promptly_while_blocked(
    node: ExtraNode, node_settings: Settings, alarm: Alarm
) -> None:
    env = {
        "AMQP_URL": node.url,
        "REQREP_QUEUE_PREFIX": node_settings.queue_prefix,
        "REQREP_LOG_LEVEL": "DEBUG",  # it logs each request it receives
    }
    worker = WorkerProcess(["reqrep.worker.demo:service", "--concurrency", "2"], env)
    try:
        worker.wait_for("worker ready")
        with Requestor(settings=node_settings, service="demo") as rq:
            # Long enough for rabbitmqctl to set the alarm on a loaded machine before the reply.
            pending = rq.call_async("sleep", {"seconds": 10.0}, timeout=40)
            worker.wait_for("'sleep'")
            alarm.on()  # the worker's reply then gets its connection blocked
            worker.wait_for("the broker blocks publishing")
            worker.signal(signal.SIGTERM)
            worker.wait_for("the broker blocks the connection")  # no drain waits for it (40 s)
            worker.proc.wait(20)
            assert worker.proc.returncode == 1  # the drain did not finish: say so
            alarm.off()
        assert pending.done()  # answered after all, or failed by close(): never left hanging
    finally:
        worker.stop(10)


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_handshake_and_call(node: ExtraNode, tls_files: TlsFiles) -> None:
    settings = Settings(
        url=node.tls_url,
        tls_ca=str(tls_files.ca),
        connect_timeout=5.0,
        queue_prefix=f"x{uuid.uuid4().hex[:8]}.",
    )
    with (
        Worker(build("demo"), settings=settings, concurrency=1),
        Requestor(settings=settings, service="demo") as rq,
    ):
        assert rq.call("add", {"a": 2, "b": 3}) == 5


def test_tls_settings_from_the_environment(node: ExtraNode, tls_files: TlsFiles) -> None:
    env = {
        "AMQP_URL": node.tls_url,
        "REQREP_TLS_CA": str(tls_files.ca),
        "REQREP_TLS_SERVER_NAME": "localhost",
    }
    with Requestor(settings=Settings.from_env(env), service="nobody") as rq:
        assert rq.reply_queue


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ("other_ca", "certificate was refused: self-signed certificate in certificate chain"),
        ("server_name", "certificate was refused: hostname mismatch"),
    ],
)
def test_a_certificate_error_fails_fast_naming_the_cause(
    node: ExtraNode,
    tls_files: TlsFiles,
    change: str,
    cause: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        url=node.tls_url,
        tls_ca=str(tls_files.other_ca if change == "other_ca" else tls_files.ca),
        tls_server_name="wrong.example" if change == "server_name" else None,
        tls_key_password="never-shown-pw",  # noqa: S106 - a test value that must not leak
        connect_timeout=10.0,
    )
    with (
        caplog.at_level(logging.INFO, logger="reqrep.connection"),
        pytest.raises(BrokerUnreachable) as info,
    ):
        Requestor(settings=settings, service="demo").open()
    assert info.value.permanent  # not retried for the whole connect_timeout
    assert "retrying in" not in caplog.text
    assert cause in str(info.value).lower()
    assert "never-shown-pw" not in str(info.value)
    assert "guest:guest" not in str(info.value)


def test_tls_with_a_client_certificate_and_an_encrypted_key(
    node: ExtraNode, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    password = tls_files.KEY_PASSWORD
    settings = Settings(
        url=node.tls_url,
        tls_ca=str(tls_files.ca),
        tls_cert=str(tls_files.client_cert),
        tls_key=str(tls_files.client_key),
        tls_key_password=password,
        queue_prefix=f"x{uuid.uuid4().hex[:8]}.",
    )
    caplog.set_level(logging.DEBUG)
    with (
        Worker(build("demo"), settings=settings, concurrency=1) as worker,
        Requestor(settings=settings, service="demo") as rq,
    ):
        assert rq.call("echo", "mutual") == "mutual"
        shown = f"{worker!r} {rq!r} {settings!r}"
    wrong = settings.replace(tls_key_password="wrong-pw")  # noqa: S106 - a test value
    with pytest.raises(ConfigError) as info:
        Requestor(settings=wrong, service="demo").open()
    assert "wrong-pw" not in str(info.value)
    assert password not in shown
    assert password not in caplog.text


def test_tls_settings_need_an_amqps_url(node: ExtraNode, tls_files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match="amqps"):
        Requestor(settings=Settings(url=node.url, tls_ca=str(tls_files.ca))).open()


def test_an_unreadable_ca_file_is_a_config_error(node: ExtraNode) -> None:
    settings = Settings(url=node.tls_url, tls_ca="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="tls_ca"):
        Requestor(settings=settings).open()
