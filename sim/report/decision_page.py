"""The decision page: what to choose, why, and what would change it.

`write_decision_report(decision, out_dir)` writes, under `out_dir` and nowhere else:

- `index.html`: self-contained (figures inline): the verdict in two or three sentences, the
  ranking with each candidate's right-sized pools, score and interval, the constraints and
  who broke them, the Pareto figure and the tornado chart, and the inputs' ranges;
- `report.md`: the same in Markdown, figures linked from `figures/`;
- `decision.json`: `Decision.to_json()`;
- `figures/pareto.png`, `figures/tornado.png`;
- `compare/`: the full comparison report of the right-sized candidates
  (`sim.report.document.write_report`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.report.document import CSS, _Writer, write_report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sim.decision import Decision

DPI = 110


def _png(figure: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def pareto_figure(decision: Decision) -> Figure:
    """Cost per day against each other weighted criterion: every candidate, the Pareto set
    ringed, infeasible ones hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [c for c, w in decision.weights.items() if w > 0 and c != "cost"] or ["ttft_p99"]
    from sim.decision import CRITERIA

    fig, axes = plt.subplots(1, len(others), figsize=(4.2 * len(others), 3.6), squeeze=False)
    for ax, criterion in zip(axes[0], others, strict=True):
        spec = CRITERIA[criterion]
        for r in decision.ranking:
            x, y = r.criteria["cost"], r.criteria[criterion]
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            style = {"s": 70, "zorder": 3}
            if not r.feasible:
                ax.scatter([x], [y], facecolors="none", edgecolors="#999999", **style)
            else:
                ax.scatter([x], [y], color="#1f77b4" if r.pareto else "#7f7f7f", **style)
                if r.pareto:
                    ax.scatter([x], [y], s=180, facecolors="none", edgecolors="#d62728", zorder=2)
            ax.annotate(r.scenario, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel("cost per day (USD)")
        ax.set_ylabel(f"{spec.label}" + (f" ({spec.unit})" if spec.unit else ""))
        ax.grid(alpha=0.3)
        ax.margins(0.2)
    fig.suptitle("Candidates: the Pareto set ringed in red, infeasible ones hollow (lower is better)", fontsize=10)
    fig.tight_layout()
    return fig


def tornado_figure(decision: Decision) -> Figure:
    """Each input's effect on the top choice's margin: a bar from the margin at its low value
    to the margin at its high value; below zero the top choice is no longer first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in decision.sensitivity]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * max(len(rows), 1) + 1.6))

    def clip(m: float) -> float:
        return max(-1.0, min(1.0, m)) if math.isfinite(m) else (1.0 if m > 0 else -1.0)

    rows.sort(key=lambda s: abs(clip(s.margin_high) - clip(s.margin_low)))
    for i, s in enumerate(rows):
        low, high = clip(s.margin_low), clip(s.margin_high)
        ax.barh(i, low - clip(s.margin_base), left=clip(s.margin_base), color="#1f77b4", height=0.6)
        ax.barh(i, high - clip(s.margin_base), left=clip(s.margin_base), color="#ff7f0e", height=0.6)
        label = f"{s.input} [{s.low:g} | {s.high:g}]"
        if s.flips:
            label += "  flips " + ", ".join(f"{f.when} {f.at:.3g}" for f in s.flips)
        ax.text(1.02, i, label, va="center", fontsize=8, transform=ax.get_yaxis_transform())
    ax.axvline(0.0, color="#d62728", lw=1)
    if rows:
        ax.axvline(clip(rows[0].margin_base), color="#333333", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [s.label for s in rows], fontsize=8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("top choice's score margin over the next (blue: input low, orange: input high)")
    ax.set_title(f"What would change the choice of {decision.top}", fontsize=10)
    fig.tight_layout()
    return fig


def _cell(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "never" if value > 0 else "-"
    if unit == "USD":
        return f"${value:,.2f}"
    if unit == "s":
        return f"{value * 1e3:,.0f} ms" if value < 10 else f"{value / 3600:,.2f} h"
    return f"{value:,.4g}" + (f" {unit}" if unit else "")


def _ranking_rows(decision: Decision) -> list[dict[str, str]]:
    from sim.decision import CRITERIA

    rows = []
    for i, r in enumerate(decision.ranking, start=1):
        score = "-" if r.score is None else f"{r.score:.3f}"
        if r.score_ci is not None:
            score += f" ({r.score_ci[0]:.3f} to {r.score_ci[1]:.3f})"
        rows.append({
            "rank": str(i) if r.feasible else "-",
            "candidate": r.scenario + (" *" if r.pareto else ""),
            "score": score,
            **{CRITERIA[c].label: _cell(r.criteria[c], CRITERIA[c].unit) for c in CRITERIA},
            "right-sized pools": "; ".join(r.sizing.describe()) or "nothing to size",
            "broken rules": "; ".join(r.broken) or "none",
        })
    return rows


def _sensitivity_rows(decision: Decision) -> list[dict[str, str]]:
    rows = []
    for s in decision.sensitivity:
        rows.append({
            "input": s.label, "as simulated": "-" if s.base is None else f"{s.base:.4g}",
            "range": f"{s.low:.4g} to {s.high:.4g}",
            "margin (low / base / high)": f"{s.margin_low:+.3f} / {s.margin_base:+.3f} / {s.margin_high:+.3f}",
            "flips at": s.describe_flips(),
            "confirmed": "; ".join(("yes: " if f.confirmed else "NO: ") + f.confirmation for f in s.flips) or "-",
            "source": s.source,
        })
    return rows


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return ["<p>none</p>"]
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(k)}</th>" for k in rows[0]) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row.values()) + "</tr>" for row in rows]
    return [*out, "</table>"]


def _md_table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return ["none", ""]
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(cell(k) for k in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in rows]
    return [*out, ""]


def _weights_text(decision: Decision) -> str:
    return ", ".join(f"{name} {weight:g}" for name, weight in decision.weights.items())


def write_decision_report(decision: Decision, out_dir: str | Path) -> Path:
    """Write the decision page and its files into out_dir (see the module doc); returns index.html."""
    writer = _Writer(Path(out_dir))
    writer.write("decision.json", json.dumps(decision.to_json(), indent=2) + "\n")
    figures = {"pareto": _png(pareto_figure(decision))}
    if decision.sensitivity:
        figures["tornado"] = _png(tornado_figure(decision))
    for name, png in figures.items():
        writer.write(f"figures/{name}.png", png)
    write_report(decision.comparison, writer.path("compare"), title="The right-sized candidates, side by side")
    verdict = decision.verdict()
    rules = [r.text for r in decision.rules] or ["none beyond each candidate's SLO"]
    ranking, sensitivity = _ranking_rows(decision), _sensitivity_rows(decision)
    method = ("Each candidate's serving pools were right-sized by simulation at the workload's peak (fewest "
              "replicas meeting every SLO), then simulated over their whole horizon "
              f"({decision.replications} replications, common random numbers). Score: 1 minus the weighted "
              f"criteria ({_weights_text(decision)}), each normalised between the best and worst of the "
              "Pareto set (* in the table); an interval is over the replications. Sensitivity: one input at a "
              "time at its low and high value, replication 0; a flip is found by bisection and checked by "
              "direct runs on both sides.")
    md = ["# Decision", "", *[f"{line}" for line in verdict], "", "## Ranking", "", *_md_table(ranking),
          "## Constraints", "", *[f"- `{r}`" for r in rules], "", "## Pareto set", "",
          "![Pareto](figures/pareto.png)", ""]
    if decision.sensitivity:
        md += ["## What would change the answer", "", "![Tornado](figures/tornado.png)", "", *_md_table(sensitivity)]
    md += ["## Method", "", method, "", *[f"- note: {n}" for n in decision.notes],
           "", "The full comparison of the right-sized candidates: [compare/index.html](compare/index.html).", ""]
    writer.write("report.md", "\n".join(md))

    def img(name: str, alt: str) -> str:
        return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(figures[name]).decode()}"></figure>'

    page = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            "<title>Decision</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<h1>Decision</h1>",
            *[f'<p class="lede">{_e(line)}</p>' for line in verdict], "<h2>Ranking</h2>", *_html_table(ranking),
            "<h2>Constraints</h2>", "<ul>", *[f"<li><code>{_e(r)}</code></li>" for r in rules], "</ul>",
            "<h2>Pareto set</h2>", img("pareto", "Pareto set")]
    if decision.sensitivity:
        page += ["<h2>What would change the answer</h2>", img("tornado", "Tornado"), *_html_table(sensitivity)]
    page += ["<h2>Method</h2>", f"<p>{_e(method)}</p>", *[f'<p class="note">{_e(n)}</p>' for n in decision.notes],
             '<p>The full comparison of the right-sized candidates: <a href="compare/index.html">compare/</a>.</p>',
             "</body>", "</html>"]
    return writer.write("index.html", "\n".join(page) + "\n")
