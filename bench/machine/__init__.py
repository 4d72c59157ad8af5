"""What a thread hand-off and an idle spell cost on this machine: ``python -m bench.machine``.

reqrep's calls cross threads (caller -> I/O thread -> caller; worker I/O thread -> handler ->
I/O thread), and on some virtual machines that costs far more than the Python it runs. This
prints three figures, medians of many samples, so that benchmark results can be read against
the machine they came from:

- **thread ping-pong**: the round trip of two threads waking each other with ``Event``s, free to
  run on any CPU, and both pinned to one CPU (where a wake-up needs no other CPU);
- **waking a poll()**: the CPU time the *waking* thread spends writing the byte that wakes a
  thread blocked in ``select.poll`` (what pika's ``add_callback_threadsafe`` does);
- **cold code**: the same small piece of Python (about 100 dict and string operations) run back
  to back, and run right after the thread slept 0.2, 1 and 5 ms;
- **a job through a pool**: handing one job at a time to 64 idle threads, with reqrep's
  ``HandlerPool`` and with one ``queue.SimpleQueue`` that every thread waits on (the worker's
  pool before, where each job woke two threads): the CPU time of all threads per job, and the
  voluntary context switches per job (Linux). The switches do not depend on where the kernel
  puts the threads; the CPU time does (a thread woken on the other CPU costs a cross-CPU
  wake-up), so it varies from run to run.

It uses no broker and no network. Linux only for the pinned figure (``os.sched_setaffinity``).
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from reqrep.worker.pool import HandlerPool

__all__ = ["main"]


def _ping_pong(rounds: int) -> float:
    """Median round trip, in microseconds, of two threads waking each other."""
    ping, pong = threading.Event(), threading.Event()

    def other() -> None:
        for _ in range(rounds):
            ping.wait()
            ping.clear()
            pong.set()

    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        ping.set()
        pong.wait()
        pong.clear()
        samples.append(time.perf_counter() - started)
    thread.join()
    return statistics.median(samples) * 1e6


def _pinned_ping_pong(rounds: int) -> float | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    result: list[float] = []

    def pinned() -> None:  # affinity is per thread: pin this one, and the thread it starts
        os.sched_setaffinity(0, {min(before)})
        result.append(_ping_pong(rounds))

    thread = threading.Thread(target=pinned)
    thread.start()
    thread.join()
    return result[0]


def _poll_wake_cost(rounds: int) -> float:
    """Median CPU time, in microseconds, of the send() that wakes a thread in poll()."""
    reader, writer = socket.socketpair()
    poller = select.poll()
    poller.register(reader, select.POLLIN)
    woken = threading.Event()
    stop = False

    def sleeper() -> None:
        while not stop:
            poller.poll(1000)
            reader.recv(64)
            woken.set()

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    samples = []
    for _ in range(rounds):
        time.sleep(0.0005)  # let it block in poll() again
        started = time.thread_time()
        writer.send(b"x")
        samples.append(time.thread_time() - started)
        woken.wait(1)
        woken.clear()
    stop = True
    writer.send(b"x")
    thread.join(2)
    reader.close()
    writer.close()
    return statistics.median(samples) * 1e6


def _work() -> None:
    table = {}
    for i in range(50):
        key = f"key-{i}"
        table[key] = key.upper()
    "".join(table.values())


def _cold(rounds: int, idle: float) -> float:
    samples = []
    for _ in range(rounds):
        if idle:
            time.sleep(idle)
        started = time.perf_counter()
        _work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


_POOL_THREADS = 64


class _SharedQueuePool:
    """Handler threads that all wait on one ``queue.SimpleQueue`` (the worker's pool before)."""

    def __init__(self, size: int, run: Callable[[Any], None]) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run = run
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(size)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, job: Any) -> None:
        self._jobs.put(job)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run(job)


def _switches() -> int | None:
    """Voluntary context switches of all this process's threads so far (None: not Linux)."""
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
    except OSError:
        return None
    return total


def _pool_job_cost(
    make: Callable[[int, Callable[[Any], None]], Any], rounds: int
) -> tuple[float, float | None]:
    """CPU microseconds (all threads) and voluntary switches per job, one job at a time
    through idle threads."""
    done = threading.Event()
    pool = make(_POOL_THREADS, lambda _job: done.set())
    pool.start()
    try:
        time.sleep(0.3)  # let every thread start and wait for work
        switches, started = _switches(), time.process_time()
        for job in range(rounds):
            done.clear()
            pool.submit(job)
            done.wait(1)
        cpu = (time.process_time() - started) / rounds * 1e6
        after = _switches()
        per_job = None if switches is None or after is None else (after - switches) / rounds
        return cpu, per_job
    finally:
        pool.shutdown()


def _pool_row(cpu: float, switches: float | None) -> str:
    return f"{cpu:.1f} us CPU" + ("" if switches is None else f", {switches:.1f} switches")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.machine", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000, help="samples per figure (2000)")
    args = parser.parse_args(argv)
    rounds = max(50, args.rounds)
    pinned = _pinned_ping_pong(rounds)
    hot = _cold(rounds, 0)
    rows = [
        ("thread ping-pong round trip, any CPU", f"{_ping_pong(rounds):.0f} us"),
        (
            "thread ping-pong round trip, one CPU",
            "-" if pinned is None else f"{pinned:.0f} us",
        ),
        ("waking a thread in poll(): the waker's CPU", f"{_poll_wake_cost(rounds):.1f} us"),
        ("a small piece of Python, back to back", f"{hot:.1f} us"),
    ]
    for idle in (0.0002, 0.001, 0.005):
        cold = _cold(max(50, rounds // 10), idle)
        label = f"  the same after {idle * 1000:g} ms idle"
        rows.append((label, f"{cold:.1f} us ({cold / hot:.1f}x)"))
    rows += [
        (
            f"a job through {_POOL_THREADS} idle threads, HandlerPool",
            _pool_row(*_pool_job_cost(HandlerPool, rounds)),
        ),
        ("  the same, one SimpleQueue", _pool_row(*_pool_job_cost(_SharedQueuePool, rounds))),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
