"""The scaling report for people: the table (rich) and the line chart (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness import source_note


def render(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    opts = report["options"]
    queue = "classic, transient" if opts["classic"] else "quorum, persistent, confirms"
    table = Table(
        title=(
            f"Scaling: 10 ms I/O-bound handler, --concurrency {opts['concurrency']} per process"
            f"{'' if opts['prefetch'] is None else ' --prefetch ' + str(opts['prefetch'])}, "
            f"{opts['repeats']} repeats x {opts['seconds']:g}s, {queue} (medians)"
        )
    )
    for column in (
        "processes",
        "in flight",
        "calls/s",
        "ideal (N x 1-proc)",
        "of ideal",
        "handler ceiling",
        "of ceiling",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU us/call cli/wrk/brk",
        "calls/s per repeat",
    ):
        if column.startswith("calls/s per"):
            table.add_column(column, justify="left", no_wrap=True)
        else:
            table.add_column(column, justify="right")
    for row in report["rows"]:
        cpu = row["cpu_us_per_call"]
        table.add_row(
            str(row["processes"]),
            str(row["inflight"]),
            _num(row["calls_per_s"]),
            _num(row["ideal"]),
            _pct(row["efficiency"]),
            _num(row["ceiling"]),
            _pct(row["of_ceiling"]),
            _num(row["p50_ms"], 1),
            _num(row["p99_ms"], 1),
            str(row["errors"]),
            "/".join(_num(cpu[side]) for side in ("client", "workers", "broker")),
            " ".join(f"{v:,.0f}" for v in row["calls_per_s_runs"]) or "failed",
        )
    console = Console(width=max(150, Console().width))
    console.print(table)
    console.print(
        f"broker {report['broker'].get('product')} {report['broker'].get('version')}, "
        f"{report['machine']['cpus']} CPUs, load average at start/end "
        f"{'/'.join(f'{v:.1f}' for v in report['loadavg_start'])} / "
        f"{'/'.join(f'{v:.1f}' for v in report['loadavg_end'])}, "
        f"elapsed {report['elapsed_s']} s"
    )
    note = source_note(report)
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    for run in report["runs"]:
        if not run.get("ok") and not run.get("retried"):
            console.print(
                f"[red]{run['processes']} processes #{run['repeat']}: "
                f"{run.get('error', 'skipped')}[/red]"
            )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def draw_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [row for row in report["rows"] if row["calls_per_s"] is not None]
    xs = [row["processes"] for row in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(xs, [row["calls_per_s"] for row in rows], "o-", color="#4c72b0", label="measured")
    ideal = [(row["processes"], row["ideal"]) for row in rows if row["ideal"] is not None]
    if ideal:
        ax.plot(*zip(*ideal, strict=True), "--", color="#8c8c8c", label="ideal: N x 1 process")
    ax.plot(
        xs,
        [row["ceiling"] for row in rows],
        ":",
        color="#dd8452",
        label="handler ceiling C x N / 10 ms",
    )
    for row in rows:
        ax.annotate(
            f"{row['calls_per_s']:,.0f}/s\n({_pct(row['efficiency'])} of ideal)",
            (row["processes"], row["calls_per_s"]),
            textcoords="offset points",
            xytext=(6, -22),
            fontsize=8,
        )
    opts = report["options"]
    queue = "classic, transient" if opts["classic"] else "quorum, persistent, confirms"
    ax.set_xticks(xs)
    ax.set_xlim(0.5, max(xs or [1]) + 0.9)
    ax.set_xlabel("worker processes")
    ax.set_ylabel("calls per second (median of repeats)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"reqrep: 10 ms handler, --concurrency {opts['concurrency']} per process, {queue}\n"
        f"{report['machine']['cpus']} CPUs shared by broker, client and workers; "
        f"{report['started'][:10]}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
