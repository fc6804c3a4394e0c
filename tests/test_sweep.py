"""Sweeps: designs, sweep files, Dask against serial, interruption and resume, failed points, report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sim.spec.errors import SpecError
from sim.sweep import (
    Factor,
    FactorRange,
    design_points,
    load_sweep,
    load_sweep_results,
    point_file,
    sweep,
    sweep_from_vary,
)

SHORT = ["horizon=5min", "warmup=1min"]


def small_sweep(scenarios_dir: Path, out: Path, **extra: Any) -> dict[str, Any]:
    """S2 (requests cross the WAN) over 2 rates x 2 RTTs, 2 replications: 8 short runs."""
    spec: dict[str, Any] = {
        "name": "small",
        "base": [str(scenarios_dir / "s2_cloud_training.yaml")],
        "set": SHORT,
        "factors": {"workload.arrivals.rate_per_s": [2, 4], "links.wan.rtt": ["10ms", "80ms"]},
        "replications": 2,
        "metrics": ["ttft_p99_s", "e2e_p99_s", "cost_usd_per_1m_requests", "exposure_score", "gpu_utilisation"],
        "out": str(out),
    }
    spec.update(extra)
    return spec


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Everything but the timings, in point order."""
    return frame.drop(columns=["wall_s", "cpu_s"]).sort_values("point").reset_index(drop=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> pd.DataFrame:
    scenarios = Path(request.config.rootpath) / "scenarios"
    out = tmp_path_factory.mktemp("serial")
    return sweep(small_sweep(scenarios, out), workers=0)


# ------------------------------------------------------------------------------------------
# Designs
# ------------------------------------------------------------------------------------------


def test_grid_takes_every_combination_first_factor_slowest() -> None:
    """grid: 3 x 2 points, in product order."""
    points = design_points([Factor("a", (1, 2, 3)), Factor("b", ("x", "y"))], "grid")
    assert points == [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]


def test_zip_pairs_the_ith_values_and_ranges_with_steps_are_evenly_spaced() -> None:
    """zip: the i-th value of each factor together; {low, high, steps} gives evenly spaced values."""
    points = design_points([Factor("a", (1, 2, 3)), Factor("b", range=FactorRange(low=10, high=30, steps=3))], "zip")
    assert points == [{"a": 1, "b": 10.0}, {"a": 2, "b": 20.0}, {"a": 3, "b": 30.0}]
    logged = design_points([Factor("c", range=FactorRange(low=1, high=100, steps=3, log=True))], "grid")
    assert [p["c"] for p in logged] == pytest.approx([1, 10, 100])


def test_lhs_puts_one_sample_in_each_stratum_of_each_factor() -> None:
    """Latin hypercube: with N samples, each factor's range cut into N equal strata has exactly one
    sample per stratum (also on a log scale); a list factor gets each item equally often."""
    n = 12
    factors = [Factor("a", range=FactorRange(low=0, high=6)),
               Factor("b", range=FactorRange(low=1, high=1000, log=True)),
               Factor("c", ("p", "q", "r"))]
    points = design_points(factors, "lhs", samples=n, seed=3)
    assert len(points) == n
    a = np.array([p["a"] for p in points])
    b = np.log10([p["b"] for p in points]) / 3.0
    for unit in (a / 6.0, b):
        assert sorted(np.floor(unit * n).astype(int)) == list(range(n))
    assert pd.Series([p["c"] for p in points]).value_counts().tolist() == [4, 4, 4]
    assert design_points(factors, "lhs", samples=n, seed=3) == points  # seeded
    assert design_points(factors, "lhs", samples=n, seed=4) != points


def test_random_design_draws_within_ranges_reproducibly() -> None:
    """random: `samples` uniform draws inside the range, integers rounded, the same for the same seed."""
    factors = [Factor("n", range=FactorRange(low=1, high=8, integer=True)), Factor("g", ("l4", "l40s"))]
    points = design_points(factors, "random", samples=50, seed=1)
    assert all(isinstance(p["n"], int) and 1 <= p["n"] <= 8 for p in points)
    assert {p["g"] for p in points} == {"l4", "l40s"}
    assert design_points(factors, "random", samples=50, seed=1) == points


# ------------------------------------------------------------------------------------------
# Sweep files
# ------------------------------------------------------------------------------------------


def _issues(spec: Any, tmp_path: Path) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        sweep(spec, workers=0, out=tmp_path / "out")
    return {issue.path: f"{issue.message} / {issue.allowed}" for issue in caught.value.issues}


def test_bad_sweep_files_name_the_field(scenarios_dir: Path, tmp_path: Path, write_yaml) -> None:
    """Every mistake is a SpecError whose issue names the field path (and a suggestion when close)."""
    base = str(scenarios_dir / "s1_local.yaml")
    assert "factor" in _issues({"base": base, "factor": {}}, tmp_path)["factor"]  # did you mean 'factors'?
    assert "not found" in _issues({"base": "nowhere.yaml"}, tmp_path)["base[0]"]
    assert "samples" in _issues({"base": base, "design": "lhs",
                                 "factors": {"horizon": {"low": 600, "high": 1200}}}, tmp_path)
    assert "steps" in _issues({"base": base, "factors": {"horizon": {"low": 600, "high": 1200}}},
                              tmp_path)["factors.horizon"]
    assert "greater than low" in _issues({"base": base, "design": "lhs", "samples": 4,
                              "factors": {"horizon": {"low": 9, "high": 1}}}, tmp_path)["factors.horizon.high"]
    assert "factors" in _issues({"base": base, "design": "zip", "factors": {"a": [1, 2], "b": [1]}}, tmp_path)
    assert "override path" in _issues({"base": base, "factors": {"a..b": [1]}}, tmp_path)["factors.a..b"]
    assert "one of" in str(_issues({"base": base, "design": "sobol"}, tmp_path))
    # a file on disk: its base is relative to it, and a YAML error says where
    broken = write_yaml("base: [s1.yaml\n", "broken.yaml")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_sweep(broken)


def test_unknown_metric_and_an_always_failing_factor_are_caught_before_running(
        scenarios_dir: Path, tmp_path: Path) -> None:
    """A metric that is no summary field gets a suggestion; a factor path no scenario has fails
    every point, which is a mistake in the file, not a result."""
    base = str(scenarios_dir / "s1_local.yaml")
    issues = _issues({"base": base, "set": SHORT, "metrics": ["ttft_p99"]}, tmp_path)
    assert "ttft_p99_s" in issues["metrics[0]"]
    with pytest.raises(SpecError, match="every point fails") as caught:
        sweep({"base": base, "set": SHORT, "factors": {"workload.arrivals.rate_per_sec": [1, 2]}},
              workers=0, out=tmp_path / "typo")
    assert "rate_per_s" in caught.value.render()  # did you mean


def test_vary_is_a_one_line_grid(scenarios_dir: Path) -> None:
    """`--vary path=v1,v2,v3` values are read as YAML, like --set values; replications default to
    the scenario's own (3 for the seed scenarios)."""
    spec = sweep_from_vary([scenarios_dir / "s1_local.yaml"], ["workload.arrivals.rate_per_s=10,20,40",
                                                               "links.wan.rtt=20ms,80ms"])
    assert [f.path for f in spec.factors] == ["workload.arrivals.rate_per_s", "links.wan.rtt"]
    assert len(spec.tasks()) == 6 * 3
    assert spec.factors[0].values == (10, 20, 40)
    with pytest.raises(SpecError, match="--vary"):
        sweep_from_vary([scenarios_dir / "s1_local.yaml"], ["rate"])


def test_shipped_sweep_files_are_valid(scenarios_dir: Path) -> None:
    """The examples in scenarios/sweeps/ load, and expand to the points they promise."""
    counts = {}
    for file in sorted((scenarios_dir / "sweeps").glob("*.yaml")):
        counts[file.stem] = len(load_sweep(file).tasks())
    assert counts["rate_x_rtt"] == 2 * 4 * 4 * 2
    assert counts["label_delay_lhs"] == 3 * 16


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------


def test_rows_carry_factors_seed_hash_and_metrics(serial: pd.DataFrame) -> None:
    """One row per point x replication, with the factor values, seed, spec hash and metrics."""
    assert len(serial) == 8 and serial["point"].is_unique
    assert set(serial["status"]) == {"ok"}
    assert sorted(serial["replication"].unique()) == [0, 1]
    assert set(serial["links.wan.rtt"]) == {"10ms", "80ms"}
    assert (serial["base"] == "s2_cloud_training").all()
    assert serial["seed"].nunique() == 1 and serial["spec_hash"].str.len().eq(16).all()
    assert {"ttft_p99_s", "cost_usd_per_1m_requests", "gpu_utilisation.cloud/serving"} <= set(serial.columns)
    # the WAN round trip is in every request's latency; replications differ
    mean = serial.groupby("links.wan.rtt")["ttft_p99_s"].mean()
    assert mean["80ms"] > mean["10ms"]
    assert serial.groupby("config")["ttft_p99_s"].nunique().eq(2).all()


def test_dask_cluster_gives_the_same_rows_as_a_serial_run(serial: pd.DataFrame, scenarios_dir: Path,
                                                          tmp_path: Path) -> None:
    """The same sweep on a LocalCluster of 2 worker processes: bit-identical metrics, same rows."""
    clustered = sweep(small_sweep(scenarios_dir, tmp_path / "dask"), workers=2)
    pd.testing.assert_frame_equal(comparable(clustered), comparable(serial), check_exact=True)


class Interrupted(Exception):
    """Stands in for Ctrl-C in the progress callback."""


def test_an_interrupted_sweep_resumes_without_duplicates_or_gaps(serial: pd.DataFrame, scenarios_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Stopped after 3 of 8 points on a Dask cluster, the folder holds exactly those 3 (no half-written
    files); the rerun runs only the other 5, and the result equals an uninterrupted run."""
    spec = small_sweep(scenarios_dir, tmp_path / "resume")
    out = tmp_path / "resume"

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        sweep(spec, workers=2, on_progress=stop_after_three)
    files = sorted((out / "points").iterdir())
    assert len(files) == 3 and all(f.suffix == ".parquet" for f in files)
    before = {f.name: f.stat().st_mtime_ns for f in files}

    seen: list[tuple[int, int]] = []
    resumed = sweep(spec, workers=0, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5, 5)  # only the missing points ran
    assert {f.name: f.stat().st_mtime_ns for f in files} == before  # finished points untouched
    assert resumed["point"].is_unique and len(resumed) == 8
    pd.testing.assert_frame_equal(comparable(resumed), comparable(serial), check_exact=True)
    again: list[tuple[int, int]] = []
    sweep(spec, workers=0, on_progress=lambda done, total: again.append((done, total)))
    assert again == [(0, 0)]  # nothing left to do


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(scenarios_dir: Path, tmp_path: Path) -> None:
    """A value the scenario refuses (a negative rate) becomes a failed row with its error; the
    other points run; a rerun leaves the failed point alone unless asked to retry it."""
    spec = small_sweep(scenarios_dir, tmp_path / "fail", replications=1,
                       factors={"workload.arrivals.rate_per_s": [2, -1]})
    frame = sweep(spec, workers=0)
    assert len(frame) == 2
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert failed["workload.arrivals.rate_per_s"] == -1
    assert "workload.arrivals.rate_per_s" in failed["error"] and math.isnan(failed["ttft_p99_s"])
    good = frame[frame["status"] == "ok"].iloc[0]
    assert good["ttft_p99_s"] > 0 and good["error"] == ""
    assert point_file(tmp_path / "fail", failed["point"]).is_file()
    runs: list[int] = []
    sweep(spec, workers=0, on_progress=lambda done, total: runs.append(total))
    assert runs == [0]
    sweep(spec, workers=0, retry_failed=True, on_progress=lambda done, total: runs.append(total))
    assert runs[-1] == 1


def test_results_load_in_sweep_order_and_report_renders(serial: pd.DataFrame, tmp_path: Path) -> None:
    """load_sweep_results gives the sweep's rows with its factors; the report is self-contained."""
    from sim.report.sweep_figures import pareto_mask, write_sweep_report

    assert serial.attrs["factors"] == ["workload.arrivals.rate_per_s", "links.wan.rtt"]
    index = write_sweep_report(serial, tmp_path / "report")
    page = index.read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")
    assert {p.name for p in (tmp_path / "report" / "figures").iterdir()} == {
        "vs_workload_arrivals_rate_per_s.png", "vs_links_wan_rtt.png", "pareto.png"}
    assert (tmp_path / "report" / "summary.csv").is_file() and (tmp_path / "report" / "report.md").is_file()
    front = pareto_mask(np.array([[1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [1.0, 5.0], [np.nan, 0.0]]))
    assert front.tolist() == [True, True, False, True, False]


def test_load_sweep_results_reads_a_folder(serial: pd.DataFrame, tmp_path: Path, scenarios_dir: Path) -> None:
    """What sweep() returns is what load_sweep_results reads back from its folder."""
    out = tmp_path / "again"
    sweep(small_sweep(scenarios_dir, out, replications=1,
                      factors={"workload.arrivals.rate_per_s": [2]}), workers=0)
    loaded = load_sweep_results(out)
    assert len(loaded) == 1 and loaded.attrs["factors"] == ["workload.arrivals.rate_per_s"]
