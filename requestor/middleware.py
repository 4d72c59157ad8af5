"""Requestor middleware: ordered wrappers around each call a requestor makes.

``Requestor(middleware=[...])`` takes plain functions, ``AsyncRequestor(middleware=[...])``
``async def`` ones; each is ``mw(call, call_next)`` with an ``OutgoingCall``, the first given
outermost (``common/middleware.py``). A middleware may change the call
(``dataclasses.replace(call, headers={...})``: an auth token), return a result without calling
``call_next`` (a cache), raise (a client-side check), or look at the outcome (its own metrics).
It sees the payload and the result as JSON values, before a typed call's reply is turned into
its model.

Middleware wraps ``Requestor.call`` and ``AsyncRequestor.call``. ``Requestor.call_async``
returns a future at once, before any middleware could see the outcome: a Requestor with
middleware refuses it (ConfigError) rather than skip them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["OutgoingCall"]


@dataclasses.dataclass(frozen=True)
class OutgoingCall:
    """One call as requestor middleware sees it (``dataclasses.replace`` to change it).

    ``service`` is None when the requestor's own default applies; ``timeout`` None when the
    requestor's default (or the served call's deadline) applies.
    """

    service: str | None
    method: str
    payload: Any  # JSON values
    headers: Mapping[str, str]
    timeout: float | None
    idempotent: bool
