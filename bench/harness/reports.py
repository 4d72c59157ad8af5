"""The parts every benchmark report shares: medians, the verdict on a run, the machine and the
source it measured; and where the report and its chart are written."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.harness.processes import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"
REQREP_PACKAGES = ("common", "requestor", "worker", "reqrep")


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def judge(record: dict[str, Any]) -> None:
    """A run with call errors, or without a completed call, was disturbed (e.g. the shared
    broker restarted): its numbers stay in the JSON, out of the medians."""
    result = record.get("result") or {}
    if result.get("errors") or not result.get("calls"):
        samples = result.get("error_samples") or ["no call completed in the window"]
        record["ok"] = False
        record["error"] = f"{result.get('errors', 0)} call errors, e.g. {str(samples[0])[:300]}"


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


def positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


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
