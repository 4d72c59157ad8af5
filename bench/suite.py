"""Throughput and latency of reqrep against bare pika, the tutorial and aio-pika, in one run.

``python -m bench.suite [--repeats 3] [--seconds 5] [--outstanding 64] [--payload 100]
[--json PATH] [--chart PATH] [--only NAME ...] [--max-minutes 15]``

Every case is one client process and one server process on the same broker (bench/README.md
says exactly what each one does). One run measures every case ``--repeats`` times, round robin
(case 1..N, then again), so that a noisy spell hurts every case a little rather than one case a
lot; the table shows medians over the repeats. Queues get names unique to the run and are deleted
afterwards; every process is bounded in time and killed, if still alive, in a ``finally``.

While a client measures, the suite also samples the CPU time of the server process and of the
broker (``beam.smp``, from /proc) to show CPU microseconds per call on each side; the broker's
figure includes whatever else uses the broker at the time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from bench.cases import (
    DEFAULT_URL,
    DRAIN_SECONDS,
    MEASURE_END_TEXT,
    MEASURE_START_TEXT,
    READY_TEXT,
)

__all__ = [
    "CASES",
    "Case",
    "Child",
    "delete_broker_objects",
    "judge",
    "main",
    "median",
    "run_suite",
    "wait_for_broker",
]

log = logging.getLogger("reqrep.bench.suite")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WORKER_READY_TEXT = "worker ready"
READY_TIMEOUT = 30.0
"""Seconds for a server to say it is ready."""
STOP_GRACE = 5.0
"""After SIGTERM, seconds before SIGKILL."""
CLIENT_SLACK = 30.0
"""Seconds a client may take beyond warm-up + window + drain (start-up, connect, report)."""
BROKER_WAIT = 60.0
"""Before running a failed case again, wait at most this long for the broker to answer."""
RUN_OVERHEAD = 6.0
"""Estimated seconds of start-up and teardown per run, for the --max-minutes budget."""
REQREP_SERVICE = "demo"
REQREP_SPEC = "reqrep.worker.demo:service"
REQREP_PACKAGES = ("common", "requestor", "worker", "reqrep")
REQREP_ENV = ("REQREP_QUEUE_TYPE", "REQREP_PERSISTENT", "REQREP_QUEUE_PREFIX")
BASELINE = "raw-pika"
DURABLE_BASELINE = "raw-pika-durable"
TUNED_BASELINE = "raw-pika-tuned"
TUNED_DURABLE_BASELINE = "raw-pika-durable-tuned"
TUNED_BASELINES = (TUNED_BASELINE, TUNED_DURABLE_BASELINE)
SERIAL_PAIR = ("reqrep-serial", "tutorial")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case. ``module`` is a bench.cases module with a client and a server, or
    None for the reqrep cases (client bench.cases.reqrep_client, server reqrep's own worker)."""

    name: str
    summary: str
    module: str | None = None
    durable: bool = False
    mode: str = ""
    extra_args: tuple[str, ...] = ()
    optional: bool = False  # run only when named (--only) or with --with-tuned

    @property
    def is_reqrep(self) -> bool:
        return self.module is None


CASES: tuple[Case, ...] = (
    Case(
        "raw-pika", "bare pika, SelectConnection, classic queue, transient", "bench.cases.raw_pika"
    ),
    Case(
        "raw-pika-tuned",
        "raw-pika + coalesced writes + batched acks (reqrep's own tricks)",
        "bench.cases.raw_pika",
        extra_args=("--tuned",),
        optional=True,
    ),
    Case(
        "raw-pika-durable",
        "bare pika, quorum queue, persistent, confirms both sides",
        "bench.cases.raw_pika",
        durable=True,
    ),
    Case(
        "raw-pika-durable-tuned",
        "raw-pika-durable + coalesced writes + batched acks (reqrep's own tricks)",
        "bench.cases.raw_pika",
        durable=True,
        extra_args=("--tuned",),
        optional=True,
    ),
    Case("tutorial", "RabbitMQ tutorial RPC, one call at a time", "bench.cases.tutorial"),
    Case("aio-pika-rpc", "aio_pika.patterns.JsonRPC, N in flight", "bench.cases.aiopika_rpc"),
    Case("reqrep-async", "call_async, N in flight, classic, transient", mode="async"),
    Case(
        "reqrep-async-durable",
        "call_async, N in flight, reqrep defaults (quorum, persistent, confirms)",
        durable=True,
        mode="async",
    ),
    Case("reqrep-threads", "N threads calling call(), classic, transient", mode="threads"),
    Case("reqrep-serial", "call(), one at a time, classic, transient", mode="serial"),
)
CASE_NAMES = tuple(case.name for case in CASES)


# --------------------------------------------------------------------------------------------
# Processes


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc; None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    try:
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


_broker_pid: int | None = None


def find_broker_pid() -> int | None:
    """The pid of the local broker's Erlang VM (``beam.smp``), if there is one we can see."""
    global _broker_pid  # noqa: PLW0603 - a cache: the scan of /proc is not free
    if _broker_pid is not None and Path(f"/proc/{_broker_pid}").exists():
        return _broker_pid
    _broker_pid = None
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if not name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{name}/comm").read_text().strip()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes() if comm == "beam.smp" else b""
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if b"rabbit" in cmdline:
            _broker_pid = int(name)
            break
    return _broker_pid


class Child:
    """A child process whose stdout and stderr are read on threads (the pipes never fill).

    ``ready`` is set when a line containing ``ready_text`` appears on either stream; ``on_line``
    sees every stdout line. The child runs in its own session, so a Ctrl-C in the terminal is
    ours to handle; ``stop()`` ends it (SIGTERM, then SIGKILL to its whole process group).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        ready_text: str | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.ready = threading.Event()
        self._ready_text = ready_text
        self._on_line = on_line
        self.stdout: list[str] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            list(argv),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: Any, is_stdout: bool) -> None:
        if stream is None:
            return
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                line = raw.rstrip("\n")
                if is_stdout:
                    self.stdout.append(line)
                    if self._on_line is not None:
                        self._on_line(line)
                else:
                    self.stderr_tail.append(line)
                if self._ready_text and not self.ready.is_set() and self._ready_text in line:
                    self.ready.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> bool:
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if self.ready.wait(0.1):
                return True
            if not self.alive():
                return False
        return self.ready.is_set()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def cpu_seconds(self) -> float | None:
        return _proc_cpu_seconds(self.pid)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait up to ``grace``, then SIGKILL the process group; reap; close pipes."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            if self.wait(grace) is None:
                log.warning("%s (pid %d) ignored SIGTERM: killing it", self.name, self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # its session's group: it and any children
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.wait(5.0)
        for reader in self._readers:
            reader.join(2.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def result_line(self) -> dict[str, Any] | None:
        """The last JSON object the child printed on stdout."""
        for line in reversed(self.stdout):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        return value
        return None

    def describe(self) -> str:
        err = "\n".join(f"    {line}" for line in list(self.stderr_tail)[-12:])
        return f"{self.name} pid {self.pid} exit {self.proc.returncode}; stderr tail:\n{err}"


class CpuSampler:
    """Samples the CPU time of some processes when the client announces its window's edges."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self._start: dict[str, float | None] = {}
        self._end: dict[str, float | None] = {}

    def on_line(self, line: str) -> None:
        if line == MEASURE_START_TEXT:
            self._start = {name: _proc_cpu_seconds(pid) for name, pid in self.pids.items()}
        elif line == MEASURE_END_TEXT:
            self._end = {name: _proc_cpu_seconds(pid) for name, pid in self.pids.items()}

    def used(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in self.pids:
            start, end = self._start.get(name), self._end.get(name)
            out[name] = None if start is None or end is None else max(0.0, end - start)
        return out


def delete_broker_objects(
    url: str, queues: Iterable[str] = (), exchanges: Iterable[str] = ()
) -> list[str]:
    """Delete queues and exchanges (those that exist); returns the problems met, if any."""
    problems: list[str] = []
    params = pika.URLParameters(url)
    params.connection_attempts = 2
    params.retry_delay = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 10
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        return [f"cannot connect to clean up: {exc!r}"]
    try:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                try:
                    channel = connection.channel()
                    if kind == "queue":
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:  # NOT_FOUND: nothing to delete
                        problems.append(f"delete {kind} {name}: {exc!r}")
                except pika.exceptions.AMQPError as exc:
                    problems.append(f"delete {kind} {name}: {exc!r}")
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    return problems


def wait_for_broker(url: str, timeout: float) -> bool:
    """Wait (bounded) until the broker accepts a connection: another user may restart it."""
    limit = time.monotonic() + timeout
    while True:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        try:
            pika.BlockingConnection(params).close()
        except pika.exceptions.AMQPError:
            if time.monotonic() + 2.0 > limit:
                return False
            time.sleep(2.0)
        else:
            return True


def broker_info(url: str) -> dict[str, Any]:
    """Whether the broker answers, and what it says it is."""
    params = pika.URLParameters(url)
    params.connection_attempts = 2
    params.retry_delay = 1
    params.socket_timeout = 5
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise SystemExit(f"bench: broker unreachable: {exc!r}") from None
    try:
        props = getattr(getattr(connection, "_impl", None), "server_properties", None) or {}
        version = props.get("version", b"")
        return {
            "product": _text(props.get("product", b"")),
            "version": _text(version),
        }
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def base_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AMQP_URL"] = url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# --------------------------------------------------------------------------------------------
# One run of one case


@dataclasses.dataclass(frozen=True)
class Options:
    repeats: int = 3
    seconds: float = 5.0
    warmup: float = 1.0
    outstanding: int = 64
    payload: int = 100
    worker_concurrency: int = 64
    max_minutes: float = 15.0
    url: str = dataclasses.field(default=DEFAULT_URL, repr=False)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The processes of one run and the broker objects to delete after it."""

    server_argv: list[str]
    server_env: dict[str, str]
    server_ready: str
    client_argv: list[str]
    client_env: dict[str, str]
    client_limit: float
    queues: list[str]
    exchanges: list[str]


def plan_case(case: Case, opts: Options, tag: str) -> Plan:
    """Commands and environments for ``case``; ``tag`` names its queues (unique per run)."""
    client_limit = opts.warmup + opts.seconds + DRAIN_SECONDS + CLIENT_SLACK
    env = base_env(opts.url)
    py = [sys.executable, "-m"]
    common_args = [
        *("--seconds", str(opts.seconds), "--warmup", str(opts.warmup)),
        *("--outstanding", str(opts.outstanding), "--payload", str(opts.payload)),
        *("--max-seconds", str(client_limit)),
    ]
    if case.module is None:  # reqrep: its own worker, the demo service's echo
        prefix = f"{tag}."
        for name in REQREP_ENV:
            env.pop(name, None)
        env["REQREP_QUEUE_PREFIX"] = prefix
        if not case.durable:
            env["REQREP_QUEUE_TYPE"] = "classic"
            env["REQREP_PERSISTENT"] = "0"
        return Plan(
            server_argv=[
                *py,
                *("reqrep", "worker", REQREP_SPEC),
                *("--concurrency", str(opts.worker_concurrency), "--drain-timeout", "2"),
            ],
            server_env={**env, "REQREP_LOG_LEVEL": "INFO"},
            server_ready=WORKER_READY_TEXT,
            client_argv=[
                *py,
                *("bench.cases.reqrep_client", "client", "--queue", REQREP_SERVICE),
                *("--mode", case.mode, *common_args),
            ],
            client_env=env,
            client_limit=client_limit,
            queues=[f"{prefix}{REQREP_SERVICE}", f"{prefix}{REQREP_SERVICE}.dead"],
            exchanges=[f"{prefix}dlx"],
        )
    case_args = [*(["--durable"] if case.durable else []), *case.extra_args]
    server_limit = client_limit + READY_TIMEOUT + 30.0
    return Plan(
        server_argv=[
            *py,
            *(case.module, "server", "--queue", tag),
            *("--max-seconds", str(server_limit), *case_args),
        ],
        server_env=env,
        server_ready=READY_TEXT,
        client_argv=[*py, case.module, "client", "--queue", tag, *common_args, *case_args],
        client_env=env,
        client_limit=client_limit,
        queues=[tag],
        exchanges=[],
    )


def judge(record: dict[str, Any]) -> None:
    """A run with call errors, or without a completed call, was disturbed (e.g. the shared
    broker restarted): its numbers stay in the JSON, out of the medians."""
    result = record.get("result") or {}
    if result.get("errors") or not result.get("calls"):
        samples = result.get("error_samples") or ["no call completed in the window"]
        record["ok"] = False
        record["error"] = f"{result.get('errors', 0)} call errors, e.g. {str(samples[0])[:300]}"


def run_case(
    case: Case, repeat: int, opts: Options, run_id: str, attempt: int = 1
) -> dict[str, Any]:
    """Start the server, then the client; return the client's result and CPU samples."""
    suffix = "" if attempt == 1 else f".a{attempt}"
    plan = plan_case(case, opts, f"bench.{run_id}.{case.name}.r{repeat}{suffix}")
    record: dict[str, Any] = {"case": case.name, "repeat": repeat, "ok": False}
    sampler = CpuSampler()
    broker_pid = find_broker_pid()
    if broker_pid is not None:
        sampler.pids["broker"] = broker_pid
    server: Child | None = None
    client: Child | None = None
    try:
        server = Child(
            f"{case.name} server", plan.server_argv, plan.server_env, ready_text=plan.server_ready
        )
        if not server.wait_ready(READY_TIMEOUT):
            why = "exited before it was ready" if not server.alive() else "not ready in time"
            record["error"] = f"server {why}\n{server.describe()}"
            return record
        sampler.pids["server"] = server.pid
        client = Child(
            f"{case.name} client", plan.client_argv, plan.client_env, on_line=sampler.on_line
        )
        code = client.wait(plan.client_limit + 5.0)
        result = client.result_line()
        if code is None or result is None:
            record["error"] = (
                f"client {'timed out' if code is None else f'exited {code}'} without a result\n"
                f"{client.describe()}"
            )
            return record
        record.update(ok=True, result=result)
        calls = result.get("calls") or 0
        cpu = sampler.used()
        cpu["client"] = result.get("client_cpu_s")
        record["cpu_s"] = cpu
        record["cpu_us_per_call"] = {
            side: (used / calls * 1e6 if used is not None and calls else None)
            for side, used in cpu.items()
        }
        judge(record)
        return record
    finally:
        for child in (client, server):
            if child is not None:
                child.stop()
        problems = delete_broker_objects(opts.url, plan.queues, plan.exchanges)
        if problems:
            record["cleanup_problems"] = problems
            record["leftovers"] = {"queues": plan.queues, "exchanges": plan.exchanges}


# --------------------------------------------------------------------------------------------
# The whole suite


def run_suite(
    cases: Sequence[Case],
    opts: Options,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    budget = opts.max_minutes * 60.0
    per_run = opts.warmup + opts.seconds + RUN_OVERHEAD
    runs: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "url"},
        "machine": machine_info(),
        "broker": broker_info(opts.url),
        "loadavg_start": os.getloadavg(),
        "reqrep_source_start": reqrep_fingerprint(),
    }
    total = len(cases) * opts.repeats
    for repeat in range(1, opts.repeats + 1):
        for position, case in enumerate(cases, start=1):
            index = (repeat - 1) * len(cases) + position
            if time.monotonic() - started + per_run > budget:
                progress(f"[{index}/{total}] {case.name} #{repeat}: skipped (--max-minutes)")
                runs.append({"case": case.name, "repeat": repeat, "ok": False, "error": "skipped"})
                continue
            record = run_case(case, repeat, opts, run_id)
            if not record["ok"] and time.monotonic() - started + per_run <= budget:
                progress(
                    f"[{index}/{total}] {case.name} #{repeat}: failed, once more: "
                    f"{record.get('error')}"
                )
                record["retried"] = True
                runs.append(record)  # kept in the JSON, out of the medians
                wait_for_broker(opts.url, BROKER_WAIT)
                record = run_case(case, repeat, opts, run_id, attempt=2)
            runs.append(record)
            if record["ok"]:
                result = record["result"]
                lat = result["latency_ms"]
                progress(
                    f"[{index}/{total}] {case.name} #{repeat}: "
                    f"{result['calls_per_s']:,.0f} calls/s, p50 {_ms(lat['p50'])} ms"
                )
            else:
                progress(f"[{index}/{total}] {case.name} #{repeat}: FAILED {record['error']}")
    retry_cleanup(opts.url, runs, progress)
    info["loadavg_end"] = os.getloadavg()
    info["reqrep_source_end"] = reqrep_fingerprint()
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    return {**info, "runs": runs, "summary": summarize(cases, runs)}


def reqrep_fingerprint() -> str:
    """A hash of reqrep's source (common, requestor, worker): to notice it changing mid-run."""
    digest = hashlib.sha256()
    for package in REQREP_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            with contextlib.suppress(OSError):
                digest.update(str(path.relative_to(REPO_ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_note(report: dict[str, Any]) -> str | None:
    """A warning if reqrep's source changed while the run was going on."""
    start, end = report.get("reqrep_source_start"), report.get("reqrep_source_end")
    if start and end and start != end:
        return (
            "warning: reqrep's source changed during this run (common/, requestor/, worker/): "
            "the reqrep runs did not all measure the same code"
        )
    return None


def retry_cleanup(
    url: str, runs: Sequence[dict[str, Any]], progress: Callable[[str], None]
) -> None:
    """Delete, once more, the queues a run could not delete (the broker was down then)."""
    left = [r for r in runs if r.get("leftovers")]
    if not left or not wait_for_broker(url, BROKER_WAIT):
        if left:
            progress("could not reach the broker to delete queues left by failed runs")
        return
    for record in left:
        leftovers = record.pop("leftovers")
        problems = delete_broker_objects(url, leftovers["queues"], leftovers["exchanges"])
        record["cleanup_problems"] = problems
        if problems:
            record["leftovers"] = leftovers
            progress(f"still left on the broker: {problems}")


def machine_info() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for package in ("pika", "aio-pika", "reqrep", "matplotlib"):
        with contextlib.suppress(Exception):
            from importlib import metadata  # noqa: PLC0415

            versions[package] = metadata.version(package)
    return {
        "reqrep_knows_REQREP_PERSISTENT": reqrep_knows_persistent(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def reqrep_knows_persistent() -> bool | None:
    """Does this reqrep read REQREP_PERSISTENT? (If not, its "transient" cases still persist
    requests and use confirms: only the queue type changes.)"""
    try:
        from reqrep.common import Settings  # noqa: PLC0415 - reqrep itself, only for this question

        off = Settings.from_env({"REQREP_PERSISTENT": "0"})
        on = Settings.from_env({"REQREP_PERSISTENT": "1"})
    except Exception:  # noqa: BLE001 - any failure means "cannot tell"
        return None
    return off != on


def summarize(cases: Sequence[Case], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats, per case; ratios to the baselines; the serial comparison."""
    by_case: dict[str, dict[str, Any]] = {}
    for case in cases:
        ok = [r for r in runs if r["case"] == case.name and r.get("ok")]
        results = [r["result"] for r in ok]
        latency = {
            key: median(res["latency_ms"].get(key) for res in results)
            for key in ("p50", "p90", "p99", "max", "mean")
        }
        cpu = {
            side: median((r.get("cpu_us_per_call") or {}).get(side) for r in ok)
            for side in ("client", "server", "broker")
        }
        by_case[case.name] = {
            "summary": case.summary,
            "durable": case.durable,
            "repeats_ok": len(ok),
            "in_flight": median(res.get("outstanding") for res in results),
            "calls_per_s": median(res["calls_per_s"] for res in results),
            "calls_per_s_runs": [round(res["calls_per_s"], 1) for res in results],
            "latency_ms": latency,
            "errors": sum(
                int(r["result"].get("errors") or 0)
                for r in runs
                if r["case"] == case.name and "result" in r
            ),
            "failed_runs": sum(
                1 for r in runs if r["case"] == case.name and not r.get("ok") and "result" in r
            ),
            "cpu_us_per_call": cpu,
        }
    for entry in by_case.values():
        for key, base in (("vs_raw_pika", BASELINE), ("vs_raw_pika_durable", DURABLE_BASELINE)):
            ref = by_case.get(base, {}).get("calls_per_s")
            mine = entry["calls_per_s"]
            entry[key] = mine / ref if mine is not None and ref else None
        if not entry["durable"]:
            entry["vs_raw_pika_durable"] = None
        tuned = TUNED_DURABLE_BASELINE if entry["durable"] else TUNED_BASELINE
        ref = by_case.get(tuned, {}).get("calls_per_s")
        mine = entry["calls_per_s"]
        entry["vs_tuned"] = mine / ref if mine is not None and ref else None
    serial = None
    a, b = (by_case.get(name, {}).get("latency_ms", {}).get("p50") for name in SERIAL_PAIR)
    if a is not None and b:
        serial = a / b
    return {"cases": by_case, "serial_p50_ratio": serial}


# --------------------------------------------------------------------------------------------
# Output


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415 - only needed to print
    from rich.table import Table  # noqa: PLC0415

    console = Console(width=max(170, Console().width))
    opts = report["options"]
    title = (
        f"reqrep bench: {opts['repeats']} repeats x {opts['seconds']:g}s, "
        f"{opts['outstanding']} in flight, {opts['payload']}-byte payload "
        f"(medians over repeats)"
    )
    table = Table(title=title)
    cases = report["summary"]["cases"]
    with_tuned = any(entry.get("vs_tuned") is not None for entry in cases.values())
    columns = ["case", "calls/s", "vs raw-pika", "vs raw-pika-durable"]
    columns += ["vs tuned"] if with_tuned else []
    columns += ["p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "calls/s per repeat"]
    for column in columns:
        if column in ("case", "calls/s per repeat"):
            table.add_column(column, justify="left", no_wrap=True)
        else:
            table.add_column(column, justify="right")
    for name, entry in cases.items():
        lat = entry["latency_ms"]
        ratios = [_ratio(entry["vs_raw_pika"]), _ratio(entry["vs_raw_pika_durable"])]
        ratios += [_ratio(entry.get("vs_tuned"))] if with_tuned else []
        table.add_row(
            name,
            _rate(entry["calls_per_s"]),
            *ratios,
            _ms(lat["p50"]),
            _ms(lat["p90"]),
            _ms(lat["p99"]),
            _ms(lat["max"]),
            str(entry["errors"]),
            " ".join(f"{v:,.0f}" for v in entry["calls_per_s_runs"]) or "failed",
        )
    console.print(table)
    ratio = report["summary"]["serial_p50_ratio"]
    if ratio is not None:
        a, b = (cases[name]["latency_ms"]["p50"] for name in SERIAL_PAIR)
        console.print(
            f"serial: reqrep-serial p50 / tutorial p50 = {_ms(a)} / {_ms(b)} ms = {ratio:.2f}x"
        )
    cpu = Table(title="CPU us per call (medians)", caption="broker: includes any other load")
    for column in ("case", "client", "server", "broker"):
        cpu.add_column(column, justify="left" if column == "case" else "right")
    for name, entry in cases.items():
        per = entry["cpu_us_per_call"]
        cpu.add_row(name, *(_rate(per[side]) for side in ("client", "server", "broker")))
    console.print(cpu)
    load = report.get("loadavg_start"), report.get("loadavg_end")
    console.print(
        f"broker {report['broker'].get('product')} {report['broker'].get('version')}, "
        f"{report['machine']['cpus']} CPUs, load average at start/end "
        f"{_load(load[0])} / {_load(load[1])}, elapsed {report.get('elapsed_s')} s"
    )
    if report["machine"].get("reqrep_knows_REQREP_PERSISTENT") is False:
        console.print(
            "[yellow]note: this reqrep does not know REQREP_PERSISTENT yet: its classic cases "
            "still send persistent requests with publisher confirms on both sides[/yellow]"
        )
    note = source_note(report)
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    failed = [r for r in report["runs"] if not r.get("ok")]
    for run in failed:
        if run.get("retried"):
            console.print(f"[yellow]{run['case']} #{run['repeat']} (retried): {run.get('error')}")
            continue
        console.print(f"[red]{run['case']} #{run['repeat']}: {run.get('error')}[/red]")


def _load(value: Any) -> str:
    return "-" if not value else "/".join(f"{v:.1f}" for v in value)


_BLUE, _GREY, _ORANGE = "#4c72b0", "#8c8c8c", "#dd8452"


def draw_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only needed to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    cases = report["summary"]["cases"]
    names = [name for name, entry in cases.items() if entry["calls_per_s"] is not None]
    values = [cases[name]["calls_per_s"] for name in names]
    colors = [
        _BLUE if name.startswith("reqrep") else _GREY if name.startswith("raw") else _ORANGE
        for name in names
    ]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(names) + 1.6))
    bars = ax.barh(names, values, color=colors)
    for bar, name in zip(bars, names, strict=True):
        entry = cases[name]
        bar.set_hatch("//" if entry["durable"] else "")
        label = f" {entry['calls_per_s']:,.0f}/s  {_ratio(entry['vs_raw_pika'])} raw-pika"
        if entry["vs_raw_pika_durable"] is not None and name != DURABLE_BASELINE:
            label += f", {_ratio(entry['vs_raw_pika_durable'])} raw-pika-durable"
        if entry.get("vs_tuned") is not None and name not in TUNED_BASELINES:
            label += f", {_ratio(entry['vs_tuned'])} tuned"
        label += f"  (p50 {_ms(entry['latency_ms']['p50'])} ms)"
        if entry.get("in_flight") == 1:
            label += ", 1 call at a time"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.invert_yaxis()
    ax.legend(
        handles=[
            Patch(color=color, label=label)
            for color, label in ((_GREY, "bare pika"), (_ORANGE, "other"), (_BLUE, "reqrep"))
        ],
        loc="lower right",
        fontsize=8,
    )
    ax.set_xlabel("calls per second (median of repeats)")
    opts = report["options"]
    ax.set_title(
        f"Request-reply throughput, 1 client + 1 server process, {opts['outstanding']} in flight, "
        f"{opts['payload']} B\n{report['machine']['cpus']} CPUs shared with the broker; "
        f"hatched = durable (quorum, persistent, confirms)\n"
        f"tuned = coalesced writes + batched acks; {report['started'][:10]}",
        fontsize=9,
    )
    ax.set_xlim(0, max(values or [1]) * 1.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line


def positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--repeats", type=positive(int), default=3)
    parser.add_argument("--seconds", type=positive(float), default=5.0, help="window per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--outstanding", type=positive(int), default=64, help="calls in flight")
    parser.add_argument("--payload", type=positive(int), default=100, help="body size, bytes")
    parser.add_argument(
        "--worker-concurrency",
        type=positive(int),
        default=64,
        help="reqrep worker --concurrency",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    parser.add_argument("--chart", type=Path, default=None, help="write the bar chart here too")
    parser.add_argument("--only", nargs="+", choices=CASE_NAMES, metavar="NAME", default=None)
    parser.add_argument(
        "--with-tuned",
        action="store_true",
        help="also run raw-pika(-durable)-tuned: coalesced writes and batched acks",
    )
    parser.add_argument("--max-minutes", type=positive(float), default=15.0)
    parser.add_argument("--url", default=None, help="broker URL [default: $AMQP_URL or local]")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # failures are reported per run
    opts = Options(
        repeats=args.repeats,
        seconds=args.seconds,
        warmup=max(0.0, args.warmup),
        outstanding=args.outstanding,
        payload=args.payload,
        worker_concurrency=args.worker_concurrency,
        max_minutes=args.max_minutes,
        url=args.url or os.environ.get("AMQP_URL") or DEFAULT_URL,
    )
    if args.only is not None:
        cases = [case for case in CASES if case.name in args.only]
    else:
        cases = [case for case in CASES if not case.optional or args.with_tuned]
    try:
        report = run_suite(cases, opts, progress=lambda text: print(text, flush=True))
    except KeyboardInterrupt:
        print("interrupted: processes stopped and queues deleted", file=sys.stderr)
        return 130
    render(report)
    write_outputs("suite", report, extra_json=args.json, extra_chart=args.chart, draw=draw_chart)
    return 0 if all(r.get("ok") or r.get("retried") for r in report["runs"]) else 1


def write_outputs(
    kind: str,
    report: dict[str, Any],
    *,
    extra_json: Path | None,
    extra_chart: Path | None,
    draw: Callable[[dict[str, Any], Path], None],
) -> None:
    """The report as JSON and as a chart under bench/results/, and wherever else asked."""
    stem = RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{report['run_id']}"
    json_paths = [stem.with_suffix(".json"), *([extra_json] if extra_json else [])]
    chart_paths = [stem.with_suffix(".png"), *([extra_chart] if extra_chart else [])]
    for path in json_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for path in chart_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(report, path)
    print(f"wrote {', '.join(str(p) for p in json_paths + chart_paths)}")


if __name__ == "__main__":
    sys.exit(main())
