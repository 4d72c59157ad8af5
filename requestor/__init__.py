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
