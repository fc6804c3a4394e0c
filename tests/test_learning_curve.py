"""What a retraining buys, and label-free monitoring.

The learning curve (`sim.world.lifecycle.remaining_share`, spec `LearningCurve`): a version
fine-tuned on n fresh labelled samples keeps (1 + n / n0)^(-beta) of a drift's excess error
(full fine-tuning) or 1 - lora_share x (1 - that) (LoRA); samples served before the drift do not
count. Checked by hand, then end to end: a smaller training sample recovers to a worse error,
and the compare table says so; a candidate that does not beat the serving version is rejected
at validation and not rolled out. Label-free monitoring watches an input feature that shifts
with the drift: it detects without labels, sends none, and stays quiet on a stationary stream.

Small scenarios (`SHORT`): S2 or S4 on a constant 2 requests/s for 3 hours, an abrupt drift
from 0.05 to 0.25 at 1 h, every answer labelled 5 min after it completes, 1000 samples per
retraining on a steep learning curve (beta 0.5, n0 20) so that a few hundred samples recover:
each run takes about a second.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.report.terminal import comparison_rows
from sim.spec.errors import SpecError
from sim.spec.scenario import LearningCurve
from sim.world import World
from sim.world.lifecycle import DriftModel, remaining_share

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"
S2 = SCENARIOS_DIR / "s2_cloud_training.yaml"
S4 = SCENARIOS_DIR / "s4_cloud_served_local_inference.yaml"
ONSET_S = 3600.0
SHORT = [
    "horizon=3h", "warmup=1min", "lifecycle.development=null",
    "workload.arrivals={process: poisson, rate_per_s: 2}",
    "lifecycle.base_error_rate=0.05",
    f"lifecycle.drift=[{{kind: abrupt, at: {ONSET_S}s, error_rate: 0.25, feature_shift: 1.0}}]",
    "lifecycle.monitor.label_fraction=1", "lifecycle.monitor.label_delay=5min",
    "lifecycle.retraining.samples=1000",
    "lifecycle.retraining.learning_curve={beta: 0.5, n0: 20, lora_share: 0.8}",
]


def _error(n: float, share: float = 0.8, beta: float = 0.5, n0: float = 20.0) -> float:
    """The error a LoRA fine-tune on n fresh samples reaches on SHORT's drift, by the formula."""
    full = (1 + n / n0) ** -beta
    return 0.05 + 0.2 * (1 - share * (1 - full))


# --------------------------------------------------------------------------------------------
# The curve by hand
# --------------------------------------------------------------------------------------------


def test_learning_curve_by_hand() -> None:
    """Defaults beta 0.3, n0 1000, LoRA 0.8 (ENGINES.md §6.1). Full fine-tuning keeps
    (1 + n/1000)^-0.3: 1 at n = 0, 2^-0.3 = 0.8123 at n = n0, 4^-0.3 = 0.6598 at 3000, 0 with
    unlimited data; LoRA keeps 1 - 0.8 x (1 - full): 1, 0.8498, 0.7278 and 0.2 (it never wins
    more than 80% of the gain)."""
    curve = LearningCurve()
    assert (curve.beta, curve.n0, curve.lora_share) == (0.3, 1000.0, 0.8)
    full = [remaining_share(n, curve, "full") for n in (0.0, 1000.0, 3000.0, math.inf)]
    lora = [remaining_share(n, curve, "lora") for n in (0.0, 1000.0, 3000.0, math.inf)]
    np.testing.assert_allclose(full, [1.0, 0.812252, 0.659754, 0.0], atol=1e-6)
    np.testing.assert_allclose(lora, [1.0, 0.849802, 0.727803, 0.2], atol=1e-6)
    assert all(f < lo for f, lo in zip(full[1:], lora[1:], strict=True))  # LoRA learns less


def test_only_samples_served_during_the_drift_are_fresh() -> None:
    """Freshness: of samples served at 10, 3599, 3600 and 5000 s, the two from the abrupt
    drift's onset (3600 s) on teach it; a recurring drift counts only samples inside its
    windows. The candidate a retraining makes on them (half uploaded: training_sample 0.5)
    learns from 2 x 0.5 = 1 fresh sample, not 2: it keeps the LoRA share of n = 1."""
    scenario = sim.load_scenario(S4, [
        *SHORT, "placement.training_sample=0.5",
        f"lifecycle.drift=[{{kind: abrupt, at: {ONSET_S}s, error_rate: 0.25}},"
        " {kind: recurring, at: 1000s, period: 1000s, duration: 100s, error_rate: 0.3}]"])
    served = np.array([10.0, 3599.0, 3600.0, 5000.0])
    assert DriftModel(scenario).fresh_samples(served) == {0: 2, 1: 1}  # 5000 s is in a window
    lifecycle = World(scenario).lifecycle
    residual, learnt = lifecycle.candidate(served, 0.5)
    assert learnt == {0: 1.0, 1: 0.5}
    curve = scenario.lifecycle.retraining.learning_curve
    assert residual == {0: remaining_share(1.0, curve, "lora"), 1: remaining_share(0.5, curve, "lora")}
    assert lifecycle.candidate(served[:2], 0.5) == ({}, {})  # all stale: nothing learnt


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


def test_a_smaller_sample_recovers_to_a_worse_error_and_compare_shows_it() -> None:
    """S4 uploading all of its 1000 samples against S4 uploading 20% (200): the same detection
    and collection, less exposure, a worse recovered error (formula: 0.05 + 0.2 x (1 - 0.8 x
    (1 - (1 + n/20)^-0.5)): 0.1124 at 1000, 0.1382 at 200), both within the tolerance
    (0.05 + 0.5 x 0.2 = 0.15), and the compare table's "recovered error rate" row shows the two,
    the larger sample best."""
    whole = sim.load_scenario(S4, [*SHORT, "name=whole", "placement.training_sample=1.0"])
    sample = sim.load_scenario(S4, [*SHORT, "name=sample", "placement.training_sample=0.2"])
    comparison = sim.compare([whole, sample], replications=1, workers=1)
    summaries = {name: comparison.runs[name][0].summary for name in ("whole", "sample")}
    expected = {"whole": _error(1000), "sample": _error(200)}
    assert (round(expected["whole"], 4), round(expected["sample"], 4)) == (0.1124, 0.1382)
    for name, reached in expected.items():
        assert summaries[name]["recovered"] is True
        assert summaries[name]["recovered_error_rate"] == pytest.approx(reached, rel=1e-12)
    assert summaries["sample"]["exposed_records"] < summaries["whole"]["exposed_records"]
    row = next(r for r in comparison_rows(comparison) if r["label"] == "recovered error rate")
    assert row["cells"] == {"whole": "11.24%", "sample": "13.82%"}
    assert row["best"] == {"whole"}


def test_a_sample_that_lands_above_the_tolerance_is_no_recovery() -> None:
    """200 uploaded samples (20%) leave 1 - 0.8 x (1 - 11^-0.5) = 0.441 of the excess: within
    the default tolerance 0.5, recovered; with recovery_tolerance 0.4 the same model rolls out
    (it beats the stale one) but is no recovery: recovery time and recovered error are None,
    and the requests it serves still count as degraded."""
    base = [*SHORT, "placement.training_sample=0.2"]
    loose = sim.simulate(sim.load_scenario(S4, base))
    strict = sim.simulate(sim.load_scenario(S4, [*base, "lifecycle.recovery_tolerance=0.4"]))
    assert loose.summary["recovered_error_rate"] == pytest.approx(_error(200), rel=1e-12)
    stages = strict.tables["lifecycle"]
    assert (stages["stage"] == "rollout").sum() == 1
    assert not (stages["stage"] == "recovered").any()
    assert strict.summary["recovery_time_s"] is None and strict.summary["recovered_error_rate"] is None
    assert strict.summary["degraded_requests"] > loose.summary["degraded_requests"]


def test_a_candidate_that_does_not_beat_the_serving_model_is_not_rolled_out() -> None:
    """Scheduled retraining every hour from 40 min, the drift at 1 h. The run at 40 min trains
    on labels of answers served before the drift: it learns nothing about it (0 fresh
    samples), so when it is validated, after the onset, its candidate is no better than the
    stale model. Validation rejects it (a `rejected` row saying why and that the serving version
    stays): nothing is distributed or rolled out and no version is made. The run at 1 h 40 min
    has fresh labels, so its candidate rolls out as version 1."""
    scenario = sim.load_scenario(S2, [*SHORT, "lifecycle.retraining.policy=scheduled",
                                      "lifecycle.retraining.first_at=40min", "lifecycle.retraining.every=1h"])
    stages = sim.simulate(scenario).tables["lifecycle"]
    collects = stages.loc[stages["stage"] == "collect", "start_s"].tolist()
    assert collects[:2] == [2400.0, 6000.0]
    first = stages[(stages["start_s"] >= collects[0]) & (stages["start_s"] < collects[1])]
    assert first["stage"].tolist() == ["collect", "upload", "acquire_gpus", "train", "detected", "validate",
                                       "rejected"]
    validate, rejected = first.iloc[-2], first.iloc[-1]
    assert validate["start_s"] > ONSET_S  # validated after the onset, on the drifted inputs
    assert "candidate error 0.2500 from 0 fresh samples, serving 0.2500" in validate["detail"]
    assert rejected["detail"].startswith("rejected at validation: the candidate does not beat the serving version v0")
    assert rejected["detail"].endswith("the serving version stays")
    rollouts = stages[stages["stage"] == "rollout"]
    assert rollouts["version"].iloc[0] == 1  # the rejected candidate made no version
    assert rollouts["start_s"].iloc[0] > collects[1]


# --------------------------------------------------------------------------------------------
# Label-free monitoring
# --------------------------------------------------------------------------------------------

FEATURE = ["lifecycle.monitor.signal=feature", "lifecycle.monitor.detector=psi", "lifecycle.monitor.params={}",
           "lifecycle.monitor.label_delay=30min"]


def test_label_free_monitoring_detects_without_sending_labels() -> None:
    """S4 (monitor on premises, aggregates only) with PSI on the feature: the 1-standard-deviation
    shift at 1 h is seen at the first monitor tick after it (5 min: at 2 requests/s the tick
    brings about 600 shifted values, and a window of 500 of them against the reference gives a
    PSI near 1, far above 0.25), long before the first label of a drifted answer arrives (30 min
    after it completes), which is the earliest an error monitor could react. Nothing labelled
    travels for monitoring: only telemetry aggregates; labelled samples travel only as the
    retraining's training data."""
    feature = sim.simulate(sim.load_scenario(S4, [*SHORT, *FEATURE]))
    delay = feature.summary["detection_delay_s"]
    interval = 300.0
    assert delay == interval
    errors = sim.simulate(sim.load_scenario(S4, [*SHORT, "lifecycle.monitor.label_delay=30min"]))
    assert errors.summary["detection_delay_s"] > 30 * 60
    transfers = feature.tables["bulk_transfers"]
    monitoring = transfers[transfers["purpose"] == "monitoring"]
    assert set(monitoring["data_class"]) == {"telemetry_aggregate"}
    labelled = transfers[transfers["data_class"] == "labelled_sample"]
    assert set(labelled["purpose"]) == {"training data"}


def test_label_free_monitoring_is_quiet_on_a_stationary_stream() -> None:
    """No drift for the first 12 hours of the seeds' day (about 96,000 feature values): PSI
    never fires. Bound: with no shift, a window of 500 against a reference of 500 on 10 bins
    has PSI ~ (1/500 + 1/500) x chi-square(9), so the threshold 0.25 is chi-square 62.5, p about
    5e-10 per comparison; over the ~1,900 comparisons (one every 50 values) the chance of any
    false alarm is below 1e-5, so the test expects none."""
    result = sim.simulate(sim.load_scenario(S4, [*FEATURE, "horizon=12h", "lifecycle.drift=[]",
                                                 "lifecycle.development=null"]))
    assert result.summary["requests_total"] > 90_000
    assert result.summary["detections"] == 0


def test_a_feature_monitor_needs_a_drift_that_moves_the_feature() -> None:
    """A label-free monitor on drift events that all leave the feature alone could never fire:
    the scenario is refused, naming lifecycle.monitor.signal."""
    with pytest.raises(SpecError) as error:
        sim.load_scenario(S4, [*FEATURE, "lifecycle.drift=[{kind: abrupt, at: 6h, error_rate: 0.25}]"])
    assert [issue.path for issue in error.value.issues] == ["lifecycle.monitor.signal"]
    assert "feature_shift" in str(error.value)
