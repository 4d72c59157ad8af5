"""The requesting side: ``Requestor`` sends calls and waits for their replies."""

from requestor.client import Requestor
from requestor.reply_handler import ReplyHandler, ReplyStats

__all__ = ["ReplyHandler", "ReplyStats", "Requestor"]
