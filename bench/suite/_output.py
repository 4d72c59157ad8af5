"""The suite's report for people: the table (rich) and the bar chart (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness import source_note
from bench.suite._plan import (
    DURABLE_BASELINE,
    NATIVE_PROTOCOL_PAIR,
    PROTOCOL_PAIR,
    SERIAL_INLINE_PAIR,
    SERIAL_NATIVE_PAIR,
    SERIAL_PAIR,
    TUNED_BASELINES,
)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


_CPU_SIDES = ("client", "server", "broker")


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
    columns += ["p50 ms", "p90 ms", "p99 ms", "max ms"]
    columns += [f"{side} us" for side in _CPU_SIDES]
    columns += ["errors", "calls/s per repeat"]
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
            fmt_ms(lat["p50"]),
            fmt_ms(lat["p90"]),
            fmt_ms(lat["p99"]),
            fmt_ms(lat["max"]),
            *(_rate(entry["cpu_us_per_call"].get(side)) for side in _CPU_SIDES),
            str(entry["errors"]),
            " ".join(f"{v:,.0f}" for v in entry["calls_per_s_runs"]) or "failed",
        )
    console.print(table)
    console.print(
        "client/server/broker us: CPU microseconds per call of the client process, the "
        "server process and the broker (beam.smp, which includes any other load on it) "
        "over the measuring window, divided by the calls completed in it"
    )
    _print_ratios(console, report)
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
        label += f"  (p50 {fmt_ms(entry['latency_ms']['p50'])} ms)"
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


def _print_ratios(console: Any, report: dict[str, Any]) -> None:
    """The summary's ratios, each with the figures it divides."""
    cases = report["summary"]["cases"]
    ratio = report["summary"]["serial_p50_ratio"]
    if ratio is not None:
        a, b = (cases[name]["latency_ms"]["p50"] for name in SERIAL_PAIR)
        console.print(
            f"serial: reqrep-serial p50 / tutorial p50 = {fmt_ms(a)} / {fmt_ms(b)} ms "
            f"= {ratio:.2f}x"
        )
    for key, pair in (
        ("serial_inline_p50_ratio", SERIAL_INLINE_PAIR),
        ("serial_native_p50_ratio", SERIAL_NATIVE_PAIR),
    ):
        other = report["summary"].get(key)
        if other is not None:
            a, b = (cases[name]["latency_ms"]["p50"] for name in pair)
            console.print(
                f"serial: {pair[0]} p50 / {pair[1]} p50 = {fmt_ms(a)} / {fmt_ms(b)} ms "
                f"= {other:.2f}x"
            )
    for key, pair in (
        ("async_vs_tuned_props", PROTOCOL_PAIR),
        ("native_vs_tuned_props", NATIVE_PROTOCOL_PAIR),
    ):
        protocol = report["summary"].get(key)
        if protocol is not None:
            console.print(f"same properties: {pair[0]} / {pair[1]} = {protocol:.2f}x calls/s")
