"""A typed reqrep service: pydantic models in and out (``reqrep[pydantic]``).

    reqrep worker shop:service        # from docs/examples/

``starlette_app.py`` calls it with ``rq.call(place, Order(...))``: the handler function itself
names the service, the method, the models and the declared timeout.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from reqrep import AppError, Service

service = Service("shop")


class Line(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class Order(BaseModel):
    customer: str
    lines: list[Line]


class Placed(BaseModel):
    order_id: str
    items: int


class OutOfStock(AppError):
    code = "out_of_stock"


@service.handler(timeout=5, idempotent=True)
def place(order: Order) -> Placed:
    for line in order.lines:
        if line.sku == "unicorn":
            raise OutOfStock("no unicorns left", details={"sku": line.sku})
    return Placed(order_id=f"{order.customer}-1", items=sum(x.quantity for x in order.lines))
