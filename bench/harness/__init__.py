"""What ``bench.suite`` and ``bench.scaling`` share: running bounded child processes and
sampling their CPU (``processes``), cleaning up and waiting for the broker (``broker``), and
the report's common parts and files (``reports``)."""

from __future__ import annotations

from bench.harness.broker import (
    BROKER_WAIT,
    broker_info,
    delete_broker_objects,
    retry_cleanup,
    wait_for_broker,
)
from bench.harness.processes import (
    CLIENT_SLACK,
    READY_TIMEOUT,
    REPO_ROOT,
    REQREP_ENV,
    WORKER_READY_TEXT,
    Child,
    CpuSampler,
    base_env,
    find_broker_pid,
)
from bench.harness.reports import (
    RESULTS_DIR,
    judge,
    machine_info,
    median,
    positive,
    reqrep_fingerprint,
    source_note,
    write_outputs,
)

__all__ = [
    "BROKER_WAIT",
    "CLIENT_SLACK",
    "READY_TIMEOUT",
    "REPO_ROOT",
    "REQREP_ENV",
    "RESULTS_DIR",
    "WORKER_READY_TEXT",
    "Child",
    "CpuSampler",
    "base_env",
    "broker_info",
    "delete_broker_objects",
    "find_broker_pid",
    "judge",
    "machine_info",
    "median",
    "positive",
    "reqrep_fingerprint",
    "retry_cleanup",
    "source_note",
    "wait_for_broker",
    "write_outputs",
]
