"""The A/B pairs, the rounds, and each property's ratios with it against without it."""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bench.cases.raw_props import EXCHANGE_SUFFIX, PROPERTIES, Property
from bench.harness import broker_info, machine_info, median, reqrep_fingerprint, retry_cleanup
from bench.props._wire import added_bytes
from bench.suite._plan import Case, Options
from bench.suite._run import RUN_OVERHEAD, run_case

__all__ = ["RATIOS", "measured", "pair_cases", "pair_order", "run_props", "summarize"]

# The figures compared, each as (its name in the report, how to read it from a run record).
RATIOS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "calls_per_s": lambda r: r["result"]["calls_per_s"],
    "p50_ms": lambda r: r["result"]["latency_ms"]["p50"],
    "client_us": lambda r: (r.get("cpu_us_per_call") or {}).get("client"),
    "server_us": lambda r: (r.get("cpu_us_per_call") or {}).get("server"),
    "broker_us": lambda r: (r.get("cpu_us_per_call") or {}).get("broker"),
}


def measured() -> list[Property]:
    """The properties that can be flipped (the others are only counted in bytes)."""
    return [prop for prop in PROPERTIES if prop.removable]


def pair_cases(prop: Property, durable: bool) -> tuple[Case, Case]:
    """The usual set and the set with ``prop`` flipped, as two suite cases."""

    def case(label: str, flip: tuple[str, ...]) -> Case:
        return Case(
            f"props.{prop.name}.{label}",
            f"bare pika with reqrep's properties, {label}",
            "bench.cases.raw_props",
            durable=durable,
            extra_args=flip,
            exchange_suffixes=(EXCHANGE_SUFFIX,),
        )

    return case("usual", ()), case("flipped", ("--flip", prop.name))


def pair_order(props: Sequence[Property], round_no: int) -> list[tuple[Property, bool]]:
    """Round ``round_no`` (from 1): the properties forwards, then backwards next round; each
    pair runs the usual set first in odd rounds, second in even ones. (prop, flipped) pairs."""
    forwards = round_no % 2 == 1
    order = list(props) if forwards else list(reversed(props))
    return [(prop, flipped) for prop in order for flipped in (not forwards, forwards)]


def run_props(
    props: Sequence[Property],
    opts: Options,
    *,
    rounds: int,
    durable: bool = True,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    per_run = opts.warmup + opts.seconds + RUN_OVERHEAD
    runs: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id,
        "options": {
            **{k: v for k, v in dataclasses.asdict(opts).items() if k != "url"},
            "rounds": rounds,
            "durable": durable,
        },
        "machine": machine_info(),
        "broker": broker_info(opts.url),
        "loadavg_start": os.getloadavg(),
        "reqrep_source_start": reqrep_fingerprint(),
    }
    total = 2 * len(props) * rounds
    index = 0
    for round_no in range(1, rounds + 1):
        for prop, flipped in pair_order(props, round_no):
            index += 1
            label = f"[{index}/{total}] {prop.name} {'flipped' if flipped else 'usual'} #{round_no}"
            if time.monotonic() - started + per_run > opts.max_minutes * 60.0:
                progress(f"{label}: skipped (--max-minutes)")
                continue
            case = pair_cases(prop, durable)[flipped]
            record = run_case(case, round_no, opts, run_id)
            record.update(property=prop.name, flipped=flipped, round=round_no)
            runs.append(record)
            if record["ok"]:
                result = record["result"]
                progress(f"{label}: {result['calls_per_s']:,.0f} calls/s")
            else:
                progress(f"{label}: FAILED {record.get('error')}")
    retry_cleanup(opts.url, runs, progress)
    info["loadavg_end"] = os.getloadavg()
    info["reqrep_source_end"] = reqrep_fingerprint()
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    return {**info, "runs": runs, "summary": summarize(runs)}


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per property (every one, in ``PROPERTIES``' order): its bytes, its guarantee,
    and, if it was run, the medians over rounds of each figure with it divided by without it
    (a round counts if both of its pair's runs are sound)."""
    rows = []
    for prop in PROPERTIES:
        request_bytes, reply_bytes = added_bytes(prop.name, prop.usual)
        pairs: dict[int, dict[bool, dict[str, Any]]] = {}
        for run in runs:
            if run.get("property") == prop.name and run.get("ok"):
                pairs.setdefault(run["round"], {})[run["flipped"]] = run
        ratios: dict[str, list[float | None]] = {key: [] for key in RATIOS}
        with_rates: list[float | None] = []
        for pair in pairs.values():
            if len(pair) < 2:
                continue
            # "with" is the usual set for a property usually sent, the flipped one otherwise
            with_it, without = pair[not prop.usual], pair[prop.usual]
            with_rates.append(RATIOS["calls_per_s"](with_it))
            for key, read in RATIOS.items():
                a, b = read(with_it), read(without)
                ratios[key].append(a / b if a is not None and b else None)
        rows.append(
            {
                "property": prop.name,
                "side": prop.side,
                "usual": prop.usual,
                "measured": prop.removable,
                "request_bytes": request_bytes,
                "reply_bytes": reply_bytes,
                "rounds": len(ratios["calls_per_s"]),
                "calls_per_s_with": median(with_rates),
                "ratio": {key: median(values) for key, values in ratios.items()},
                "ratio_runs": {
                    key: [None if v is None else round(v, 3) for v in values]
                    for key, values in ratios.items()
                },
                "needed_by": prop.needed_by,
            }
        )
    return rows
