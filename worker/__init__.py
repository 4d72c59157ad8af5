"""The serving side: a ``Service`` holds handlers; a ``Worker`` serves it from its queue. A
``PlainService`` answers plain AMQP RPC (no reqrep envelope) on a queue named verbatim."""

from reqrep.worker.consumer import ConsumerStats
from reqrep.worker.context import CallContext, current
from reqrep.worker.invoke import HandlerCall
from reqrep.worker.lifecycle import Lifespan, Resources
from reqrep.worker.plain import PlainService
from reqrep.worker.server import Worker
from reqrep.worker.service import Handler, Service

__all__ = [
    "CallContext",
    "ConsumerStats",
    "Handler",
    "HandlerCall",
    "Lifespan",
    "PlainService",
    "Resources",
    "Service",
    "Worker",
    "current",
]

# Last, so that the real package is what the imports above load.
if __name__ != "reqrep.worker":  # a checkout's worker/ folder, imported by its bare name
    raise ImportError(
        f"this folder is the package reqrep.worker: import reqrep.worker, not {__name__} "
        "(importing it under a second name would load a second copy of every module)"
    )
