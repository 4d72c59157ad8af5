"""Services that only tests run (``python -m reqrep worker tests.services:crashy``)."""

from __future__ import annotations

import os
from typing import Any

from reqrep.worker import Service

crashy = Service("crashy")


@crashy.handler
def echo(payload: Any) -> Any:
    return payload


@crashy.handler
def crash(_payload: Any) -> None:
    """Kill this worker process at once, as a segfaulting C extension would."""
    os._exit(70)
