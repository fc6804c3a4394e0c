"""Confidence intervals that stay in their metric's domain, and the warning for too few
replications (`sim.experiment.mean_ci`, `metric_domain`; `sim.report.terminal`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import _plus_minus
from sim.experiment import mean_ci, metric_domain
from sim.report.terminal import few_replications_warning, format_interval


@pytest.mark.parametrize(("name", "domain"), [
    ("slo_attainment", (0.0, 1.0)), ("availability_slo", (0.0, 1.0)), ("burst_share", (0.0, 1.0)),
    ("pools.cloud/burst.requests_share", (0.0, 1.0)), ("gpu_utilisation.premises/gpus", (0.0, 1.0)),
    ("classes.general.slo_attainment", (0.0, 1.0)), ("degraded_requests", (0.0, math.inf)),
    ("experiments_completed", (0.0, math.inf)), ("cost_usd", (0.0, math.inf)), ("ttft_p99_s", (0.0, math.inf)),
])
def test_each_metric_has_its_domain(name: str, domain: tuple[float, float]) -> None:
    assert metric_domain(name) == domain


def test_a_count_near_zero_keeps_its_interval_above_zero_by_hand() -> None:
    """Experiments completed 0, 0, 7 over three replications: mean 7/3, standard deviation
    sqrt(49/3) = 4.041, t(0.975, 2) = 4.303, half-width 4.303 x 4.041 / sqrt(3) = 10.04: the
    Student-t interval [-7.7, 12.4] is cut to [0, 12.4]."""
    mean, low, high, n = mean_ci([0.0, 0.0, 7.0], domain=metric_domain("experiments_completed"))
    half = 4.302652729911275 * math.sqrt(49 / 3) / math.sqrt(3)
    assert (mean, n) == (pytest.approx(7 / 3), 3)
    assert low == 0.0 and high == pytest.approx(7 / 3 + half)
    assert half == pytest.approx(10.04, abs=0.01)


def test_a_share_near_one_keeps_its_interval_below_one() -> None:
    mean, low, high, _ = mean_ci([0.999, 1.0, 0.98], domain=metric_domain("slo_attainment"))
    assert high == 1.0 and 0.0 <= low < mean < high


@settings(max_examples=200, deadline=None)
@given(replications=st.integers(2, 30), fraction=st.booleans(), data=st.data())
def test_intervals_stay_in_their_domain_for_any_replications(replications: int, fraction: bool,
                                                            data: st.DataObject) -> None:
    """Any replications >= 2 of values in the domain: the interval lies in the domain and
    holds the mean."""
    name = "slo_attainment" if fraction else "requests_failed"
    top = 1.0 if fraction else 1e6
    values = data.draw(st.lists(st.floats(0.0, top), min_size=replications, max_size=replications))
    low_bound, high_bound = metric_domain(name)
    mean, low, high, n = mean_ci(values, domain=(low_bound, high_bound))
    assert n == replications
    assert low_bound <= low <= mean + 1e-9 * max(1.0, abs(mean))
    assert mean - 1e-9 * max(1.0, abs(mean)) <= high <= high_bound


def test_an_unbounded_difference_keeps_the_symmetric_interval() -> None:
    """Paired differences (used to call a scenario 'best') may be negative: no domain, no cut."""
    mean, low, high, _ = mean_ci([-1.0, 0.5, -2.0])
    assert low < 0 and mean - low == pytest.approx(high - mean)


def test_a_cut_interval_is_shown_as_a_range_and_a_whole_one_with_plus_minus() -> None:
    assert format_interval(7 / 3, 0.0, 12.37, "") == " (0 to 12)"
    assert format_interval(10.0, 9.0, 11.0, "") == " ± 1"
    assert format_interval(0.9993, 0.9979, 1.0, "%") == " (99.79% to 100.00%)"
    assert format_interval(1.0, math.nan, math.nan, "") == ""
    assert _plus_minus(7 / 3, 0.0, 12.37) == "2.333 (0 to 12)"
    assert _plus_minus(10.0, 9.0, 11.0) == "10 ± 1"


def test_too_few_replications_get_one_warning_with_the_rule() -> None:
    assert few_replications_warning(3) == "" and few_replications_warning(10) == ""
    two = few_replications_warning(2)
    assert "12.7 standard errors" in two and "-r 3" in two
    assert "one replication" in few_replications_warning(1)
    assert np.isclose(float(two.split("spans ")[1].split(" ")[0]), 12.7)
