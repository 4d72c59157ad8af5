"""A Starlette web app that calls reqrep services through AsyncRequestor.

Run it next to the demo worker and the typed shop service (``shop.py``, beside this file)::

    pip install 'reqrep[pydantic]' starlette uvicorn
    reqrep worker reqrep.worker.demo:service &
    reqrep worker shop:service &                        # from docs/examples/
    uvicorn --factory starlette_app:create_app          # from docs/examples/
    curl 'http://127.0.0.1:8000/add?a=1&b=2'            # {"sum": 3.0}
    curl -d '{"customer": "ann", "lines": [{"sku": "tea", "quantity": 2}]}' \
        http://127.0.0.1:8000/orders                     # {"order_id": "ann-1", "items": 2}

``/orders`` is a typed call: the request body is validated into the ``Order`` model here (a
422 names the bad fields), sent with ``rq.call(place, order)``, and the reply comes back as a
``Placed`` model; the service's ``OutOfStock`` is caught by its class.

One AsyncRequestor per process, opened by the app's lifespan and shared by every request: the
route awaits its call on the server's event loop, which reqrep never blocks.
``tests/integration/test_starlette_example.py`` runs this app against a real worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pydantic import ValidationError
from shop import Order, OutOfStock, place  # beside this file
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from reqrep import AsyncRequestor, CallTimeout, RemoteError, ReqrepError


def create_app(requestor: AsyncRequestor | None = None) -> Starlette:
    """The app; ``requestor`` defaults to one for the service ``demo`` at ``$AMQP_URL``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with requestor or AsyncRequestor(service="demo") as rq:
            app.state.rq = rq
            yield

    async def add(request: Request) -> JSONResponse:
        try:
            a, b = float(request.query_params["a"]), float(request.query_params["b"])
        except (KeyError, ValueError):
            return JSONResponse({"error": "a and b must be numbers"}, status_code=400)
        try:
            total = await request.app.state.rq.call("add", {"a": a, "b": b}, timeout=2)
        except RemoteError as exc:  # the handler raised
            return JSONResponse({"error": f"{exc.type}: {exc.message}"}, status_code=502)
        except CallTimeout:
            return JSONResponse({"error": "the service did not answer in time"}, status_code=504)
        except ReqrepError as exc:  # NoSuchService, BrokerUnreachable, ...
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"sum": total})

    async def orders(request: Request) -> JSONResponse:
        try:
            order = Order.model_validate_json(await request.body())
        except ValidationError as exc:
            fields = [".".join(map(str, e["loc"])) for e in exc.errors()]
            return JSONResponse({"error": "invalid order", "fields": fields}, status_code=422)
        try:
            placed = await request.app.state.rq.call(place, order)  # a Placed
        except OutOfStock as exc:
            return JSONResponse({"error": exc.message, **exc.details}, status_code=409)
        except ReqrepError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(placed.model_dump())

    return Starlette(
        routes=[Route("/add", add), Route("/orders", orders, methods=["POST"])],
        lifespan=lifespan,
    )
