"""Terminal summaries of a run, as a person reads them: latency first, then its parts."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from sim.result import Result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"


def print_run_summary(console: Console, result: Result) -> None:
    s = result.summary
    scenario = result.scenario
    console.print(f"[bold]{scenario.name}[/] (replication {result.replication}, seed {scenario.seed})")
    latency = Table(title="Latency at the client (ms), steady state")
    for column in ("metric", "p50", "p90", "p99", "mean"):
        latency.add_column(column, justify="left" if column == "metric" else "right")
    for stem, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E")):
        latency.add_row(label, *(_ms(s.get(f"{stem}_{q}_s")) for q in ("p50", "p90", "p99", "mean")))
    console.print(latency)
    parts = Table(title="Where the time goes (mean, ms)")
    for column in ("", "network", "queueing", "prefill", "decode"):
        parts.add_column(column, justify="left" if not column else "right")
    t = s["ttft_parts_mean_s"]
    e = s["e2e_parts_mean_s"]
    parts.add_row("TTFT", _ms(t["network"]), _ms(t["queueing"]), _ms(t["prefill"]), "-")
    parts.add_row("E2E", _ms(e["network"]), _ms(e["queueing"]), _ms(e["prefill"]), _ms(e["decode"]))
    console.print(parts)
    lines = [
        f"requests: {s['requests_total']:,} generated, {s['requests_completed']:,} completed, "
        f"{s['requests_rejected']:,} rejected, {s['requests_unfinished']:,} unfinished at the horizon",
        f"throughput: {s['throughput_rps']:.3g} req/s, {s['output_tokens_per_s']:,.0f} output tokens/s",
        "GPU busy: " + ", ".join(f"{pool} {frac:.1%}" for pool, frac in s["gpu_utilisation"].items()),
    ]
    attainment = s.get("slo_attainment")
    if attainment is not None:
        lines.append(f"SLO attainment: {attainment:.2%} of requests within every target")
    for name, check in s.get("slo", {}).items():
        mark = "[green]met[/]" if check["met"] else "[bold red]MISSED[/]"
        lines.append(f"  {name}: {_ms(check['measured_s'])} ms vs target {_ms(check['target_s'])} ms: {mark}")
    for line in lines:
        console.print(line, soft_wrap=True)


# ------------------------------------------------------------------------------------------
# The comparison table: scenarios as columns, metric groups as rows
# ------------------------------------------------------------------------------------------

# (metric, label, unit, better): better is "low", "high" or "" (no best marked)
COMPARISON_ROWS: list[tuple[str, list[tuple[str, str, str, str]]]] = [
    ("Latency (steady state, at the client)", [
        ("ttft_p50_s", "TTFT p50", "ms", "low"), ("ttft_p99_s", "TTFT p99", "ms", "low"),
        ("tpot_p50_s", "TPOT p50", "ms", "low"), ("tpot_p99_s", "TPOT p99", "ms", "low"),
        ("e2e_p50_s", "E2E p50", "s", "low"), ("e2e_p99_s", "E2E p99", "s", "low"),
        ("slo_attainment", "SLO attainment", "%", "high"),
    ]),
    ("Throughput and utilisation", [
        ("throughput_rps", "throughput", "req/s", ""), ("output_tokens_per_s", "output tokens/s", "", ""),
        ("preemptions", "preemptions", "", "low"),
    ]),
    ("Privacy (premises -> third party)", [
        ("exposed_records", "exposed records", "", "low"), ("exposed_bytes", "exposed bytes", "GB", "low"),
        ("exposure_score", "exposure score", "", "low"), ("third_party_gb_days", "data at rest", "GB-days", "low"),
    ]),
    ("Drift recovery", [
        ("detection_delay_s", "detection delay", "min", "low"), ("recovery_time_s", "recovery time", "h", "low"),
        ("degraded_requests", "degraded requests", "", "low"),
        ("excess_error_area_s", "excess-error area", "error x h", "low"),
    ]),
    ("Cost (over the horizon)", [
        ("cost_usd", "total", "USD", "low"), ("cost_usd_per_1m_requests", "per 1M requests", "USD", "low"),
        ("cost_usd_per_1m_output_tokens", "per 1M output tokens", "USD", "low"),
        ("cost_usd_per_month", "per month", "USD", "low"),
    ]),
    ("Energy", [
        ("energy_kwh", "energy", "kWh", "low"), ("carbon_kgco2e", "carbon", "kgCO2e", "low"),
    ]),
]

_SCALE = {"ms": 1e3, "s": 1.0, "min": 1 / 60, "h": 1 / 3600, "%": 100.0, "GB": 1e-9, "error x h": 1 / 3600}


def format_value(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    scaled = value * _SCALE.get(unit, 1.0)
    if unit == "%":
        return f"{scaled:.1f}%"
    if abs(scaled) >= 1000:
        return f"{scaled:,.0f}"
    return f"{scaled:.3g}"


def comparison_rows(comparison) -> list[dict]:  # noqa: ANN001 - sim.experiment.Comparison
    """The rows of the comparison table as data: group, label, unit, cells, best, SLO misses."""
    rows = []
    names = comparison.names
    slo = {s.name: s.slo for s in comparison.scenarios}
    for group, metrics in COMPARISON_ROWS:
        for metric, label, unit, better in metrics:
            frame = comparison.metric(metric)
            if frame["n"].sum() == 0 and metric != "recovery_time_s":
                continue
            if metric == "recovery_time_s" and not any(
                    run.summary.get("drift_events") for runs in comparison.runs.values() for run in runs):
                continue
            cells, means = {}, {}
            for name in names:
                row = frame.loc[name]
                mean = row["mean"]
                if metric == "recovery_time_s" and row["n"] < comparison.replications:
                    recovered = int(row["n"])
                    cells[name] = "not recovered" if recovered == 0 else (
                        f"{format_value(mean, unit)} ({recovered}/{comparison.replications} recovered)")
                    means[name] = math.inf if recovered == 0 else mean
                    continue
                half = (row["ci_high"] - row["ci_low"]) / 2 if not math.isnan(row["ci_high"]) else math.nan
                text = format_value(mean, unit)
                if not math.isnan(half) and half > 0:
                    text += f" ± {format_value(half, unit)}"
                cells[name] = text
                means[name] = mean
            best: set[str] = set()
            finite = {k: v for k, v in means.items() if v is not None and not math.isnan(v)}
            if better and len(finite) > 1:
                low = better == "low"
                leader = min(finite, key=finite.get) if low else max(finite, key=finite.get)
                others = [n for n in names if n != leader]
                if all(means.get(n) in (math.inf, None) or comparison.clearly_better(metric, leader, n, low)
                       for n in others):
                    best = {leader}
            missed = set()
            for name in names:
                target = getattr(slo[name], metric.removesuffix("_s"), None) if metric.endswith("_p99_s") else None
                if target is not None and means.get(name) is not None and means[name] > target:
                    missed.add(name)
            rows.append({"group": group, "metric": metric, "label": label, "unit": unit, "cells": cells,
                         "best": best, "slo_missed": missed})
    return rows


def print_comparison(console: Console, comparison) -> None:  # noqa: ANN001
    table = Table(title=f"{len(comparison.names)} scenarios x {comparison.replications} replications "
                        "(mean ± 95% CI half-width; * best, ! misses the SLO)", show_lines=False)
    table.add_column("metric")
    for name in comparison.names:
        table.add_column(name, justify="right")
    group = None
    for row in comparison_rows(comparison):
        if row["group"] != group:
            group = row["group"]
            table.add_row(f"[bold]{group}[/]", *([""] * len(comparison.names)))
        label = f"  {row['label']}" + (f" ({row['unit']})" if row["unit"] else "")
        cells = []
        for name in comparison.names:
            text = row["cells"][name]
            if name in row["slo_missed"]:
                text = f"[bold red]{text} ![/]"
            elif name in row["best"]:
                text = f"[green]{text} *[/]"
            cells.append(text)
        table.add_row(label, *cells)
    console.print(table)
    console.print(f"[dim]{comparison.total_requests():,} simulated requests in {comparison.wall_s:.1f} s "
                  f"on {comparison.workers} worker(s)[/]", soft_wrap=True)
