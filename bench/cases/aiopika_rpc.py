"""aio-pika's RPC pattern (``aio_pika.patterns.JsonRPC``) with many calls in flight.

``python -m bench.cases.aiopika_rpc client|server --queue Q ...``

Both sides open a connection with ``aio_pika.connect`` and a channel with aio-pika's defaults
(publisher confirms on). The server sets prefetch 256 (the ``raw-pika`` server's) and registers
an ``echo`` coroutine with ``rpc.register(Q, echo)``: aio-pika names the request queue after the
method, so the method is called ``Q``. The client runs ``--outstanding`` coroutines under
``asyncio.gather``, each awaiting ``rpc.call(Q, {"payload": ...})`` in a loop: that many calls
in flight, each request published with ``mandatory=True`` and its confirm awaited (pipelined
across the coroutines), as ``RPC.call`` does.

``JsonRPC`` rather than the default ``RPC`` (which pickles): JSON on the wire like reqrep, and no
unpickling of network input. Both do the same AMQP work; pickling a short string costs about as
much as JSON-encoding it.

Departures from aio-pika's defaults, for RabbitMQ 4.3 (which refuses transient non-exclusive
queues): the callback queue is declared ``exclusive=True`` (aio-pika's default is a non-durable,
non-exclusive auto-delete queue) and the request queue ``durable=True`` (messages stay transient,
aio-pika's ``DeliveryMode.NOT_PERSISTENT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import aio_pika
from aio_pika.patterns import JsonRPC

from bench.cases import (
    DRAIN_SECONDS,
    READY_TEXT,
    Window,
    amqp_url,
    arm_deadline,
    case_parser,
    json_payload,
    say,
)

__all__ = ["main"]

SERVER_PREFETCH = 256
CALL_LIMIT = 30.0


async def echo(*, payload: Any = None) -> Any:
    return payload


async def serve(queue: str, max_seconds: float) -> None:
    connection = await aio_pika.connect(amqp_url())
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=SERVER_PREFETCH)
        rpc = await JsonRPC.create(channel, exclusive=True)
        await rpc.register(queue, echo, durable=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        say(READY_TEXT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max_seconds)
        await rpc.close()
    finally:
        await connection.close()


async def run_client(
    queue: str, window: Window, outstanding: int, payload_size: int
) -> dict[str, Any]:
    payload = json_payload(payload_size)
    connection = await aio_pika.connect(amqp_url())
    in_flight = 0
    try:
        channel = await connection.channel()
        rpc = await JsonRPC.create(channel, exclusive=True)

        async def caller() -> None:
            nonlocal in_flight
            while window.running():
                started = time.perf_counter()
                in_flight += 1
                try:
                    await asyncio.wait_for(
                        rpc.call(queue, {"payload": payload}), timeout=CALL_LIMIT
                    )
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    window.error(exc)
                    if window.errors > 100:
                        return
                    continue
                finally:
                    in_flight -= 1
                window.done(started, time.perf_counter())

        window.begin()
        callers = [asyncio.create_task(caller()) for _ in range(outstanding)]
        ticker = asyncio.create_task(_tick(window))
        try:
            await asyncio.wait_for(
                asyncio.gather(*callers),
                timeout=window.warmup + window.seconds + DRAIN_SECONDS,
            )
        except asyncio.TimeoutError:
            window.error("calls still in flight when the drain time ran out")
        finally:
            ticker.cancel()
            for task in callers:
                task.cancel()
        with contextlib.suppress(Exception):
            await rpc.close()
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return {"unfinished": in_flight}


async def _tick(window: Window) -> None:
    """Announce the window's edges even when no call completes at that moment."""
    while window.running():
        await asyncio.sleep(0.05)


def main() -> None:
    args = case_parser(__doc__ or "").parse_args()
    arm_deadline(args.max_seconds)
    if args.role == "server":
        asyncio.run(serve(args.queue, args.max_seconds))
        return
    window = Window(args.warmup, args.seconds)
    extra = asyncio.run(run_client(args.queue, window, args.outstanding, args.payload))
    window.report(outstanding=args.outstanding, **extra)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
