"""What mypy sees of typed calls: checked by ``scripts/typecheck.py`` (strict), never run.

Each ``assert_type`` fails the type check if a typed call's result is not the handler's reply
type. Each ``type: ignore[...]`` marks a call that must not type-check: with
``warn_unused_ignores`` (strict), an ignore that is not needed fails the check too, so a wrong
payload that mypy let through would be caught.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from typing_extensions import assert_type

from reqrep import AsyncRequestor, Requestor, Service
from tests.typed_services import Line, Order, Placed, place

service = Service("typing")


@service.handler
async def count(order: Order, *, db: object) -> int:  # async, with a resource
    return len(order.lines) + (db is None)


def calls(rq: Requestor) -> None:
    order = Order(customer="x", lines=[Line(sku="a", quantity=1)])
    assert_type(rq.call(place, order), Placed)
    assert_type(rq.call(count, order), int)
    assert_type(rq.call_async(place, order), Future[Placed])
    assert_type(rq.call("place", {"any": "json"}), Any)
    rq.call(place, {"customer": "x"})  # type: ignore[arg-type, misc]
    rq.call(place, Placed(order_id="1", items=1))  # type: ignore[arg-type, misc]


async def async_calls(rq: AsyncRequestor) -> None:
    order = Order(customer="x", lines=[])
    assert_type(await rq.call(place, order), Placed)
    assert_type(await rq.call(count, order), int)
    await rq.call(count, "not an order")  # type: ignore[misc]
