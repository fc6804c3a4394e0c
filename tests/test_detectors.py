"""Drift detectors (`sim.detectors`): River's detectors run unchanged, our PSI, and errors.

The streams are seeded: a 0/1 error stream whose error rate jumps from 5 % to 30 %, and a
Gaussian feature whose mean moves by one standard deviation.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift
from river.drift import binary

from sim.detectors import (
    FACTORIES,
    PSI,
    SIGNALS,
    _adwin_core,
    check_params,
    check_signal,
    detect,
    feed,
    make_detector,
    population_stability_index,
    psi_between,
)
from sim.spec.errors import SpecError
from sim.spec.scenario import DETECTORS, Monitor

ERRORS_CHANGE = 3000
FEATURE_CHANGE = 2000


@pytest.fixture(scope="module")
def errors() -> np.ndarray:
    """3000 Bernoulli(0.05) values, then 3000 Bernoulli(0.3), as ints."""
    rng = np.random.default_rng(20240601)
    before = rng.random(ERRORS_CHANGE) < 0.05
    after = rng.random(3000) < 0.3
    return np.concatenate([before, after]).astype(np.int64)


@pytest.fixture(scope="module")
def feature() -> np.ndarray:
    """2000 values from N(0, 1), then 2000 from N(1, 1)."""
    rng = np.random.default_rng(7)
    return np.concatenate([rng.normal(0.0, 1.0, FEATURE_CHANGE), rng.normal(1.0, 1.0, 2000)])


def river_hits(detector: Any, values: np.ndarray) -> list[int]:
    """Detections found the way River's own examples find them."""
    hits = []
    for i, x in enumerate(values.tolist()):
        detector.update(x)
        if detector.drift_detected:
            hits.append(i)
    return hits


# --------------------------------------------------------------------------------------------
# The family as the spec knows it
# --------------------------------------------------------------------------------------------


def test_registry_names_match_the_spec() -> None:
    """Every name a scenario may write has a factory and a signal row, and nothing else does."""
    literal = typing.get_args(Monitor.model_fields["detector"].annotation)
    assert set(FACTORIES) == set(DETECTORS) == set(literal) == set(SIGNALS)
    signals = set(typing.get_args(Monitor.model_fields["signal"].annotation))
    assert all(set(watched) <= signals for watched in SIGNALS.values())


def test_registry_maps_names_to_river_and_psi() -> None:
    """The names build River's classes (and our PSI), not look-alikes."""
    expected = {
        "adwin": drift.ADWIN,
        "page_hinkley": drift.PageHinkley,
        "kswin": drift.KSWIN,
        "ddm": binary.DDM,
        "eddm": binary.EDDM,
        "psi": PSI,
    }
    assert expected == FACTORIES


# --------------------------------------------------------------------------------------------
# detect() is River, run over an array
# --------------------------------------------------------------------------------------------

RIVER_CASES: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
    ("adwin", "errors", drift.ADWIN, {}),
    ("adwin", "errors", drift.ADWIN, {"delta": 0.01, "clock": 16}),
    ("adwin", "feature", drift.ADWIN, {}),
    ("page_hinkley", "errors", drift.PageHinkley, {}),
    ("page_hinkley", "feature", drift.PageHinkley, {"threshold": 20.0, "delta": 0.01}),
    ("kswin", "feature", drift.KSWIN, {"seed": 42}),
    ("ddm", "errors", binary.DDM, {}),
    ("eddm", "errors", binary.EDDM, {}),
]


@pytest.mark.parametrize(("name", "signal", "river_class", "params"), RIVER_CASES)
def test_detect_gives_rivers_detections(
    name: str, signal: str, river_class: Callable[..., Any], params: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    """`detect` reports exactly the indices River reports when driven by hand on the same values."""
    values = request.getfixturevalue(signal)
    expected = river_hits(river_class(**params), values)
    found = detect(name, values, **params)
    assert found.dtype == np.int64
    assert found.tolist() == expected
    assert expected, "a stream with a change should give the comparison something to compare"


SHIFT_CASES = [
    ("adwin", "errors"), ("adwin", "feature"), ("page_hinkley", "errors"), ("page_hinkley", "feature"),
    ("kswin", "feature"), ("ddm", "errors"), ("eddm", "errors"), ("psi", "feature"),
]


@pytest.mark.parametrize(("name", "signal"), SHIFT_CASES)
def test_each_detector_sees_the_shift(name: str, signal: str, request: pytest.FixtureRequest) -> None:
    """With default parameters every detector fires after the change; ADWIN and DDM hardly before."""
    values = request.getfixturevalue(signal)
    change = ERRORS_CHANGE if signal == "errors" else FEATURE_CHANGE
    hits = detect(name, values)
    assert np.any(hits >= change)
    if name in ("adwin", "ddm"):
        assert np.sum(hits < change) <= 3


# --------------------------------------------------------------------------------------------
# PSI
# --------------------------------------------------------------------------------------------


def test_psi_of_known_histograms_is_the_hand_computed_value() -> None:
    """PSI = sum((a - e) ln(a / e)) over shares; counts are normalised first."""
    found = population_stability_index([50, 30, 20], [30, 30, 40])
    by_hand = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0.0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert found == pytest.approx(by_hand, rel=1e-12)
    assert found == pytest.approx(0.240794, abs=1e-6)


def test_psi_floors_empty_bins_at_epsilon() -> None:
    """An empty bin counts as a share of 1e-4, so the index is large but finite."""
    found = population_stability_index([10, 0], [5, 5])
    by_hand = (0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert found == pytest.approx(by_hand, rel=1e-12)


def test_psi_of_identical_distributions_is_about_zero() -> None:
    """A sample against itself gives 0; two samples of one distribution give nearly 0."""
    rng = np.random.default_rng(3)
    sample = rng.normal(size=10_000)
    assert psi_between(sample, sample) == 0.0
    assert psi_between(sample, rng.normal(size=10_000)) < 0.01


def test_psi_flags_a_mean_shift_soon_after_it() -> None:
    """N(0,1) -> N(1,1) after 2000 values: nothing before, first detection within 600 values."""
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(1.0, 1.0, 4000)])
    hits = detect("psi", values)
    assert hits.size > 0
    assert 2000 <= hits[0] < 2600


def test_psi_stays_quiet_on_a_stationary_stream() -> None:
    """20000 values from one distribution: no detection, and the last index is well below 0.1."""
    values = np.random.default_rng(5).normal(size=20_000)
    detector = PSI()
    assert feed(detector, values) == []
    assert detector.psi < 0.1


def test_psi_learns_the_new_regime_after_a_detection() -> None:
    """After a detection the window becomes the reference, so a lasting shift is not flagged forever."""
    rng = np.random.default_rng(13)
    values = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(1.0, 1.0, 18_000)])
    hits = detect("psi", values)
    assert 1 <= hits.size <= 3
    checks = range(500 + 500 - 1, values.size, 50)
    against_first = [psi_between(values[:500], values[i - 499 : i + 1]) > 0.25 for i in checks]
    assert sum(against_first) > 300  # what a detector that never rebased would report


def test_psi_compares_when_the_window_fills_and_every_step_after() -> None:
    """Comparisons happen at the update that fills the window, then every `step` updates.

    A rising stream with threshold 0 makes every comparison a detection, which shows the schedule.
    """
    hits = detect("psi", np.arange(1000.0), threshold=0.0, reference_size=100, window_size=200, step=50)
    assert hits.tolist() == list(range(100 + 200 - 1, 1000, 50))


# --------------------------------------------------------------------------------------------
# Bad parameters, bad detectors, bad values
# --------------------------------------------------------------------------------------------


def test_unknown_parameter_names_the_parameter_and_suggests_one() -> None:
    """A typo is a SpecError at lifecycle.monitor.params.<name>, with did-you-mean and the allowed names."""
    with pytest.raises(SpecError) as caught:
        make_detector("adwin", {"delt": 0.01})
    (issue,) = caught.value.issues
    assert issue.path == "lifecycle.monitor.params.delt"
    assert "did you mean 'delta'?" in issue.message
    assert issue.allowed == "delta, clock, max_buckets, min_window_length, grace_period"


def test_psi_parameters_are_checked_like_rivers() -> None:
    """PSI's own names are validated from its signature; all bad names are reported at once."""
    issues = check_params("psi", {"windowsize": 100, "treshold": 0.1, "step": 10})
    assert [i.path for i in issues] == ["lifecycle.monitor.params.windowsize",
                                       "lifecycle.monitor.params.treshold"]
    assert "did you mean 'window_size'?" in issues[0].message
    assert "did you mean 'threshold'?" in issues[1].message
    assert check_params("psi", {"window_size": 100, "threshold": 0.1}) == []


def test_unknown_detector_is_a_spec_error() -> None:
    """An unknown name is a SpecError at lifecycle.monitor.detector, from make_detector and detect."""
    for call in (lambda: make_detector("adwn", {}), lambda: detect("adwn", [0.0, 1.0])):
        with pytest.raises(SpecError) as caught:
            call()
        (issue,) = caught.value.issues
        assert issue.path == "lifecycle.monitor.detector"
        assert "did you mean 'adwin'?" in issue.message


@pytest.mark.parametrize(
    ("name", "params"),
    [("kswin", {"alpha": 2.0}), ("eddm", {"alpha": 0.5, "beta": 0.9}), ("psi", {"bins": 1})],
)
def test_values_the_detector_rejects_are_spec_errors(name: str, params: dict[str, Any]) -> None:
    """A ValueError from the detector's constructor becomes a SpecError at lifecycle.monitor.params."""
    with pytest.raises(SpecError) as caught:
        make_detector(name, params)
    assert caught.value.issues[0].path == "lifecycle.monitor.params"


@pytest.mark.parametrize("params", [{"delta": 2.0}, {"delta": 0.0}, {"clock": 0}, {"max_buckets": 0}])
def test_adwin_values_are_range_checked_before_river_sees_them(params: dict[str, Any]) -> None:
    """River's ADWIN checks nothing (clock=0 panics in its Rust core), so we check its ranges."""
    (key,) = params
    with pytest.raises(SpecError) as caught:
        make_detector("adwin", params)
    assert caught.value.issues[0].path == f"lifecycle.monitor.params.{key}"


def test_whole_number_floats_are_counts_and_fractions_are_not(feature: np.ndarray) -> None:
    """YAML may give `window_size: 100.0`; it means 100. `50.5` is an error, not a crash."""
    assert detect("psi", feature, window_size=300.0).tolist() == detect("psi", feature, window_size=300).tolist()
    with pytest.raises(SpecError) as caught:
        make_detector("kswin", {"window_size": 50.5})
    assert caught.value.issues[0].path == "lifecycle.monitor.params.window_size"


@pytest.mark.parametrize("name", ["ddm", "eddm"])
def test_binary_detectors_refuse_real_values(name: str, feature: np.ndarray) -> None:
    """DDM and EDDM read 0/1 errors; a real-valued stream is an explained SpecError, not nonsense."""
    with pytest.raises(SpecError, match="0/1 error stream"):
        detect(name, feature)
    with pytest.raises(SpecError, match="0/1 error stream"):
        feed(make_detector(name), feature[:10])
    assert detect(name, [0, 1, 1, 0, True, False]).tolist() == []


def test_values_must_be_finite_numbers() -> None:
    """A NaN in the stream is reported, not fed to a detector that would silently misbehave."""
    with pytest.raises(SpecError, match="finite"):
        detect("adwin", [0.0, float("nan"), 1.0])


def test_check_signal_follows_the_table() -> None:
    """DDM/EDDM watch errors only, KSWIN/PSI a feature only, ADWIN/Page-Hinkley either."""
    for detector, watched in SIGNALS.items():
        for signal in ("errors", "feature"):
            issue = check_signal(detector, signal)
            if signal in watched:
                assert issue is None
            else:
                assert issue is not None and issue.path == "lifecycle.monitor.signal"
                assert issue.value == signal
    issue = check_signal("ddm", "feature")
    assert issue is not None and "adwin, page_hinkley, kswin, psi" in issue.message


# --------------------------------------------------------------------------------------------
# feed(): a live detector over batches
# --------------------------------------------------------------------------------------------


def feed_in_batches(name: str, values: np.ndarray, cuts: list[int]) -> list[int]:
    """Feed `values` split at `cuts` into one detector; hits as indices into `values`."""
    detector = make_detector(name, seed=0)
    hits: list[int] = []
    bounds = [0, *cuts, len(values)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        hits += [start + i for i in feed(detector, values[start:stop])]
    return hits


@pytest.mark.parametrize(("name", "signal"), SHIFT_CASES)
def test_feeding_batches_equals_one_detect(name: str, signal: str, request: pytest.FixtureRequest) -> None:
    """The monitor's batches (uneven, one empty) give the detections of one pass over all values."""
    values = request.getfixturevalue(signal)
    cuts = [1, 7, 7, 500, 1999, 2000, 2001, 3333]
    assert feed_in_batches(name, values, cuts) == detect(name, values).tolist()


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["adwin", "page_hinkley", "ddm", "psi"]),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=12).map(sorted),
)
def test_any_batching_equals_one_detect(name: str, cuts: list[int]) -> None:
    """Wherever the batches are cut, feeding them gives the same detections as one detect."""
    rng = np.random.default_rng(99)
    if name == "ddm":
        values = np.concatenate([rng.random(3000) < 0.05, rng.random(3000) < 0.3]).astype(float)
    else:
        values = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(1.0, 1.0, 3000)])
    assert feed_in_batches(name, values, cuts) == detect(name, values).tolist()


def test_kswin_is_reproducible_through_its_seed(feature: np.ndarray) -> None:
    """KSWIN samples at random: `seed` fixes it, and detect uses seed 0 unless told otherwise."""
    feature = feature[1500:2500]
    default = detect("kswin", feature)
    assert default.tolist() == detect("kswin", feature, seed=0).tolist()
    assert default.tolist() == river_hits(drift.KSWIN(seed=0), feature)
    assert feed(make_detector("kswin", {"seed": 5}, seed=0), feature) == river_hits(drift.KSWIN(seed=5), feature)


def test_adwin_fed_without_its_wrapper_is_adwin_driven_by_hand() -> None:
    """`feed` drives ADWIN's Rust core itself (`_run_adwin`): over a stream with four changes,
    fed in batches, it fires where ADWIN's own `update` does and leaves the detector in the
    same state (window, sum, variance, detections, flag), so feeding on by hand agrees too."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.random(20_000) < p for p in (0.05, 0.3, 0.1, 0.5, 0.02)]).astype(float)
    fast, slow = drift.ADWIN(), drift.ADWIN()
    assert _adwin_core(fast)
    hits = [start + i for start in range(0, len(values), 7_001) for i in feed(fast, values[start:start + 7_001])]
    assert hits == river_hits(slow, values)
    assert len(hits) >= 4

    def state(d: Any) -> tuple[Any, ...]:
        return d.width, d.total, d.variance, d.n_detections, d.drift_detected

    assert state(fast) == state(slow)
    tail = (rng.random(5_000) < 0.9).astype(float)
    assert feed(fast, tail) == [i for i, x in enumerate(tail) if slow.update(x) or slow.drift_detected]
    assert state(fast) == state(slow)


def test_a_detector_that_only_looks_like_adwin_is_fed_through_its_update() -> None:
    """A subclass of ADWIN may change `update`: it is not given the shortcut."""
    calls: list[float] = []

    class Counting(drift.ADWIN):  # type: ignore[misc]
        def update(self, x: float) -> None:
            calls.append(x)
            super().update(x)

    detector = Counting()
    assert not _adwin_core(detector)
    feed(detector, np.zeros(10))
    assert calls == [0.0] * 10
