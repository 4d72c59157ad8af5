"""The permission model (docs/operations.md, "Permissions"), as a tested matrix: each role can
do what it is documented for, and nothing the attacks below need.

- Signing (``REQREP_SIGN_REPLIES``) proves which broker user sent a reply, not which request it
  answers. A user who can *read* a request queue can take a victim's request off it and send its
  own request with the victim's ``reply_to`` and ``correlation_id``: the real worker answers it
  and signs the answer. So only workers may read request queues.
- A user who may publish through the default exchange may publish into any queue: junk into a
  dead-letter queue (evicting real dead letters from its head), or forged replies into another
  requestor's callback queue. So requestors publish requests through the ``reqrep.requests``
  exchange, and cancels and broadcasts through ``reqrep.control``, and may write to nothing
  else.
- Operators ping the workers and read, replay and purge dead letters; workers must be visible to
  them under the worker permissions (their control queues are named under the prefix).

The tests create their own users (unique names, deleted at the end) with the documented patterns,
with this test's queue prefix in place of ``reqrep.``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import pytest

from reqrep.common import AccessRefused, Settings, exitcodes
from reqrep.requestor import Admin as ReqrepAdmin
from reqrep.requestor import Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin, wait_until

# The documented patterns (docs/operations.md), with "reqrep\." standing for the queue prefix.
WORKER = (r"^reqrep\.", r"^(amq\.default|reqrep\..*)$", r"^reqrep\.")
REQUESTOR = (r"^amq\.gen-", r"^reqrep\.(requests|control)$", r"^amq\.gen-")
OPERATOR = (
    r"^(amq\.gen-.*|reqrep\.control)$",
    r"^reqrep\.(control|requests)$",
    r"^(amq\.gen-.*|reqrep\..*\.dead)$",
)


def test_the_docs_give_these_patterns() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    roles = (("reqrep-worker", WORKER), ("reqrep-client", REQUESTOR), ("reqrep-operator", OPERATOR))
    for role, patterns in roles:
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
        channel = connection.channel()
        action(channel)
        channel.basic_qos(prefetch_count=1)  # a round trip: a refused publish closed the channel
    except pika.exceptions.ChannelClosedByBroker as exc:
        return bool(exc.reply_code == 403)
    finally:
        if connection.is_open:
            connection.close()
    return False


@pytest.mark.slow
@pytest.mark.timeout(300)  # each rabbitmqctl call takes seconds
def test_each_role_does_its_work_and_no_attack_gets_through(
    settings: Settings, service_name: str, make_user: User, admin: Admin
) -> None:
    worker_url = make_user("worker", WORKER)
    victim_url = make_user("victim", REQUESTOR)
    attacker_url = make_user("attacker", REQUESTOR)
    operator_url = make_user("operator", OPERATOR)
    worker_user = urlsplit(worker_url).username or ""
    signing = settings.replace(sign_replies=True)
    prefix = settings.queue_prefix
    with (
        Worker(build(service_name), settings=signing.replace(url=worker_url)) as worker,
        Worker(build(service_name), settings=signing.replace(url=worker_url)),
        Requestor(
            settings=settings.replace(url=victim_url),
            service=service_name,
            trusted_repliers=[worker_user],
        ) as victim,
        Requestor(settings=settings.replace(url=attacker_url), service=service_name) as attacker,
    ):
        queue, dead = worker.queue, f"{worker.queue}.dead"
        # A real dead letter: a request no worker can answer (no reply_to), rejected.
        orphan = pika.BasicProperties(type="echo", content_type="application/json")
        admin.publish(queue, b'"orphan"', orphan)
        wait_until(lambda: admin.message_count(dead) == 1, 10, "a real dead letter")

        # The reflection attack's first step: take a victim's request off the request queue.
        assert _refused(lambda ch: ch.basic_get(queue, auto_ack=True), attacker_url)
        assert _refused(lambda ch: ch.basic_consume(queue, lambda *_: None), attacker_url)
        assert _refused(lambda ch: ch.basic_get(dead, auto_ack=True), attacker_url)
        # Nor can it get between the worker and the victim by re-routing the queue.
        assert _refused(lambda ch: ch.queue_delete(queue), attacker_url)
        assert _refused(lambda ch: ch.queue_purge(queue), attacker_url)
        # Nor publish into a dead-letter queue (to evict the real ones), nor forge a reply.
        junk = pika.BasicProperties(type="echo")
        assert _refused(lambda ch: ch.basic_publish("", dead, b"junk", junk), attacker_url)
        assert _refused(lambda ch: ch.basic_publish(f"{prefix}dlx", dead, b"junk"), attacker_url)
        forged = pika.BasicProperties(correlation_id="guessed", content_type="application/json")
        forge = b'{"ok": true, "result": "forged"}'
        assert _refused(
            lambda ch: ch.basic_publish("", victim.reply_queue, forge, forged), attacker_url
        )

        # What a requestor may do, it can: call the service.
        assert attacker.call("echo", "attacker's own call") == "attacker's own call"
        results = [victim.call("echo", f"victim-{i}", timeout=10) for i in range(10)]
        assert results == [f"victim-{i}" for i in range(10)]

        # The operator sees both workers (under worker permissions), the queues and the dead
        # letter, and can replay and purge it.
        with ReqrepAdmin(settings=settings.replace(url=operator_url)) as ops:
            assert len(ops.ping([service_name], timeout=1.0)) == 2
            [status] = ops.status([service_name], timeout=0.5)
            assert (status.exists, status.consumers, status.dead_letters) == (True, 2, 1)
            [letter] = ops.dead_letters(service_name)
            assert letter.body == '"orphan"'
            [outcome] = ops.replay(service_name, timeout=10)
            assert (outcome.outcome, outcome.result) == ("ok", "orphan")
            assert ops.purge(service_name, limit=5) == 0
    assert admin.message_count(queue) == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_each_role_may_not_do_is_a_typed_error_not_a_traceback(
    settings: Settings, service_name: str, make_user: User
) -> None:
    requestor_url = make_user("requestor", REQUESTOR)
    reqrep = str(Path(sys.executable).with_name("reqrep"))
    env = {**os.environ, "AMQP_URL": requestor_url, "REQREP_QUEUE_PREFIX": settings.queue_prefix}
    with Worker(build(service_name), settings=settings):
        # A requestor is no operator: reading dead letters is refused, and says so.
        with (
            ReqrepAdmin(settings=settings.replace(url=requestor_url)) as ops,
            pytest.raises(AccessRefused, match="403"),
        ):
            ops.dead_letters(service_name)
        result = subprocess.run(
            [reqrep, "dlq", "list", "--service", service_name],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == exitcodes.REFUSED, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("reqrep: refused: ")
