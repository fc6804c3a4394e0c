"""The comparison report: one folder a user can open, forward or feed to a script.

`write_report(comparison, out_dir)` writes, into `out_dir` and nowhere else:

    index.html                 one self-contained page: figures embedded as data: URIs, CSS
                               inline, no scripts, fonts or links to fetch; opens offline
    report.md                  the same content in Markdown, figures as figures/<name>.png
    figures/<name>.png         every figure of `sim.report.figures.all_figures`
    summary.csv                every metric x scenario, long format: metric, scenario, mean,
                               ci_low, ci_high, n (`Comparison.table()`)
    <scenario>/summary_replications.csv
                               one row per replication, the flat summary (dotted breakdowns)
    <scenario>/lifecycle.csv   the drift-recovery stages of every replication
    <scenario>/costs.csv       priced items of every replication (when measured)
    <scenario>/ledger.csv      the privacy ledger of every replication (when measured)

The page reads top to bottom the way a manager asks: what was run, the four axes at a glance,
the comparison table (scenarios as columns, mean ± 95% CI half-width, best per row marked,
SLO misses flagged), the figures, the recovery stages, and one sentence per metric saying
what it means (DESIGN.md §2). Figures whose fields no run measured are left out with a note.
Existing files in `out_dir` other than these are left alone.

    >>> from sim.report.document import write_report
    >>> index = write_report(comparison, "reports/compare")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sim.experiment import flat_summary, mean_ci
from sim.metrics.lifecycle import STAGE_ORDER
from sim.outputs import folder_name
from sim.report import figures as fig_module

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sim.experiment import Comparison

HOUR_S = 3600.0


# ------------------------------------------------------------------------------------------
# The comparison table
# ------------------------------------------------------------------------------------------


METRIC_DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("TTFT (time to first token)",
     "Time from the client sending a request to the first token of the answer arriving back at the "
     "client, in seconds: network, queueing and prefill."),
    ("TPOT (time per output token)",
     "Mean time per output token after the first, at the serving site (the decode speed a user sees)."),
    ("E2E (end-to-end latency)",
     "Time from the client sending a request to the whole response arriving back at the client."),
    ("Percentiles and confidence intervals",
     "p50/p99 are over the steady-state requests of a replication (after the warm-up); the table shows "
     "their mean over replications ± the half-width of a 95% Student-t confidence interval, and "
     "summary.csv also has percentiles of all replications' requests pooled (rows named *_pooled)."),
    ("SLO attainment",
     "Share of steady-state requests that completed within every latency target of the SLO; rejected "
     "and unfinished requests count as misses."),
    ("Throughput",
     "Requests (and output tokens) completed per second between the end of the warm-up and the horizon."),
    ("GPU utilisation",
     "Fraction of the time a pool's GPUs are busy, split into GPUs serving requests and GPUs held "
     "for training."),
    ("Exposure",
     "Bytes and records that move from a private zone into a third-party zone, per data class; the "
     "exposure score weights each record by its class's sensitivity from the scenario file."),
    ("Third-party data at rest (GB-days)",
     "Gigabytes held in third-party zones times the days they are kept (the class's retention, cut at "
     "the horizon)."),
    ("Detection delay",
     "Time from the drift's onset to the monitor's detector firing."),
    ("Recovery time",
     "Time from the drift's onset to the rollout of a model back within the recovery tolerance of the "
     "pre-drift error rate (it keeps at most lifecycle.recovery_tolerance of the drift's excess error, "
     "0.5 by default); \"not recovered\" when that did not happen within the horizon. A retraining "
     "that lands above the tolerance is no recovery; one that would not beat the serving model is "
     "rejected at validation and not rolled out."),
    ("Recovered error rate",
     "The error rate on the drifted inputs of the last model rolled out, once recovered. It follows "
     "a learning curve in the fresh labelled samples the model was trained on (ENGINES.md §6.1), so "
     "training on a smaller sample to expose less has a quality cost."),
    ("Degraded requests",
     "Requests served by a model outside the recovery tolerance: its error rate was raised by a drift "
     "it was not (or not enough) adapted to."),
    ("Excess-error area",
     "The area under the curve of (error rate - base error rate) over time: 1 error x h is one hour "
     "at 100% excess error, or ten hours at 10%."),
    ("Serving pools",
     "Per pool: its share of the requests sent to any pool, the GPU-hours its replicas held (as the "
     "provider bills them: per-hour billing rounds each replica instance up to whole hours), and the "
     "replicas holding GPUs, averaged over the horizon and at most at once. The burst share is the "
     "share of requests sent to a pool because the pools before it in their route were loaded beyond "
     "the route's thresholds (overflow)."),
    ("Cost",
     "USD over the horizon: cloud GPU-hours, egress, third-party storage, premises capex amortised per "
     "second and premises energy; also per month, per 1M requests and per 1M output tokens."),
    ("Energy",
     "kWh drawn by premises GPUs (power as a function of utilisation, times the site's PUE), the cloud "
     "GPUs' share (already in their price), and the carbon they emit."),
)


def comparison_table(comparison: Comparison) -> list[tuple[str, list[dict[str, Any]]]]:
    """The terminal's comparison rows (`sim.report.terminal.comparison_rows`: same values, same
    paired best-of marking, same SLO flags), grouped; a group nothing measured has no rows."""
    from sim.report.terminal import comparison_groups, comparison_rows

    rows = comparison_rows(comparison)
    groups = [group for group, _ in comparison_groups(comparison)]
    groups += [row["group"] for row in rows if row["group"] not in groups]
    return [(group, [row for row in rows if row["group"] == group]) for group in groups]


def stage_table(comparison: Comparison) -> pd.DataFrame:
    """Mean minutes spent in each recovery stage per scenario (replications that reached it)."""
    rows: dict[str, dict[str, float]] = {}
    stages = [*STAGE_ORDER[1:]]
    for name in comparison.names:
        column: dict[str, float] = {}
        for stage in stages:
            values = [run.summary.get("lifecycle_stages_s", {}).get(stage) for run in comparison.runs[name]]
            column[stage] = mean_ci(values)[0] / 60
        rows[name] = column
    frame = pd.DataFrame(rows).reindex(stages)
    return frame.dropna(how="all")


# ------------------------------------------------------------------------------------------
# Facts about the run
# ------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def _one_or_each(comparison: Comparison, value: Callable[[Any], str]) -> str:
    values = {name: value(s) for name, s in zip(comparison.names, comparison.scenarios, strict=True)}
    distinct = sorted(set(values.values()))
    if len(distinct) == 1:
        return distinct[0]
    return "; ".join(f"{name}: {v}" for name, v in values.items())


def run_facts(comparison: Comparison, render_s: float) -> list[tuple[str, str]]:
    from sim.version import __version__

    return [
        ("scenario files", ", ".join(comparison.sources) or ", ".join(comparison.names)),
        ("seed", _one_or_each(comparison, lambda s: str(s.seed))),
        ("replications", f"{comparison.replications} per scenario (replication k uses the same random "
                         "numbers in every scenario)"),
        ("horizon", _one_or_each(comparison, lambda s: _duration(s.horizon))),
        ("warm-up (left out of steady-state metrics)", _one_or_each(comparison, lambda s: _duration(s.warmup))),
        ("simulated requests", f"{comparison.total_requests():,} over all scenarios and replications"),
        ("time it took", f"{comparison.wall_s:.1f} s to simulate on {comparison.workers} worker process"
                         f"{'es' if comparison.workers != 1 else ''}, {render_s:.1f} s to draw the figures"),
        ("deploysim version", __version__),
        ("generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


class _Writer:
    """Writes files under one root, atomically, refusing any path that leaves it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def path(self, relative: str) -> Path:
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root) or target == self.root:
            raise ValueError(f"refusing to write {relative!r} outside {self.root}")
        return target

    def write(self, relative: str, data: bytes | str) -> Path:
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
        os.replace(temporary, target)
        self.written.append(target)
        return target

    def csv(self, relative: str, frame: pd.DataFrame) -> Path:
        return self.write(relative, frame.to_csv(index=False))


def scenario_folders(names: Sequence[str]) -> dict[str, str]:
    """A safe, distinct folder name per scenario (letters, digits, '.', '_', '-')."""
    folders: dict[str, str] = {}
    for name in names:
        base = folder_name(name, "scenario")
        folder, k = base, 2
        while folder in folders.values() or folder in ("figures",):
            folder, k = f"{base}_{k}", k + 1
        folders[name] = folder
    return folders


def _concat_tables(comparison: Comparison, name: str, keys: Sequence[str]) -> pd.DataFrame | None:
    """A table of every replication (first of `keys` present), with a replication column."""
    frames = []
    for run in comparison.runs[name]:
        table = next((run.tables[k] for k in keys if run.tables.get(k) is not None), None)
        if table is not None:
            frames.append(table.assign(replication=run.replication)[["replication", *table.columns]])
    return pd.concat(frames, ignore_index=True) if frames else None


def _replication_summaries(comparison: Comparison, name: str) -> pd.DataFrame:
    rows = [{"scenario": name, "replication": run.replication, "wall_s": run.wall_s, **flat_summary(run.summary)}
            for run in comparison.runs[name]]
    return pd.DataFrame(rows)


TABLE_FILES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lifecycle.csv", ("lifecycle",)),
    ("costs.csv", ("costs",)),
    ("ledger.csv", ("ledger", "transfers")),  # sim.metrics names the ledger table "transfers"
)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=fig_module.DPI, facecolor="white")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


@dataclass
class _Content:
    title: str
    facts: list[tuple[str, str]]
    scenarios: list[tuple[str, str, str, str]]  # name, colour, file, description
    table: list[tuple[str, list[dict[str, Any]]]]  # (group, terminal comparison rows)
    stages: pd.DataFrame
    figures: list[tuple[fig_module.FigureSpec, bytes]]
    missing: dict[str, str]
    folders: dict[str, str]
    tables_written: dict[str, list[str]]
    names: list[str]
    answer: str = ""


def write_report(comparison: Comparison, out_dir: str | Path, title: str | None = None, answer: str = "") -> Path:
    """Write the report of a comparison into `out_dir` (created if needed); returns index.html.

    `answer`, when given, is the one-line answer to the question the report was made for
    (an experiment script's), shown first under the title.

    Only the files listed in the module doc are written (overwritten if present); nothing
    else in `out_dir` is touched and nothing is written outside it.
    """
    writer = _Writer(Path(out_dir))
    started = time.perf_counter()
    built = fig_module.all_figures(comparison)
    figures = [(spec, _png(built[spec.name])) for spec in fig_module.FIGURES if spec.name in built]
    render_s = time.perf_counter() - started
    for spec, png in figures:
        writer.write(f"figures/{spec.name}.png", png)

    writer.csv("summary.csv", comparison.table())
    folders = scenario_folders(comparison.names)
    tables_written: dict[str, list[str]] = {}
    for name, folder in folders.items():
        written = []
        writer.csv(f"{folder}/summary_replications.csv", _replication_summaries(comparison, name))
        written.append("summary_replications.csv")
        for file, keys in TABLE_FILES:
            table = _concat_tables(comparison, name, keys)
            if table is not None:
                writer.csv(f"{folder}/{file}", table)
                written.append(file)
        tables_written[name] = written

    colours = fig_module.scenario_colours(comparison)
    content = _Content(
        title=title or _default_title(comparison),
        facts=run_facts(comparison, render_s),
        scenarios=[(name, colours[name], source, scenario.description)
                   for name, scenario, source in zip(comparison.names, comparison.scenarios,
                                                     comparison.sources or comparison.names, strict=False)],
        table=comparison_table(comparison),
        stages=stage_table(comparison),
        figures=figures,
        missing=fig_module.missing_figures(comparison),
        folders=folders,
        tables_written=tables_written,
        names=comparison.names,
        answer=answer,
    )
    writer.write("report.md", _markdown(content))
    return writer.write("index.html", _html(content))


def _default_title(comparison: Comparison) -> str:
    names = comparison.names
    if len(names) <= 4:
        return "deploysim comparison: " + " vs ".join(names)
    return f"deploysim comparison of {len(names)} scenarios"


INTRO = ("Each scenario runs the same workload, model and drift history with the same random numbers, "
         "and differs only in where training, hosting and inference run, so differences between columns "
         "come from placement. Values are means over replications ± the half-width of a 95% confidence "
         "interval; ★ marks the best value of a row (scenarios tied within 0.5% share it), ✗ SLO a target missed "
         "(in any replication; requests that did not complete count as misses). A scenario that ran "
         "overloaded (SLO attainment below the SLO's level with more requests left unfinished than that "
         "level allows) is flagged in the table's first row with its unfinished requests and is never "
         "marked best: its latency and cost come from the few requests it finished.")

FILES_NOTE: tuple[tuple[str, str], ...] = (
    ("summary.csv", "every metric x scenario in long format: metric, scenario, mean, ci_low, ci_high, n "
                    "(replications with a value); *_pooled rows are percentiles of all replications' "
                    "requests pooled"),
    ("<scenario>/summary_replications.csv", "one row per replication with every summary field "
                                            "(breakdowns as dotted names)"),
    ("<scenario>/lifecycle.csv", "the drift-recovery stages of every replication (start_s, end_s, duration_s)"),
    ("<scenario>/costs.csv", "every priced item of every replication (when cost is measured)"),
    ("<scenario>/ledger.csv", "the privacy ledger: every transfer between sites (when measured)"),
    ("figures/*.png", "the figures of this report"),
)


def _stage_text(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.1f}"


# -- Markdown --------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(c: _Content) -> str:
    out = [f"# {c.title}", ""] + ([f"**Answer:** {c.answer}", ""] if c.answer else []) + [INTRO, "", "## What was run", "", "| | |", "|---|---|"]
    out += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in c.facts]
    out += ["", "## Scenarios", "", "| scenario | file | description |", "|---|---|---|"]
    out += [f"| {_md_cell(n)} | {_md_cell(f)} | {_md_cell(d)} |" for n, _, f, d in c.scenarios]
    first = [(spec, png) for spec, png in c.figures if spec.name == "summary"]
    for spec, _ in first:
        out += ["", f"## {spec.title}", "", f"![{spec.title}](figures/{spec.name}.png)", "", spec.caption]
    out += ["", "## Comparison", "", "| metric | " + " | ".join(_md_cell(n) for n in c.names) + " |",
            "|---|" + "---:|" * len(c.names)]
    for group, rows in c.table:
        out.append(f"| **{_md_cell(group)}** |" + " |" * len(c.names))
        if not rows:
            out.append("| *not measured in these runs* |" + " |" * len(c.names))
        for row in rows:
            out.append(f"| {_md_cell(_label(row))} | " + " | ".join(_md_value(row, n) for n in c.names) + " |")
    out += ["", "## Figures"]
    for spec, _ in c.figures:
        if spec.name == "summary":
            continue
        out += ["", f"### {spec.title}", "", f"![{spec.title}](figures/{spec.name}.png)", "", spec.caption]
    for name, reason in c.missing.items():
        out += ["", f"### {_figure_title(name)}", "", f"*Not drawn: {reason}.*"]
    if len(c.stages):
        out += ["", "## Drift recovery, stage by stage", "",
                "Mean minutes per stage over the replications that reached it (– : stage not run).", "",
                "| stage | " + " | ".join(_md_cell(n) for n in c.stages.columns) + " |",
                "|---|" + "---:|" * len(c.stages.columns)]
        for stage, values in c.stages.iterrows():
            out.append(f"| {stage} | " + " | ".join(_stage_text(v) for v in values) + " |")
    out += ["", "## What the metrics mean", ""]
    out += [f"- **{term}**: {text}" for term, text in METRIC_DEFINITIONS]
    out += ["", "## Files", ""]
    out += [f"- `{path}`: {text}" for path, text in FILES_NOTE]
    out += ["", "Per-scenario folders: " + "; ".join(
        f"`{c.folders[n]}/` ({', '.join(c.tables_written[n])})" for n in c.names) + "."]
    return "\n".join(out) + "\n"


def _label(row: dict[str, Any]) -> str:
    return f"{row['label']} ({row['unit']})" if row["unit"] else row["label"]


def _md_value(row: dict[str, Any], name: str) -> str:
    text = _md_cell(row["cells"][name])
    if name in row["best"]:
        text = f"**{text}** ★"
    if name in row["slo_missed"]:
        text += " ✗ SLO"
    return text


def _figure_title(name: str) -> str:
    return next((spec.title for spec in fig_module.FIGURES if spec.name == name), name)


# -- HTML ------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 980px; padding: 1.5em 1.2em 3em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.55em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.02em; margin: 1.6em 0 0.4em; }
p.lede { color: #444; }
p.answer { font-size: 1.05em; background: #f4f8fc; border-left: 4px solid #2f6db5; padding: 0.5em 0.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { padding: 0.28em 0.7em; border-bottom: 1px solid #e6e6e6; vertical-align: top; }
th { text-align: left; background: #f6f6f6; }
table.compare td.value, table.stages td.value { text-align: right; white-space: nowrap;
       font-variant-numeric: tabular-nums; }
table.compare th.scenario { text-align: right; }
tr.group th { background: #eef1f5; font-weight: 600; }
td.best { font-weight: 700; background: #eef8ee; }
span.miss { color: #b00020; font-weight: 600; }
td.missing { color: #777; font-style: italic; }
span.swatch { display: inline-block; width: 0.85em; height: 0.85em; border-radius: 2px;
              margin-right: 0.4em; vertical-align: -0.05em; }
figure { margin: 0.6em 0 1.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; margin-top: 0.3em; }
dl dt { font-weight: 600; margin-top: 0.5em; }
dl dd { margin-left: 1.2em; }
code { background: #f3f3f3; padding: 0 0.25em; border-radius: 3px; }
p.note { color: #666; font-style: italic; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _img(spec: fig_module.FigureSpec, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{_e(spec.name)}"><img alt="{_e(spec.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(spec.caption)}</figcaption></figure>")


def _html_value(row: dict[str, Any], name: str) -> str:
    best = name in row["best"]
    text = _e(row["cells"][name]) + (" ★" if best else "")
    if name in row["slo_missed"]:
        text += ' <span class="miss">✗ SLO</span>'
    return f'<td class="value{" best" if best else ""}">{text}</td>'


def _html(c: _Content) -> str:
    colour = {name: col for name, col, _, _ in c.scenarios}
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(c.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{_e(c.title)}</h1>"]
    if c.answer:
        out.append(f'<p class="answer"><strong>Answer:</strong> {_e(c.answer)}</p>')
    out += [f'<p class="lede">{_e(INTRO)}</p>', "<h2>What was run</h2>", "<table>"]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in c.facts]
    out += ["</table>", "<h2>Scenarios</h2>", "<table>",
            "<tr><th>scenario</th><th>file</th><th>description</th></tr>"]
    out += [f'<tr><td><span class="swatch" style="background:{_e(col)}"></span>{_e(n)}</td>'
            f"<td><code>{_e(f)}</code></td><td>{_e(d)}</td></tr>" for n, col, f, d in c.scenarios]
    out.append("</table>")
    for spec, png in c.figures:
        if spec.name == "summary":
            out += [f"<h2>{_e(spec.title)}</h2>", _img(spec, png)]
    out += ["<h2>Comparison</h2>", '<table class="compare">', "<tr><th>metric</th>"
            + "".join(f'<th class="scenario"><span class="swatch" style="background:{_e(colour[n])}"></span>'
                      f"{_e(n)}</th>" for n in c.names) + "</tr>"]
    for group, rows in c.table:
        out.append(f'<tr class="group"><th colspan="{len(c.names) + 1}">{_e(group)}</th></tr>')
        if not rows:
            out.append(f'<tr><td class="missing" colspan="{len(c.names) + 1}">not measured in these runs</td></tr>')
        for row in rows:
            out.append(f"<tr><td>{_e(_label(row))}</td>" + "".join(_html_value(row, n) for n in c.names) + "</tr>")
    out += ["</table>", "<h2>Figures</h2>"]
    for spec, png in c.figures:
        if spec.name != "summary":
            out += [f"<h3>{_e(spec.title)}</h3>", _img(spec, png)]
    for name, reason in c.missing.items():
        out += [f"<h3>{_e(_figure_title(name))}</h3>", f'<p class="note">Not drawn: {_e(reason)}.</p>']
    if len(c.stages):
        out += ["<h2>Drift recovery, stage by stage</h2>",
                "<p>Mean minutes per stage over the replications that reached it (– : stage not run).</p>",
                '<table class="stages">', "<tr><th>stage</th>"
                + "".join(f'<th class="scenario">{_e(n)}</th>' for n in c.stages.columns) + "</tr>"]
        for stage, values in c.stages.iterrows():
            out.append(f"<tr><td>{_e(stage)}</td>"
                       + "".join(f'<td class="value">{_e(_stage_text(v))}</td>' for v in values) + "</tr>")
        out.append("</table>")
    out += ["<h2>What the metrics mean</h2>", "<dl>"]
    out += [f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in METRIC_DEFINITIONS]
    out += ["</dl>", "<h2>Files</h2>", "<p>Next to this page:</p>", "<ul>"]
    out += [f"<li><code>{_e(path)}</code>: {_e(text)}</li>" for path, text in FILES_NOTE]
    out += ["</ul>", "<p>Per-scenario folders: " + "; ".join(
        f"<code>{_e(c.folders[n])}/</code> ({_e(', '.join(c.tables_written[n]))})" for n in c.names) + ".</p>",
            "</body>", "</html>"]
    return "\n".join(out) + "\n"
