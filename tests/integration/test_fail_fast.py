"""Fail fast while disconnected: a call marked ``fail_fast`` raises BrokerUnreachable at once
while the requestor has no connection (the broker app stopped), instead of waiting for it; a
call without it behaves as before. And the readiness facts a web app's probe reads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from reqrep.common import BrokerUnreachable, CallTimeout, Settings
from reqrep.requestor import AsyncRequestor, Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build
from tests.support import rabbitmqctl, wait_until

# The bound: a fail-fast call raises within 0.5 s of being made while the broker is
# down. It is checked against a broker that is really down, so it holds under any load this
# machine sees only if the call never waits for anything: that is what it checks.
FAIL_FAST_BOUND = 0.5


def _raises_at_once(call: Callable[[], object], what: str) -> float:
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="fail-fast call was not sent") as info:
        call()
    took = time.monotonic() - started
    print(f"{what}: BrokerUnreachable after {took * 1000:.1f} ms")
    assert not info.value.permanent
    assert took < FAIL_FAST_BOUND
    return took


@pytest.mark.broker_restart
def test_a_fail_fast_call_raises_at_once_while_the_broker_is_down(
    settings: Settings, service_name: str, broker_restart: threading.Event
) -> None:
    worker = Worker(build(service_name), settings=settings, concurrency=2).start()
    try:
        with (
            Requestor(settings=settings, service=service_name) as rq,
            Requestor(settings=settings, service=service_name, fail_fast=True) as fast,
        ):
            assert rq.call("echo", "up") == fast.call("echo", "up") == "up"
            rabbitmqctl("stop_app")
            broker_restart.set()
            wait_until(lambda: not (rq.connected or fast.connected), 30, "the requestors to notice")
            _raises_at_once(lambda: rq.call("echo", 1, fail_fast=True), "call(fail_fast=True)")
            _raises_at_once(lambda: fast.call("echo", 1), "Requestor(fail_fast=True).call")
            _raises_at_once(lambda: fast.call_async("echo", 1), "call_async")
            _raises_at_once(lambda: fast.call_plain(service_name, b"1"), "call_plain")
            # The default is unchanged: held until its deadline, then a timeout saying why...
            with pytest.raises(CallTimeout, match="connection was down"):
                rq.call("echo", 2, timeout=0.5)
            # ... or sent once the broker is back, within its deadline.
            held = rq.call_async("echo", "held", timeout=60, idempotent=True)
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            broker_restart.clear()
            assert held.result(60) == "held"
            wait_until(lambda: fast.connected, 30, "the fail-fast requestor to reconnect")
            assert fast.call("echo", "back") == "back"
            assert fast.reconnects >= 1
    finally:
        worker.stop(5)


@pytest.mark.broker_restart
def test_an_async_requestor_tells_its_readiness_and_fails_fast(
    settings: Settings, service_name: str, broker_restart: threading.Event, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(native=aio_native, settings=settings, service=service_name) as rq:
            assert await rq.call("echo", "up") == "up"
            assert rq.connected
            assert rq.address.startswith("amqp://")
            assert "guest:guest" not in rq.address  # the password is hidden
            assert rq.reconnects == 0
            rabbitmqctl("stop_app")
            broker_restart.set()
            while rq.connected:
                await asyncio.sleep(0.02)
            started = time.monotonic()
            with pytest.raises(BrokerUnreachable):
                await rq.call("echo", 1, fail_fast=True)
            took = time.monotonic() - started
            print(
                f"AsyncRequestor.call(fail_fast=True): BrokerUnreachable after {took * 1e3:.1f} ms"
            )
            assert took < FAIL_FAST_BOUND
            held = asyncio.ensure_future(rq.call("echo", "held", timeout=60, idempotent=True))
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            broker_restart.clear()
            assert await held == "held"
            while not rq.connected:
                await asyncio.sleep(0.02)
            assert rq.reconnects >= 1
            assert rq.blocked is None

    worker = Worker(build(service_name), settings=settings, concurrency=2).start()
    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        worker.stop(5)
