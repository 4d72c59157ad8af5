"""A Link hosted on a caller's asyncio loop (``AsyncioLoop``), over the in-memory broker.

No thread of the Link's own: it connects, runs submitted work, recovers a dropped connection and
ends on the event loop that hosts it, and leaves nothing scheduled there once it has ended.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from reqrep.common import Settings
from reqrep.common._link import Link, LinkOwner, State
from reqrep.common._transport import AsyncioLoop, Channel
from reqrep.common._transport._memory import MemoryBroker
from reqrep.common.errors import ReqrepError

URL = "amqp://guest:guest@memory/%2F"


class _Owner(LinkOwner):
    """Sets each channel up at once and records what the Link tells it, with the thread."""

    def __init__(self) -> None:
        self.link: Link | None = None
        self.events: list[str] = []
        self.threads: set[int] = set()

    def setup(self, channel: Channel) -> None:
        self.threads.add(threading.get_ident())
        self.events.append("setup")
        assert self.link is not None
        self.link.ready()

    def on_lost(self, error: ReqrepError) -> None:
        self.events.append("lost")

    def on_recovered(self) -> None:
        self.events.append("recovered")

    def on_closed(self) -> None:
        self.events.append("closed")


async def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), seconds)


def test_a_hosted_link_lives_and_ends_on_its_loop() -> None:
    broker = MemoryBroker()
    owner = _Owner()
    link = Link(Settings(url=URL), owner, name="hosted", transport=broker.transport)
    owner.link = link

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hosted = AsyncioLoop(loop)
        settled = loop.create_future()
        threads_before = threading.active_count()
        link.start_hosted(hosted, lambda: settled.set_result(link.state))
        assert await asyncio.wait_for(settled, 5) is State.OPEN
        assert link.hosted
        assert threading.active_count() == threads_before  # no I/O thread
        assert owner.threads == {threading.get_ident()}

        ran: list[str] = []
        link.submit(lambda: ran.append("now"))
        assert ran == ["now"]  # from the loop's thread: at once, not a turn later
        other = threading.Thread(target=link.submit, args=(lambda: ran.append("later"),))
        other.start()
        other.join(5)
        await _until(lambda: ran == ["now", "later"])  # from another: through the loop

        broker.close_connections("tests say so")
        await _until(lambda: "recovered" in owner.events)
        assert owner.events == ["setup", "lost", "setup", "recovered"]
        assert link.reconnects == 1

        ended = loop.create_future()
        link.stop()
        link.when_ended(lambda: ended.set_result(None))
        await asyncio.wait_for(ended, 5)
        assert link.state is State.CLOSED
        assert link.ended.is_set()
        assert owner.events[-1] == "closed"
        assert hosted.closed
        with pytest.raises(Exception, match="closed"):
            link.submit(lambda: None)

    asyncio.run(main())


def test_an_asyncio_loop_drops_what_it_holds_once_closed() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        hosted = AsyncioLoop(loop)
        ran: list[str] = []
        hosted.call_later(0, lambda: ran.append("soon"))
        cancelled = hosted.call_later(0.01, lambda: ran.append("cancelled"))
        hosted.cancel(cancelled)
        hosted.call_later(0.05, lambda: ran.append("dropped at close"))
        await asyncio.sleep(0.02)
        hosted.call_soon_threadsafe(lambda: ran.append("posted, dropped at close"))
        hosted.close()
        hosted.call_later(0, lambda: ran.append("after close"))
        hosted.call_soon_threadsafe(lambda: ran.append("after close"))
        await asyncio.sleep(0.1)
        with pytest.raises(RuntimeError):
            hosted.run()
        return ran

    assert asyncio.run(main()) == ["soon"]


def test_posting_to_a_closed_event_loop_is_dropped_quietly() -> None:
    loop = asyncio.new_event_loop()
    hosted = AsyncioLoop(loop)
    loop.close()
    hosted.call_soon_threadsafe(lambda: None)  # no RuntimeError: nobody is left to run it
    assert hosted.closed
