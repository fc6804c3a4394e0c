"""The pictures and the report of a sweep: how metrics move with each factor, and what is worth it.

A sweep's results (`sim.sweep.sweep` or `load_sweep_results`) hold one row per point x
replication. Two kinds of figure answer what a planner asks of them:

- `metric_vs_factor`: one panel per metric, the factor on the x axis, one line per base
  scenario (the comparison report's colours: `scenario_colours`), the mean over replications
  with a 95% Student-t band. When other factors vary too, each of their combinations gets a
  dash pattern (up to four), or the line averages over them (and says so). Factors drawn from
  ranges (random and Latin-hypercube designs) have too many values for lines: each
  configuration is a dot.
- `pareto`: every configuration's mean cost against its p99 latency, and against its
  exposure score; the Pareto front (no other configuration is cheaper *and* faster, or
  cheaper *and* less exposed) is drawn as a line, and the configurations that no other beats
  on all three at once are ringed. Fronts are per workload condition (`sim.sweep` module
  doc: traffic, WAN, faults are conditions, not decisions), one panel per condition: a
  configuration is only compared with others that met the same conditions.

`write_sweep_report(results, out_dir)` writes `figures/*.png`, `report.md`, a self-contained
`index.html` (figures embedded, no scripts or links), `results.csv` (every row) and
`summary.csv` (per configuration: mean and CI of every metric), into `out_dir` only.

    >>> from sim.sweep import load_sweep_results
    >>> from sim.report.sweep_figures import write_sweep_report
    >>> write_sweep_report(load_sweep_results("reports/sweeps/rate_x_rtt"), "reports/sweeps/rate_x_rtt")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sim.experiment import mean_ci
from sim.report.document import CSS, _Writer
from sim.report.figures import DPI, LINESTYLES, STYLE, WIDTH_IN, scenario_colours
from sim.spec.units import UnitError, parse_bandwidth, parse_bytes, parse_duration

CONTINUOUS_VALUES = 12  # more distinct values than this: dots, not lines
MAX_PANELS = 8
MAX_STYLES = 4
COST_METRICS = ("cost_usd_per_1m_requests", "cost_usd_per_month", "cost_usd")
LATENCY_METRICS = ("ttft_p99_s", "e2e_p99_s", "tpot_p99_s", "ttft_p90_s", "e2e_p90_s")
EXPOSURE_METRIC = "exposure_score"
NOT_PLOTTED = ("requests_total", "requests_completed")
FRONT_STYLE: dict[str, Any] = {"color": "#222222", "linewidth": 1.1, "linestyle": (0, (4, 2)), "zorder": 1}

LABELS = {
    "ttft_p50_s": "p50 TTFT (s)", "ttft_p90_s": "p90 TTFT (s)", "ttft_p99_s": "p99 TTFT (s)",
    "tpot_p99_s": "p99 TPOT (s)", "e2e_p50_s": "p50 E2E (s)", "e2e_p90_s": "p90 E2E (s)", "e2e_p99_s": "p99 E2E (s)",
    "slo_attainment": "SLO attainment", "throughput_rps": "throughput (req/s)", "exposure_score": "exposure score",
    "exposed_bytes": "exposed bytes", "recovery_time_s": "recovery time (s)",
    "recovered_error_rate": "recovered error rate", "cost_usd": "cost (USD)",
    "cost_usd_per_month": "cost (USD / month)", "cost_usd_per_1m_requests": "cost (USD / 1M requests)",
    "energy_kwh": "energy (kWh)", "detection_delay_s": "detection delay (s)",
}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


# ------------------------------------------------------------------------------------------
# Reading the results
# ------------------------------------------------------------------------------------------


def factors_of(results: pd.DataFrame) -> list[str]:
    return [f for f in results.attrs.get("factors", []) if f in results.columns]


def plotted_metrics(results: pd.DataFrame) -> list[str]:
    """The sweep's metrics worth a panel: present, numeric, not constant, in the sweep's order."""
    from sim.sweep import metric_columns

    ok = results[results["status"] == "ok"]
    wanted = [m for m in results.attrs.get("metrics", []) if m not in NOT_PLOTTED]
    columns = metric_columns(results)
    chosen = []
    for metric in wanted:
        for column in columns:
            if column != metric and not column.startswith(metric + "."):
                continue
            values = pd.to_numeric(ok[column], errors="coerce").dropna()
            if len(values) and values.nunique() > 1 and column not in chosen:
                chosen.append(column)
    return chosen


def numeric_axis(values: Sequence[Any]) -> tuple[np.ndarray | None, str]:
    """Factor values as numbers (units converted: '80ms' -> 0.08 s), or None if they are not."""
    for parse, unit in ((None, ""), (parse_duration, "s"), (parse_bandwidth, "B/s"), (parse_bytes, "B")):
        try:
            numbers = [_number(v, parse) for v in values]
        except (UnitError, TypeError, ValueError):
            continue
        return np.array(numbers, dtype=float), unit
    return None, ""


def _number(value: Any, parse: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a bool is not a quantity")
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if parse is None:
        raise TypeError("not a number")
    return float(parse(value))


def _colours(results: pd.DataFrame) -> dict[str, str]:
    names = list(dict.fromkeys(results["base"]))
    return scenario_colours(SimpleNamespace(names=names))  # type: ignore[arg-type]


def _key(value: Any) -> Any:
    """A hashable stand-in for a factor value (lists and dicts from YAML become text)."""
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _figure(rows: int, cols: int, height_in: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def metric_vs_factor(results: pd.DataFrame, factor: str, metrics: Sequence[str] | None = None) -> Figure:
    """One panel per metric against `factor`: a line (mean, 95% CI band) per base scenario."""
    metrics = list(metrics or plotted_metrics(results))[:MAX_PANELS]
    ok = results[results["status"] == "ok"].copy()
    ok["_x"] = ok[factor].map(_key)
    xs = list(dict.fromkeys(ok["_x"]))
    numbers, unit = numeric_axis(xs)
    position = dict(zip(xs, numbers if numbers is not None else range(len(xs)), strict=True))
    design = results.attrs.get("design", "")
    continuous = numbers is not None and (len(xs) > CONTINUOUS_VALUES or design in ("random", "lhs"))
    others = [f for f in factors_of(results) if f != factor]
    ok["_o"] = [tuple(_key(row[f]) for f in others) for _, row in ok.iterrows()] if others else [()] * len(ok)
    combos = list(dict.fromkeys(ok["_o"]))
    # in a zip design the other factors move with this one: one line, the partners on the ticks
    paired = (bool(others) and not continuous and design in ("zip", "")
              and bool((ok.groupby("_x", sort=False)["_o"].nunique() == 1).all()))
    split = bool(others) and not paired and 1 < len(combos) <= MAX_STYLES and not continuous
    colours = _colours(results)
    cols = 1 if len(metrics) == 1 else 2
    rows = max(1, math.ceil(len(metrics) / cols))
    with mpl.rc_context(STYLE):  # type: ignore[arg-type]
        fig, axes = _figure(rows, cols, 2.6 * rows + 0.7)
        for ax, metric in zip(axes.flat, metrics, strict=False):
            for base, group in ok.groupby("base", sort=False):
                if continuous:
                    _dots(ax, group, metric, position, colours[base])
                    continue
                parts = ([(combo, group[group["_o"].map(lambda t, c=combo: t == c)]) for combo in combos]
                         if split else [((), group)])
                for i, (_, part) in enumerate(parts):
                    _line(ax, part, metric, xs, position, colours[base], LINESTYLES[i % len(LINESTYLES)],
                          band=numbers is not None)
            ax.set_ylabel(label(metric))
            ax.set_xlabel(f"{factor} ({unit})" if unit else factor)
            if numbers is None:
                partners = dict(zip(ok["_x"], ok["_o"], strict=False)) if paired else {}
                ax.set_xticks(range(len(xs)), [str(x) + "".join(f"\n{_short(f)}={v}" for f, v in
                                                                zip(others, partners.get(x, ()), strict=False))
                                               for x in xs])
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=colours[b], linewidth=2, label=b) for b in colours]
        if split:
            handles += [Line2D([], [], color="#555555", linestyle=LINESTYLES[i % len(LINESTYLES)],
                               label=", ".join(f"{_short(f)}={v}" for f, v in zip(others, combo, strict=True)))
                        for i, combo in enumerate(combos)]
        note = ""
        if paired:
            note = f"\n(paired with {', '.join(others)})"
        elif others and not split and not continuous:
            note = f"\n(averaged over {', '.join(others)})"
        fig.suptitle(f"against {factor}: mean and 95% CI over replications{note}", fontsize=9.5)
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
    return fig


def _short(factor: str) -> str:
    """'sites.premises.pools[0].count' -> 'count' (for legends and ticks)."""
    return factor.split(".")[-1]


def _line(ax: Axes, part: pd.DataFrame, metric: str, xs: list[Any], position: dict[Any, float], colour: str,
          style: Any, band: bool = True) -> None:
    points = []
    for x in xs:
        values = part.loc[part["_x"] == x, metric] if metric in part else pd.Series(dtype=float)
        centre, lowest, highest, n = mean_ci([None if pd.isna(v) else float(v) for v in values])
        if n:
            points.append((position[x], centre, lowest, highest))
    if not points:
        return
    points.sort()
    at, mean, low, high = (np.array(c, dtype=float) for c in zip(*points, strict=True))
    x = at
    ax.plot(x, mean, color=colour, linestyle=style, marker="o", markersize=3, linewidth=1.5)
    if not np.isfinite(low).any():
        return
    if band and len(x) > 1:
        ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
    else:  # categories (or one value): the interval as error bars
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], color=colour, linestyle="none", capsize=3,
                    linewidth=1)


def _dots(ax: Axes, group: pd.DataFrame, metric: str, position: dict[Any, float], colour: str) -> None:
    if metric not in group:
        return
    means = group.groupby("_x", sort=False)[metric].mean()
    ax.scatter([position[x] for x in means.index], means.to_numpy(), s=14, color=colour, alpha=0.85)


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Rows not dominated by any other row (every column minimised; NaN rows never on it)."""
    n = len(values)
    keep = np.zeros(n, dtype=bool)
    finite = np.isfinite(values).all(axis=1)
    for i in np.flatnonzero(finite):
        others = values[finite]
        dominated = np.any(np.all(others <= values[i], axis=1) & np.any(others < values[i], axis=1))
        keep[i] = not dominated
    return keep


def _first_present(summary: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in summary and summary[n].notna().any()), None)


def pareto_metrics(summary: pd.DataFrame) -> tuple[str | None, str | None, str | None]:
    """(cost, latency, exposure) columns the Pareto figure uses, None where absent."""
    exposure = EXPOSURE_METRIC if EXPOSURE_METRIC in summary and summary[EXPOSURE_METRIC].notna().any() else None
    return _first_present(summary, COST_METRICS), _first_present(summary, LATENCY_METRICS), exposure


def conditions_of(summary: pd.DataFrame) -> list[str]:
    """The factors that are workload conditions (`sim.sweep` module doc), present in `summary`."""
    return [f for f in summary.attrs.get("conditions", []) if f in summary]


def condition_groups(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The configurations per workload condition (one value of each condition factor), each
    with a short title ('rate_per_s=4, rtt=20ms'); one untitled group without conditions."""
    conditions = conditions_of(summary)
    if not conditions:
        return [("", summary)]
    keys = list(zip(*(summary[c].map(_key) for c in conditions), strict=True))
    rows: dict[tuple[Any, ...], list[int]] = {}
    for position, values in enumerate(keys):
        rows.setdefault(values, []).append(position)
    return [(", ".join(f"{_short(c)}={v}" for c, v in zip(conditions, values, strict=True)), summary.iloc[positions])
            for values, positions in rows.items()]


def pareto_within_conditions(summary: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """Per row: on the Pareto front of its own workload condition over `objectives`; a
    configuration is only compared with others that met the same traffic, WAN and faults."""
    mask = np.zeros(len(summary), dtype=bool)
    for _, group in condition_groups(summary):
        mask[summary.index.get_indexer(group.index)] = pareto_mask(group[list(objectives)].to_numpy(dtype=float))
    return mask


def pareto_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per workload condition, the configurations no other beats on cost, p99 latency and
    exposure at once, cheapest first."""
    cost, latency, exposure = pareto_metrics(summary)
    objectives = [m for m in (cost, latency, exposure) if m]
    if len(objectives) < 2 or not len(summary):
        return summary.iloc[0:0]
    mask = pareto_within_conditions(summary, objectives)
    conditions = conditions_of(summary)
    decisions = [f for f in summary.attrs.get("factors", []) if f in summary and f not in conditions]
    front = summary.loc[mask, [*conditions, "base", *decisions, *objectives]]
    return front.sort_values([*conditions, objectives[0]], kind="stable").reset_index(drop=True)


MAX_CONDITION_PANELS = 16


def pareto(summary: pd.DataFrame) -> Figure | None:
    """Cost against p99 latency (and exposure), one dot per configuration, fronts drawn: one
    panel per workload condition when the sweep varies any (at most `MAX_CONDITION_PANELS`),
    else a latency panel and an exposure panel."""
    cost, latency, exposure = pareto_metrics(summary)
    if cost is None or latency is None:
        return None
    groups = condition_groups(summary)
    objectives = [m for m in (cost, latency, exposure) if m]
    if len(groups) == 1:
        panels = [(latency, summary, "")] + ([(exposure, summary, "")] if exposure else [])
    else:
        panels = [(latency, group, title) for title, group in groups[:MAX_CONDITION_PANELS]]
    colours = _colours(summary)
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    with mpl.rc_context(STYLE):  # type: ignore[arg-type]
        fig, axes = _figure(rows, cols, 3.4 if rows == 1 else 2.3 * rows + 0.6)
        for ax, (metric, group, title) in zip(axes.flat, panels, strict=False):
            _pareto_panel(ax, group, metric, cost, objectives, colours)
            if title:
                ax.set_title(title, fontsize=8)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=c, marker="o", linestyle="", label=b) for b, c in colours.items()]
        handles += [Line2D([], [], **FRONT_STYLE, label="Pareto front (pair)"),
                    Line2D([], [], marker="o", markersize=8, markerfacecolor="none", markeredgecolor="#222222",
                           linestyle="", label="not beaten on all three")]
        shown = "" if len(groups) <= MAX_CONDITION_PANELS else f" (first {MAX_CONDITION_PANELS} of {len(groups)})"
        what = ("cost against p99 latency per workload condition" + shown if len(groups) > 1
                else "cost against p99 latency and exposure")
        fig.suptitle(f"{what}, one dot per configuration (lower left is better)", fontsize=9.5)
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
    return fig


def _pareto_panel(ax: Axes, group: pd.DataFrame, metric: str, cost: str, objectives: Sequence[str],
                  colours: dict[str, str]) -> None:
    """One condition's configurations: dots by base, the pair's front, the three-way front ringed."""
    for base, part in group.groupby("base", sort=False):
        ax.scatter(part[metric], part[cost], s=18, color=colours[base], alpha=0.85, zorder=2)
    ringed = group[pareto_mask(group[list(objectives)].to_numpy(dtype=float))]
    ax.scatter(ringed[metric], ringed[cost], s=60, facecolors="none", edgecolors="#222222", linewidths=1.0,
               zorder=3)
    front = group[pareto_mask(group[[metric, cost]].to_numpy(dtype=float))].sort_values(metric)
    if len(front) > 1:
        ax.step(front[metric], front[cost], where="post", **FRONT_STYLE)
    ax.set_xlabel(label(metric))
    ax.set_ylabel(label(cost))
    if group[cost].min() > 0 and group[cost].max() / group[cost].min() > 30:
        ax.set_yscale("log")


def sweep_figures(results: pd.DataFrame, summary: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Every figure of a sweep by file name: `vs_<factor>` per factor, and `pareto`."""
    from sim.sweep import summarise

    figures: dict[str, Figure] = {}
    ok = results[results["status"] == "ok"]
    if not len(ok):
        return figures
    metrics = plotted_metrics(results)
    if metrics:
        for factor in factors_of(results):
            if ok[factor].map(_key).nunique() > 1:
                figures[f"vs_{_file_name(factor)}"] = metric_vs_factor(results, factor, metrics)
    summary = summary if summary is not None else summarise(results)
    front = pareto(summary)
    if front is not None:
        figures["pareto"] = front
    return figures


def _file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "factor"


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        number = float(value)
        return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.4g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, numbers to 4 significant digits, NaN as '–'."""
    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _facts(results: pd.DataFrame, summary: pd.DataFrame) -> list[tuple[str, str]]:
    failed = int((results["status"] == "failed").sum())
    factors = factors_of(results)
    return [
        ("sweep", str(results.attrs.get("name", ""))),
        ("base scenarios", ", ".join(dict.fromkeys(results["base"])) or "–"),
        ("factors", ", ".join(f"{f} ({results[f].map(_key).nunique()} values)" for f in factors) or "none"),
        ("workload conditions (Pareto fronts per value)", ", ".join(conditions_of(summary)) or "none"),
        ("configurations", str(len(summary))),
        ("rows (configuration x replication)", f"{len(results)} ({failed} failed)"),
        ("simulated wall time", f"{results['wall_s'].sum():,.1f} s"),
    ]


def write_sweep_report(results: pd.DataFrame, out_dir: str | Path, title: str | None = None) -> Path:
    """Write the sweep's figures, report.md, index.html, results.csv and summary.csv; returns index.html."""
    from sim.sweep import summarise

    writer = _Writer(Path(out_dir))
    started = time.perf_counter()
    summary = summarise(results)
    figures = {name: _png(fig) for name, fig in sweep_figures(results, summary).items()}
    for name, png in figures.items():
        writer.write(f"figures/{name}.png", png)
    titles = {name: figure_title(name, results) for name in figures}
    writer.csv("results.csv", results)
    writer.csv("summary.csv", summary)
    front = pareto_table(summary)
    failures = results[results["status"] == "failed"]
    title = title or f"deploysim sweep: {results.attrs.get('name', Path(out_dir).name)}"
    facts = _facts(results, summary) + [("report rendered in", f"{time.perf_counter() - started:.1f} s")]
    writer.write("report.md", _markdown(title, facts, figures, titles, front, failures))
    return writer.write("index.html", _html(title, facts, figures, titles, front, failures))


def figure_title(name: str, results: pd.DataFrame) -> str:
    if name == "pareto":
        return "Cost against p99 latency and exposure"
    factor = next((f for f in factors_of(results) if f"vs_{_file_name(f)}" == name), name)
    return f"Metrics against {factor}"


CAPTIONS = {
    "pareto": "Each dot is one configuration (mean over replications). The dashed line is the front of the "
              "pair shown; ringed dots are the configurations that no other beats on cost, p99 latency and "
              "exposure at once. Fronts are per workload condition (a panel each): a configuration is only "
              "compared with others that met the same traffic, WAN and faults.",
}


def _caption(name: str) -> str:
    if name in CAPTIONS:
        return CAPTIONS[name]
    return "Lines: mean over replications, bands: 95% Student-t confidence interval; one colour per base scenario."


def _markdown(title: str, facts: list[tuple[str, str]], figures: dict[str, bytes], titles: dict[str, str],
              front: pd.DataFrame, failures: pd.DataFrame) -> str:
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts]
    for name in figures:
        lines += ["", f"## {titles[name]}", "", f"![{name}](figures/{name}.png)", "", _caption(name)]
    if len(front):
        lines += ["", "## Configurations on the Pareto front", "", markdown_table(front)]
    if len(failures):
        lines += ["", f"## Failed points ({len(failures)})", ""]
        lines += [f"- `{row.base_file}` {row.overrides} (replication {row.replication}): "
                  f"{str(row.error).splitlines()[-1] if row.error else ''}" for row in failures.head(20).itertuples()]
    lines += ["", "Files: `results.csv` (one row per point x replication), `summary.csv` (per configuration: "
              "mean, ci_low and ci_high of each metric), `figures/`.", ""]
    return "\n".join(lines)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html(title: str, facts: list[tuple[str, str]], figures: dict[str, bytes], titles: dict[str, str],
          front: pd.DataFrame, failures: pd.DataFrame) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{_e(title)}</h1>",
           "<h2>What was run</h2>", "<table>"]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts]
    out.append("</table>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        out += [f"<h2>{_e(titles[name])}</h2>",
                f'<figure id="{_e(name)}"><img alt="{_e(titles[name])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_e(_caption(name))}</figcaption></figure>"]
    if len(front):
        out += ["<h2>Configurations on the Pareto front</h2>", "<table>",
                "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in front.columns) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in row) + "</tr>"
                for row in front.itertuples(index=False)]
        out.append("</table>")
    if len(failures):
        out += [f"<h2>Failed points ({len(failures)})</h2>", "<ul>"]
        out += [f"<li><code>{_e(row.base_file)}</code> {_e(row.overrides)} (replication {row.replication}): "
                f"{_e(str(row.error).splitlines()[-1] if row.error else '')}</li>"
                for row in failures.head(20).itertuples()]
        out.append("</ul>")
    out += ["<h2>Files</h2>", "<ul>", "<li><code>results.csv</code>: one row per point x replication</li>",
            "<li><code>summary.csv</code>: per configuration, mean, ci_low and ci_high of each metric</li>",
            "<li><code>figures/</code>: the figures above as PNG</li>", "</ul>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
