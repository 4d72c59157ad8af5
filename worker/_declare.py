"""What a worker declares on each new channel before it consumes, one step after another.

QoS, publisher confirms, the dead-letter exchange and queue, the request queue and its binding
to the requests exchange, then consuming,
in the order ``Consumer.setup`` needs them (``worker/consumer.py``). Each broker call is
asynchronous: each step gets the callback that starts the next. Runs on the worker's I/O thread.
"""

from __future__ import annotations

from collections.abc import Callable

from reqrep.common import topology
from reqrep.common._transport import Channel
from reqrep.common.config import Settings

__all__ = ["Step", "chain", "declare_steps"]

Step = Callable[[Callable[[], None]], None]  # starts one broker call; gets "start the next"


def declare_steps(
    channel: Channel,
    settings: Settings,
    queue: str,
    *,
    prefetch: int,
    confirm: Step,
    consume: Step,
) -> list[Step]:
    """QoS, confirms, the dead-letter exchange and queue, the request queue, its binding to the
    requests exchange, then consuming."""
    prefix = settings.queue_prefix
    dlx, dlq = topology.dead_letter_exchange(prefix), topology.dead_letter_queue(queue)
    requests = topology.request_exchange(prefix)
    return [
        lambda done: channel.qos(prefetch, done),
        confirm,
        lambda done: channel.declare_exchange(dlx, kind="direct", durable=True, on_ok=done),
        lambda done: channel.declare_queue(
            dlq,
            durable=True,
            arguments=topology.dead_letter_queue_arguments(
                settings.queue_type, settings.dlq_max_length
            ),
            on_ok=lambda _info: done(),
        ),
        lambda done: channel.bind_queue(dlq, dlx, dlq, done),
        lambda done: channel.declare_queue(
            queue,
            durable=True,
            arguments=topology.request_queue_arguments(
                prefix=prefix,
                queue=queue,
                queue_type=settings.queue_type,
                max_redeliveries=settings.max_redeliveries,
            ),
            on_ok=lambda _info: done(),
        ),
        lambda done: channel.declare_exchange(requests, kind="direct", durable=True, on_ok=done),
        lambda done: channel.bind_queue(queue, requests, queue, done),
        consume,
    ]


def chain(steps: list[Step], then: Callable[[], None]) -> None:
    """Run asynchronous steps one after another; each gets the callback that starts the next."""
    if not steps:
        then()
        return
    first, rest = steps[0], steps[1:]
    first(lambda: chain(rest, then))
