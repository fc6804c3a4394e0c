"""Best-of marks and Pareto fronts that a decision can rest on: an overloaded run is flagged and
never best, ties share the mark, and sweep fronts compare configurations only within one
workload condition."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sim.experiment import Comparison, RunDigest
from sim.metrics.latency import attainment_level, overloaded
from sim.report.sweep_figures import pareto, pareto_table
from sim.report.terminal import comparison_rows
from sim.spec.errors import SpecError
from sim.sweep import load_sweep

SLO = {"ttft_p99": {"target_s": 0.8, "measured_s": 0.3, "met": True},
       "e2e_p99": {"target_s": 30.0, "measured_s": 10.0, "met": True}}


def summary(cost: float, ttft: float, attainment: float = 1.0, unfinished: int = 3, total: int = 10_000,
            **extra: Any) -> dict[str, Any]:
    """A run's summary with the fields the comparison table reads."""
    return {"requests_total": total, "requests_unfinished": unfinished, "requests_rejected": 0,
            "slo_attainment": attainment, "slo": SLO, "ttft_p99_s": ttft, "cost_usd_per_1m_requests": cost,
            **extra}


def comparison_of(runs: dict[str, list[dict[str, Any]]]) -> Comparison:
    """A comparison of hand-made summaries (one per replication), no simulation."""
    digests = {name: [RunDigest(name, k, s, {}, {}, pd.DataFrame(), 0.0) for k, s in enumerate(summaries)]
               for name, summaries in runs.items()}
    scenarios = [SimpleNamespace(name=name) for name in runs]
    return Comparison(scenarios, digests, len(next(iter(runs.values()))))  # type: ignore[arg-type]


def row(comparison: Comparison, metric: str) -> dict[str, Any]:
    return next(r for r in comparison_rows(comparison) if r["metric"] == metric)


# ------------------------------------------------------------------------------------------
# Overloaded runs
# ------------------------------------------------------------------------------------------


def test_attainment_level_is_the_strictest_percentile_of_the_slo() -> None:
    assert attainment_level(["ttft_p99", "e2e_p90"]) == 0.99
    assert attainment_level(["e2e_p90"]) == 0.9
    assert attainment_level([]) is None


def test_overloaded_needs_low_attainment_and_more_unserved_than_the_slo_allows() -> None:
    """10,000 requests under a p99 SLO allow 100 misses: 101 unfinished with attainment 0.98 is
    overloaded; 100 unfinished is not (in-flight requests at the horizon); low attainment with
    few unfinished (a slow WAN) is a missed SLO, not overload; no SLO, no verdict."""
    assert overloaded(summary(1.0, 0.3, attainment=0.98, unfinished=101))
    assert not overloaded(summary(1.0, 0.3, attainment=0.98, unfinished=100))
    assert not overloaded(summary(1.0, 0.3, attainment=0.5, unfinished=3))
    assert not overloaded(summary(1.0, 0.3, attainment=0.995, unfinished=5000))
    assert not overloaded({**summary(1.0, 0.3, attainment=0.1, unfinished=5000), "slo": {}})
    rejected = {**summary(1.0, 0.3, attainment=0.9, unfinished=0), "requests_rejected": 2000}
    assert overloaded(rejected)


def test_an_overloaded_run_is_flagged_with_its_unfinished_count_and_never_best() -> None:
    """The overloaded scenario is cheapest per request and fastest to first token among the
    requests it finished, yet another gets both marks, and the first row flags it."""
    comparison = comparison_of({
        "fast_cheap_overloaded": [summary(0.5, 0.1, attainment=0.4, unfinished=6000)] * 2,
        "right_sized": [summary(2.0, 0.3), summary(2.1, 0.31)],
        "oversized": [summary(9.0, 0.6), summary(9.2, 0.61)],
    })
    assert comparison.overloaded("fast_cheap_overloaded") == [0, 1]
    flag = comparison_rows(comparison)[0]
    assert flag["metric"] == "overloaded"
    assert flag["cells"]["fast_cheap_overloaded"] == "OVERLOADED: 6,000 unfinished"
    assert flag["cells"]["right_sized"] == "no"
    assert row(comparison, "cost_usd_per_1m_requests")["best"] == {"right_sized"}
    assert row(comparison, "ttft_p99_s")["best"] == {"right_sized"}
    assert "6,000" in row(comparison, "requests_unfinished")["cells"]["fast_cheap_overloaded"]


def test_no_flag_row_without_overload() -> None:
    comparison = comparison_of({"a": [summary(1.0, 0.3)] * 2, "b": [summary(2.0, 0.4)] * 2})
    assert all(r["metric"] != "overloaded" for r in comparison_rows(comparison))


def test_a_real_overloaded_run_is_flagged(scenarios_dir: Path) -> None:
    """A real overloaded run: S1's two L40S at a steady 20 req/s, far beyond what they carry
    (base.yaml: they carry the 5.4 req/s peak within the SLO), is flagged by compare."""
    import sim

    comparison = sim.compare([scenarios_dir / "s1_local.yaml"], replications=1, workers=1, overrides=[
        "workload.arrivals={process: poisson, rate_per_s: 20}", "horizon=20min", "warmup=2min"])
    run = comparison.runs["s1_local"][0].summary
    assert run["slo_attainment"] < 0.99 and run["requests_unfinished"] > 0.01 * run["requests_total"]
    assert comparison.overloaded("s1_local") == [0]
    flag = comparison_rows(comparison)[0]
    assert flag["cells"]["s1_local"].startswith("OVERLOADED: ")


# ------------------------------------------------------------------------------------------
# Ties
# ------------------------------------------------------------------------------------------


def test_ties_share_the_best_mark() -> None:
    """Two placements that serve identically (S1 and S4 both serve on the same premises GPUs)
    both get the mark when they beat the third beyond noise."""
    same = [summary(2.0, 0.30), summary(2.2, 0.32)]
    comparison = comparison_of({"s1": same, "s4": same, "s2": [summary(5.0, 0.5), summary(5.3, 0.52)]})
    assert row(comparison, "ttft_p99_s")["best"] == {"s1", "s4"}
    assert row(comparison, "cost_usd_per_1m_requests")["best"] == {"s1", "s4"}


def test_a_tie_that_does_not_beat_the_rest_beyond_noise_is_no_best() -> None:
    same = [summary(2.0, 0.30), summary(2.2, 0.32)]
    noisy = [summary(1.0, 0.31), summary(3.5, 0.31)]  # mean 2.25: not clearly worse than 2.1
    comparison = comparison_of({"s1": same, "s4": same, "s2": noisy})
    assert row(comparison, "cost_usd_per_1m_requests")["best"] == set()


# ------------------------------------------------------------------------------------------
# Pareto fronts per workload condition
# ------------------------------------------------------------------------------------------


def sweep_summary(conditions: list[str]) -> pd.DataFrame:
    """Two GPU choices at two arrival rates, hand-made: at 2 req/s both choices are cheaper and
    faster than either at 8 req/s; within each rate, L4 is cheaper and L40S faster."""
    frame = pd.DataFrame({
        "config": ["a", "b", "c", "d"], "base": ["s1"] * 4,
        "workload.arrivals.rate_per_s": [2, 2, 8, 8],
        "sites.premises.pools[0].gpu": ["l4", "l40s", "l4", "l40s"],
        "cost_usd_per_1m_requests": [1.0, 3.0, 2.0, 4.0],
        "ttft_p99_s": [0.4, 0.2, 0.9, 0.5],
        "exposure_score": [0.0, 0.0, 0.0, 0.0],
    })
    frame.attrs = {"factors": ["workload.arrivals.rate_per_s", "sites.premises.pools[0].gpu"],
                   "conditions": conditions}
    return frame


def test_pareto_front_is_computed_per_workload_condition() -> None:
    """Pooled, the 8 req/s configurations are dominated by the 2 req/s ones (cheaper and faster
    because the load is lower, not because of a choice). Per rate, each rate keeps both GPU
    choices: the cheaper-but-slower L4 and the faster-but-dearer L40S."""
    pooled = pareto_table(sweep_summary([]))
    assert set(zip(pooled["workload.arrivals.rate_per_s"], pooled["sites.premises.pools[0].gpu"], strict=True)) \
        == {(2, "l4"), (2, "l40s")}
    per_rate = pareto_table(sweep_summary(["workload.arrivals.rate_per_s"]))
    assert list(per_rate.columns[:3]) == ["workload.arrivals.rate_per_s", "base", "sites.premises.pools[0].gpu"]
    assert list(zip(per_rate["workload.arrivals.rate_per_s"], per_rate["sites.premises.pools[0].gpu"],
                    strict=True)) == [(2, "l4"), (2, "l40s"), (8, "l4"), (8, "l40s")]


def test_pareto_figure_has_one_panel_per_condition() -> None:
    fig = pareto(sweep_summary(["workload.arrivals.rate_per_s"]))
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["rate_per_s=2", "rate_per_s=8"]


def test_conditions_default_by_path_and_can_be_listed(scenarios_dir: Path) -> None:
    """Traffic and WAN are conditions by default; pool GPUs are decisions. An explicit list
    replaces the default."""
    base = {"name": "x", "base": [str(scenarios_dir / "s1_local.yaml")], "factors": {
        "workload.arrivals.rate_per_s": [2, 4], "links.wan.rtt": ["10ms", "50ms"],
        "sites.premises.pools[0].gpu": ["l4", "l40s"], "lifecycle.monitor.label_fraction": [0.1, 0.2]}}
    assert load_sweep(base).conditions == ["workload.arrivals.rate_per_s", "links.wan.rtt"]
    explicit = load_sweep({**base, "conditions": ["lifecycle.monitor.label_fraction"]})
    assert explicit.conditions == ["lifecycle.monitor.label_fraction"]


def test_a_condition_that_is_no_factor_is_a_validation_error(scenarios_dir: Path) -> None:
    spec = {"name": "x", "base": [str(scenarios_dir / "s1_local.yaml")],
            "factors": {"workload.arrivals.rate_per_s": [2, 4]}, "conditions": ["links.wan.rtt"]}
    with pytest.raises(SpecError) as caught:
        load_sweep(spec)
    text = str(caught.value)
    assert "conditions[0]" in text and "links.wan.rtt" in text and "not a factor" in text


def test_pareto_mask_ignores_rows_of_other_conditions() -> None:
    """Sanity of the per-condition mask against a brute-force check on random data."""
    from sim.report.sweep_figures import pareto_within_conditions

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"base": ["s"] * 40, "workload.arrivals.rate_per_s": rng.integers(0, 3, 40),
                          "cost_usd_per_1m_requests": rng.random(40), "ttft_p99_s": rng.random(40)})
    frame.attrs = {"factors": ["workload.arrivals.rate_per_s"], "conditions": ["workload.arrivals.rate_per_s"]}
    mask = pareto_within_conditions(frame, ["cost_usd_per_1m_requests", "ttft_p99_s"])
    values = frame[["cost_usd_per_1m_requests", "ttft_p99_s"]].to_numpy()
    rates = frame["workload.arrivals.rate_per_s"].to_numpy()
    for i in range(40):
        same = rates == rates[i]
        dominated = any(np.all(values[j] <= values[i]) and np.any(values[j] < values[i])
                        for j in np.flatnonzero(same))
        assert mask[i] == (not dominated)
