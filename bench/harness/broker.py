"""The broker side of a benchmark: delete what a run declared, wait for the broker to answer
again (another user may restart it), and ask it what it is."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pika
import pika.exceptions

BROKER_WAIT = 60.0
"""Before running a failed case again, wait at most this long for the broker to answer."""


def delete_broker_objects(
    url: str, queues: Iterable[str] = (), exchanges: Iterable[str] = ()
) -> list[str]:
    """Delete queues and exchanges (those that exist); returns the problems met, if any."""
    problems: list[str] = []
    params = pika.URLParameters(url)
    params.connection_attempts = 2
    params.retry_delay = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        return [f"cannot connect to clean up: {exc!r}"]
    try:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                try:
                    channel = connection.channel()
                    if kind == "queue":
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:  # NOT_FOUND: nothing to delete
                        problems.append(f"delete {kind} {name}: {exc!r}")
                except pika.exceptions.AMQPError as exc:
                    problems.append(f"delete {kind} {name}: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    return problems


def wait_for_broker(url: str, timeout: float) -> bool:
    """Wait (bounded) until the broker accepts a connection: another user may restart it."""
    limit = time.monotonic() + timeout
    while True:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        try:
            pika.BlockingConnection(params).close()
        except pika.exceptions.AMQPError:
            if time.monotonic() + 2.0 > limit:
                return False
            time.sleep(2.0)
        else:
            return True


def broker_info(url: str) -> dict[str, Any]:
    """Whether the broker answers, and what it says it is."""
    params = pika.URLParameters(url)
    params.connection_attempts = 2
    params.retry_delay = 1
    params.socket_timeout = 5
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise SystemExit(f"bench: broker unreachable: {exc!r}") from None
    try:
        props = getattr(getattr(connection, "_impl", None), "server_properties", None) or {}
        version = props.get("version", b"")
        return {
            "product": _text(props.get("product", b"")),
            "version": _text(version),
        }
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def retry_cleanup(
    url: str, runs: Sequence[dict[str, Any]], progress: Callable[[str], None]
) -> None:
    """Delete, once more, the queues a run could not delete (the broker was down then)."""
    left = [r for r in runs if r.get("leftovers")]
    if not left or not wait_for_broker(url, BROKER_WAIT):
        if left:
            progress("could not reach the broker to delete queues left by failed runs")
        return
    for record in left:
        leftovers = record.pop("leftovers")
        problems = delete_broker_objects(url, leftovers["queues"], leftovers["exchanges"])
        record["cleanup_problems"] = problems
        if problems:
            record["leftovers"] = leftovers
            progress(f"still left on the broker: {problems}")
