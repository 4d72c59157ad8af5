"""reqrep leaves pika as it ships: a user's own pika connection in the same process sees plain
pika, before and after a Requestor, a Worker and a native AsyncRequestor have run (issue: reqrep
used to replace ``pika.frame.decode_frame`` and private methods of pika's classes for the whole
process)."""

from __future__ import annotations

import asyncio
import inspect
import sys
import uuid
from typing import Any

import pika

from reqrep.common import Settings
from reqrep.requestor import AsyncRequestor, Requestor
from reqrep.worker import Worker
from reqrep.worker.demo import build


def _pika_objects() -> dict[str, int]:
    """id() of every global of every pika module and of every attribute of its classes."""
    seen: dict[str, int] = {}
    for name, module in sorted(sys.modules.items()):
        if not (name == "pika" or name.startswith("pika.")) or module is None:
            continue
        for attr, value in vars(module).items():
            seen[f"{name}.{attr}"] = id(value)
            if inspect.isclass(value) and value.__module__ == name:
                for cls_attr, cls_value in vars(value).items():
                    seen[f"{name}.{attr}.{cls_attr}"] = id(cls_value)
    return seen


def _plain_pika_round_trip(url: str) -> bytes:
    """A message through the broker and back over a plain pika BlockingConnection."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        body = uuid.uuid4().hex.encode()
        channel.basic_publish("", queue, body, pika.BasicProperties(headers={"x": 2**40}))
        for _method, properties, got in channel.consume(queue, inactivity_timeout=10):
            assert properties.headers == {"x": 2**40}
            channel.cancel()
            return bytes(got or b"")
        return b""
    finally:
        connection.close()


def test_a_users_pika_is_pikas_own_before_and_after(settings: Settings, service_name: str) -> None:
    import pika.frame  # noqa: PLC0415 - the function reqrep used to replace

    decode_frame: Any = pika.frame.decode_frame
    assert _plain_pika_round_trip(settings.url)
    before = _pika_objects()

    with (
        Worker(build(service_name), settings=settings, concurrency=2),
        Requestor(settings=settings, service=service_name) as rq,
    ):
        assert rq.call("echo", {"n": 2**40}) == {"n": 2**40}
        assert [f.result(10) for f in [rq.call_async("echo", i) for i in range(50)]] == list(
            range(50)
        )

        async def native() -> Any:  # a connection hosted on this loop: pika's AsyncioConnection
            async with AsyncRequestor(settings=settings, service=service_name, native=True) as arq:
                return await asyncio.gather(*(arq.call("echo", i) for i in range(50)))

        assert asyncio.run(native()) == list(range(50))
        during = _pika_objects()
        assert _plain_pika_round_trip(settings.url)  # beside a running Requestor and Worker

    after = _pika_objects()
    assert pika.frame.decode_frame is decode_frame
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert changed == []
    assert sorted(k for k in before if during.get(k) != before[k]) == []
    assert _plain_pika_round_trip(settings.url)
