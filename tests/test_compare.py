"""compare: replications, confidence intervals and common random numbers across scenarios."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import sim
from sim.experiment import Comparison, RunDigest, mean_ci

SHORT = ["horizon=40min", "warmup=5min", "lifecycle.drift[0].at=20min"]


@pytest.fixture(scope="module")
def comparison(request) -> Comparison:
    scenarios = Path(request.config.rootpath) / "scenarios"
    return sim.compare([scenarios / "s1_local.yaml", scenarios / "s2_cloud_training.yaml"],
                       replications=3, workers=2, overrides=SHORT)


def test_mean_ci_is_the_student_t_interval() -> None:
    """mean ± t(0.975, n-1) x s / sqrt(n), by hand for a small sample; None values are left out."""
    values = [1.0, 2.0, 4.0, None]
    mean, low, high, n = mean_ci(values)
    half = stats.t.ppf(0.975, 2) * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert n == 3
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert mean_ci([None, None])[3] == 0
    assert math.isnan(mean_ci([5.0])[1])


def test_every_scenario_has_every_replication_in_order(comparison: Comparison) -> None:
    """R replications per scenario, numbered 0..R-1, whatever order the workers finished in."""
    assert comparison.replications == 3
    for name in comparison.names:
        assert [run.replication for run in comparison.runs[name]] == [0, 1, 2]


def test_replication_k_uses_the_same_requests_in_every_scenario(comparison: Comparison) -> None:
    """Common random numbers: for a given k, S1 and S2 serve the same number of requests (same
    arrivals and lengths); different k differ."""
    totals = {name: [run.summary["requests_total"] for run in comparison.runs[name]] for name in comparison.names}
    s1, s2 = totals["s1_local"], totals["s2_cloud_training"]
    assert s1 == s2
    assert len(set(s1)) == 3  # independent across k


def test_results_do_not_depend_on_the_number_of_workers(request) -> None:
    """The same comparison on 1 and on 2 workers gives identical summaries."""
    scenarios = Path(request.config.rootpath) / "scenarios"
    files = [scenarios / "s1_local.yaml"]
    one = sim.compare(files, replications=2, workers=1, overrides=["horizon=10min", "warmup=1min"])
    two = sim.compare(files, replications=2, workers=2, overrides=["horizon=10min", "warmup=1min"])
    for a, b in zip(one.runs["s1_local"], two.runs["s1_local"], strict=True):
        assert a.summary == b.summary


def test_confidence_intervals_shrink_as_replications_grow() -> None:
    """With values drawn from one distribution, the CI half-width falls roughly as 1/sqrt(R):
    checked on the mean across many synthetic comparisons to keep the test exact and fast."""
    rng = np.random.default_rng(11)
    widths = {}
    for r in (3, 12, 48):
        halves = []
        for _ in range(200):
            mean, low, high, _ = mean_ci(list(rng.normal(10.0, 2.0, r)))
            halves.append((high - low) / 2)
        widths[r] = float(np.mean(halves))
    assert widths[3] > widths[12] > widths[48]
    # t(0.975, R-1) x sigma x c4(R) / sqrt(R): within 10% of theory at R = 48
    assert widths[48] == pytest.approx(stats.t.ppf(0.975, 47) * 2.0 / math.sqrt(48), rel=0.1)


def test_comparison_ci_shrinks_with_more_replications(request) -> None:
    """On the simulator itself: the CI of mean TTFT from 6 replications is narrower than from 2."""
    scenarios = Path(request.config.rootpath) / "scenarios"
    small = sim.compare([scenarios / "s1_local.yaml"], replications=2, workers=2,
                        overrides=["horizon=10min", "warmup=1min"])
    large = sim.compare([scenarios / "s1_local.yaml"], replications=6, workers=2,
                        overrides=["horizon=10min", "warmup=1min"])
    width = {name: (c.metric("ttft_mean_s")["ci_high"] - c.metric("ttft_mean_s")["ci_low"]).iloc[0]
             for name, c in (("small", small), ("large", large))}
    assert width["large"] < width["small"]


def test_s2_is_clearly_slower_to_first_token_than_s1(comparison: Comparison) -> None:
    """The paired test sees the WAN: S1 beats S2 on TTFT p50 beyond noise, not the other way."""
    assert comparison.clearly_better("ttft_p50_s", "s1_local", "s2_cloud_training")
    assert not comparison.clearly_better("ttft_p50_s", "s2_cloud_training", "s1_local")


def test_pooled_percentiles_pool_the_requests(comparison: Comparison) -> None:
    """The pooled p99 is the 99th percentile of all replications' requests together."""
    runs: list[RunDigest] = comparison.runs["s1_local"]
    pooled = np.concatenate([run.latency["ttft_s"] for run in runs])
    assert comparison.pooled_percentile("s1_local", "ttft_s", 99) == pytest.approx(np.percentile(pooled, 99))


def test_duplicate_scenario_names_are_refused(request) -> None:
    """Two scenarios with one name would mix their replications: a SpecError says so."""
    path = Path(request.config.rootpath) / "scenarios" / "s1_local.yaml"
    with pytest.raises(sim.SpecError, match="share the name"):
        sim.compare([path, path], replications=1)
