"""The requesting side: ``Requestor`` sends calls and waits for their replies;
``AsyncRequestor`` is its asyncio face; ``Admin`` is the operator's session (ping, status,
dead letters)."""

from reqrep.requestor.admin import Admin, DeadLetter, Replayed, ServiceStatus, WorkerInfo
from reqrep.requestor.aio import AsyncRequestor
from reqrep.requestor.client import Requestor
from reqrep.requestor.reply_handler import ReplyHandler, ReplyStats

__all__ = [
    "Admin",
    "AsyncRequestor",
    "DeadLetter",
    "Replayed",
    "ReplyHandler",
    "ReplyStats",
    "Requestor",
    "ServiceStatus",
    "WorkerInfo",
]

# Last, so that the real package is what the imports above load.
if __name__ != "reqrep.requestor":  # a checkout's requestor/ folder, imported by its bare name
    raise ImportError(
        f"this folder is the package reqrep.requestor: import reqrep.requestor, not {__name__} "
        "(importing it under a second name would load a second copy of every module)"
    )
