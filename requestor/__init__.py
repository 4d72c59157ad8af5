"""The requesting side: ``Requestor`` sends calls and waits for their replies;
``AsyncRequestor`` is its asyncio face."""

from reqrep.requestor.aio import AsyncRequestor
from reqrep.requestor.client import Requestor
from reqrep.requestor.reply_handler import ReplyHandler, ReplyStats

__all__ = ["AsyncRequestor", "ReplyHandler", "ReplyStats", "Requestor"]
