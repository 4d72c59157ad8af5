"""The requesting side: ``Requestor`` sends calls and waits for their replies;
``AsyncRequestor`` is its asyncio face; ``Admin`` is the operator's session (ping, status,
dead letters).

Modules: ``client`` (Requestor), ``aio`` (AsyncRequestor), ``admin`` (Admin) and
``broadcast`` (what a broadcast returns) are the public ones; the modules whose names start
with ``_`` are internal (the call table ``_calls``, the shared send path ``_core``, the I/O side
``_io``, the worker check ``_presence``...).
"""

from reqrep.requestor._calls import ReplyStats
from reqrep.requestor.admin import Admin, DeadLetter, Replayed, ServiceStatus, WorkerInfo
from reqrep.requestor.aio import AsyncRequestor
from reqrep.requestor.broadcast import BroadcastReply, BroadcastResult
from reqrep.requestor.client import Requestor
from reqrep.requestor.middleware import OutgoingCall

__all__ = [
    "Admin",
    "AsyncRequestor",
    "BroadcastReply",
    "BroadcastResult",
    "DeadLetter",
    "OutgoingCall",
    "Replayed",
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
