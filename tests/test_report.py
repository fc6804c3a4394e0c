"""The comparison report: every file it promises, a self-contained HTML page that really parses
and embeds every figure, a Markdown twin whose figure links resolve, a summary.csv with every
scenario and metric, and figures whose axes say what they show and in which unit.

One small comparison (S1 and S3, 2 replications, a 2-hour horizon with the drift moved to 30
min and a short recovery pipeline so that S3 recovers and S1 does not) is built once per module.
"""

from __future__ import annotations

import base64
import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sim
from sim.experiment import Comparison
from sim.report.document import scenario_folders, write_report
from sim.report.figures import all_figures, missing_figures, scenario_colours

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"
SCENARIOS = [SCENARIOS_DIR / "s1_local.yaml", SCENARIOS_DIR / "s3_local_training.yaml"]
SMALL = ["horizon=2h", "warmup=10min", "lifecycle.drift[0].at=30min", "lifecycle.retraining.samples=300",
         "lifecycle.monitor.label_delay=5min", "lifecycle.retraining.validation=5min"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRIVACY_AND_COST = ("exposed_bytes", "exposed_records", "exposure_score", "third_party_gb_days",
                    "exposed_bytes_by_class", "exposed_records_by_class", "third_party_gb_days_by_class",
                    "cost_usd", "cost_usd_per_month", "cost_usd_per_1m_requests",
                    "cost_usd_per_1m_output_tokens", "cost_usd_by_component")


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return sim.compare(SCENARIOS, replications=2, workers=2, overrides=SMALL)


@pytest.fixture(scope="module")
def report(comparison: Comparison, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    (out / "notes.txt").write_text("mine")
    index = write_report(comparison, out, title="test <report> & co")
    assert index == (out / "index.html").resolve()
    return out


class _Page(HTMLParser):
    """Collects images (with the id of the <figure> around them) and src/href attributes, and
    checks that every non-void element that opens also closes, in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: dict[str, str] = {}
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "figure":
            self.figure = values.get("id")
        if tag == "img" and self.figure:
            self.images[self.figure] = values.get("src") or ""
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag == "figure":
            self.figure = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == [], f"unclosed elements: {page.stack}"
    return page


def test_small_scenarios_validate_with_the_drift_inside_the_horizon() -> None:
    """The test's overrides give valid scenarios whose drift happens after the warm-up and
    before the horizon."""
    for path in SCENARIOS:
        scenario = sim.load_scenario(path, SMALL)
        assert scenario.horizon == 7200 and scenario.warmup == 600
        assert scenario.warmup < scenario.lifecycle.drift[0].at == 1800 < scenario.horizon


def test_write_report_produces_every_file(report: Path, comparison: Comparison) -> None:
    """index.html, report.md, summary.csv, one PNG per figure, and per scenario its replication
    summaries and lifecycle (costs and ledger when the runs measured them); files already in
    the folder are left alone."""
    for name in ("index.html", "report.md", "summary.csv"):
        assert (report / name).stat().st_size > 0
    for name in all_figures(comparison):
        assert (report / "figures" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (report / "notes.txt").read_text() == "mine"
    folders = scenario_folders(comparison.names)
    for name in comparison.names:
        folder = report / folders[name]
        replications = pd.read_csv(folder / "summary_replications.csv")
        assert list(replications["replication"]) == [0, 1]
        assert "ttft_p99_s" in replications.columns
        lifecycle = pd.read_csv(folder / "lifecycle.csv")
        assert {"replication", "stage", "start_s", "end_s"} <= set(lifecycle.columns)
        tables = comparison.runs[name][0].tables
        assert (folder / "costs.csv").exists() == ("costs" in tables)
        assert (folder / "ledger.csv").exists() == ("transfers" in tables or "ledger" in tables)
    assert not list(report.rglob(".*.tmp")), "temporary files left behind"


def test_index_html_is_self_contained_and_embeds_every_figure(report: Path, comparison: Comparison) -> None:
    """index.html parses with balanced tags, embeds each figure of all_figures() as a
    data:image/png;base64 URI that decodes to a PNG, escapes text, and fetches nothing: no
    http(s) URL, script or stylesheet link."""
    page = _parse(report / "index.html")
    figures = all_figures(comparison)
    assert set(page.images) == set(figures)
    for name, src in page.images.items():
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), name
        assert base64.b64decode(src[len(prefix):], validate=True).startswith(PNG_SIGNATURE), name
    assert not [u for u in page.urls if re.match(r"\s*(https?:)?//", u, re.IGNORECASE)]
    assert not page.tags & {"script", "link", "iframe", "object"}
    text = " ".join(page.text)
    assert "test <report> & co" in text  # escaped in the source, read back as text
    assert "<report>" not in (report / "index.html").read_text(encoding="utf-8")


def test_report_states_how_it_was_made_and_what_metrics_mean(report: Path, comparison: Comparison) -> None:
    """Both documents state the scenario files, seed, replications, version, workers, time and
    requests, and explain each metric; both carry the comparison table with every scenario."""
    html_text = " ".join(_parse(report / "index.html").text)
    markdown = (report / "report.md").read_text(encoding="utf-8")
    seed = str(comparison.scenarios[0].seed)
    for text in (html_text, markdown):
        for needle in (*comparison.sources, seed, sim.__version__, f"{comparison.total_requests():,}",
                       "worker", "TTFT p99", "recovery time", "Time from the drift's onset",
                       "SLO attainment", "GB-days", "Excess-error area", *comparison.names):
            assert needle in text, needle
    assert "not recovered" in markdown  # S1 cannot fix the drift within 2 h


def test_report_md_references_every_figure(report: Path, comparison: Comparison) -> None:
    """report.md links every figure as figures/<name>.png, and each linked file exists."""
    markdown = (report / "report.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"!\[[^\]]*\]\((figures/[^)\s]+\.png)\)", markdown))
    assert linked == {f"figures/{name}.png" for name in all_figures(comparison)}
    for path in linked:
        assert (report / path).is_file()


def test_summary_csv_has_every_scenario_and_ttft_p99(report: Path, comparison: Comparison) -> None:
    """summary.csv is long (metric, scenario, mean, ci_low, ci_high, n) with a ttft_p99_s row
    per scenario holding its mean and confidence interval."""
    summary = pd.read_csv(report / "summary.csv")
    assert list(summary.columns) == ["metric", "scenario", "mean", "ci_low", "ci_high", "n"]
    assert set(summary["scenario"]) == set(comparison.names)
    ttft = summary[summary["metric"] == "ttft_p99_s"].set_index("scenario")
    assert set(ttft.index) == set(comparison.names)
    assert (ttft["ci_low"] <= ttft["mean"]).all() and (ttft["mean"] <= ttft["ci_high"]).all()


def test_every_axes_with_data_has_labels_with_units(comparison: Comparison) -> None:
    """On every panel that shows data, both axes are labelled; a label names a unit in
    parentheses unless the axis lists scenarios."""
    for name, figure in all_figures(comparison).items():
        for ax in figure.axes:
            if not ax.has_data():
                continue
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert label, f"{name}: unlabelled axis on {ax.get_title()!r}"
                assert label == "scenario" or re.search(r"\(.+\)", label), f"{name}: no unit in {label!r}"


def test_a_scenario_keeps_its_colour_in_every_figure(comparison: Comparison) -> None:
    """Scenario i is drawn in the i-th tab10 colour: the latency CDF's lines and the coloured
    scenario names of the summary chart use the same colour per scenario."""
    colours = scenario_colours(comparison)
    assert list(colours.values())[:2] == ["#1f77b4", "#ff7f0e"]
    figures = all_figures(comparison)
    lines = {line.get_label(): line.get_color() for ax in figures["latency_cdf"].axes for line in ax.get_lines()}
    for name in comparison.names:
        assert lines[name] == colours[name]
    ticks = {t.get_text(): t.get_color() for t in figures["summary"].axes[0].get_yticklabels()}
    for name in comparison.names:
        assert ticks[name] == colours[name]


def test_unmeasured_figures_are_left_out_with_a_note(comparison: Comparison, tmp_path: Path) -> None:
    """Without privacy and cost fields in any run, the privacy and cost figures are not drawn
    and the report says they were not measured, instead of failing."""
    bare = copy.deepcopy(comparison)
    for runs in bare.runs.values():
        for run in runs:
            for key in PRIVACY_AND_COST:
                run.summary.pop(key, None)
    assert {"privacy", "cost"} <= set(missing_figures(bare))
    assert not {"privacy", "cost"} & set(all_figures(bare))
    write_report(bare, tmp_path)
    assert not (tmp_path / "figures" / "privacy.png").exists()
    for document in ("index.html", "report.md"):
        assert "not measured in these runs" in (tmp_path / document).read_text(encoding="utf-8")


@pytest.mark.parametrize(("names", "expected"), [
    (["s1", "s1 copy"], ["s1", "s1_copy"]),
    (["../../etc", "a/b"], ["etc", "a_b"]),
    (["figures", "..", "x?y", "x y"], ["figures_2", "scenario", "x_y", "x_y_2"]),
])
def test_scenario_folders_stay_inside_the_report(names: list[str], expected: list[str], tmp_path: Path) -> None:
    """A scenario's folder name keeps letters, digits, '.', '_' and '-', never climbs out of the
    report folder, never collides with another scenario or with figures/."""
    folders: dict[str, Any] = scenario_folders(names)
    assert [folders[n] for n in names] == expected
    for folder in folders.values():
        assert (tmp_path / folder).resolve().parent == tmp_path.resolve()


def test_not_recovered_bar_spans_the_window_after_the_drift(comparison: Comparison) -> None:
    """S1 cannot fix the drift: its hatched bar is as long as the time observed after the onset
    (2 h horizon - 30 min onset = 1.5 h, not the whole horizon), and says so."""
    hatched, texts = [], []
    for figure in all_figures(comparison).values():
        for ax in figure.axes:
            texts += [t.get_text() for t in ax.texts]
            hatched += [p.get_width() for p in ax.patches if p.get_hatch() == "///"]
    assert "not recovered within 1.5 h" in texts
    assert hatched and all(width == pytest.approx(1.5) for width in hatched)


def test_an_answer_is_shown_first(comparison: Comparison, tmp_path: Path) -> None:
    """An experiment's one-line answer sits right under the title of both documents."""
    index = write_report(comparison, tmp_path, answer="s3 recovers; s1 does not")
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()
    assert markdown[2] == "**Answer:** s3 recovers; s1 does not"
    html_text = index.read_text(encoding="utf-8")
    assert html_text.index("s3 recovers; s1 does not") < html_text.index('class="lede"')
