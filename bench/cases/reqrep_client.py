"""reqrep's Requestor as a benchmark client, in three shapes.

``python -m bench.cases.reqrep_client client --queue SERVICE --mode MODE ...``

The server is not here: it is reqrep's own worker, ``python -m reqrep worker MODULE:SERVICE``,
started by the suite with ``REQREP_QUEUE_PREFIX`` (and the queue settings) in the environment,
which this client reads too (``Settings.from_env()``). ``--queue`` is the *service* name.

- ``async``: one thread keeps ``--outstanding`` calls in flight with ``call_async``; a semaphore
  bounds them, released in each future's done-callback (which runs on the requestor's I/O thread).
- ``threads``: ``--outstanding`` threads share one Requestor, each calling ``call()`` in a loop.
- ``serial``: one call at a time from the main thread.
- ``asyncio``: ``--outstanding`` coroutines awaiting ``AsyncRequestor.call`` on one event loop
  (``bench.cases.reqrep_asyncio``); ``asyncio-native`` the same with ``native=True`` (the
  connection on that loop); ``asyncio-serial`` and ``asyncio-native-serial`` one coroutine.

Every call is ``Requestor.call*(method, payload, timeout=30)``, payload a JSON string of about
``--payload`` bytes encoded (``--payload 0`` sends ``null``). Latency: from just before
``call``/``call_async`` to the moment its result is available to the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from concurrent.futures import Future
from typing import Any

from bench.cases import DRAIN_SECONDS, Window, arm_deadline, case_parser, json_payload
from bench.cases.reqrep_asyncio import run_asyncio
from reqrep.requestor import Requestor

__all__ = ["main"]

CALL_TIMEOUT = 30.0
MAX_ERRORS = 100
ASYNCIO_MODES = ("asyncio", "asyncio-native", "asyncio-serial", "asyncio-native-serial")


def run_async(rq: Requestor, method: str, payload: Any, window: Window, outstanding: int) -> int:
    slots = threading.Semaphore(outstanding)
    in_flight = [0]
    lock = threading.Lock()

    def on_done(future: Future[Any], *, started: float) -> None:
        ended = time.perf_counter()
        exc = future.exception()
        if exc is None:
            window.done(started, ended)
        else:
            window.error(exc)
        with lock:
            in_flight[0] -= 1
        slots.release()

    window.begin()
    while window.running() and window.errors <= MAX_ERRORS:
        if not slots.acquire(timeout=0.5):
            continue
        started = time.perf_counter()
        with lock:
            in_flight[0] += 1
        try:
            future = rq.call_async(method, payload, timeout=CALL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                in_flight[0] -= 1
            slots.release()
            window.error(exc)
            continue
        future.add_done_callback(functools.partial(on_done, started=started))
    window.tick()
    # Wait (bounded) until every slot is back: all calls ended.
    limit = time.monotonic() + DRAIN_SECONDS
    taken = 0
    while taken < outstanding and time.monotonic() < limit:
        if slots.acquire(timeout=0.5):
            taken += 1
    with lock:
        return in_flight[0]


def run_threads(rq: Requestor, method: str, payload: Any, window: Window, threads: int) -> int:
    def loop() -> None:
        while window.running() and window.errors <= MAX_ERRORS:
            started = time.perf_counter()
            try:
                rq.call(method, payload, timeout=CALL_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                window.error(exc)
                continue
            window.done(started, time.perf_counter())

    window.begin()
    workers = [
        threading.Thread(target=loop, name=f"bench-caller-{i}", daemon=True) for i in range(threads)
    ]
    for thread in workers:
        thread.start()
    limit = time.monotonic() + window.warmup + window.seconds + DRAIN_SECONDS
    for thread in workers:
        thread.join(max(0.0, limit - time.monotonic()))
    window.tick()
    return sum(1 for thread in workers if thread.is_alive())


def main() -> None:
    parser = case_parser(__doc__ or "")
    parser.add_argument(
        "--mode", choices=["async", "threads", "serial", *ASYNCIO_MODES], default="async"
    )
    parser.add_argument("--method", default="echo")
    args = parser.parse_args()
    arm_deadline(args.max_seconds)
    if args.role != "client":
        parser.error("the server of the reqrep cases is `python -m reqrep worker ...`")
    window = Window(args.warmup, args.seconds)
    payload = json_payload(args.payload)
    outstanding = 1 if args.mode.endswith("serial") else args.outstanding
    if args.mode in ASYNCIO_MODES:
        native = "native" in args.mode
        unfinished, counters = run_asyncio(
            args.queue, args.method, payload, window, outstanding, native=native
        )
        window.report(
            outstanding=outstanding,
            unfinished=unfinished,
            mode=args.mode,
            requestor_stats=counters,
        )
        return
    rq = Requestor(service=args.queue, timeout=CALL_TIMEOUT)
    try:
        rq.open()
        if args.mode == "async":
            unfinished = run_async(rq, args.method, payload, window, outstanding)
        else:
            unfinished = run_threads(rq, args.method, payload, window, outstanding)
        stats = rq.stats()
    finally:
        rq.close(timeout=5)
    window.report(
        outstanding=outstanding,
        unfinished=unfinished,
        mode=args.mode,
        requestor_stats=dataclasses.asdict(stats),
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
