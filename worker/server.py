"""Worker: serves one Service over one connection, with handlers on a bounded thread pool."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any

from reqrep.common import control
from reqrep.common._link import State
from reqrep.common._transport import Transport, pika_transport
from reqrep.common.config import Settings
from reqrep.common.errors import ConfigError, ReqrepError, StartupError
from reqrep.common.observe import Probe
from reqrep.worker.aio import HandlerLoop
from reqrep.worker.broadcast import Broadcasts
from reqrep.worker.cancel import Cancellations
from reqrep.worker.consumer import WATCHDOG, Consumer, ConsumerStats, Job
from reqrep.worker.control import ControlResponder
from reqrep.worker.dedupe import ReplyCache
from reqrep.worker.execute import execute, execute_async, handler_ran
from reqrep.worker.inline import InlineWatch
from reqrep.worker.invoke import bind
from reqrep.worker.lifecycle import HOOK_TIMEOUT, Lifecycle, check_resources
from reqrep.worker.limits import MethodLimits
from reqrep.worker.plain import PlainService, execute_plain, execute_plain_async, queue_of
from reqrep.worker.pool import HandlerPool
from reqrep.worker.service import Handler, Service

__all__ = ["Worker"]

log = logging.getLogger("reqrep.worker")


class Worker:
    """Consumes a service's request queue and answers each request.

    Handlers run on ``concurrency`` pool threads, never on the I/O thread, so a long handler
    cannot starve the connection's heartbeats. ``async def`` handlers run on one event loop
    thread instead, at most ``concurrency`` coroutines at a time; a handler that blocks that loop
    is logged (``HandlerLoop``). Inline handlers (``inline=True``) run on the I/O thread itself,
    where their request is delivered; one that overruns ``settings.inline_budget`` is logged
    with its stack and counted (``InlineWatch``). The broker sends at most ``prefetch`` (default: a
    quarter more than ``concurrency``) unacknowledged requests to this worker, so N workers share
    one queue fairly.
    If the connection drops, the worker reconnects by itself; the broker redelivers what was in
    flight. Replies are cached by service, method and idempotency key (at most
    ``dedupe_entries`` and ``settings.dedupe_bytes``, for ``dedupe_ttl`` seconds), so a
    redelivered or retried request that already ran here is answered, not run again. A consumer
    that stalls (requests ready, none delivered for ``watchdog`` seconds, none held) is replaced.

    ``transport`` is for tests (``reqrep.testing.MemoryBroker``): by default the worker talks to
    RabbitMQ through pika. ``resources`` are handed to the handlers by name, in place of what
    the service's ``on_startup`` hooks would add under the same names (fakes, in tests; see
    ``worker/lifecycle.py``).

    The service's startup hooks run in ``start``, before consuming; its shutdown hooks in
    ``stop``, after the drain. Each method's handler is called through what the service
    declares for it (contract, resources, middleware: ``worker/invoke.py``), and at most its
    ``concurrency`` calls of it run at once (``worker/limits.py``).

    ``native=True`` puts the connection on the event loop of the ``async def`` handlers (no I/O
    thread): a request is received, run as a task and answered on that one loop, with no hand-off
    between threads (plain handlers still run on the pool and hand their replies back). The
    guarantees are the same; the price is that a handler that blocks the loop now also delays the
    connection's heartbeats, confirms and acks (the watchdog still reports it).

    Threads: ``start``, ``stop`` and ``wait`` run on a controlling thread; ``run`` on the main
    thread (it installs signal handlers). Handlers run on pool threads ``reqrep-handler-N``,
    async ones on the loop thread ``reqrep-aio-<service>``, inline ones on the Consumer's I/O
    thread, where every broker call happens (with ``native``, that loop's thread), watched by
    ``reqrep-inline-<service>``.
    """

    def __init__(
        self,
        service: Service | PlainService,
        url: str | Sequence[str] | None = None,
        *,
        settings: Settings | None = None,
        concurrency: int = 8,
        prefetch: int | None = None,
        drain_timeout: float = 30.0,
        dedupe_entries: int = 10_000,
        dedupe_ttl: float = 300.0,
        watchdog: float = WATCHDOG,
        transport: Transport | None = None,
        resources: Mapping[str, Any] | None = None,
        native: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if prefetch is not None and prefetch < 1:
            raise ConfigError(f"prefetch must be >= 1, got {prefetch}")
        base = settings if settings is not None else Settings.from_env()
        self.service = service
        self.settings = base.replace(url=url)
        self.concurrency = concurrency
        self.prefetch = prefetch or default_prefetch(concurrency)
        self.drain_timeout = drain_timeout
        self.native = bool(native)
        self._wake = threading.Event()  # a stop was asked for, or the connection ended
        # Set by the signal handler, which must take no lock: Event.set() there can deadlock
        # the main thread if the signal lands while that thread holds the Event's own lock.
        self._signal: str | None = None
        self._pool: HandlerPool[Job] = HandlerPool(concurrency, self._run_job)
        self._handler_loop = HandlerLoop(concurrency, name=f"reqrep-aio-{service.name}")
        self._inline = InlineWatch(
            f"reqrep-inline-{service.name}", self.settings.inline_budget, self._on_overrun
        )
        self._has_inline = any(service.is_inline(m) for m in service.methods)
        self._lifecycle = Lifecycle(
            service.name,
            self.settings,
            service.startup_hooks,
            service.shutdown_hooks,
            resources,
        )
        self._invokers: dict[str, Handler] = {}  # method -> what runs it, when it is wrapped
        self._limits: MethodLimits[Job] = MethodLimits(
            {
                method: spec.concurrency
                for method in service.methods
                if (spec := service.spec(method)) is not None and spec.concurrency is not None
            }
        )
        self._started = time.monotonic()
        self._cancels = Cancellations()
        self._broadcasts = (
            None
            if isinstance(service, PlainService)
            else Broadcasts(
                service, self.settings, self._dispatch, self._on_io_thread, limit=concurrency
            )
        )
        self._control = ControlResponder(
            self.settings,
            service.name,
            self._describe,
            silent={control.CANCEL: self._cancels.on_message},
            later={}
            if self._broadcasts is None
            else {control.BROADCAST: self._broadcasts.on_message},
        )
        self._probe = Probe(
            "worker",
            service.name,
            queue=queue_of(service, self.settings),
            known=lambda m: service.get(m) is not None,
        )
        plain = isinstance(service, PlainService)
        self._execute = execute_plain if plain else execute
        self._execute_async = execute_plain_async if plain else execute_async
        self._consumer = Consumer(
            self.settings,
            service,
            prefetch=self.prefetch,
            dispatch=self._dispatch,
            on_closed=self._wake.set,
            cache=ReplyCache(dedupe_entries, dedupe_ttl, max_bytes=self.settings.dedupe_bytes),
            name=f"reqrep-worker-{service.name}-{os.getpid()}",
            transport=transport if transport is not None else pika_transport(),
            on_setup=self._control.open,
            probe=self._probe,
            watchdog=watchdog,
            cancels=self._cancels,
            host=self._handler_loop if self.native else None,
        )

    def __repr__(self) -> str:
        return (
            f"<Worker service={self.service.name!r} url={self.settings.redacted_url!r} "
            f"concurrency={self.concurrency} state={self._consumer.state.value}>"
        )

    @property
    def stats(self) -> ConsumerStats:
        return self._consumer.stats

    @property
    def id(self) -> str:
        """This worker's random id: ``WorkerInfo.id`` in pings, the tag of its broadcast
        replies."""
        return self._control.id

    @property
    def name(self) -> str:
        """The connection name the broker shows for this worker (``connection_name``)."""
        return self._consumer.name

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established."""
        return self._consumer.reconnects

    @property
    def address(self) -> str:
        """The broker URL of the current (or last) connection attempt, password hidden."""
        return self._consumer.address

    @property
    def queue(self) -> str:
        return self._consumer.queue

    @property
    def consuming(self) -> bool:
        """True while the broker delivers the request queue to this worker: connected, not
        draining, consumer not cancelled. What the health endpoint reports (any thread)."""
        return self._consumer.consuming

    def start(self) -> Worker:
        """Connect, declare the request queue and start consuming.

        Raises StartupError if a startup hook fails or a handler's resource is missing (before
        connecting), BrokerUnreachable only for what a retry cannot fix (a refused login or
        vhost), AccessRefused, and TopologyConflict if a queue exists with other arguments (or
        ConnectionLost if the broker refuses the set-up otherwise). Otherwise, if the worker
        is not consuming after ``connect_timeout`` (no broker answers yet, or a quorum queue
        waits for a leader), it keeps trying across all its URLs in the background, and serves
        as soon as it consumes.
        """
        self._started = time.monotonic()
        if self.service.has_sync:
            self._pool.start()
        if self.service.has_async or self._lifecycle.needs_loop or self.native:
            self._handler_loop.start()
        if self._has_inline:
            self._inline.start()
        try:
            self._lifecycle.start(self._run_on_loop)  # StartupError: nothing consumed
            self._invokers = self._bind_handlers()
            self._consumer.start(persist=True)
        except BaseException:
            self._lifecycle.stop(self._run_on_loop)
            self._pool.shutdown()
            self._handler_loop.stop()
            self._inline.stop()
            raise
        if not self._control.ready.wait(self.settings.connect_timeout):
            log.warning("control queue not ready: `reqrep ping` may not see this worker yet")
        log.info(
            "worker %s: service=%s queue=%s concurrency=%d prefetch=%d url=%s",
            "ready" if self._consumer.state is State.OPEN else "started, not consuming yet",
            self.service.name,
            self.queue,
            self.concurrency,
            self.prefetch,
            self.settings.redacted_url,
        )
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Drain and close: stop consuming, let in-flight handlers finish and their replies be
        confirmed and acked, close, then run the service's shutdown hooks and close its
        resources. Returns False if the drain timed out (what was still in
        flight is redelivered by the broker to another worker)."""
        timeout = self.drain_timeout if timeout is None else timeout
        drained = False
        if self._consumer.state is State.OPEN:
            try:
                self._consumer.drain()
                drained = self._wait_drained(timeout)
            except ReqrepError:
                drained = False
            if not drained:
                log.warning(
                    "drain did not finish within %gs; unacked requests are redelivered", timeout
                )
        self._consumer.stop()
        self._lifecycle.stop(self._run_on_loop)  # after the drain; idempotent
        self._pool.shutdown()
        self._handler_loop.stop()
        self._inline.stop()
        self._wake.set()
        return drained

    def _wait_drained(self, timeout: float) -> bool:
        """Wait for the drain; give up at once while the broker blocks the connection (a
        resource alarm): it reads nothing from us then, neither our cancel nor our replies, and
        redelivers what is unacked once we close."""
        deadline = time.monotonic() + timeout
        while not self._consumer.drained.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if self._consumer.blocked is not None:
                log.warning(
                    "the broker blocks the connection (%s): no drain", self._consumer.blocked
                )
                return False
            if time.monotonic() >= deadline:
                return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop was asked for or the connection ended; False on timeout."""
        return self._wake.wait(timeout)

    def run(self, *, parent_pid: int | None = None) -> int:
        """Serve until SIGTERM/SIGINT (then drain), through lost connections and nodes.

        Main thread only. A second signal exits at once; the broker redelivers what was unacked.
        With ``parent_pid``, also stop when that process goes away (a supervisor died).
        Returns a process exit status: 0 after a clean drain.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            self.start()
            # A bounded wait, not a blocking one: a signal that lands just before a blocking
            # wait would only be handled when the wait ends, maybe never.
            while self._signal is None and not self._wake.wait(0.2):
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("supervisor %s is gone: draining", parent_pid)
                    break
            if self._signal is not None:
                log.info("%s: draining", self._signal)
            state = self._consumer.state
            if state is not State.OPEN:  # not consuming: nothing to drain
                self.stop(0)
                return 1 if state is State.CLOSED else 0  # CLOSED: the I/O thread ended
            return 0 if self.stop() else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._signal is not None:
            os.write(2, f"reqrep: {name} again: exiting now without draining\n".encode())
            os._exit(128 + signum)
        self._signal = name  # no lock, no logging here: see __init__

    def _describe(self) -> control.WorkerInfo:
        """This worker's answer to a ping (I/O thread: it reads the consumer's live state)."""
        return control.WorkerInfo(
            service=self.service.name,
            queue=self.queue,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=control.reqrep_version(),
            uptime=round(time.monotonic() - self._started, 3),
            in_flight=self._consumer.in_flight,
            concurrency=self.concurrency,
            prefetch=self.prefetch,
            draining=self._consumer.draining,
            connection=self.name,
            reconnects=self.reconnects,
            stats=dataclasses.asdict(self._consumer.stats),
            id=self._control.id,
        )

    def _on_io_thread(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread (any thread; ClosedError once the worker has stopped)."""
        self._consumer.link.submit(fn)

    # -- the I/O thread, pool threads and the handler loop --------------------------------------

    def _bind_handlers(self) -> dict[str, Handler]:
        """Controlling thread, at start: each method's handler wrapped in what its service
        declares (only those that need wrapping). StartupError for a missing resource."""
        service, bound = self.service, {}
        for method in service.methods:
            spec, handler = service.spec(method), service.get(method)
            if spec is None or handler is None:
                continue
            resources = check_resources(
                method, service.resource_parameters(method), self._lifecycle.resources
            )
            invoker = bind(
                spec,
                handler,
                is_async=service.is_async(method),
                resources=resources,
                middleware=service.middleware_chain,
            )
            if invoker is not handler:
                bound[method] = invoker
        return bound

    def _run_on_loop(self, coroutine: Awaitable[Any]) -> Any:
        """Controlling thread: await an ``async def`` hook on the handler loop, bounded."""

        async def run() -> Any:
            return await coroutine

        future = asyncio.run_coroutine_threadsafe(run(), self._handler_loop.loop)
        try:
            return future.result(HOOK_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise StartupError(f"a hook took more than {HOOK_TIMEOUT:g}s") from None

    def _dispatch(self, job: Job) -> None:
        """I/O thread: hand a job to a pool thread, or an async one to the handler loop,
        unless its method is at its concurrency limit (then it waits for a release); run an
        inline one here and now."""
        self._probe.dispatched(job.method)
        if self._limits.admit(job):
            self._start_job(job)

    def _start_job(self, job: Job) -> None:
        """Any thread: hand an admitted job over (never blocks)."""
        invoker = self._invokers.get(job.method)
        if invoker is not None:
            job = dataclasses.replace(job, handler=invoker)
        if self.service.is_async(job.method):
            self._handler_loop.spawn(lambda: self._run_async_job(job))
        elif self.service.is_inline(job.method):  # no limit: only _dispatch gets here
            self._run_inline(job)
        else:
            self._pool.submit(job)

    def _release(self, job: Job) -> None:
        """Pool thread or handler loop: ``job`` is done; start its method's next one."""
        waiting = self._limits.release(job.method)
        if waiting is not None:
            self._start_job(waiting)

    def _run_inline(self, job: Job) -> None:
        """I/O thread: run an inline job's handler here, watched against the budget; its
        reply is published at once (no hand-off). ``execute`` turns whatever the handler
        raises, even a BaseException, into an error reply: the I/O thread goes on."""
        try:
            if self._gone(job, here=True):
                return
            started = time.monotonic()
            body = self._inline.run(
                job.method,
                lambda: self._execute(
                    job,
                    service=self.service.name,
                    max_bytes=self.settings.max_message_bytes,
                    probe=self._probe,
                ),
            )
            self._reply(job, body, started, here=True)
        except Exception:  # ours, not the handler's: as a pool thread would, log it
            log.exception("unexpected error running %s inline", job.method)

    def _on_overrun(self, method: str, seconds: float) -> None:
        """The inline watchdog's thread: an inline handler overran its budget."""
        self._consumer.stats.inline_overruns += 1  # the one writer of this counter
        self._probe.inline_overrun(method, seconds)

    def _run_job(self, job: Job) -> None:
        try:
            if self._gone(job):
                return
            started = time.monotonic()
            body = self._execute(
                job,
                service=self.service.name,
                max_bytes=self.settings.max_message_bytes,
                probe=self._probe,
            )
            self._reply(job, body, started)
        finally:
            self._release(job)

    async def _run_async_job(self, job: Job) -> None:
        try:
            if self._gone(job):  # called once a slot of the handler loop is free
                return
            started = time.monotonic()
            # The caller's cancel cancels this task, and with it the handler's (execute_async).
            loop, task = asyncio.get_running_loop(), asyncio.current_task()
            take_back = (
                job.cancel.on_set(lambda: _cancel_soon(loop, task))
                if job.cancel is not None and task is not None
                else None
            )
            try:
                body = await self._execute_async(
                    job,
                    service=self.service.name,
                    max_bytes=self.settings.max_message_bytes,
                    probe=self._probe,
                )
            except asyncio.CancelledError:
                if job.cancel is None or not job.cancel.is_set():
                    raise  # the worker is stopping: no reply, the broker redelivers the request
                body = b""  # its caller cancelled it: _reply sends nothing
            finally:
                if take_back is not None:
                    take_back()
            self._reply(job, body, started)
        finally:
            self._release(job)

    def _gone(self, job: Job, *, here: bool = False) -> bool:
        """Pool thread, handler loop or (``here``) the I/O thread, at pickup: a job whose
        caller has gone is acked, not run, and gets no reply: its caller cancelled it, or it
        waited here (prefetched behind slow handlers) past its caller's deadline."""
        if job.cancel is not None and job.cancel.is_set():
            self._skip(job, "cancelled", here=here)
        elif job.deadline_ms is not None and time.time() * 1000 > job.deadline_ms:
            self._skip(job, "expired", here=here)
        else:
            return False
        return True

    def _skip(self, job: Job, reason: str, *, here: bool = False) -> None:
        """Any thread; ``here``: on the I/O thread, settled at once."""
        self._probe.dropped(job.method)  # dispatched, and leaves without a reply
        try:
            if job.answer is not None:  # a broadcast: acked when it came, nothing to settle
                job.answer(None)
                return
            if here:
                self._consumer.skip_now(job, reason)
            else:
                self._consumer.skip(job, reason)
        except ReqrepError as exc:
            log.debug("%s job %s not acked (%s); redelivered", reason, job.correlation_id, exc)

    def _reply(self, job: Job, body: bytes, started: float, *, here: bool = False) -> None:
        """Any thread; ``here``: on the I/O thread, published at once."""
        if job.cancel is not None and job.cancel.is_set():
            # Its caller cancelled it while it ran: nobody reads a reply, and a result cut
            # short is no result to cache.
            self._skip(job, "cancelled", here=here)
            return
        self._probe.handler_done(job.method, body, time.monotonic() - started)
        try:
            if job.answer is not None:  # a broadcast: its asker gets the reply
                job.answer(body)
                return
            if here:
                self._consumer.reply_now(job, body, ran=handler_ran(body))
            else:
                self._consumer.reply(job, body, ran=handler_ran(body))
        except ReqrepError as exc:
            log.warning(
                "reply to %s not sent (%s); the broker will redeliver the request",
                job.correlation_id,
                exc,
                extra={"correlation_id": job.correlation_id},
            )


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _cancel_soon(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` on its loop (any thread: the worker's I/O thread sets cancel signals)."""
    loop.call_soon_threadsafe(task.cancel)


def default_prefetch(concurrency: int) -> int:
    """A quarter more than the handler threads (at least one more).

    With exactly ``concurrency``, a thread that has finished waits idle until its reply is
    confirmed and its request acked before the broker sends the next one: 10-20% of a 10 ms
    handler's time on our machines. A few spare requests hide that round trip; few enough that
    a request rarely waits here while another worker is free.
    """
    return concurrency + max(1, concurrency // 4)
