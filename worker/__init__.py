"""The serving side: a ``Service`` holds handlers; a ``Worker`` serves it from its queue."""

from worker.consumer import ConsumerStats
from worker.server import Worker
from worker.service import Handler, Service

__all__ = ["ConsumerStats", "Handler", "Service", "Worker"]
