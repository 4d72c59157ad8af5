"""The serving side: a ``Service`` holds handlers; a ``Worker`` serves it from its queue."""

from reqrep.worker.consumer import ConsumerStats
from reqrep.worker.context import CallContext, current
from reqrep.worker.server import Worker
from reqrep.worker.service import Handler, Service

__all__ = ["CallContext", "ConsumerStats", "Handler", "Service", "Worker", "current"]
