"""Terminal summaries of a run, as a person reads them: latency first, then its parts.

They print through a `sim.report.console.console()`: every string is shown literally, so
user names never act as markup; styling is `styled(...)` Text, never markup strings.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sim.report.console import styled
from sim.result import Result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"


def print_run_summary(console: Console, result: Result) -> None:
    s = result.summary
    scenario = result.scenario
    console.print(Text.assemble(styled(scenario.name, "bold"),
                                styled(f" (replication {result.replication}, seed {scenario.seed})")))
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
    if s.get("stages"):
        stages = Table(title="Per load stage (requests sent during the stage; ms)")
        for column in ("stage", "rate/s", "requests", "TTFT mean", "TTFT p99", "TPOT mean", "E2E mean", "E2E p99"):
            stages.add_column(column, justify="right")
        for st in s["stages"]:
            stages.add_row(str(st["stage"]), f"{st['rate_per_s']:g}", f"{st['requests']:,}", _ms(st["ttft_mean_s"]),
                           _ms(st["ttft_p99_s"]), _ms(st["tpot_mean_s"]), _ms(st["e2e_mean_s"]), _ms(st["e2e_p99_s"]))
        console.print(stages)
    lines: list[str | Text] = [
        f"requests: {s['requests_total']:,} generated, {s['requests_completed']:,} completed, "
        f"{s['requests_rejected']:,} rejected, {s['requests_unfinished']:,} unfinished at the horizon",
        f"throughput: {s['throughput_rps']:.3g} req/s, {s['output_tokens_per_s']:,.0f} output tokens/s",
        "GPU busy: " + ", ".join(f"{pool} {frac:.1%}" for pool, frac in s["gpu_utilisation"].items()),
    ]
    attainment = s.get("slo_attainment")
    if attainment is not None:
        lines.append(f"SLO attainment: {attainment:.2%} of requests within every target")
    if s.get("faults_injected"):
        lines.append(f"faults: {s['faults_injected']} injected; availability {s['availability']:.2%} served, "
                     f"{s['availability_slo']:.2%} within the SLO; {s['requests_failed']:,} failed, "
                     f"{s['requests_retried']:,} retried, {s['requests_fallback']:,} served by the fallback")
    if s.get("spot_interruptions"):
        lines.append(f"spot: {s['spot_interruptions']} instances reclaimed; their in-flight requests: "
                     f"{s['spot_requests_retried']:,} retried, {s['spot_requests_failed']:,} failed")
    for name, check in s.get("slo", {}).items():
        mark = styled("met", "green") if check["met"] else styled("MISSED", "bold red")
        measured = (f"{_ms(check['measured_s'])} ms" if check["measured_s"] is not None
                    else "not reached (too many requests did not complete)")
        lines.append(Text.assemble(
            styled(f"  {name}: {measured} vs target {_ms(check['target_s'])} ms: "), mark))
    for line in lines:
        console.print(line, soft_wrap=True)
    print_lifecycle(console, result)
    print_privacy_cost_energy(console, result)


def print_lifecycle(console: Console, result: Result) -> None:
    """Drift recovery: detection delay, each stage's duration, recovery time per drift event."""
    s = result.summary
    for event in s.get("drift_events", []):
        head = (f"drift event {event['drift_event']} ({event['kind']}) at {event['onset_s'] / 3600:.2f} h: ")
        if event["detected_s"] is None:
            console.print(head + "not detected within the horizon", soft_wrap=True)
            continue
        stages = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in event["stages_s"].items())
        recovered = (styled("not recovered", "bold red") + " within the horizon" if event["recovery_time_s"] is None
                     else styled(f"recovered after {event['recovery_time_s'] / 3600:.2f} h "
                                 f"to an error rate of {event['recovered_error_rate']:.1%}"))
        console.print(Text.assemble(head, f"detected after {event['detection_delay_s'] / 60:.1f} min; ", recovered,
                                    f" ({stages})" if stages else ""), soft_wrap=True)
    if s.get("drift_events"):
        console.print(f"degraded requests: {s['degraded_requests']:,}; excess-error area "
                      f"{s['excess_error_area_s'] / 3600:.3g} error-hours", soft_wrap=True)


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def print_privacy_cost_energy(console: Console, result: Result) -> None:
    """Exposure per data class, cost per component, and energy: the run's other three axes."""
    s = result.summary
    if "cost_usd" not in s:
        return
    exposure = Table(title="Seen by third parties (uploads, and responses they generate)")
    for column in ("data class", "records", "MB", "score", "GB-days at rest", "sites"):
        exposure.add_column(column, justify="left" if column == "data class" else "right")
    for name, nbytes in s["exposed_bytes_by_class"].items():
        at_rest = s["third_party_gb_days_by_class"][name]
        if nbytes == 0 and at_rest == 0:
            continue
        aggregates = s["exposed_aggregates_by_class"].get(name)
        records = f"{aggregates:,} aggregates" if aggregates else f"{s['exposed_records_by_class'][name]:,}"
        exposure.add_row(name, records, f"{nbytes / 1e6:,.2f}", f"{s['exposure_score_by_class'][name]:,.1f}",
                         f"{at_rest:.3g}", str(s["third_party_sites_by_class"][name]))
    exposure.add_row(styled("total", "bold"), f"{s['exposed_records']:,}", f"{s['exposed_bytes'] / 1e6:,.2f}",
                     f"{s['exposure_score']:,.1f}", f"{s['third_party_gb_days']:.3g}", "")
    console.print(exposure)
    cost = Table(title="Cost over the horizon (USD)")
    cost.add_column("component")
    cost.add_column("USD", justify="right")
    cost.add_column("share", justify="right")
    total = s["cost_usd"]
    for component, usd in s["cost_usd_by_component"].items():
        if usd:
            cost.add_row(component, _usd(usd), f"{usd / total:.1%}" if total else "-")
    cost.add_row(styled("total", "bold"), _usd(total), "")
    console.print(cost)
    lines = [
        f"cost: {_usd(s['cost_usd_per_day'])} per day, {_usd(s['cost_usd_per_1m_requests'])} per 1M requests, "
        f"{_usd(s['cost_usd_per_1m_output_tokens'])} per 1M output tokens",
        f"projection ({s['projection_basis']}): {_usd(s['cost_usd_per_month'])} in the first month "
        f"({_usd(s['cost_usd_per_month_fixed'])} fixed), {_usd(s['cost_usd_month_12_projected'])} in the 12th, "
        f"{_usd(s['cost_usd_per_year_projected'])} a year",
        f"energy: {s['energy_kwh']:,.1f} kWh metered on premises, {s['cloud_energy_kwh']:,.1f} kWh estimated in the "
        f"cloud; {s['carbon_kgco2e']:,.1f} kgCO2e"
        + (f"; {s['energy_kwh_per_1m_output_tokens']:,.2f} kWh per 1M output tokens"
           if s["energy_kwh_per_1m_output_tokens"] is not None else ""),
    ]
    for line in lines:
        console.print(line, soft_wrap=True)


# ------------------------------------------------------------------------------------------
# The comparison table: scenarios as columns, metric groups as rows
# ------------------------------------------------------------------------------------------

# (metric, label, unit, better): better is "low", "high" or "" (no best marked)
LATENCY_GROUP = "Latency (steady state, at the client)"
COMPARISON_ROWS: list[tuple[str, list[tuple[str, str, str, str]]]] = [
    (LATENCY_GROUP, [
        ("ttft_p50_s", "TTFT p50", "ms", "low"), ("ttft_p99_s", "TTFT p99", "ms", "low"),
        ("tpot_p50_s", "TPOT p50", "ms", "low"), ("tpot_p99_s", "TPOT p99", "ms", "low"),
        ("e2e_p50_s", "E2E p50", "s", "low"), ("e2e_p99_s", "E2E p99", "s", "low"),
        ("slo_attainment", "SLO attainment", "%", "high"),
        ("requests_unfinished", "unfinished at the horizon", "", ""),
    ]),
    ("Availability (faults)", [
        ("availability", "served", "%", "high"), ("availability_slo", "served within SLO", "%", "high"),
        ("requests_failed", "failed requests", "", "low"), ("requests_retried", "retried requests", "", "low"),
        ("spot_interruptions", "spot instances reclaimed", "", "low"),
        ("requests_fallback", "served by the fallback", "", ""),
        ("time_to_restore_mean_s", "mean time to restore", "h", "low"),
        ("lifecycle_outage_delay_s", "lifecycle delay from outages", "h", "low"),
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
        ("recovered_error_rate", "recovered error rate", "%", "low"),
        ("degraded_requests", "degraded requests", "", "low"),
        ("excess_error_area_s", "excess-error area", "error x h", "low"),
    ]),
    ("Training application", [
        ("gpu_hours_by_purpose.retraining", "retraining GPU-hours", "", ""),
        ("gpu_hours_by_purpose.development", "development GPU-hours", "", ""),
        ("cloud_gpu_cost_usd_by_purpose.retraining", "retraining cloud GPUs", "USD", "low"),
        ("cloud_gpu_cost_usd_by_purpose.development", "development cloud GPUs", "USD", "low"),
        ("training_jobs_completed_by_purpose.development", "experiments completed", "", "high"),
        ("training_queue_wait_s", "wait for training GPUs", "min", "low"),
        ("model_staleness_mean_s", "served model's age", "h", "low"),
        ("degraded_share", "requests served degraded", "%", "low"),
    ]),
    ("Cost (over the horizon)", [
        ("cost_usd", "total", "USD", "low"), ("cost_usd_per_1m_requests", "per 1M requests", "USD", "low"),
        ("cost_usd_per_1m_output_tokens", "per 1M output tokens", "USD", "low"),
        ("cost_usd_per_day", "per day", "USD", "low"),
    ]),
    ("Cost projection (the simulated day repeated; usage-paid lines grow)", [
        ("cost_usd_per_month", "first month", "USD", "low"),
        ("cost_usd_per_month_fixed", "of which fixed", "USD", ""),
        ("cost_usd_month_12_projected", "12th month", "USD", "low"),
        ("cost_usd_per_year_projected", "year", "USD", "low"),
        ("traffic_growth_per_month", "traffic growth a month", "%", ""),
    ]),
    ("Energy", [
        ("energy_kwh", "energy on premises", "kWh", ""), ("cloud_energy_kwh", "energy in the cloud (est.)", "kWh", ""),
        ("energy_kwh_per_1m_output_tokens", "kWh per 1M output tokens", "", "low"),
        ("carbon_kgco2e", "carbon", "kgCO2e", "low"),
    ]),
]

RECOVERY_METRICS = ("recovery_time_s", "recovered_error_rate")
"""Metrics that exist only once a drift is recovered: a missing value reads "not recovered"."""

POOLS_GROUP = "Serving pools (load per pool)"
POOL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("requests_share", "share of requests", "%"), ("gpu_hours", "GPU-hours held", "GPU-h"),
    ("replicas_mean", "replicas (time-average)", ""), ("replicas_max", "replicas (most at once)", ""),
)


def pool_names(comparison) -> list[str]:  # noqa: ANN001 - sim.experiment.Comparison
    """Every serving pool of any run, in the order the scenarios and their runs list them."""
    names: list[str] = []
    for runs in comparison.runs.values():
        for run in runs:
            names += [name for name in run.summary.get("pools", {}) if name not in names]
    return names


CLASSES_GROUP = "Traffic classes (each against its own SLO)"
CLASS_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("requests", "requests", "", ""), ("slo_attainment", "SLO attainment", "%", "high"),
    ("exposure.exposed_records", "exposed records", "", "low"), ("exposure.exposure_score", "exposure score", "", "low"),
)


def class_names(comparison) -> list[str]:  # noqa: ANN001 - sim.experiment.Comparison
    """Every traffic class declared by any run's scenario, in order ('default', the implicit
    class of scenarios without classes, left out)."""
    names: list[str] = []
    for runs in comparison.runs.values():
        for run in runs:
            names += [name for name in run.summary.get("classes", {}) if name not in names and name != "default"]
    return names


def comparison_groups(comparison) -> list[tuple[str, list[tuple[str, str, str, str]]]]:  # noqa: ANN001
    """COMPARISON_ROWS with the serving pools' group after throughput: per pool its share of
    the requests, GPU-hours held, replicas (mean and most), then the burst share; and, when a
    scenario has traffic classes, their group after privacy: per class its requests, SLO
    attainment and exposure."""
    pools = [(f"pools.{pool}.{field}", f"{pool}: {label}", unit, "")
             for pool in pool_names(comparison) for field, label, unit in POOL_ROWS]
    pools.append(("burst_share", "burst share (sent on overflow)", "%", ""))
    groups = list(COMPARISON_ROWS)
    after = next(i for i, (group, _) in enumerate(groups) if group.startswith("Throughput")) + 1
    groups.insert(after, (POOLS_GROUP, pools))
    classes = [(f"classes.{name}.{field}", f"{name}: {label}", unit, better)
               for name in class_names(comparison) for field, label, unit, better in CLASS_ROWS]
    if classes:
        after = next(i for i, (group, _) in enumerate(groups) if group.startswith("Privacy")) + 1
        groups.insert(after, (CLASSES_GROUP, classes))
    return groups


_SCALE = {"ms": 1e3, "s": 1.0, "min": 1 / 60, "h": 1 / 3600, "%": 100.0, "GB": 1e-9, "error x h": 1 / 3600}


def format_value(value: float, unit: str, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    scaled = value * _SCALE.get(unit, 1.0)
    if unit == "%":
        return f"{scaled:.{max(digits - 2, 0) + 1}f}%" if digits >= 3 else f"{scaled:.2g}%"
    if abs(scaled) >= 1000 and digits >= 3:
        return f"{scaled:,.0f}"
    if abs(scaled) >= 10 ** digits:  # round to `digits` significant figures, written out in full
        magnitude = math.floor(math.log10(abs(scaled)))
        return f"{round(scaled, digits - 1 - magnitude):,.0f}"
    return f"{scaled:.{digits}g}"


def format_interval(mean: float, low: float, high: float, unit: str) -> str:
    """' ± h' for an interval symmetric about the mean; ' (low to high)' for one its domain cut
    (a count near zero, a share near one: `sim.experiment.metric_domain`); '' for none."""
    if mean is None or math.isnan(mean) or math.isnan(low) or math.isnan(high) or high <= low:
        return ""
    below, above = mean - low, high - mean
    if abs(below - above) <= 1e-9 * max(abs(below), abs(above), 1e-300):
        return format_half_width((high - low) / 2, mean, unit)
    digits = 3 if unit == "%" else 2  # a share near 100% needs its decimals
    return f" ({format_value(low, unit, digits=digits)} to {format_value(high, unit, digits=digits)})"


def format_half_width(half: float, mean: float, unit: str) -> str:
    """A CI half-width to two significant digits, or '' when it rounds to nothing."""
    scaled_half = abs(half * _SCALE.get(unit, 1.0))
    scaled_mean = abs(mean * _SCALE.get(unit, 1.0)) if mean is not None else 0.0
    if scaled_half == 0 or (scaled_mean > 0 and scaled_half < 5e-4 * scaled_mean):
        return ""
    return f" ± {format_value(half, unit, digits=2)}"


def overload_row(comparison) -> dict | None:  # noqa: ANN001 - sim.experiment.Comparison
    """The table's first row when any scenario ran overloaded (`sim.metrics.latency.overloaded`):
    per scenario 'OVERLOADED' with its mean unfinished requests (and in how many replications),
    else 'no'; None when no scenario did."""
    overloaded = {name: comparison.overloaded(name) for name in comparison.names}
    if not any(overloaded.values()):
        return None
    unfinished = comparison.metric("requests_unfinished")["mean"]
    cells = {}
    for name, reps in overloaded.items():
        share = "" if len(reps) == comparison.replications else f" in {len(reps)}/{comparison.replications} runs"
        cells[name] = (f"OVERLOADED: {format_value(unfinished[name], '')} unfinished{share}" if reps else "no")
    return {"group": LATENCY_GROUP, "metric": "overloaded", "label": "overloaded (never best)", "unit": "",
            "cells": cells, "best": set(), "slo_missed": {name for name, reps in overloaded.items() if reps}}


def comparison_rows(comparison) -> list[dict]:  # noqa: ANN001 - sim.experiment.Comparison
    """The rows of the comparison table as data: group, label, unit, cells, best, SLO misses.
    An overloaded scenario gets the first row (`overload_row`) and is never best."""
    flag = overload_row(comparison)
    rows = [flag] if flag else []
    names = comparison.names
    for group, metrics in comparison_groups(comparison):
        for metric, label, unit, better in metrics:
            frame = comparison.metric(metric)
            if frame["n"].sum() == 0 and metric not in RECOVERY_METRICS:
                continue
            if metric in RECOVERY_METRICS and not any(
                    run.summary.get("drift_events") for runs in comparison.runs.values() for run in runs):
                continue
            cells = {}
            for name in names:
                row = frame.loc[name]
                mean = row["mean"]
                if metric in RECOVERY_METRICS and row["n"] < comparison.replications:
                    recovered = int(row["n"])
                    cells[name] = "not recovered" if recovered == 0 else (
                        f"{format_value(mean, unit)} ({recovered}/{comparison.replications} recovered)")
                    continue
                cells[name] = format_value(mean, unit) + format_interval(mean, row["ci_low"], row["ci_high"], unit)
            best = comparison.best(metric, better == "low") if better else set()
            missed = set()  # the SLO verdict (unfinished requests count as misses), in any replication
            verdicts = comparison.values(f"slo.{metric.removesuffix('_s')}.met") if metric.endswith("_s") else {}
            for name in names:
                if any(v == 0.0 for v in verdicts.get(name, [])):
                    missed.add(name)
            rows.append({"group": group, "metric": metric, "label": label, "unit": unit, "cells": cells,
                         "best": best, "slo_missed": missed})
    return rows


HEADLINE_AXES: tuple[tuple[str, str, str], ...] = (
    ("ttft_p99_s", "fastest p99 TTFT", "ms"), ("exposure_score", "least exposure", ""),
    ("recovery_time_s", "fastest drift recovery", "h"), ("cost_usd_per_1m_requests", "cheapest per 1M requests", "USD"),
)


def headline(comparison) -> str:  # noqa: ANN001 - sim.experiment.Comparison
    """One line naming the best scenario(s) on each of the four axes, as the table marks them
    (`Comparison.best`: beyond noise, ties shared, never an overloaded run), with the value;
    'no clear best' where none beats the rest; overloaded scenarios named at the end."""
    parts = []
    for metric, label, unit in HEADLINE_AXES:
        best = [name for name in comparison.names if name in comparison.best(metric)]
        if not best:
            parts.append(f"{label}: no clear best")
            continue
        mean = comparison.metric(metric).loc[best[0], "mean"]
        parts.append(f"{label}: {' = '.join(best)} ({format_value(mean, unit)}{' ' + unit if unit else ''})")
    overloaded = [name for name in comparison.names if comparison.overloaded(name)]
    if overloaded:
        parts.append("overloaded: " + ", ".join(overloaded))
    return "; ".join(parts)


def print_comparison(console: Console, comparison) -> None:  # noqa: ANN001
    table = Table(title=f"{len(comparison.names)} scenarios x {comparison.replications} replications "
                        "(mean ± 95% CI half-width; * best (ties share it; never an overloaded run), ! misses the SLO)", show_lines=False)
    table.add_column("metric")
    for name in comparison.names:
        table.add_column(name, justify="right")
    group = None
    for row in comparison_rows(comparison):
        if row["group"] != group:
            group = row["group"]
            table.add_row(styled(group, "bold"), *([""] * len(comparison.names)))
        label = f"  {row['label']}" + (f" ({row['unit']})" if row["unit"] else "")
        cells = []
        for name in comparison.names:
            text = row["cells"][name]
            if name in row["slo_missed"]:
                cells.append(styled(f"{text} !", "bold red"))
            elif name in row["best"]:
                cells.append(styled(f"{text} *", "green"))
            else:
                cells.append(text)
        table.add_row(label, *cells)
    console.print(table)
    console.print(f"{comparison.total_requests():,} simulated requests in {comparison.wall_s:.1f} s "
                  f"on {comparison.workers} worker(s)", style="dim", soft_wrap=True)
    warning = few_replications_warning(comparison.replications)
    if warning:
        console.print(warning, style="yellow", soft_wrap=True)


def few_replications_warning(replications: int) -> str:
    """One line when there are too few replications for the intervals to say much (fewer than
    `sim.experiment.FEW_REPLICATIONS`), else ''."""
    from scipy import stats

    from sim.experiment import FEW_REPLICATIONS

    if replications >= FEW_REPLICATIONS:
        return ""
    if replications < 2:
        return ("warning: one replication per scenario, so no confidence intervals and no 'best' beyond noise; "
                f"use -r {FEW_REPLICATIONS} or more to tell scenarios apart")
    t = float(stats.t.ppf(0.975, replications - 1))
    return (f"warning: with {replications} replications a 95% interval spans {t:.1f} standard errors either side "
            f"of the mean, too wide to tell most scenarios apart; use -r {FEW_REPLICATIONS} or more")
