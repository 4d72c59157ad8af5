"""``reqrep worker``: serve a Service from its queue, in one process or under a supervisor."""

from __future__ import annotations

import importlib
import os
import sys

import click

from reqrep.cli._output import exit_for
from reqrep.cli._worker_ops import Ops
from reqrep.common.config import QUEUE_TYPES, Settings
from reqrep.common.errors import ReqrepError
from reqrep.worker.plain import PlainService
from reqrep.worker.server import Worker
from reqrep.worker.service import Service
from reqrep.worker.supervisor import Supervisor

__all__ = ["load_service", "worker_command"]


# What a worker process of a supervisor runs: the CLI, with the directory it was started in
# moved from the front of the import path to its end, so that an installed reqrep, not a
# checkout's reqrep/ folder beside it, is what it imports (``-m`` and ``-c`` put it first).
CHILD = (
    "import sys; sys.path.append(sys.path.pop(0)); "
    "from reqrep.cli import main; sys.argv[0] = 'reqrep'; main()"
)


def load_service(spec: str, app_dir: str | None = None) -> Service | PlainService:
    """Import ``module:attribute`` and return the Service it names. Modules are looked for
    in ``app_dir`` (default: the current directory) first, as uvicorn and celery do."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(
            f"expected MODULE:ATTRIBUTE, e.g. reqrep.worker.demo:service; got {spec!r}"
        )
    folder = os.path.abspath(app_dir or os.getcwd())
    if folder not in sys.path:
        # reqrep itself is imported already: its modules keep coming from where they came.
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"cannot import {module_name!r}: no module {exc.name!r} in {folder} or on the "
                "import path (--app-dir names another folder)"
            ) from None
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any import failure is a bad SPEC for the user
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from None
    service = getattr(module, attr, None)
    if not isinstance(service, (Service, PlainService)):
        raise click.BadParameter(
            f"{spec!r} is not a worker.Service or PlainService (got {type(service).__name__})"
        )
    return service


@click.command("worker")
@click.argument("spec", metavar="MODULE:SERVICE")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=8,
    show_default=True,
    envvar="REQREP_CONCURRENCY",
    help="Handler threads (and concurrent async handlers) per process.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(1, 65535),
    default=None,
    help="Unacked requests per process  [default: concurrency + a quarter]",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="REQREP_PROCESSES",
    help="Worker processes sharing the queue.",
)
@click.option(
    "--url",
    envvar="AMQP_URL",
    show_envvar=True,
    help="Broker URL; several (a cluster) as full URLs separated by commas.",
)
@click.option(
    "--queue-type",
    type=click.Choice(QUEUE_TYPES),
    default=None,
    help="Request queue type  [default: $REQREP_QUEUE_TYPE or quorum]",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to let in-flight calls finish on SIGTERM.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    envvar="REQREP_METRICS_PORT",
    help="Serve Prometheus /metrics (and /healthz) on this port; process i of --processes "
    "uses port + i. Needs reqrep[metrics].",
)
@click.option(
    "--health-port",
    type=click.IntRange(1, 65535),
    default=None,
    envvar="REQREP_HEALTH_PORT",
    help="Serve /healthz on this port: 200 while consuming, else 503; process i uses port + i.",
)
@click.option(
    "--http-host",
    default="127.0.0.1",
    show_default=True,
    envvar="REQREP_HTTP_HOST",
    help="Address the metrics and health ports listen on (0.0.0.0 in a container, where the "
    "probe and the scraper come from outside).",
)
@click.option(
    "--tracing/--no-tracing",
    default=False,
    envvar="REQREP_TRACING",
    help="Emit OpenTelemetry spans (needs reqrep[otel] and an SDK, e.g. opentelemetry-instrument).",
)
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    envvar="REQREP_APP_DIR",
    help="Folder to import MODULE from, before the import path  [default: the current one]",
)
@click.option(
    "--native/--no-native",
    default=False,
    envvar="REQREP_WORKER_NATIVE",
    help="Keep the connection on the async handlers' event loop (no I/O thread); a handler "
    "that blocks the loop then delays the connection's heartbeats too.",
)
@click.option("--parent-pid", type=int, default=None, hidden=True)
def worker_command(
    *,
    spec: str,
    concurrency: int,
    prefetch: int | None,
    processes: int,
    url: str | None,
    queue_type: str | None,
    drain_timeout: float,
    metrics_port: int | None,
    health_port: int | None,
    http_host: str,
    tracing: bool,
    app_dir: str | None,
    native: bool,
    parent_pid: int | None,
) -> None:
    """Serve MODULE:SERVICE (e.g. reqrep.worker.demo:service) until a signal, then drain."""
    service = load_service(spec, app_dir)
    ops = Ops(metrics_port, health_port, http_host, tracing)
    try:
        settings = Settings.from_env(url=url, queue_type=queue_type)
    except ReqrepError as exc:
        raise click.BadParameter(str(exc)) from None
    if processes > 1:
        sys.exit(
            _supervise(
                spec=spec,
                app_dir=os.path.abspath(app_dir or os.getcwd()),
                processes=processes,
                settings=settings,
                concurrency=concurrency,
                prefetch=prefetch,
                drain_timeout=drain_timeout,
                ops=ops,
                native=native,
            )
        )
    try:
        ops.enable()  # before the Worker is made: it reports to what is enabled by then
    except ReqrepError as exc:
        raise click.BadParameter(str(exc)) from None
    worker = Worker(
        service,
        settings=settings,
        concurrency=concurrency,
        prefetch=prefetch,
        drain_timeout=drain_timeout,
        native=native,
    )
    try:
        ops.serve(worker)  # before connecting: /healthz says 503 until consuming
        sys.exit(worker.run(parent_pid=parent_pid))
    except ReqrepError as exc:
        exit_for(exc)
    finally:
        ops.close()


def _supervise(
    *,
    spec: str,
    app_dir: str,
    processes: int,
    settings: Settings,
    concurrency: int,
    prefetch: int | None,
    drain_timeout: float,
    ops: Ops,
    native: bool = False,
) -> int:
    argv = [
        sys.executable,
        "-c",
        CHILD,
        "worker",
        spec,
        "--concurrency",
        str(concurrency),
        "--drain-timeout",
        str(drain_timeout),
        "--queue-type",
        settings.queue_type,
        "--parent-pid",
        str(os.getpid()),
        "--app-dir",
        app_dir,
    ]
    if prefetch is not None:
        argv += ["--prefetch", str(prefetch)]
    if native:
        argv += ["--native"]
    argv += ["--http-host", ops.http_host, "--tracing" if ops.tracing else "--no-tracing"]

    def slot_argv(slot: int) -> list[str]:
        # One endpoint per process, like N containers: process i serves port + i.
        ports = [("--metrics-port", ops.metrics_port), ("--health-port", ops.health_port)]
        return argv + [arg for opt, port in ports if port for arg in (opt, str(port + slot))]

    # The URL travels in the environment, never in argv, where `ps` would show its password.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REQREP_METRICS_PORT", "REQREP_HEALTH_PORT")  # each child gets its own
    }
    env["AMQP_URL"] = settings.url
    return Supervisor(slot_argv, processes, env).run()
