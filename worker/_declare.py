"""What a worker declares on each new channel before it consumes, one step after another.

The request queue, its dead-letter exchange and queue, QoS and publisher confirms, in the order
``Consumer._setup`` needs them (``worker/consumer.py``). pika's calls are asynchronous: each step
gets the callback that starts the next. Runs on the worker's I/O thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reqrep.common import topology
from reqrep.common.config import Settings

__all__ = ["Step", "chain", "declare_steps"]

Step = Callable[[Callable[[Any], None]], None]  # starts one pika call; gets "start the next"


def declare_steps(
    channel: Any,
    settings: Settings,
    queue: str,
    *,
    prefetch: int,
    confirm: Step,
    consume: Step,
) -> list[Step]:
    """QoS, confirms, the dead-letter exchange and queue, the request queue, then consuming."""
    prefix = settings.queue_prefix
    dlx, dlq = topology.dead_letter_exchange(prefix), topology.dead_letter_queue(queue)
    return [
        lambda done: channel.basic_qos(prefetch_count=prefetch, callback=done),
        confirm,
        lambda done: channel.exchange_declare(
            dlx, exchange_type="direct", durable=True, callback=done
        ),
        lambda done: channel.queue_declare(
            dlq,
            durable=True,
            arguments=topology.dead_letter_queue_arguments(
                settings.queue_type, settings.dlq_max_length
            ),
            callback=done,
        ),
        lambda done: channel.queue_bind(dlq, dlx, routing_key=dlq, callback=done),
        lambda done: channel.queue_declare(
            queue,
            durable=True,
            arguments=topology.request_queue_arguments(
                prefix=prefix,
                queue=queue,
                queue_type=settings.queue_type,
                max_redeliveries=settings.max_redeliveries,
            ),
            callback=done,
        ),
        consume,
    ]


def chain(steps: list[Step], then: Callable[[], None]) -> None:
    """Run asynchronous pika steps one after another; each gets the callback that starts the
    next (pika calls it with the reply frame, which we ignore)."""
    if not steps:
        then()
        return
    first, rest = steps[0], steps[1:]

    def next_step(_frame: Any = None) -> None:
        chain(rest, then)

    first(next_step)
