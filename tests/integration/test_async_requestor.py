"""AsyncRequestor against the real broker: results, errors, cancellation, loops, volume."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reqrep import (
    AsyncRequestor,
    BrokerUnreachable,
    CallTimeout,
    ClosedError,
    ConfigError,
    ConnectionLost,
    MethodNotFound,
    NoSuchService,
    RemoteError,
    Service,
    Settings,
    Worker,
    current,
)
from tests.support import close_connections, wait_until


class Gate:
    """A handler that blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, payload: Any) -> Any:
        self.started.set()
        deadline = time.monotonic() + 30
        while not self.release.wait(0.01):
            if current().cancelled():  # its caller cancelled it, or its deadline passed
                return "cancelled"
            if time.monotonic() > deadline:
                raise TimeoutError("gate never opened")
        return payload


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()


@pytest.fixture
def worker(settings: Settings, service_name: str, gate: Gate) -> Iterator[Worker]:
    service = Service(service_name)
    service.add("echo", lambda payload: payload)
    service.add("add", lambda p: p["a"] + p["b"])
    service.add("fail", lambda _p: 1 / 0)
    service.add("gate", gate)
    with Worker(service, settings=settings, concurrency=16) as running:
        yield running
        gate.release.set()


def test_call_returns_results_and_raises_the_requestors_errors(
    worker: Worker, settings: Settings, service_name: str, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(settings=settings, service=service_name, native=aio_native) as rq:
            assert await rq.call("add", {"a": 1, "b": 2}, timeout=5) == 3
            assert await rq.call("echo", {"x": [1]}, idempotent=True) == {"x": [1]}
            with pytest.raises(RemoteError, match="division by zero"):
                await rq.call("fail")
            with pytest.raises(MethodNotFound):
                await rq.call("nope")
            with pytest.raises(NoSuchService):
                await rq.call("echo", service=f"{service_name}-missing")
            assert rq.stats().pending == 0
        with pytest.raises(ClosedError):
            await rq.call("echo")

    asyncio.run(main())


def test_connecting_does_not_block_the_event_loop(settings: Settings, aio_native: bool) -> None:
    """A broker that accepts TCP but never speaks: connecting takes connect_timeout; the loop
    keeps running meanwhile."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        slow = settings.replace(url=url, connect_timeout=1.5)

        async def main() -> float:
            gaps: list[float] = []

            async def tick() -> None:
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            ticker = asyncio.create_task(tick())
            rq = AsyncRequestor(settings=slow, service="any", native=aio_native)
            with pytest.raises(BrokerUnreachable):
                await rq.call("echo")
            ticker.cancel()
            await rq.close()
            assert len(gaps) > 50  # the loop ran all along
            return max(gaps)

        assert asyncio.run(main()) < 0.5


def test_cancelling_the_awaiting_task_forgets_the_call(
    worker: Worker, settings: Settings, service_name: str, gate: Gate, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(settings=settings, service=service_name, native=aio_native) as rq:
            task = asyncio.create_task(rq.call("gate", "late", timeout=30))
            while not gate.started.is_set():
                await asyncio.sleep(0.01)
            assert rq.stats().pending == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert rq.stats().pending == 0  # at once, not at the deadline
            # Its worker was told: the handler saw it, and no reply was sent.
            while worker.stats.cancelled == 0:
                await asyncio.sleep(0.01)
            assert (rq.stats().resolved, rq.stats().late) == (0, 0)
            assert await rq.call("echo", "after") == "after"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_timeout_ends_the_await_and_makes_the_reply_late(
    worker: Worker, settings: Settings, service_name: str, gate: Gate, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(settings=settings, service=service_name, native=aio_native) as rq:
            with pytest.raises(CallTimeout, match=r"within 0\.3s"):
                await rq.call("gate", "slow", timeout=0.3)
            assert rq.stats().pending == 0
            gate.release.set()
            while rq.stats().late == 0:
                await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_results_are_delivered_on_the_loop_thread_not_the_io_thread(
    worker: Worker, settings: Settings, service_name: str, aio_native: bool
) -> None:
    seen: list[str] = []

    async def main() -> None:
        async with AsyncRequestor(settings=settings, service=service_name, native=aio_native) as rq:
            task = asyncio.ensure_future(rq.call("echo", 1))
            task.add_done_callback(lambda _t: seen.append(threading.current_thread().name))
            assert await task == 1

    runner = threading.Thread(target=asyncio.run, args=(main(),), name="user-loop")
    runner.start()
    runner.join(30)
    assert seen == ["user-loop"]


def test_several_loops_in_several_threads(
    worker: Worker, settings: Settings, service_name: str
) -> None:
    shared = AsyncRequestor(settings=settings, service=service_name)
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    async def main(n: int) -> None:
        async with AsyncRequestor(settings=settings, service=service_name) as own:
            calls = [shared.call("echo", [n, i]) for i in range(100)]
            calls += [own.call("echo", [n, i]) for i in range(100, 200)]
            results[n] = list(await asyncio.gather(*calls))

    def run(n: int) -> None:
        try:
            asyncio.run(main(n))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    asyncio.run(shared.close())
    assert errors == []
    assert {n: r for n, r in results.items()} == {n: [[n, i] for i in range(200)] for n in range(4)}


@pytest.mark.slow
def test_ten_thousand_concurrent_awaits_from_one_loop(
    worker: Worker, settings: Settings, service_name: str, aio_native: bool
) -> None:
    async def main() -> list[Any]:
        async with AsyncRequestor(settings=settings, service=service_name, native=aio_native) as rq:
            results = await asyncio.gather(*(rq.call("echo", i, timeout=60) for i in range(10_000)))
            assert rq.stats().pending == 0
            return list(results)

    assert asyncio.run(asyncio.wait_for(main(), 90)) == list(range(10_000))


def test_a_closed_loop_does_not_disturb_the_io_thread(
    worker: Worker, settings: Settings, service_name: str, gate: Gate
) -> None:
    """A loop that went away with a call pending: its reply is dropped quietly; others work."""
    rq = AsyncRequestor(settings=settings, service=service_name)

    async def abandon() -> None:
        await rq.open()
        asyncio.get_running_loop().create_task(rq.call("gate", "x", timeout=30))
        while not gate.started.is_set():
            await asyncio.sleep(0.01)

    asyncio.run(abandon())  # cancels the pending call's task as the loop ends
    gate.release.set()
    wait_until(lambda: rq.stats().pending == 0, 10, "the abandoned call to end")

    async def again() -> Any:
        try:
            return await rq.call("echo", "still fine")
        finally:
            await rq.close()

    assert asyncio.run(again()) == "still fine"


def test_a_lost_connection_resends_idempotent_calls_and_fails_the_others(
    worker: Worker, settings: Settings, service_name: str, gate: Gate, aio_native: bool
) -> None:
    async def main() -> None:
        async with AsyncRequestor(settings=settings, service=service_name, native=aio_native) as rq:
            kept = asyncio.ensure_future(rq.call("gate", "kept", timeout=30, idempotent=True))
            lost = asyncio.ensure_future(rq.call("gate", "lost", timeout=30))
            while rq.stats().pending < 2 or not gate.started.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # both requests are out
            assert await asyncio.to_thread(close_connections, rq.name) == 1
            with pytest.raises(ConnectionLost, match="may or may not have been run"):
                await lost
            gate.release.set()
            assert await kept == "kept"  # sent again on the new connection
            assert rq.reconnects == 1
            assert await rq.call("echo", "again", timeout=10) == "again"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_close_fails_pending_calls(
    worker: Worker, settings: Settings, service_name: str, gate: Gate, aio_native: bool
) -> None:
    async def main() -> None:
        rq = await AsyncRequestor(settings=settings, service=service_name, native=aio_native).open()
        task = asyncio.ensure_future(rq.call("gate", "x", timeout=30))
        while not gate.started.is_set():
            await asyncio.sleep(0.01)
        await rq.close()
        with pytest.raises(ClosedError):
            await task
        with pytest.raises(ClosedError):
            await rq.call("echo", 1)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_native_path_has_no_thread_and_serves_one_loop(
    worker: Worker, settings: Settings, service_name: str
) -> None:
    rq = AsyncRequestor(settings=settings, service=service_name, native=True)
    assert rq.native

    async def main() -> None:
        before = {t.name for t in threading.enumerate()}
        await rq.open()
        assert await rq.call("echo", "here") == "here"
        with pytest.raises(NoSuchService):  # mandatory: returned at once
            await rq.call_plain(f"{service_name}-no-such-queue", b"x", timeout=5)
        gathered = await rq.broadcast("echo", "all", timeout=5, min_replies=1)
        assert [reply.result for reply in gathered.replies] == ["all"]
        started = {t.name for t in threading.enumerate()} - before
        assert not [name for name in started if name.startswith("reqrep-")], started

    async def elsewhere() -> None:
        with pytest.raises(ConfigError, match="one event loop"):
            await rq.call("echo", "there")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        other = threading.Thread(target=asyncio.run, args=(elsewhere(),))
        other.start()
        other.join(10)
        loop.run_until_complete(rq.close())
    finally:
        loop.close()
    with pytest.raises(ClosedError):
        asyncio.run(rq.call("echo", "after"))


def test_heartbeats_keep_an_idle_native_connection(
    worker: Worker, settings: Settings, service_name: str
) -> None:
    async def main() -> None:
        fast = settings.replace(heartbeat=1)
        async with AsyncRequestor(settings=fast, service=service_name, native=True) as rq:
            await asyncio.sleep(3.5)  # several heartbeat intervals with nothing else to say
            assert rq.connected
            assert rq.reconnects == 0
            assert await rq.call("echo", "awake") == "awake"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_native_loop_blocked_past_its_heartbeats_loses_the_connection_and_recovers(
    worker: Worker, settings: Settings, service_name: str
) -> None:
    """What the guide warns of: the loop runs the heartbeats. Blocked for several intervals, the
    connection is closed by the broker; reqrep reconnects and calls work again."""

    async def main() -> None:
        fast = settings.replace(heartbeat=1)
        async with AsyncRequestor(settings=fast, service=service_name, native=True) as rq:
            time.sleep(4)  # blocking the loop is what this test is about
            deadline = time.monotonic() + 20
            while rq.reconnects == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert rq.reconnects >= 1
            assert await rq.call("echo", "back", timeout=10, idempotent=True) == "back"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_close_sync_from_another_thread_fails_a_pending_native_call(
    worker: Worker, settings: Settings, service_name: str, gate: Gate
) -> None:
    async def main() -> None:
        rq = await AsyncRequestor(settings=settings, service=service_name, native=True).open()
        task = asyncio.ensure_future(rq.call("gate", "x", timeout=30))
        while not gate.started.is_set():
            await asyncio.sleep(0.01)
        await asyncio.to_thread(rq.close_sync)  # the outcome crosses back to the loop
        with pytest.raises(ClosedError):
            await task
        await rq.close()  # waits for the connection, closed on this loop, to end

    asyncio.run(asyncio.wait_for(main(), 30))
