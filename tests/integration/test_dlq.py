"""``reqrep dlq list|show|replay|purge`` against real dead letters (requests that expired)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from reqrep.common import CallTimeout, NoWorkers, Settings, exitcodes
from reqrep.requestor import Admin, Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import Admin as BareAdmin
from tests.support import wait_until

REQREP = str(Path(sys.executable).with_name("reqrep"))
PAYLOADS = [{"n": 0}, {"n": 1}, {"n": 2}]


@pytest.fixture
def dead(settings: Settings, service_name: str, admin: BareAdmin) -> Iterator[list[str]]:
    """Three echo requests that expired in the queue while no worker ran, oldest first:
    their correlation ids."""
    Worker(build(service_name), settings=settings, concurrency=1).start().stop(5)
    dlq = f"{settings.request_queue(service_name)}.dead"
    with Requestor(settings=settings, service=service_name, wait_for_workers=True) as rq:
        futures = [rq.call_async("echo", p, timeout=0.2) for p in PAYLOADS]
        for future in futures:
            with pytest.raises(CallTimeout):
                future.result(5)
        wait_until(lambda: admin.message_count(dlq) == 3, 15, "3 dead letters")
        letters = Admin(settings=settings).open()
        try:
            yield [d.correlation_id or "" for d in letters.dead_letters(service_name, limit=3)]
        finally:
            letters.close()


@pytest.fixture
def ops(settings: Settings) -> Iterator[Admin]:
    with Admin(settings=settings) as session:
        yield session


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMQP_URL": settings.url,
        "REQREP_QUEUE_PREFIX": settings.queue_prefix,
    }
    return subprocess.run(
        [REQREP, "dlq", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_list_and_show_leave_the_dead_letters_in_place(
    settings: Settings, service_name: str, dead: list[str], ops: Admin, admin: BareAdmin
) -> None:
    letters = ops.dead_letters(service_name, limit=10)
    assert len(letters) == 3
    assert sorted(d.correlation_id or "" for d in letters) == sorted(dead)
    assert {(d.method, d.reason, d.queue) for d in letters} == {
        ("echo", "expired", settings.request_queue(service_name))
    }
    assert sorted(json.loads(d.body)["n"] for d in letters) == [0, 1, 2]
    assert all(d.deaths == 1 and d.died_at for d in letters)
    assert "x-death" in letters[0].headers
    assert len(ops.dead_letters(service_name, limit=2)) == 2
    dlq = f"{settings.request_queue(service_name)}.dead"
    wait_until(lambda: admin.message_count(dlq) == 3, 10, "the 3 dead letters back")

    listed = _cli(settings, "list", "--service", service_name, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["correlation_id"] for r in rows) == sorted(dead)
    assert "body" not in rows[0]
    shown = _cli(settings, "show", "--service", service_name, "--limit", "3", "--json")
    assert shown.returncode == 0, shown.stderr
    full = json.loads(shown.stdout)
    assert len(full) == 3
    assert {json.loads(r["body"])["n"] for r in full} == {0, 1, 2}
    assert full[0]["headers"]["x-death"][0]["reason"] == "expired"
    text = _cli(settings, "list", "--service", service_name)
    assert text.returncode == 0
    assert "expired" in text.stdout
    wait_until(lambda: admin.message_count(dlq) == 3, 10, "the 3 dead letters back")


def test_replay_runs_them_again_with_a_fresh_deadline(
    settings: Settings, service_name: str, dead: list[str], ops: Admin, admin: BareAdmin
) -> None:
    with pytest.raises(NoWorkers):  # like a call: no consumer, no replay
        ops.replay(service_name, limit=1)
    no_workers = _cli(settings, "replay", "--service", service_name)
    assert no_workers.returncode == exitcodes.NO_WORKERS
    dlq = f"{settings.request_queue(service_name)}.dead"
    assert admin.message_count(dlq) == 3
    with Worker(build(service_name), settings=settings, concurrency=2) as worker:
        outcomes = ops.replay(service_name, limit=2, timeout=10)
        assert [o.outcome for o in outcomes] == ["ok", "ok"]
        assert {o.correlation_id for o in outcomes} <= set(dead)  # kept
        assert all(o.method == "echo" for o in outcomes)
        assert worker.stats.expired == 0  # the fresh deadline: they ran
        wait_until(lambda: admin.message_count(dlq) == 1, 10, "one dead letter left")
        replayed = _cli(settings, "replay", "--service", service_name, "--json", "--timeout", "10")
        assert replayed.returncode == 0, replayed.stderr
        [last] = json.loads(replayed.stdout)
        assert (last["outcome"], last["method"]) == ("ok", "echo")
        assert last["correlation_id"] in dead
        assert worker.stats.replied == 3
    assert admin.message_count(dlq) == 0
    results = sorted([o.result["n"] for o in outcomes] + [last["result"]["n"]])
    assert results == [0, 1, 2]


def test_purge_is_bounded(
    settings: Settings, service_name: str, dead: list[str], ops: Admin, admin: BareAdmin
) -> None:
    dlq = f"{settings.request_queue(service_name)}.dead"
    assert ops.purge(service_name, limit=1) == 1
    assert admin.message_count(dlq) == 2
    purged = _cli(settings, "purge", "--service", service_name, "--limit", "1", "--json")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {"service": service_name, "purged": 1}
    everything = _cli(settings, "purge", "--service", service_name, "--all", "--json")
    assert json.loads(everything.stdout)["purged"] == 1
    assert admin.message_count(dlq) == 0
    assert ops.purge(service_name, limit=5) == 0


def test_a_service_without_a_dead_letter_queue(settings: Settings, ops: Admin) -> None:
    result = _cli(settings, "list", "--service", "never-deployed")
    assert result.returncode == exitcodes.NO_SUCH_SERVICE
    assert _cli(settings, "list", "--service", "x", "--limit", "0").returncode == 2


def test_the_dead_letter_cap_is_a_setting(
    settings: Settings, service_name: str, admin: BareAdmin
) -> None:
    capped = settings.replace(dlq_max_length=2)
    Worker(build(service_name), settings=capped, concurrency=1).start().stop(5)
    dlq = f"{capped.request_queue(service_name)}.dead"
    props = pika.BasicProperties(type="echo", content_type="application/json")
    for i in range(4):
        admin.channel.basic_publish(f"{capped.queue_prefix}dlx", dlq, str(i).encode(), props)
    wait_until(lambda: admin.message_count(dlq) == 2, 10, "the cap of 2")
    with Admin(settings=capped) as ops:
        assert sorted(d.body for d in ops.dead_letters(service_name, limit=10)) == ["2", "3"]
    status = subprocess.run(
        [REQREP, "status", "--service", service_name, "--timeout", "0.2"],
        env={
            **os.environ,
            "AMQP_URL": settings.url,
            "REQREP_QUEUE_PREFIX": settings.queue_prefix,
            "REQREP_DLQ_MAX_LENGTH": "2",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "at its cap (2)" in status.stderr


def test_an_unanswerable_dead_letter_is_answered_when_replayed(
    settings: Settings, service_name: str, admin: BareAdmin
) -> None:
    """A request without reply_to or correlation id is rejected into the dead-letter queue; a
    replay gives it both, so its outcome can be seen."""
    with Worker(build(service_name), settings=settings, concurrency=1) as worker:
        props = pika.BasicProperties(type="echo", content_type="application/json")
        admin.publish(worker.queue, b'"orphan"', props)
        dlq = f"{worker.queue}.dead"
        wait_until(lambda: admin.message_count(dlq) == 1, 10, "the rejected request")
        with Admin(settings=settings) as ops:
            [letter] = ops.dead_letters(service_name)
            assert (letter.reason, letter.correlation_id, letter.reply_to) == (
                "rejected",
                None,
                None,
            )
            [outcome] = ops.replay(service_name, timeout=10)
        assert (outcome.outcome, outcome.result) == ("ok", "orphan")
        assert outcome.correlation_id.startswith("replay-")
    assert admin.message_count(dlq) == 0


def test_two_dead_letters_with_one_correlation_id_each_get_their_outcome(
    settings: Settings, service_name: str, admin: BareAdmin
) -> None:
    """Both ran; the replay used to report one of them."""
    with Worker(build(service_name), settings=settings, concurrency=2) as worker:
        dlq = f"{worker.queue}.dead"
        props = pika.BasicProperties(
            type="echo", content_type="application/json", correlation_id="same-id"
        )
        for body in (b'"first"', b'"second"'):  # no reply_to: rejected into the dead letters
            admin.publish(worker.queue, body, props)
        wait_until(lambda: admin.message_count(dlq) == 2, 10, "two dead letters")
        with Admin(settings=settings) as ops:
            outcomes = ops.replay(service_name, timeout=10)
    assert [(o.correlation_id, o.outcome) for o in outcomes] == [("same-id", "ok")] * 2
    assert sorted(o.result for o in outcomes) == ["first", "second"]
