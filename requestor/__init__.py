"""The requesting side: ``Requestor`` sends calls and waits for their replies."""

from reqrep.requestor.client import Requestor
from reqrep.requestor.reply_handler import ReplyHandler, ReplyStats

__all__ = ["ReplyHandler", "ReplyStats", "Requestor"]
