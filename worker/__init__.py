"""The serving side: a ``Service`` holds handlers; a ``Worker`` serves it from its queue."""

from worker.consumer import ConsumerStats
from worker.context import CallContext, current
from worker.server import Worker
from worker.service import Handler, Service

__all__ = ["CallContext", "ConsumerStats", "Handler", "Service", "Worker", "current"]
