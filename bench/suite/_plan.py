"""The suite's cases, its options, and the two processes (and queues) of one run of a case."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from bench.cases import DEFAULT_URL, DRAIN_SECONDS, READY_TEXT
from bench.harness import CLIENT_SLACK, READY_TIMEOUT, REQREP_ENV, WORKER_READY_TEXT, base_env

REQREP_SERVICE = "demo"
REQREP_SPEC = "reqrep.worker.demo:service"
BASELINE = "raw-pika"
DURABLE_BASELINE = "raw-pika-durable"
TUNED_BASELINE = "raw-pika-tuned"
TUNED_DURABLE_BASELINE = "raw-pika-durable-tuned"
TUNED_PROPS_BASELINE = "raw-pika-durable-tuned-props"
TUNED_BASELINES = (TUNED_BASELINE, TUNED_DURABLE_BASELINE, TUNED_PROPS_BASELINE)
ASYNC_DURABLE = "reqrep-async-durable"
PROTOCOL_PAIR = (ASYNC_DURABLE, TUNED_PROPS_BASELINE)
NATIVE_DURABLE = "reqrep-asyncio-native-durable"
NATIVE_PROTOCOL_PAIR = (NATIVE_DURABLE, TUNED_PROPS_BASELINE)
# The asyncio-native path end to end: the worker's connection on its handler loop, async echo.
NATIVE_WORKER: dict[str, Any] = {"method": "echo_async", "worker_args": ("--native",)}
SERIAL_PAIR = ("reqrep-serial", "tutorial")
SERIAL_INLINE_PAIR = ("reqrep-serial-inline", "tutorial")
SERIAL_NATIVE_PAIR = ("reqrep-asyncio-native-serial", "tutorial")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case. ``module`` is a bench.cases module with a client and a server, or
    None for the reqrep cases (client bench.cases.reqrep_client, server reqrep's own worker)."""

    name: str
    summary: str
    module: str | None = None
    durable: bool = False
    mode: str = ""
    method: str = "echo"  # the demo service's method a reqrep case calls
    worker_args: tuple[str, ...] = ()  # more options for a reqrep case's `reqrep worker`
    extra_args: tuple[str, ...] = ()
    # "tuned" or "floors": run only when named (--only) or with --with-<extra>; "paths": only
    # when named (the asyncio paths taken apart: which side of the native path costs what)
    extra: str = ""
    exchange_suffixes: tuple[str, ...] = ()  # exchanges the case declares: queue name + suffix

    @property
    def is_reqrep(self) -> bool:
        return self.module is None


# In the order they run: the cases a target compares sit next to each other (classic, durable,
# one call at a time), so that a change in the machine's speed during a run (the shared 2-vCPU
# machines drift between fast and slow spells) hits both sides of a ratio alike. Every other
# repeat runs them backwards (see _run.py).
CASES: tuple[Case, ...] = (
    Case(
        "raw-pika", "bare pika, SelectConnection, classic queue, transient", "bench.cases.raw_pika"
    ),
    Case(
        "raw-pika-tuned",
        "raw-pika + coalesced writes + batched acks (reqrep's own tricks)",
        "bench.cases.raw_pika",
        extra_args=("--tuned",),
        extra="tuned",
    ),
    Case("reqrep-async", "call_async, N in flight, classic, transient", mode="async"),
    Case("reqrep-asyncio", "AsyncRequestor, N in flight, classic, transient", mode="asyncio"),
    Case(
        "reqrep-asyncio-native",
        "AsyncRequestor(native=True) -> async echo on a worker --native, N in flight, classic, "
        "transient",
        mode="asyncio-native",
        **NATIVE_WORKER,
    ),
    Case("reqrep-threads", "N threads calling call(), classic, transient", mode="threads"),
    Case(
        "raw-pika-durable",
        "bare pika, quorum queue, persistent, confirms both sides",
        "bench.cases.raw_pika",
        durable=True,
    ),
    Case(
        ASYNC_DURABLE,
        "call_async, N in flight, reqrep defaults (quorum, persistent, confirms)",
        durable=True,
        mode="async",
    ),
    Case(
        NATIVE_DURABLE,
        "AsyncRequestor(native=True) -> async echo on a worker --native, N in flight, reqrep "
        "defaults (quorum, persistent, confirms)",
        durable=True,
        mode="asyncio-native",
        **NATIVE_WORKER,
    ),
    Case(
        "paths-native-requestor",
        "AsyncRequestor(native=True) -> sync echo on the default worker, N in flight, defaults",
        durable=True,
        mode="asyncio-native",
        extra="paths",
    ),
    Case(
        "paths-async-handler",
        "AsyncRequestor -> async echo on the default worker (handler loop), N in flight, defaults",
        durable=True,
        mode="asyncio",
        method="echo_async",
        extra="paths",
    ),
    Case(
        "paths-native-worker",
        "AsyncRequestor -> async echo on a worker --native, N in flight, defaults",
        durable=True,
        mode="asyncio",
        extra="paths",
        **NATIVE_WORKER,
    ),
    Case(
        "reqrep-threads-durable",
        "N threads calling call(), reqrep defaults (quorum, persistent, confirms)",
        durable=True,
        mode="threads",
    ),
    Case(
        "raw-pika-durable-tuned",
        "raw-pika-durable + coalesced writes + batched acks (reqrep's own tricks)",
        "bench.cases.raw_pika",
        durable=True,
        extra_args=("--tuned",),
        extra="tuned",
    ),
    Case(
        TUNED_PROPS_BASELINE,
        "raw-pika-durable-tuned + the properties reqrep's messages carry (deadline header, "
        "expiration, message id, type; mandatory)",
        "bench.cases.raw_pika",
        durable=True,
        extra_args=("--tuned", "--reqrep-properties"),
        extra="tuned",
    ),
    Case(
        "raw-threaded-durable",
        "bare pika with reqrep's thread hand-offs only, N threads, quorum, persistent, confirms",
        "bench.cases.raw_threaded",
        durable=True,
        extra_args=("--mode", "threads"),
        extra="floors",
    ),
    Case("tutorial", "RabbitMQ tutorial RPC, one call at a time", "bench.cases.tutorial"),
    Case("reqrep-serial", "call(), one at a time, classic, transient", mode="serial"),
    Case(
        "reqrep-serial-inline",
        "call(), one at a time, to an inline handler (run on the worker's I/O thread), classic, "
        "transient",
        mode="serial",
        method="echo_inline",
    ),
    Case(
        "reqrep-asyncio-serial",
        "AsyncRequestor, one call at a time, classic, transient",
        mode="asyncio-serial",
    ),
    Case(
        "reqrep-asyncio-native-serial",
        "AsyncRequestor(native=True) -> async echo on a worker --native, one call at a time, "
        "classic, transient",
        mode="asyncio-native-serial",
        **NATIVE_WORKER,
    ),
    Case(
        "raw-threaded-serial",
        "bare pika with reqrep's thread hand-offs only, one call at a time, classic, transient",
        "bench.cases.raw_threaded",
        extra_args=("--mode", "serial"),
        extra="floors",
    ),
    Case("aio-pika-rpc", "aio_pika.patterns.JsonRPC, N in flight", "bench.cases.aiopika_rpc"),
    # FastStream's two documented request-reply flows, with reqrep's durability; beside them
    # AsyncRequestor with the same durability and the same shape of client (N coroutines).
    Case(
        "faststream-reply-to",
        "FastStream, broker.publish(reply_to=own queue) + reply subscriber, N in flight, "
        "quorum, persistent, confirms",
        "bench.cases.faststream_rpc",
        durable=True,
        extra_args=("--pattern", "reply-to"),
    ),
    Case(
        "faststream-request",
        "FastStream, await broker.request() (direct reply-to; one call at a time per broker, "
        "N waiting), quorum, persistent, confirms",
        "bench.cases.faststream_rpc",
        durable=True,
        extra_args=("--pattern", "request"),
    ),
    Case(
        "reqrep-asyncio-durable",
        "AsyncRequestor, N in flight, reqrep defaults (quorum, persistent, confirms)",
        durable=True,
        mode="asyncio",
    ),
    Case(
        "faststream-request-serial",
        "FastStream, await broker.request(), one at a time, quorum, persistent, confirms",
        "bench.cases.faststream_rpc",
        durable=True,
        extra_args=("--pattern", "request", "--outstanding", "1"),
    ),
    Case(
        "faststream-reply-to-serial",
        "FastStream, publish(reply_to=own queue), one at a time, quorum, persistent, confirms",
        "bench.cases.faststream_rpc",
        durable=True,
        extra_args=("--pattern", "reply-to", "--outstanding", "1"),
    ),
)
CASE_NAMES = tuple(case.name for case in CASES)


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
                *case.worker_args,
            ],
            server_env={**env, "REQREP_LOG_LEVEL": "INFO"},
            server_ready=WORKER_READY_TEXT,
            client_argv=[
                *py,
                *("bench.cases.reqrep_client", "client", "--queue", REQREP_SERVICE),
                *("--mode", case.mode, "--method", case.method, *common_args),
            ],
            client_env=env,
            client_limit=client_limit,
            queues=[f"{prefix}{REQREP_SERVICE}", f"{prefix}{REQREP_SERVICE}.dead"],
            exchanges=[f"{prefix}dlx", f"{prefix}control", f"{prefix}requests"],
        )
    case_args = [*(["--durable"] if case.durable else []), *case.extra_args]
    if case.extra == "floors":  # as many handler threads as reqrep's worker gets
        case_args += ["--handlers", str(opts.worker_concurrency)]
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
        exchanges=[tag + suffix for suffix in case.exchange_suffixes],
    )
