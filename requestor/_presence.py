"""Whether a service has workers: checked before sending, cached for about a second.

A request published to a queue that exists but has no consumer is accepted by the broker and
waits there: its caller would wait out its whole timeout. So before a request to a queue goes
out, the I/O thread needs to have seen, within the last ``ttl`` seconds, that the queue has at
least one consumer. It asks with a passive ``queue.declare`` (its DeclareOk carries
``consumer_count``) on a channel of its own: a passive declare of a missing queue closes its
channel (404), which must not take the request channel and its calls down with it.

Costs: at most one check per service per ``ttl / 2`` while calls flow (a known service is
re-checked in the background before its answer expires, so steady traffic never waits); a call
waits for a check only when its service was not seen with consumers in the last ``ttl`` seconds
(the first call, or after a quiet spell). Calls that arrive while a check is out wait for that
same check. Only positive answers are cached: a service found without consumers is asked again
by the next call, so a worker that starts is used at once.

A queue found without consumers is not always a queue nobody consumes. After the requestor's
own connection comes back (``recovered``), the workers are probably reconnecting too; and while
a quorum queue has no leader (an election after its leader's node stopped, a lost quorum, a
partition), the node asked reports 0 consumers although the workers are there. So a queue that
was seen with consumers within the last ``memory`` seconds, or any queue during the grace
period after a reconnection (``reconnect_max`` + 1 s), is asked again every 0.2 s instead of
failing its calls at once: the calls go as soon as consumers are seen, and otherwise end at
their own deadline (CallTimeout) or, once the memory of the consumers has passed, with
NoWorkers. NoWorkers therefore means that nothing consumed the queue for ``memory`` seconds.

A request is sent only after its service was seen with consumers, so NoWorkers means the
request was never queued (a worker that dies within the ``ttl`` leaves the calls sent meanwhile
to wait in the queue, within their deadlines, as before).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable

from reqrep.common._transport import Channel, Failure, QueueInfo
from reqrep.common.errors import NoSuchService, NoWorkers, ReqrepError

__all__ = ["WorkerPresence"]

log = logging.getLogger("reqrep.requestor")

DEFAULT_TTL = 1.0  # seconds a "this queue has consumers" answer is trusted
DEFAULT_MEMORY = 30.0  # seconds a queue once seen with consumers is asked again, not failed
RECHECK = 0.2  # seconds between checks of a queue that has no consumers for now
_NOT_FOUND = 404


@dataclasses.dataclass
class _Check:
    service: str
    waiters: list[tuple[Callable[[], None], Callable[[ReqrepError], object]]]


class WorkerPresence:
    """Gates requests on their service having consumers.

    Threads: every method runs on the requestor's I/O thread. ``open_channel(on_open)`` opens a
    channel on the current connection (or raises if there is none); ``call_later(delay, fn)``
    runs ``fn`` on a later turn of the loop.
    """

    def __init__(
        self,
        open_channel: Callable[[Callable[[Channel], None]], None],
        call_later: Callable[[float, Callable[[], None]], object],
        *,
        ttl: float = DEFAULT_TTL,
        memory: float = DEFAULT_MEMORY,
    ) -> None:
        self._open_channel = open_channel
        self._call_later = call_later
        self._ttl = ttl
        self._memory = memory
        self._grace_until = 0.0  # monotonic time until which "no consumers" is asked again
        self._seen: dict[str, float] = {}  # queue -> monotonic time consumers were last seen
        self._checks: dict[str, _Check] = {}  # queue -> the check out for it
        self._asked: deque[str] = deque()  # queues asked on the channel, in order
        self._channel: Channel | None = None
        self._opening = False
        self.checks = 0  # passive declares sent (for tests and stats)

    def gate(
        self,
        queue: str,
        service: str,
        send: Callable[[], None],
        fail: Callable[[ReqrepError], object],
    ) -> None:
        """Call ``send()`` now if ``queue`` had consumers lately; else after a check says so,
        or ``fail(NoWorkers | NoSuchService)``."""
        age = time.monotonic() - self._seen.get(queue, -1e9)
        if age < self._ttl:
            if age > self._ttl / 2:
                self._check(queue, service)  # refresh ahead, nobody waits for it
            send()
            return
        self._check(queue, service).waiters.append((send, fail))

    def recovered(self, grace: float) -> None:
        """The connection is back after a loss: give the workers ``grace`` seconds to return."""
        self._grace_until = time.monotonic() + grace

    def reset(self) -> None:
        """The connection is gone (and the check channel with it): let waiting calls go on;
        the request path holds them until the next connection, where they are gated again."""
        self._channel = None
        self._opening = False
        self._asked.clear()
        self._release_all()

    # -- the check channel --------------------------------------------------------------------

    def _check(self, queue: str, service: str) -> _Check:
        check = self._checks.get(queue)
        if check is None:
            check = self._checks[queue] = _Check(service, [])
            if self._channel is not None:
                self._ask(queue)
            elif not self._opening:
                self._open()
        return check

    def _open(self) -> None:
        self._opening = True
        try:
            self._open_channel(self._on_open)
        except Exception:  # noqa: BLE001 - no connection: the request path holds the calls
            self._opening = False
            self._call_later(0, self._release_all)

    def _on_open(self, channel: Channel) -> None:
        self._opening = False
        self._channel = channel
        channel.on_close(self._on_close)
        for queue in self._checks:
            self._ask(queue)

    def _ask(self, queue: str) -> None:
        channel = self._channel
        assert channel is not None  # noqa: S101 - asked only on an open check channel
        self.checks += 1
        self._asked.append(queue)
        channel.declare_queue(queue, passive=True, on_ok=self._on_answer)

    def _on_answer(self, info: QueueInfo) -> None:
        queue = self._asked.popleft()  # a channel's requests are answered in order
        check = self._checks.pop(queue, None)
        now = time.monotonic()
        if info.consumers > 0:
            self._seen[queue] = now
            for send, _fail in check.waiters if check else ():
                send()
        elif check is not None and check.waiters and now < self._ask_again_until(queue):
            self._checks[queue] = check  # still out: ask again soon
            self._call_later(RECHECK, lambda: self._ask_again(queue))
        else:
            self._seen.pop(queue, None)
            for _send, fail in check.waiters if check else ():
                fail(NoWorkers(check.service if check else queue))

    def _ask_again_until(self, queue: str) -> float:
        """Until when a queue without consumers is asked again rather than failed."""
        seen = self._seen.get(queue)
        remembered = -1e9 if seen is None else seen + self._memory
        return max(self._grace_until, remembered)

    def _ask_again(self, queue: str) -> None:
        if queue not in self._checks:
            return  # released meanwhile (the connection went)
        if self._channel is not None:
            self._ask(queue)
        elif not self._opening:
            self._open()

    def _on_close(self, channel: Channel, failure: Failure) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        code = failure.code if failure.by_broker else None
        if code == _NOT_FOUND and self._asked:
            # The first unanswered check was refused: that queue does not exist.
            queue = self._asked.popleft()
            self._seen.pop(queue, None)
            check = self._checks.pop(queue, None)
            for _send, fail in check.waiters if check else ():
                fail(NoSuchService(check.service if check else queue))
        self._asked.clear()
        if code == _NOT_FOUND and self._checks:
            self._open()  # ask the others again on a new channel
        elif code != _NOT_FOUND:
            log.debug("worker check channel closed: %s", failure)
            self._call_later(0, self._release_all)

    def _release_all(self) -> None:
        """Let every waiting call go on unchecked (the connection is going; the request path
        holds them and gates them again once it is back)."""
        checks, self._checks = self._checks, {}
        for check in checks.values():
            for send, _fail in check.waiters:
                send()
