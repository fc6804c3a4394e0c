"""The pictures of a comparison: one matplotlib Figure per question a reader asks.

A comparison (`sim.compare`) holds R replications of each scenario. Each function here takes
that `Comparison` and returns a `matplotlib.figure.Figure` built without pyplot (an Agg
canvas is attached, so nothing opens a window and no global state changes). Every scenario
keeps one colour in every figure: the i-th scenario of the comparison gets the i-th colour of
matplotlib's tab10 palette (`scenario_colours`). Colours that mean something else (data
classes, cost components) come from viridis, so they cannot be mistaken for a scenario, and
lifecycle markers are black or grey line styles explained in each figure's legend.

What each figure answers:

- `latency_cdf`: how fast are requests, body and tail (TTFT and E2E, pooled over replications,
  with the SLO targets);
- `latency_over_time` / `error_rate_over_time`: what happens around the drift, from onset to
  detection, training and rollout, one small panel per scenario;
- `privacy`: what leaves the premises, by data class, and how much stays at third parties;
- `cost`: where the money goes, and the cost per million requests;
- `gpu_utilisation`: serving and training GPUs over time, per pool;
- `burst_share_over_time`: how much of the traffic overflowed to a pool later in its route,
  per 5 minutes, for the scenarios where any did;
- `replicas_over_time`: each autoscaled serving pool's replicas holding GPUs, as steps;
- `summary`: the four axes (latency, privacy, recovery, cost) at one glance, best marked.

Privacy and cost figures need summary fields that some runs may not measure, the burst and
replica figures a run that overflowed or autoscaled; `all_figures` leaves out a figure with
nothing to show, and `missing_figures` says why.
Figures are sized to read well at about 900 px wide (8.2 in at `DPI`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from sim.experiment import flat_summary, mean_ci

if TYPE_CHECKING:
    from sim.experiment import Comparison, RunDigest
    from sim.spec.scenario import Scenario

DPI = 110
WIDTH_IN = 8.2  # about 900 px at DPI
HOUR_S = 3600.0
BIN_S = 300.0  # the comparison's timeline bins (sim.experiment.TIMELINE_BIN_S)

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "hatch.linewidth": 0.8,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}

NOT_MEASURED = "not measured in these runs"
MARK_COLOUR = "#222222"
ONSET_STYLE: dict[str, Any] = {"color": MARK_COLOUR, "linestyle": "--", "linewidth": 1.1}
DETECTION_STYLE: dict[str, Any] = {"color": MARK_COLOUR, "linestyle": (0, (6, 2, 1.5, 2)), "linewidth": 1.2}
ROLLOUT_STYLE: dict[str, Any] = {"color": MARK_COLOUR, "linestyle": "-", "linewidth": 1.6}
SLO_STYLE: dict[str, Any] = {"color": "#8a8a8a", "linestyle": (0, (3, 2)), "linewidth": 1.1}
VENDOR_STYLE: dict[str, Any] = {"color": "#8a8a8a", "linestyle": "-", "linewidth": 2.4}
TRAINING_COLOUR = "#555555"


# ------------------------------------------------------------------------------------------
# Colours, figures and summary values
# ------------------------------------------------------------------------------------------


def scenario_colours(comparison: Comparison) -> dict[str, str]:
    """One colour per scenario, keyed by its position in the comparison (tab10, then tab20)."""
    names = comparison.names
    palette = mpl.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: to_hex(palette(i % palette.N)) for i, name in enumerate(names)}


LINESTYLES: tuple[Any, ...] = ("-", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)), (0, (3, 1)),
                              (0, (8, 2)), (0, (1, 3)), (0, (4, 2, 1, 2, 1, 2)))


def scenario_linestyles(comparison: Comparison) -> dict[str, Any]:
    """A dash pattern per scenario, for line plots where curves may lie on top of each other."""
    return {name: LINESTYLES[i % len(LINESTYLES)] for i, name in enumerate(comparison.names)}


def category_colours(categories: Sequence[str]) -> dict[str, str]:
    """Colours for data classes or cost components: viridis, never a scenario's tab10 colour."""
    palette = mpl.colormaps["viridis"]
    n = max(len(categories), 1)
    return {c: to_hex(palette(0.08 + 0.84 * i / max(n - 1, 1))) for i, c in enumerate(categories)}


@contextmanager
def _style() -> Iterator[None]:
    with mpl.rc_context(STYLE):  # type: ignore[arg-type]  # matplotlib types keys as a Literal
        yield


def _figure(rows: int, cols: int, height_in: float, **subplots: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **subplots)
    return fig, axes


def _summary_value(summary: dict[str, Any], key: str) -> Any:
    """A summary field by name; dotted names reach into nested breakdowns."""
    if key in summary:
        return summary[key]
    return flat_summary(summary).get(key)


def measured(comparison: Comparison, key: str) -> bool:
    """Does any run of the comparison report `key` (with a value other than None)?"""
    return any(_summary_value(run.summary, key) is not None
               for runs in comparison.runs.values() for run in runs)


def metric_ci(comparison: Comparison, key: str, scale: float = 1.0) -> pd.DataFrame:
    """Mean and 95% CI of a summary field per scenario, scaled (columns mean, low, high, n)."""
    rows = {}
    for name in comparison.names:
        values = [_summary_value(run.summary, key) for run in comparison.runs[name]]
        numbers = [None if v is None else float(v) for v in values if not isinstance(v, dict)]
        mean, low, high, n = mean_ci(numbers)
        rows[name] = {"mean": mean * scale, "low": low * scale, "high": high * scale, "n": n}
    return pd.DataFrame.from_dict(rows, orient="index")


def mean_breakdown(comparison: Comparison, key: str) -> pd.DataFrame:
    """A nested breakdown (e.g. cost by component) averaged over replications: scenario x part.

    A part missing from a replication counts as 0 there.
    """
    frames = {}
    for name in comparison.names:
        rows = [value for run in comparison.runs[name]
                if isinstance(value := run.summary.get(key), dict)]
        frames[name] = pd.DataFrame(rows).fillna(0.0).mean() if rows else pd.Series(dtype=float)
    return pd.DataFrame(frames).T.reindex(comparison.names).fillna(0.0)


def _horizon_s(comparison: Comparison) -> float:
    return max(s.horizon for s in comparison.scenarios)


def _scenario(comparison: Comparison, name: str) -> Scenario:
    return comparison.scenarios[comparison.names.index(name)]


def _legend_columns(labels: Sequence[str]) -> int:
    """One row when the entries fit across the figure (about 5.5 px a character at 8 pt and
    45 px of handle and padding each), else as few rows as fit."""
    width_px = WIDTH_IN * DPI - 20
    for rows in range(1, len(labels) + 1):
        columns = math.ceil(len(labels) / rows)
        widest = [max(len(label) for label in labels[c::columns]) for c in range(columns)]
        if sum(w * 5.5 + 45 for w in widest) <= width_px:
            return columns
    return 1


def best_scenarios(comparison: Comparison, key: str, lower_is_better: bool = True) -> set[str]:
    """The scenarios best on a summary field, as the comparison table marks them
    (`Comparison.best`: beyond noise, ties shared, overloaded runs never best)."""
    return comparison.best(key, lower_is_better)


def _si(value: float, unit: str = "") -> str:
    """A compact number: 1.23k, 45.6M; a unit after it if given."""
    if not math.isfinite(value):
        return "–"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit and ' ' + unit}" if unit else f"{value:.3g}"


def _colour_tick_labels(ax: Axes, colours: dict[str, str]) -> None:
    for label in ax.get_yticklabels():
        label.set_color(colours.get(label.get_text(), "black"))


def _hours_axis(ax: Axes) -> None:
    ax.set_xlabel("time since start (h)")


def _share_label(inner: Sequence[Axes] | np.ndarray, which: str) -> None:
    """Inner panels of a shared axis keep their label (it says what the axis is) but hide it:
    the outer panel shows it once."""
    for ax in inner:
        axis = ax.xaxis if which == "x" else ax.yaxis
        if which == "x":
            ax.set_xlabel("time since start (h)")
        elif ax.has_data():
            ax.set_ylabel("scenario")
        axis.label.set_visible(False)


def _log_axis(ax: Axes) -> None:
    """Log x with plain 1-2-5 tick labels (0.05, 0.1, 0.2 ...) instead of powers of ten."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _not_measured(ax: Axes, title: str, reason: str = NOT_MEASURED) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, transform=ax.transAxes, ha="center", va="center", color="#666666",
            fontsize=9, style="italic")
    # tick_params, not set_ticks: the axes may share its tick locator with a measured panel
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


# ------------------------------------------------------------------------------------------
# Lifecycle markers
# ------------------------------------------------------------------------------------------


@dataclass
class LifecycleMarks:
    """When things happened to one scenario's model, averaged over replications (seconds)."""

    onsets_s: list[float] = field(default_factory=list)
    detections_s: list[float] = field(default_factory=list)
    training_s: list[tuple[float, float]] = field(default_factory=list)
    rollouts_s: list[float] = field(default_factory=list)  # a model adapted to drift serves
    vendor_rollouts_s: list[float] = field(default_factory=list)


def _mean_by_position(per_run: list[list[float]]) -> list[float]:
    """The i-th time of each replication, averaged over the replications that have one."""
    longest = max((len(times) for times in per_run), default=0)
    return [float(np.mean([times[i] for times in per_run if len(times) > i])) for i in range(longest)]


def lifecycle_marks(comparison: Comparison, name: str) -> LifecycleMarks:
    """Drift onsets (from the scenario), then detection, training and rollout from each
    replication's lifecycle table, the k-th occurrence averaged over replications."""
    scenario = _scenario(comparison, name)
    marks = LifecycleMarks(onsets_s=[e.at for e in scenario.lifecycle.drift if e.at < scenario.horizon])
    tables: list[pd.DataFrame] = [t for run in comparison.runs[name]
                                  if (t := run.tables.get("lifecycle")) is not None and len(t)]
    if not tables:
        return marks

    def times(stage: str, column: str, first_per_event: bool = False) -> list[list[float]]:
        out = []
        for t in tables:
            rows = t[t["stage"] == stage]
            if first_per_event:
                rows = rows.groupby("drift_event", as_index=False)[column].min()
            out.append(sorted(rows[column].astype(float)))
        return out

    marks.detections_s = _mean_by_position(times("detected", "start_s", first_per_event=True))
    starts = _mean_by_position(times("train", "start_s"))
    ends = _mean_by_position(times("train", "end_s"))
    marks.training_s = list(zip(starts, ends, strict=False))
    marks.rollouts_s = _mean_by_position(times("recovered", "end_s"))
    marks.vendor_rollouts_s = _mean_by_position(times("vendor_rollout", "end_s"))
    return marks


def _draw_marks(ax: Axes, marks: LifecycleMarks) -> None:
    for t in marks.onsets_s:
        ax.axvline(t / HOUR_S, **ONSET_STYLE)
    for t in marks.detections_s:
        ax.axvline(t / HOUR_S, **DETECTION_STYLE)
    for start, end in marks.training_s:
        ax.axvspan(start / HOUR_S, end / HOUR_S, color=TRAINING_COLOUR, alpha=0.18, linewidth=0)
    for t in marks.rollouts_s:
        ax.axvline(t / HOUR_S, **ROLLOUT_STYLE)
    for t in marks.vendor_rollouts_s:
        ax.axvline(t / HOUR_S, **VENDOR_STYLE)


def _mark_handles(comparison: Comparison) -> list[Any]:
    """Legend entries for the lifecycle markers that appear in at least one scenario."""
    marks = [lifecycle_marks(comparison, name) for name in comparison.names]
    handles: list[Any] = [Patch(facecolor="#000000", alpha=0.06, label="warm-up (not in steady-state metrics)")]
    if any(m.onsets_s for m in marks):
        handles.append(Line2D([], [], **ONSET_STYLE, label="drift onset"))
    if any(m.detections_s for m in marks):
        handles.append(Line2D([], [], **DETECTION_STYLE, label="drift detected"))
    if any(m.training_s for m in marks):
        handles.append(Patch(facecolor=TRAINING_COLOUR, alpha=0.18, label="training"))
    if any(m.rollouts_s for m in marks):
        handles.append(Line2D([], [], **ROLLOUT_STYLE, label="rollout complete (recovered)"))
    if any(m.vendor_rollouts_s for m in marks):
        handles.append(Line2D([], [], **VENDOR_STYLE, label="vendor update live"))
    return handles


# ------------------------------------------------------------------------------------------
# Latency distributions
# ------------------------------------------------------------------------------------------

_CDF_LEVELS = np.unique(np.concatenate([np.linspace(0.0, 0.99, 397), 1 - np.geomspace(1e-2, 1e-5, 60)]))


def _pooled(comparison: Comparison, name: str, latency: str) -> np.ndarray:
    """Every replication's latencies pooled; for streamed replications, the pooled quantile at
    each of the CDF's levels (the curve the sketch knows, within its relative error)."""
    runs = comparison.runs[name]
    if any(run.sketches for run in runs):
        return np.array([comparison.pooled_percentile(name, latency, 100 * level) for level in _CDF_LEVELS])
    samples = [np.asarray(run.latency.get(latency, []), dtype=np.float64) for run in runs]
    pooled = np.concatenate(samples) if samples else np.empty(0)
    return pooled[np.isfinite(pooled)]


def latency_cdf(comparison: Comparison) -> Figure:
    """TTFT and E2E distributions per scenario, requests of all replications pooled; the SLO's
    p99 targets are vertical dashed lines and each scenario's p99 a dot on the 99% line."""
    colours = scenario_colours(comparison)
    dashes = scenario_linestyles(comparison)
    with _style():
        fig, axes = _figure(1, 2, 3.6)
        for ax, (stem, title) in zip(axes[0], (("ttft", "time to first token"), ("e2e", "end-to-end latency")),
                                     strict=True):
            spread = []
            for name in comparison.names:
                values = _pooled(comparison, name, f"{stem}_s")
                if not len(values):
                    continue
                x = np.quantile(values, _CDF_LEVELS)
                ax.plot(x, _CDF_LEVELS * 100, color=colours[name], linestyle=dashes[name], linewidth=1.7,
                        label=name)
                ax.plot([np.quantile(values, 0.99)], [99], "o", color=colours[name], markersize=4)
                spread.append((float(np.quantile(values, 0.001)), float(values.max())))
            targets = sorted({t for s in comparison.scenarios if (t := getattr(s.slo, f"{stem}_p99")) is not None})
            for target in targets:
                ax.axvline(target, **SLO_STYLE)
                ax.annotate(f"SLO p99 {target * 1e3:.0f} ms" if target < 10 else f"SLO p99 {target:g} s",
                            (target, 4), xytext=(-3, 0), textcoords="offset points", rotation=90,
                            ha="right", va="bottom", fontsize=7.5, color="#444444")
            ax.axhline(99, color="#999999", linestyle=":", linewidth=0.8)
            if spread:
                low = min(s[0] for s in spread)
                high = max([s[1] for s in spread] + targets)
                if low > 0 and high / low > 20:
                    _log_axis(ax)
            ax.set_ylim(0, 100.5)
            ax.set_title(f"{title} ({'TTFT' if stem == 'ttft' else 'E2E'})")
            ax.set_xlabel(f"{'TTFT' if stem == 'ttft' else 'E2E latency'} at the client (s)")
            ax.set_ylabel("requests at or below (%)")
        labels = comparison.names
        handles = [Line2D([], [], color=colours[n], linestyle=dashes[n], linewidth=2, label=n) for n in labels]
        handles.append(Line2D([], [], **SLO_STYLE, label="SLO target"))
        fig.legend(handles=handles, loc="outside upper center", ncols=_legend_columns(labels + ["SLO target"]),
                   frameon=False)
    return fig


# ------------------------------------------------------------------------------------------
# Over time: latency, error rate
# ------------------------------------------------------------------------------------------


def mean_timeline(runs: Sequence[RunDigest]) -> pd.DataFrame:
    """The per-bin timeline averaged over replications (bins matched on their start time)."""
    frames = [run.timeline for run in runs if run.timeline is not None and len(run.timeline)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames).groupby("start_s", as_index=False).mean(numeric_only=True)


def _timeline_panels(comparison: Comparison, draw: Callable[[Axes, str, pd.DataFrame], None],
                     ylabel: str, extra_handles: Sequence[Any]) -> Figure:
    """One panel per scenario (shared axes), its lifecycle marked, a shared legend on top."""
    n = len(comparison.names)
    colours = scenario_colours(comparison)
    fig, axes = _figure(n, 1, 1.1 + 1.55 * n, sharex=True, sharey=True)
    for ax, name in zip(axes[:, 0], comparison.names, strict=True):
        scenario = _scenario(comparison, name)
        if scenario.warmup > 0:
            ax.axvspan(0, scenario.warmup / HOUR_S, color="#000000", alpha=0.06, linewidth=0)
        _draw_marks(ax, lifecycle_marks(comparison, name))
        draw(ax, name, mean_timeline(comparison.runs[name]))
        ax.set_title(name, loc="left", color=colours[name], fontweight="bold")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, _horizon_s(comparison) / HOUR_S)
    _hours_axis(axes[-1, 0])
    _share_label(axes[:-1, 0], "x")
    handles = list(extra_handles) + _mark_handles(comparison)
    fig.legend(handles=handles, loc="outside upper center", frameon=False,
               ncols=_legend_columns([str(h.get_label()) for h in handles]))
    return fig


def latency_over_time(comparison: Comparison) -> Figure:
    """TTFT p99 and mean per 5-minute bin (mean over replications), one panel per scenario,
    with drift onset, detection, training and rollout marked; other scenarios' p99 in grey."""
    colours = scenario_colours(comparison)
    timelines = {name: mean_timeline(comparison.runs[name]) for name in comparison.names}

    def draw(ax: Axes, name: str, line: pd.DataFrame) -> None:
        for other, frame in timelines.items():
            if other != name and len(frame):
                ax.plot(frame["start_s"] / HOUR_S, frame["ttft_p99_s"] * 1e3, color="#bbbbbb", linewidth=0.7,
                        zorder=1)
        target = _scenario(comparison, name).slo.ttft_p99
        if target is not None:
            ax.axhline(target * 1e3, **SLO_STYLE)
        if len(line):
            x = (line["start_s"] + BIN_S / 2) / HOUR_S
            ax.plot(x, line["ttft_p99_s"] * 1e3, color=colours[name], linewidth=1.5, zorder=3)
            ax.plot(x, line["ttft_mean_s"] * 1e3, color=colours[name], linewidth=0.9, alpha=0.6, zorder=3)
        ax.set_ylim(bottom=0)

    handles = [Line2D([], [], color="#333333", linewidth=1.5, label="TTFT p99 per 5 min"),
               Line2D([], [], color="#333333", linewidth=0.9, alpha=0.6, label="TTFT mean per 5 min"),
               Line2D([], [], color="#bbbbbb", linewidth=0.7, label="other scenarios' p99"),
               Line2D([], [], **SLO_STYLE, label="SLO TTFT p99")]
    with _style():
        return _timeline_panels(comparison, draw, "TTFT (ms)", handles)


def error_rate_over_time(comparison: Comparison) -> Figure:
    """The serving model's error rate per 5-minute bin (mean over replications and requests),
    the outcomes actually drawn (faint) and the base error rate (dotted), lifecycle marked."""
    colours = scenario_colours(comparison)

    def draw(ax: Axes, name: str, line: pd.DataFrame) -> None:
        base = _scenario(comparison, name).lifecycle.base_error_rate
        ax.axhline(base * 100, color="#444444", linestyle=(0, (1, 2)), linewidth=1.2)
        if len(line):
            x = (line["start_s"] + BIN_S / 2) / HOUR_S
            if "observed_error_rate" in line:
                ax.plot(x, line["observed_error_rate"] * 100, color=colours[name], linewidth=0.7, alpha=0.35,
                        drawstyle="steps-mid")
            # steps: a bin's rate holds across the bin, so a change shows in the bin it happened in
            ax.plot(x, line["error_rate"] * 100, color=colours[name], linewidth=1.7, drawstyle="steps-mid")
        ax.set_ylim(bottom=0)

    handles = [Line2D([], [], color="#333333", linewidth=1.7, label="model error rate"),
               Line2D([], [], color="#333333", linewidth=0.7, alpha=0.35, label="observed errors"),
               Line2D([], [], color="#444444", linestyle=(0, (1, 2)), linewidth=1.2, label="base error rate")]
    with _style():
        return _timeline_panels(comparison, draw, "error rate (%)", handles)


# ------------------------------------------------------------------------------------------
# GPU utilisation
# ------------------------------------------------------------------------------------------


def _binned(frame: pd.DataFrame, columns: Sequence[str], horizon_s: float) -> pd.DataFrame:
    """Time slices -> time-weighted means per BIN_S bin (slices assigned by their midpoint)."""
    bins = np.arange(0.0, horizon_s, BIN_S)
    if not len(frame):
        return pd.DataFrame({"start_s": bins, **{c: np.zeros(len(bins)) for c in columns}})
    span = (frame["end_s"] - frame["start_s"]).clip(lower=0.0)
    index = np.floor((frame["start_s"] + frame["end_s"]) / 2 / BIN_S).astype(np.int64)
    weighted = frame[list(columns)].mul(span, axis=0).groupby(index).sum()
    totals = span.groupby(index).sum().replace(0.0, np.nan)
    means = weighted.div(totals, axis=0).reindex(range(len(bins)))
    return pd.DataFrame({"start_s": bins, **{c: means[c].to_numpy() for c in columns}})


def _training_gpus(holds: pd.DataFrame | None, horizon_s: float) -> pd.DataFrame:
    """GPUs held for retraining per bin, one column per '<site>/<pool>'."""
    bins = np.arange(0.0, horizon_s, BIN_S)
    out = pd.DataFrame({"start_s": bins})
    if holds is None or not len(holds):
        return out
    for row in holds[holds["purpose"] == "retraining"].itertuples():
        pool = f"{row.site}/{row.pool}"
        overlap = np.clip(np.minimum(bins + BIN_S, row.end_s) - np.maximum(bins, row.start_s), 0.0, BIN_S)
        out[pool] = out.get(pool, 0.0) + row.gpus * overlap / BIN_S
    return out


def gpu_utilisation(comparison: Comparison) -> Figure:
    """Per scenario: busy serving GPUs and GPUs held for training (stacked, per 5 minutes, mean
    over replications), and the serving GPUs in service as a line."""
    colours = scenario_colours(comparison)
    horizon = _horizon_s(comparison)
    n = len(comparison.names)
    with _style():
        fig, axes = _figure(n, 1, 1.1 + 1.6 * n, sharex=True)
        for ax, name in zip(axes[:, 0], comparison.names, strict=True):
            runs = comparison.runs[name]
            pools = sorted({str(p) for run in runs for p in run.tables.get("utilisation", pd.DataFrame())
                            .get("pool", pd.Series(dtype=str)).unique()})
            serving = [_binned(run.tables["utilisation"], ("serving_busy_gpus", "serving_gpus"), horizon)
                       for run in runs if "utilisation" in run.tables]
            training = [_training_gpus(run.tables.get("gpu_holds"), horizon) for run in runs]
            # each bin drawn as a step across its whole width: edges, values repeated at the end
            x = np.append(np.arange(0.0, horizon, BIN_S), horizon) / HOUR_S
            layers, labels, styles = [], [], []
            if serving:
                busy = pd.concat([s["serving_busy_gpus"] for s in serving], axis=1).mean(axis=1).fillna(0.0)
                layers.append(busy.to_numpy())
                labels.append(f"serving busy, {', '.join(pools) or 'serving pool'}")
                styles.append({"color": colours[name], "alpha": 0.75})
            training_pools = sorted({c for t in training for c in t.columns if c != "start_s"})
            for pool in training_pools:
                held = pd.concat([t[pool] if pool in t else pd.Series(0.0, index=t.index) for t in training],
                                 axis=1).mean(axis=1)
                layers.append(held.to_numpy())
                labels.append(f"training, {pool}")
                styles.append({"facecolor": "white", "edgecolor": TRAINING_COLOUR, "hatch": "////"})
            bottom = np.zeros(len(x))
            for layer, label, style in zip(layers, labels, styles, strict=True):
                layer = np.append(layer, layer[-1:])
                ax.fill_between(x, bottom, bottom + layer, step="post", label=label, linewidth=0.6, **style)
                bottom = bottom + layer
            top = float(bottom.max()) if len(bottom) else 0.0
            if serving:
                in_service = pd.concat([s["serving_gpus"] for s in serving], axis=1).mean(axis=1)
                ax.step(x, np.append(in_service.to_numpy(), in_service.to_numpy()[-1:]), where="post",
                        color=MARK_COLOUR, linewidth=1.1, label="serving GPUs in service")
                top = max(top, float(np.nanmax(in_service.to_numpy())) if in_service.notna().any() else 0.0)
            ax.set_ylim(0, max(top, 1.0) * 1.45)
            ax.set_xlim(0, horizon / HOUR_S)
            ax.set_title(name, loc="left", color=colours[name], fontweight="bold")
            ax.set_ylabel("GPUs (count)")
            ax.legend(loc="upper right", ncols=min(3, len(labels) + 1), frameon=True, framealpha=0.85,
                      fontsize=7.5, edgecolor="none")
        _hours_axis(axes[-1, 0])
        _share_label(axes[:-1, 0], "x")
    return fig


# ------------------------------------------------------------------------------------------
# Serving pools: burst share and autoscaled replicas
# ------------------------------------------------------------------------------------------

BOUNDS_STYLE: dict[str, Any] = {"color": "#8a8a8a", "linestyle": (0, (1, 2)), "linewidth": 1.2}


def _routing(run: RunDigest) -> pd.DataFrame:
    table = run.tables.get("routing")
    return table if table is not None else pd.DataFrame(columns=["start_s", "pool", "route", "requests"])


def bursting_scenarios(comparison: Comparison) -> list[str]:
    """The scenarios where some replication sent a request on overflow."""
    return [name for name in comparison.names
            if any(_routing(run).query("route == 'overflow'")["requests"].sum() > 0 for run in comparison.runs[name])]


def autoscaled_pools(comparison: Comparison) -> list[tuple[str, str]]:
    """(scenario, serving pool) of every pool an autoscaler sized in some replication."""
    out: list[tuple[str, str]] = []
    for name in comparison.names:
        for run in comparison.runs[name]:
            pools = run.tables.get("pools")
            if pools is None or "autoscaled" not in pools:
                continue
            out += [(name, str(pool)) for pool in pools.loc[pools["autoscaled"].astype(bool), "pool"]
                    if (name, str(pool)) not in out]
    return out


def burst_share_over_time(comparison: Comparison) -> Figure:
    """Per 5-minute bin of send time, the share of routed requests sent on overflow (all
    replications pooled), one line per scenario that overflowed at all."""
    colours = scenario_colours(comparison)
    dashes = scenario_linestyles(comparison)
    horizon = _horizon_s(comparison)
    names = bursting_scenarios(comparison)
    with _style():
        fig, axes = _figure(1, 1, 3.2)
        ax = axes[0, 0]
        edges = np.append(np.arange(0.0, horizon, BIN_S), horizon)
        for name in names:
            routing = pd.concat([_routing(run) for run in comparison.runs[name]], ignore_index=True)
            routed = routing.groupby("start_s")["requests"].sum()
            overflow = routing[routing["route"] == "overflow"].groupby("start_s")["requests"].sum()
            share = (overflow.reindex(routed.index).fillna(0.0) / routed).reindex(edges[:-1])
            values = share.to_numpy(dtype=float) * 100
            ax.step(edges / HOUR_S, np.append(values, values[-1:]), where="post", color=colours[name],
                    linestyle=dashes[name], linewidth=1.5, label=name)
        ax.set_xlim(0, horizon / HOUR_S)
        ax.set_ylim(0, 105)
        _hours_axis(ax)
        ax.set_ylabel("requests sent on overflow (%)")
        ax.set_title("burst share: requests sent past a loaded pool, per 5 minutes (bins without requests left blank)")
        fig.legend(loc="outside upper center", ncols=_legend_columns(names), frameon=False)
    return fig


def _replica_steps(holding: pd.DataFrame, pool: str, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(times, replicas held from each time on) of one pool's holding intervals, from 0 to the
    horizon (the last value repeated at the horizon, for a step plot)."""
    mine = holding[holding["pool"] == pool]
    start, end = mine["start_s"].to_numpy(dtype=float), mine["end_s"].to_numpy(dtype=float)
    times = np.unique(np.concatenate([[0.0], start, end]).clip(0.0, horizon_s))
    times = times[times < horizon_s]
    held = ((start[None, :] <= times[:, None]) & (times[:, None] < end[None, :])).sum(axis=1)
    return np.append(times, horizon_s), np.append(held, held[-1:])


def replicas_over_time(comparison: Comparison) -> Figure:
    """One panel per autoscaled serving pool: the replicas holding GPUs over time (a step per
    replication), between the autoscaler's bounds."""
    colours = scenario_colours(comparison)
    panels = autoscaled_pools(comparison)
    horizon = _horizon_s(comparison)
    with _style():
        fig, axes = _figure(len(panels), 1, 1.1 + 1.5 * len(panels), sharex=True)
        for ax, (name, pool) in zip(axes[:, 0], panels, strict=True):
            runs = comparison.runs[name]
            top = 1
            for run in runs:
                holding = run.tables.get("pool_holding")
                if holding is None:
                    continue
                times, held = _replica_steps(holding, pool, _scenario(comparison, name).horizon)
                ax.step(times / HOUR_S, held, where="post", color=colours[name], linewidth=1.4,
                        alpha=0.55 if len(runs) > 1 else 1.0)
                top = max(top, int(held.max()))
                table = run.tables.get("pools")
                pools = table.set_index("pool") if table is not None else pd.DataFrame()
                if pool in pools.index:
                    for bound in ("min_replicas", "max_replicas"):
                        ax.axhline(float(pools.loc[pool, bound]), **BOUNDS_STYLE)
                    top = max(top, int(pools.loc[pool, "max_replicas"]))
            ax.set_ylim(0, top * 1.2 + 0.2)
            ax.set_xlim(0, horizon / HOUR_S)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{name}: {pool}", loc="left", color=colours[name], fontweight="bold")
            ax.set_ylabel("replicas (count)")
        _hours_axis(axes[-1, 0])
        _share_label(axes[:-1, 0], "x")
        handles = [Line2D([], [], color=MARK_COLOUR, linewidth=1.4,
                          label="replicas holding GPUs (one step line per replication)"),
                   Line2D([], [], **BOUNDS_STYLE, label="autoscaler bounds (min, max replicas)")]
        fig.legend(handles=handles, loc="outside upper center", frameon=False,
                   ncols=_legend_columns([str(h.get_label()) for h in handles]))
    return fig


# ------------------------------------------------------------------------------------------
# Bars: privacy, cost, summary
# ------------------------------------------------------------------------------------------


def _bars(ax: Axes, comparison: Comparison, values: pd.DataFrame, colours: dict[str, str],
          best: Collection[str] = (), labels: bool = True, notes: Mapping[str, str] | None = None) -> None:
    """Horizontal bars per scenario (top to bottom in comparison order) with CI whiskers, the
    value written after each bar (`labels`), followed by its `notes` entry, and the best marked."""
    names = comparison.names
    y = np.arange(len(names))
    means = values["mean"].reindex(names).to_numpy(dtype=float)
    ax.barh(y, np.nan_to_num(means), color=[colours[n] for n in names], height=0.62, zorder=2)
    low = values["low"].reindex(names).to_numpy(dtype=float)
    high = values["high"].reindex(names).to_numpy(dtype=float)
    has_ci = np.isfinite(low) & np.isfinite(high)
    if has_ci.any():
        err = np.vstack([np.where(has_ci, means - low, 0.0), np.where(has_ci, high - means, 0.0)])
        ax.errorbar(means[has_ci], y[has_ci], xerr=err[:, has_ci], fmt="none", ecolor="#222222",
                    elinewidth=1.0, capsize=3, zorder=3)
    ax.set_yticks(y, names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    for i, name in enumerate(names):
        text = _si(means[i]) if labels and np.isfinite(means[i]) else ""
        if text and notes and name in notes:
            text += notes[name]
        if name in best:
            text += "  ★ best" if text else "★ best"
        if text:
            right = high[i] if np.isfinite(high[i]) else np.nan_to_num(means[i])
            ax.annotate(text, (right, y[i]), xytext=(4, 0), textcoords="offset points", va="center",
                        fontsize=7.5, fontweight="bold" if name in best else "normal")
    _colour_tick_labels(ax, colours)


def _stacked_bars(ax: Axes, comparison: Comparison, parts: pd.DataFrame, colours: dict[str, str],
                  scale: float = 1.0, whiskers: pd.DataFrame | None = None) -> np.ndarray:
    """Horizontal bars per scenario stacked by part (a data class, a cost component); returns
    the scaled totals. `whiskers` (low/high per scenario, unscaled) adds a CI to each total."""
    names = comparison.names
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for part in parts.columns:
        width = parts[part].reindex(names).fillna(0.0).to_numpy() * scale
        ax.barh(y, width, left=left, color=colours[part], height=0.62, label=part.replace("_", " "),
                edgecolor="white", linewidth=0.5, zorder=2)
        left += width
    if whiskers is not None:
        low = whiskers["low"].reindex(names).to_numpy(dtype=float) * scale
        high = whiskers["high"].reindex(names).to_numpy(dtype=float) * scale
        ok = np.isfinite(low) & np.isfinite(high) & (high > 0)
        if ok.any():
            err = np.vstack([np.clip(left - low, 0, None), np.clip(high - left, 0, None)])
            ax.errorbar(left[ok], y[ok], xerr=err[:, ok], fmt="none", ecolor="#222222", elinewidth=1.0,
                        capsize=3, zorder=3)
    ax.set_yticks(y, names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    _colour_tick_labels(ax, scenario_colours(comparison))
    return left


def _nonzero_parts(parts: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """The parts (columns) in `order` then any others, leaving out those zero everywhere."""
    columns = [c for c in order if c in parts.columns] + [c for c in parts.columns if c not in order]
    return parts[[c for c in columns if parts[c].abs().sum() > 0]]


def _parts_legend(fig: Figure, colours: dict[str, str], parts: Sequence[str], title: str) -> None:
    handles = [Patch(facecolor=colours[p], label=p.replace("_", " ")) for p in parts]
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6), frameon=False,
                   title=title, title_fontsize=8)


def _bytes_unit(largest: float) -> tuple[float, str]:
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if largest >= factor:
            return 1.0 / factor, unit
    return 1.0, "bytes"


def _data_classes(comparison: Comparison) -> list[str]:
    order: list[str] = []
    for scenario in comparison.scenarios:
        order += [c for c in scenario.privacy.data_classes if c not in order]
    return order


def privacy(comparison: Comparison) -> Figure:
    """Left: data moved from private into third-party zones, stacked by data class (mean over
    replications; total bytes and records written at each bar). Right: data at rest in
    third-party zones in GB-days, stacked by class (whisker: 95% CI of the total)."""
    classes = _data_classes(comparison)
    for key in ("exposed_bytes_by_class", "third_party_gb_days_by_class"):
        classes += [c for c in mean_breakdown(comparison, key).columns if c not in classes]
    colours = category_colours(classes)
    shown: list[str] = []
    with _style():
        fig, axes = _figure(1, 2, 1.9 + 0.5 * len(comparison.names), sharey=True,
                            gridspec_kw={"width_ratios": [1.4, 1]})
        left, right = axes[0]
        if measured(comparison, "exposed_bytes_by_class"):
            by_class = _nonzero_parts(mean_breakdown(comparison, "exposed_bytes_by_class"), classes)
            totals = by_class.sum(axis=1).reindex(comparison.names).fillna(0.0)
            scale, unit = _bytes_unit(float(totals.max()))
            _stacked_bars(left, comparison, by_class, colours, scale)
            shown += list(by_class.columns)
            records = metric_ci(comparison, "exposed_records")["mean"]
            for i, name in enumerate(comparison.names):
                total, count = float(totals[name]), float(records.get(name, math.nan))
                text = "nothing exposed" if total <= 0 else \
                    _si(total, "B") + (f", {_si(count)} records" if math.isfinite(count) else "")
                left.annotate(text, (total * scale, i), xytext=(4, 0), textcoords="offset points",
                              va="center", fontsize=7.5)
            left.set_xlim(0, max(float(totals.max()) * scale, 1e-9) * 1.5)
            left.set_xlabel(f"data moved into third-party zones ({unit})")
            left.set_ylabel("scenario")
            left.set_title("exposure by data class")
        else:
            _not_measured(left, "exposure by data class")
        if measured(comparison, "third_party_gb_days"):
            total_ci = metric_ci(comparison, "third_party_gb_days")
            if measured(comparison, "third_party_gb_days_by_class"):
                rest = _nonzero_parts(mean_breakdown(comparison, "third_party_gb_days_by_class"), classes)
                totals = _stacked_bars(right, comparison, rest, colours, whiskers=total_ci)
                shown += [c for c in rest.columns if c not in shown]
                for i, total in enumerate(totals):
                    right.annotate(_si(total), (total, i), xytext=(6, 0), textcoords="offset points",
                                   va="center", fontsize=7.5)
            else:
                _bars(right, comparison, total_ci, scenario_colours(comparison))
                totals = total_ci["mean"].reindex(comparison.names).fillna(0.0).to_numpy()
            right.set_xlim(0, max(float(np.nanmax(total_ci["high"].fillna(0).to_numpy().tolist()
                                                  + list(totals))), 1e-9) * 1.35)
            right.set_xlabel("third-party data at rest (GB-days)")
            right.set_title("data held by third parties")
            _share_label([right], "y")
        else:
            _not_measured(right, "data held by third parties")
        _parts_legend(fig, colours, [c for c in classes if c in shown], "data class")
    return fig


def cost(comparison: Comparison) -> Figure:
    """Left: cost over the horizon, stacked by component (mean over replications; whisker:
    95% CI of the total). Right: cost per 1M requests (mean with 95% CI)."""
    with _style():
        fig, axes = _figure(1, 2, 1.9 + 0.5 * len(comparison.names), sharey=True,
                            gridspec_kw={"width_ratios": [1.4, 1]})
        left, right = axes[0]
        if measured(comparison, "cost_usd_by_component"):
            raw = mean_breakdown(comparison, "cost_usd_by_component")
            parts = _nonzero_parts(raw, list(raw.columns))
            colours = category_colours(list(raw.columns))
            total_ci = metric_ci(comparison, "cost_usd") if measured(comparison, "cost_usd") else None
            totals = _stacked_bars(left, comparison, parts, colours, whiskers=total_ci)
            for i, total in enumerate(totals):
                right_end = total_ci["high"].iloc[i] if total_ci is not None and \
                    np.isfinite(total_ci["high"].iloc[i]) else total
                left.annotate(_usd(total), (right_end, i), xytext=(5, 0), textcoords="offset points",
                              va="center", fontsize=7.5)
            horizon_h = _horizon_s(comparison) / HOUR_S
            left.set_xlim(0, max(float(totals.max()), 1e-9) * 1.35)
            left.set_xlabel(f"cost over the {horizon_h:g} h horizon (USD)")
            left.set_ylabel("scenario")
            left.set_title("where the money goes")
            _parts_legend(fig, colours, list(parts.columns), "cost component")
        else:
            _not_measured(left, "where the money goes")
        if measured(comparison, "cost_usd_per_1m_requests"):
            _bars(right, comparison, metric_ci(comparison, "cost_usd_per_1m_requests"), scenario_colours(comparison),
                  best_scenarios(comparison, "cost_usd_per_1m_requests"))
            right.set_xlabel("cost per 1M requests (USD)")
            right.set_title("unit cost")
            _share_label([right], "y")
            right.margins(x=0.25)
            right.set_xlim(left=0)
        else:
            _not_measured(right, "unit cost")
    return fig


def _usd(value: float) -> str:
    return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.2f}"


def _drifts(scenario: Scenario) -> bool:
    return any(event.at < scenario.horizon for event in scenario.lifecycle.drift)


def _recovery_panel(ax: Axes, comparison: Comparison, colours: dict[str, str]) -> None:
    """Recovery time in hours; a scenario that never recovers gets a hatched bar as long as the
    window observed after the drift's onset (horizon - onset), labelled with it, one that
    recovered in only some replications its mean over those, labelled k/R. After a recovered
    bar's value: the mean error rate the recovered model reached."""
    names = comparison.names
    if not any(_drifts(s) for s in comparison.scenarios):
        _not_measured(ax, "drift recovery", "no drift within the horizon")
        return
    values = metric_ci(comparison, "recovery_time_s", 1 / HOUR_S)
    shown = values.copy()
    shown.loc[values["n"] < comparison.replications, ["low", "high"]] = math.nan
    reached = metric_ci(comparison, "recovered_error_rate")["mean"]
    notes = {name: f" h, to {reached[name]:.1%} error" for name in names if np.isfinite(reached[name])}
    _bars(ax, comparison, shown, colours, best_scenarios(comparison, "recovery_time_s"), notes=notes)
    for i, name in enumerate(names):
        scenario = _scenario(comparison, name)
        n = int(values.loc[name, "n"])
        if n == 0 and _drifts(scenario):
            # recovery is timed from the drift's onset: only horizon - onset was observed
            window_h = (scenario.horizon - min(e.at for e in scenario.lifecycle.drift if e.at < scenario.horizon)) / HOUR_S
            ax.barh(i, window_h, height=0.62, facecolor="white", edgecolor=colours[name],
                    hatch="///", linewidth=1.0, zorder=2)
            ax.annotate(f"not recovered within {window_h:.3g} h", (window_h / 2, i), ha="center", va="center",
                        fontsize=7.5, bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
                        zorder=4)
        elif n == 0:
            ax.annotate("no drift", (0, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7.5)
        elif n < comparison.replications:
            ax.annotate(f"{n}/{comparison.replications} recovered", (values.loc[name, "mean"], i),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7.5)
    windows = [s.horizon - min(e.at for e in s.lifecycle.drift if e.at < s.horizon)
               for s in comparison.scenarios if _drifts(s)]
    ax.set_xlim(0, max(windows) / HOUR_S * 1.08)  # recovery is timed from the onset: no longer can be seen
    ax.set_xlabel("recovery time after drift onset (h)")
    ax.set_title("drift recovery")


def summary(comparison: Comparison) -> Figure:
    """The four axes at one glance (lower is better on each, best marked): TTFT p99, exposure
    score, recovery time after drift, cost per 1M requests; means with 95% CI whiskers."""
    colours = scenario_colours(comparison)
    with _style():
        fig, axes = _figure(2, 2, 1.4 + 1.0 * len(comparison.names), sharey=True)
        latency, exposure = axes[0]
        recovery, unit_cost = axes[1]
        if measured(comparison, "ttft_p99_s"):
            _bars(latency, comparison, metric_ci(comparison, "ttft_p99_s", 1e3), colours,
                  best_scenarios(comparison, "ttft_p99_s"))
            targets = sorted({s.slo.ttft_p99 for s in comparison.scenarios if s.slo.ttft_p99 is not None})
            for target in targets:
                latency.axvline(target * 1e3, **SLO_STYLE)
                latency.annotate("SLO", (target * 1e3, -0.5), xytext=(2, -2), textcoords="offset points",
                                 va="top", fontsize=7.5, color="#444444")
            latency.set_xlabel("TTFT p99 (ms)")
            latency.set_title("latency")
        else:
            _not_measured(latency, "latency")
        if measured(comparison, "exposure_score"):
            _bars(exposure, comparison, metric_ci(comparison, "exposure_score"), colours,
                  best_scenarios(comparison, "exposure_score"))
            exposure.set_xlabel("exposure score (sensitivity-weighted records)")
            exposure.set_title("privacy")
        else:
            _not_measured(exposure, "privacy")
        _recovery_panel(recovery, comparison, colours)
        if measured(comparison, "cost_usd_per_1m_requests"):
            _bars(unit_cost, comparison, metric_ci(comparison, "cost_usd_per_1m_requests"), colours,
                  best_scenarios(comparison, "cost_usd_per_1m_requests"))
            unit_cost.set_xlabel("cost per 1M requests (USD)")
            unit_cost.set_title("cost")
        else:
            _not_measured(unit_cost, "cost")
        for ax in axes.flat:
            if ax.has_data():
                ax.set_ylabel("scenario")
                ax.margins(x=0.22)
                ax.set_xlim(left=0)
        _share_label(axes[:, 1], "y")
        fig.suptitle("the four axes at one glance (lower is better, ★ best)", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------
# All figures
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: its file name, heading, caption, builder and the summary
    fields without which it has nothing to show (any one of `needs` is enough), or a test of
    the runs that says why it has nothing to show (`nothing_to_show`)."""

    name: str
    title: str
    caption: str
    build: Callable[[Comparison], Figure]
    needs: tuple[str, ...] = ()
    nothing_to_show: Callable[[Comparison], str | None] | None = None  # why not, if the runs have nothing for it


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("summary", "At a glance",
               "Latency (TTFT p99), privacy (exposure score), drift recovery and cost per 1M requests; "
               "means over replications with 95% confidence intervals, lower is better, best marked. "
               "A hatched bar to the horizon means the model had not recovered when the run ended; after a "
               "recovery time, the error rate the recovered model reached.",
               summary),
    FigureSpec("latency_cdf", "Latency distributions",
               "Share of steady-state requests at or below each latency, all replications pooled. "
               "Dashed: the SLO's p99 targets; dots: each scenario's p99.", latency_cdf),
    FigureSpec("latency_over_time", "Latency over time",
               "TTFT p99 (thick) and mean (thin) per 5-minute bin, averaged over replications, with "
               "drift onset, detection, training and rollout marked (mean times over replications).",
               latency_over_time),
    FigureSpec("error_rate_over_time", "Model error rate over time",
               "The serving model's error rate per 5-minute bin (mean over replications), the errors "
               "actually drawn (faint) and the base error rate (dotted). Recovery brings the line back "
               "to the base.", error_rate_over_time),
    FigureSpec("privacy", "Privacy exposure",
               "Data moved from the private premises into third-party zones, by data class, and "
               "data at rest in third-party zones in GB-days (mean with 95% CI).", privacy,
               ("exposed_bytes_by_class", "third_party_gb_days")),
    FigureSpec("cost", "Cost",
               "Cost over the horizon by component, and cost per 1M requests (mean with 95% CI).", cost,
               ("cost_usd_by_component", "cost_usd_per_1m_requests")),
    FigureSpec("gpu_utilisation", "GPU utilisation",
               "Busy serving GPUs and GPUs held for training per 5-minute bin (mean over replications, "
               "stacked), and the serving GPUs in service (line), per scenario.", gpu_utilisation),
    FigureSpec("burst_share_over_time", "Burst share over time",
               "Share of the requests sent in each 5-minute bin that went to a pool later in their route "
               "because the pools before it were loaded beyond the route's thresholds (overflow), all "
               "replications pooled, for each scenario where any did.", burst_share_over_time,
               nothing_to_show=lambda c: None if bursting_scenarios(c) else "no request was sent on overflow"),
    FigureSpec("replicas_over_time", "Autoscaled pools' replicas over time",
               "Replicas of each autoscaled serving pool holding their GPUs over time (a step line per "
               "replication), with the autoscaler's minimum and maximum (dotted).", replicas_over_time,
               nothing_to_show=lambda c: None if autoscaled_pools(c) else "no serving pool was autoscaled"),
)


def _why_missing(comparison: Comparison, spec: FigureSpec) -> str | None:
    """Why a figure has nothing to show (None when it has something)."""
    if spec.needs and not any(measured(comparison, key) for key in spec.needs):
        return f"{NOT_MEASURED} (no {' or '.join(spec.needs)} in any run's summary)"
    if spec.nothing_to_show is not None:
        return spec.nothing_to_show(comparison)
    return None


def figure_available(comparison: Comparison, spec: FigureSpec) -> bool:
    return _why_missing(comparison, spec) is None


def all_figures(comparison: Comparison) -> dict[str, Figure]:
    """Every figure with something to show, keyed by its stable file name (no extension)."""
    return {spec.name: spec.build(comparison) for spec in FIGURES if figure_available(comparison, spec)}


def missing_figures(comparison: Comparison) -> dict[str, str]:
    """Figures left out of `all_figures`, with the reason (their fields were not measured)."""
    return {spec.name: reason for spec in FIGURES if (reason := _why_missing(comparison, spec)) is not None}
