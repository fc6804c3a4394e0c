"""The fidelity report: how far the simulator is from measured benchmarks, in one folder.

`write_fidelity_report(result, out_dir)` takes a `sim.calibration.FidelityResult` (every
measured point and run with the simulator's values for the same setup) and writes:

- `points.csv`: one row per point, values in SI units (the `unit` column says s or tokens/s);
- `runs.csv`: one row per run, part (whole run or stage), metric and statistic, in seconds;
- `runs_scatter.png`: predicted against measured TTFT, TPOT and E2E of every run and stage
  (means, p90 and p99);
- `scatter.png`: predicted against measured on log-log axes with the y = x line, latencies
  (ms) and throughputs (tokens/s) in two panels, so each axis has one unit;
- `ttft_cdf.png`: measured and predicted TTFT distributions, for points that kept
  per-request samples (with their Kolmogorov-Smirnov distance);
- `report.md` and `index.html`: the error per metric (mean absolute percentage error), the
  per-point table and the figures. The HTML is self-contained (figures inlined as base64
  PNG) and escapes every text it shows.

Figures are drawn without pyplot (an Agg canvas per figure), so nothing opens a window.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sim.calibration import TIME_METRICS, FidelityResult, display_value, run_key

DPI = 110
METRIC_LABELS = {
    "ttft": "TTFT",
    "tpot": "TPOT",
    "output_throughput": "output throughput",
    "prefill_throughput": "prefill throughput",
    "decode_throughput": "decode throughput",
    "training_throughput": "training throughput",
}
MARKERS = {"ttft": "o", "tpot": "s", "output_throughput": "^", "prefill_throughput": "D",
           "decode_throughput": "v", "training_throughput": "P"}


def scatter_figure(result: FidelityResult) -> Figure:
    """Predicted vs measured, log-log, with y = x: latencies (ms) left, throughputs right."""
    fig = Figure(figsize=(8.2, 3.9), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    panels = (("latency", "ms", [p for p in result.points if p.measurement.metric in TIME_METRICS]),
              ("throughput", "tokens/s", [p for p in result.points if p.measurement.metric not in TIME_METRICS]))
    gpus = sorted({p.measurement.gpu for p in result.points})
    colours = {gpu: f"C{i % 10}" for i, gpu in enumerate(gpus)}
    for ax, (title, unit, points) in zip(fig.subplots(1, 2), panels, strict=True):
        ax.set_title(f"{title} ({len(points)} point{'s' if len(points) != 1 else ''})")
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        if not points:
            ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        measured = np.array([display_value(p.measurement.metric, p.measurement.value)[0] for p in points])
        predicted = np.array([display_value(p.measurement.metric, p.predicted)[0] for p in points])
        low = min(measured.min(), predicted.min()) / 1.5
        high = max(measured.max(), predicted.max()) * 1.5
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
        ax.fill_between([low, high], [low / 1.2, high / 1.2], [low * 1.2, high * 1.2], color="0.9",
                        label="±20%")
        for point, x, y in zip(points, measured, predicted, strict=True):
            m = point.measurement
            ax.scatter([x], [y], marker=MARKERS.get(m.metric, "o"), color=colours[m.gpu], s=28, zorder=3)
            ax.annotate(m.id, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal", adjustable="box")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[g], marker="o", linestyle="", label=g) for g in gpus]
    metrics = [k for k in METRIC_LABELS if any(p.measurement.metric == k for p in result.points)]
    handles += [Line2D([], [], color="0.3", marker=MARKERS[k], linestyle="", label=METRIC_LABELS[k]) for k in metrics]
    handles.append(Line2D([], [], color="black", linewidth=0.8, label="y = x (grey band ±20%)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
    return fig


def runs_scatter_figure(result: FidelityResult) -> Figure | None:
    """Predicted vs measured for runs under load: one panel per metric, every part and statistic."""
    if not result.runs:
        return None
    fig = Figure(figsize=(9.6, 3.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    gpus = result.run_gpus
    colours = {gpu: f"C{i % 10}" for i, gpu in enumerate(gpus)}
    markers = {"mean": "o", "p90": "^", "p99": "v"}
    for ax, metric in zip(fig.subplots(1, 3), ("ttft", "tpot", "e2e"), strict=True):
        xs, ys = [], []
        for r in result.runs:
            for part in r.run.parts:
                for stat in markers:
                    key = run_key(part, metric, stat)
                    if key in r.run.measured and key in r.prediction.values:
                        x, y = r.run.measured[key] * 1e3, r.prediction.values[key] * 1e3
                        xs.append(x)
                        ys.append(y)
                        ax.scatter([x], [y], marker=markers[stat], color=colours[r.run.gpu], s=18 if part == "all" else 9,
                                   alpha=1.0 if part == "all" else 0.5, zorder=3)
        if xs:
            low, high = min(xs + ys) / 1.3, max(xs + ys) * 1.3
            ax.plot([low, high], [low, high], color="black", linewidth=0.8)
            ax.fill_between([low, high], [low / 1.1, high / 1.1], [low * 1.1, high * 1.1], color="0.9")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
        errors = result.run_errors("mean")
        ax.set_title(f"{metric.upper()} (median |error| of means {errors.get(metric, float('nan')):.1%})", fontsize=9)
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("predicted (ms)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[g], marker="o", linestyle="", label=g) for g in gpus]
    handles += [Line2D([], [], color="0.3", marker=m, linestyle="", label=s) for s, m in markers.items()]
    handles.append(Line2D([], [], color="black", linewidth=0.8, label="y = x (grey band ±10%); small: per stage"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    return fig


def ttft_cdf_figure(result: FidelityResult) -> Figure | None:
    """Empirical CDFs of measured and predicted per-request TTFTs, one panel per point."""
    points = [p for p in result.points if p.ks_distance is not None and p.predicted_samples is not None]
    if not points:
        return None
    fig = Figure(figsize=(8.2, 3.2 * ((len(points) + 1) // 2)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots((len(points) + 1) // 2, 2 if len(points) > 1 else 1, squeeze=False)).ravel()
    for ax, point in zip(axes, points, strict=False):
        assert point.measurement.samples is not None and point.predicted_samples is not None
        for samples, label, colour in ((point.measurement.samples, "measured", "C0"),
                                       (point.predicted_samples, "predicted", "C1")):
            x = np.sort(np.asarray(samples, dtype=float)) * 1e3
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=colour, label=label)
        ax.set_xlabel("TTFT (ms)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{point.measurement.id}: KS distance {point.ks_distance:.3f}", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(points):]:
        ax.set_visible(False)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _display_table(result: FidelityResult) -> pd.DataFrame:
    rows = []
    for p in result.points:
        m = p.measurement
        measured, unit = display_value(m.metric, m.value)
        predicted, _ = display_value(m.metric, p.predicted)
        rows.append({
            "id": m.id, "gpu": f"{m.gpus}x {m.gpu}" if m.gpus > 1 else m.gpu, "model": m.model,
            "precision": m.precision, "engine": m.engine, "setup": m.describe_setup,
            "tokens in/out": f"{m.input_tokens}/{'-' if m.output_tokens is None else m.output_tokens}",
            "metric": METRIC_LABELS.get(m.metric, m.metric), "unit": unit, "measured": f"{measured:.4g}",
            "predicted": f"{predicted:.4g}", "error": f"{p.relative_error:+.1%}",
            "KS": "" if p.ks_distance is None else f"{p.ks_distance:.3f}",
        })
    return pd.DataFrame(rows)


def _metric_table(result: FidelityResult) -> pd.DataFrame:
    rows = [{"metric": METRIC_LABELS.get(k, k),
             "points": sum(p.measurement.metric == k for p in result.points), "MAPE": f"{v:.1%}"}
            for k, v in result.mape_by_metric.items()]
    if result.points:
        rows.append({"metric": "all", "points": len(result.points), "MAPE": f"{result.mape:.1%}"})
    return pd.DataFrame(rows)


def _runs_error_table(result: FidelityResult) -> pd.DataFrame:
    """Median |error| over runs per statistic and metric, overall and per GPU."""
    rows = []
    for gpu in [None, *result.run_gpus]:
        for stat in ("mean", "p90", "p99"):
            errors = result.run_errors(stat, gpu=gpu)
            if errors:
                runs = sum(1 for r in result.runs if gpu is None or r.run.gpu == gpu)
                rows.append({"GPU": gpu or "all", "runs": runs, "statistic": stat,
                             **{m.upper(): f"{v:.1%}" for m, v in errors.items()}})
    return pd.DataFrame(rows).fillna("")


def _runs_display(result: FidelityResult) -> pd.DataFrame:
    rows = []
    for r in result.runs:
        row = {"id": r.run.id, "model": r.run.model, "GPU": f"{r.run.gpus}x {r.run.gpu}", "setup": r.run.describe_setup}
        for metric in ("e2e", "ttft", "tpot"):
            key = run_key("all", metric)
            measured, predicted = r.run.measured.get(key), r.prediction.values.get(key)
            row[f"{metric.upper()} ms"] = (f"{measured * 1e3:.4g} / {predicted * 1e3:.4g}"
                                           if measured is not None and predicted is not None else "")
            error = r.error(key)
            row[f"{metric.upper()} error"] = "" if error is None else f"{error:+.1%}"
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _notes(result: FidelityResult) -> list[str]:
    notes = [f"{p.measurement.id}: {p.measurement.notes}" for p in result.points if p.measurement.notes]
    return notes + [f"run {r.run.id}: {r.run.notes}" for r in result.runs if r.run.notes]


def write_fidelity_report(result: FidelityResult, out_dir: str | Path) -> Path:
    """Write points.csv / runs.csv, the figures, report.md and index.html. Returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, tuple[str, bytes]] = {}
    if result.points:
        result.table().to_csv(out / "points.csv", index=False)
        figures["scatter.png"] = ("Points: predicted against measured (log-log; y = x is a perfect prediction)",
                                  _png(scatter_figure(result)))
        cdf = ttft_cdf_figure(result)
        if cdf is not None:
            figures["ttft_cdf.png"] = ("TTFT distributions, measured and predicted", _png(cdf))
    runs_figure = runs_scatter_figure(result)
    if runs_figure is not None:
        result.runs_table().to_csv(out / "runs.csv", index=False)
        figures["runs_scatter.png"] = ("Runs under load: predicted against measured, whole runs (large) and stages "
                                       "(small); means, p90 and p99", _png(runs_figure))
    for name, (_, data) in figures.items():
        (out / name).write_bytes(data)
    title = "deploysim fidelity report"
    sources = sorted({Path(p.measurement.source).name for p in result.points}
                     | {Path(r.run.source).name for r in result.runs})
    intro = (f"{len(result.points)} measured points and {len(result.runs)} runs under load from "
             f"{', '.join(sources)}, predicted with the {result.catalog_label} (no fitting). Error = predicted / "
             "measured - 1; MAPE is the mean absolute percentage error; runs are summarised by the median "
             "absolute error over runs.")
    sections: list[tuple[str, pd.DataFrame | str]] = []
    if result.runs:
        sections += [("Runs: median |error| per statistic", _runs_error_table(result)),
                     ("Runs: whole-run means (measured / predicted)", _runs_display(result))]
    if result.points:
        ks = [p for p in result.points if p.ks_distance is not None]
        ks_text = ("Kolmogorov-Smirnov distance (largest gap between the measured and predicted TTFT "
                   "CDFs; 0 = identical, 1 = disjoint): "
                   + ", ".join(f"{p.measurement.id} {p.ks_distance:.3f}" for p in ks)) if ks else (
            "No point kept per-request samples, so there is no KS distance.")
        sections += [("Points: error per metric", _metric_table(result)), ("Points", _display_table(result)),
                     ("", ks_text)]
    md = [f"# {title}", "", intro, ""]
    for heading, body in sections:
        if heading:
            md += [f"## {heading}", ""]
        md += [_markdown(body) if isinstance(body, pd.DataFrame) else body, ""]
    md += [f"![{caption}]({name})\n" for name, (caption, _) in figures.items()]
    notes = _notes(result)
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, data in figures.values())
    body_html = "".join(
        (f"<h2>{html.escape(heading)}</h2>" if heading else "")
        + (_html_table(body) if isinstance(body, pd.DataFrame) else f"<p>{html.escape(body)}</p>")
        for heading, body in sections)
    notes_html = ("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left}th{background:#f3f3f3}"
        "img{max-width:100%}figcaption{font-size:0.85em;color:#555}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{body_html}{images}{notes_html}</body></html>"
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    return out
