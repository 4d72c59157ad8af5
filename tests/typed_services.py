"""Typed services that tests run, in process or with ``reqrep worker tests.typed_services:...``.

``lifecycle`` records its hooks and calls, one line each, in the file ``$REQREP_TEST_EVENTS``
names (several processes append to it).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from pydantic import BaseModel

from reqrep import AppError, Lifespan, Service


class Line(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    customer: str
    lines: list[Line]


class Placed(BaseModel):
    order_id: str
    items: int


class OutOfStock(AppError):
    code = "tests.out_of_stock"


shop = Service("shop")
shop_calls: list[Order] = []  # what the handler was given, in this process


@shop.handler(timeout=4.5, idempotent=True)
def place(order: Order) -> Placed:
    shop_calls.append(order)
    if any(line.sku == "none-left" for line in order.lines):
        raise OutOfStock("no more of it", details={"sku": "none-left"})
    return Placed(order_id=f"{order.customer}-1", items=sum(x.quantity for x in order.lines))


# -- one line per hook and call, across processes ----------------------------------------------

lifecycle = Service("lifecycle")
_lock = threading.Lock()


def record(event: str) -> None:
    with _lock, open(os.environ["REQREP_TEST_EVENTS"], "a", encoding="utf-8") as events:
        events.write(f"{event} {os.getpid()}\n")


@lifecycle.on_startup
def started(life: Lifespan) -> None:
    record("startup")
    life.resources.add("recorder", record)


@lifecycle.on_shutdown
async def stopping(_life: Lifespan) -> None:
    record("shutdown")


@lifecycle.handler
def work(payload: Any, *, recorder: Any) -> str:
    gate = payload.get("gate") if isinstance(payload, dict) else None
    recorder("handling")
    if gate:  # hold the call until the test has sent SIGTERM: it is in flight during the drain
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            threading.Event().wait(0.01)
    recorder("handled")
    return "done"
