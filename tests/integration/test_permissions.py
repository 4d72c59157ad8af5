"""The permission model that closes the reflection attack on signed replies (README: Security).

Signing (``REQREP_SIGN_REPLIES``) proves which broker user sent a reply, not which request it
answers. A user who can *read* a request queue can take a victim's request off it and send its
own request with the victim's ``reply_to`` and ``correlation_id``: the real worker answers it and
signs the answer, and the victim accepts the attacker's value. So requestors get write access to
the default exchange (to send requests) and read access only to their own server-named callback
queues; only workers may read request queues. Under those permissions the attacker cannot see a
victim's request, and the attack fails.

The test creates its own users (unique names, deleted at the end) with the README's patterns,
with this test's queue prefix in place of ``reqrep.``.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import pytest

from reqrep.common import Settings
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, wait_until

# The README's patterns, with "reqrep\." standing for the queue prefix.
WORKER = (r"^reqrep\.", r"^(amq\.default|reqrep\..*)$", r"^reqrep\.")
REQUESTOR = (r"^amq\.gen-", r"^amq\.default$", r"^amq\.gen-")


def test_the_readme_gives_these_patterns() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for role, patterns in (("reqrep-worker", WORKER), ("reqrep-client", REQUESTOR)):
        quoted = " ".join(f"'{p}'" for p in patterns)
        assert f"rabbitmqctl set_permissions -p / {role} {quoted}" in text


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


User = Callable[[str, tuple[str, str, str]], str]  # (role, patterns) -> the user's AMQP URL


@pytest.fixture
def make_user(amqp_url: str, prefix: str) -> Iterator[User]:
    made: list[str] = []
    parts = urlsplit(amqp_url)
    vhost = parts.path.lstrip("/") or "%2F"

    def make(role: str, patterns: tuple[str, str, str]) -> str:
        name, password = f"test-{role}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        _ctl("add_user", name, password)
        made.append(name)
        mine = [p.replace(r"reqrep\.", re.escape(prefix)) for p in patterns]
        _ctl("set_permissions", "-p", pika.URLParameters(amqp_url).virtual_host, name, *mine)
        netloc = f"{quote(name)}:{password}@{parts.hostname}:{parts.port or 5672}"
        return urlunsplit(parts._replace(netloc=netloc, path=f"/{vhost}"))

    yield make
    for name in made:
        _ctl("delete_user", name)


def _refused(action: Callable[[Any], Any], url: str) -> bool:
    """Whether the broker refuses ``action(channel)`` with 403 ACCESS_REFUSED."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        action(connection.channel())
    except pika.exceptions.ChannelClosedByBroker as exc:
        return bool(exc.reply_code == 403)
    finally:
        if connection.is_open:
            connection.close()
    return False


@pytest.mark.slow
@pytest.mark.timeout(300)  # each rabbitmqctl call takes seconds
def test_requestors_cannot_read_request_queues_so_reflection_fails(
    settings: Settings, service_name: str, make_user: User, admin: Admin
) -> None:
    worker_url = make_user("worker", WORKER)
    victim_url = make_user("victim", REQUESTOR)
    attacker_url = make_user("attacker", REQUESTOR)
    worker_user = urlsplit(worker_url).username or ""
    signing = settings.replace(sign_replies=True)
    with (
        Worker(build(service_name), settings=signing.replace(url=worker_url)) as worker,
        Requestor(
            settings=settings.replace(url=victim_url),
            service=service_name,
            trusted_repliers=[worker_user],
        ) as victim,
        Requestor(settings=settings.replace(url=attacker_url), service=service_name) as attacker,
    ):
        queue = worker.queue
        # The attack's first step: take a victim's request off the request queue. Refused.
        assert _refused(lambda ch: ch.basic_get(queue, auto_ack=True), attacker_url)
        assert _refused(lambda ch: ch.basic_consume(queue, lambda *_: None), attacker_url)
        assert _refused(lambda ch: ch.basic_get(f"{queue}.dead", auto_ack=True), attacker_url)
        # Nor can it get between the worker and the victim by re-routing the queue.
        assert _refused(lambda ch: ch.queue_delete(queue), attacker_url)
        assert _refused(lambda ch: ch.queue_purge(queue), attacker_url)

        # What it may do, it can: call the service, and publish blind into the victim's queue.
        assert attacker.call("echo", "attacker's own call") == "attacker's own call"
        forged = pika.BasicProperties(correlation_id="guessed", content_type="application/json")
        connection = pika.BlockingConnection(pika.URLParameters(attacker_url))
        try:
            connection.channel().basic_publish(
                "", victim.reply_queue, b'{"ok": true, "result": "forged"}', forged
            )
        finally:
            connection.close()

        # The victim's calls all come back with their own values, signed by the worker.
        results = [victim.call("echo", f"victim-{i}", timeout=10) for i in range(10)]
        assert results == [f"victim-{i}" for i in range(10)]
        # Counted when the broker confirms the reply, which may come after the caller has it.
        wait_until(lambda: worker.stats.replied >= 11, 10, "the replies confirmed")
        wait_until(lambda: victim.stats().untrusted == 1, 10, "the blind forgery discarded")
    assert admin.message_count(queue) == 0
