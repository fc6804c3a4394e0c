"""The model lifecycle: drift, outcomes, monitoring, the recovery pipeline and vendor updates.

Three kinds of runs are used:

- `DriftModel` on its own, with drift schedules written for the test;
- the four seed scenarios as shipped (one day each, about 1.5 s), compared with each other:
  same seed means same requests, same outcome draws and same labels (common random numbers);
- a *certain* drift (CERTAIN): error rate 0 before an abrupt drift at 30 min and 1 after it,
  every request labelled at once, requests arriving at a constant 1/s for the first hour only.
  Outcomes then no longer depend on random draws (u < 0 never, u < 1 always), detection
  happens at the first monitor tick after the onset, and by the time the new version rolls
  out no request is left, so every stage time can be computed by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import sim
from sim.kernels.batching import ACTIVE, DONE, OFFLINE
from sim.metrics.invariants import check_invariants
from sim.record import RunRecord
from sim.result import Result, collect
from sim.spec.scenario import Scenario
from sim.world import World
from sim.world.lifecycle import DriftModel
from sim.world.serving import ServingPool

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"
BASE = SCENARIOS_DIR / "base.yaml"
S1 = SCENARIOS_DIR / "s1_local.yaml"
S2 = SCENARIOS_DIR / "s2_cloud_training.yaml"
S3 = SCENARIOS_DIR / "s3_local_training.yaml"
S4 = SCENARIOS_DIR / "s4_cloud_served_local_inference.yaml"
SEEDS = {"s1": S1, "s2": S2, "s3": S3, "s4": S4}

BASE_RATE = 0.05

# --------------------------------------------------------------------------------------------
# DriftModel: error rates of model versions over time
# --------------------------------------------------------------------------------------------


def _drift_model(*events: str, base: float = BASE_RATE) -> DriftModel:
    """A DriftModel for base.yaml with the drift list replaced by `events` (YAML flow mappings)."""
    scenario = sim.load_scenario(BASE, [f"lifecycle.base_error_rate={base}",
                                        f"lifecycle.drift=[{', '.join(events)}]"])
    return DriftModel(scenario)


def _rates(model: DriftModel, times: list[float], version: int = 0) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    return model.error_rate(t, np.full(t.shape, version))


def test_abrupt_drift_is_a_step_at_onset() -> None:
    """An abrupt drift at 100 s leaves the base rate before 100 s and the drift's rate from 100 s
    on (the step includes its onset)."""
    model = _drift_model("{kind: abrupt, at: 100s, error_rate: 0.3}")
    np.testing.assert_allclose(_rates(model, [0.0, 99.999, 100.0, 100.001, 1e6]),
                               [0.05, 0.05, 0.3, 0.3, 0.3])


def test_gradual_drift_ramps_linearly() -> None:
    """A gradual drift at 100 s over 200 s: base until 100 s, then base + (rate - base) x (t - 100)
    / 200, so 0.05 + 0.4 x 1/4 = 0.15 at a quarter, 0.25 at the midpoint (200 s), 0.45 from 300 s."""
    model = _drift_model("{kind: gradual, at: 100s, duration: 200s, error_rate: 0.45}")
    np.testing.assert_allclose(_rates(model, [50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 1e5]),
                               [0.05, 0.05, 0.15, 0.25, 0.35, 0.45, 0.45])


def test_recurring_drift_is_on_in_windows() -> None:
    """Recurring at 1000 s, 100 s every 600 s: drifted in [1000, 1100), [1600, 1700), ...; base
    before the first occurrence (even at a time whose phase would fall in a window) and between."""
    model = _drift_model("{kind: recurring, at: 1000s, period: 600s, duration: 100s, error_rate: 0.2}")
    times = [450.0, 999.0, 1000.0, 1099.0, 1100.0, 1599.0, 1600.0, 1650.0, 1700.0, 1000.0 + 6000.0]
    np.testing.assert_allclose(_rates(model, times),
                               [0.05, 0.05, 0.2, 0.2, 0.05, 0.05, 0.2, 0.2, 0.05, 0.2])


def test_a_version_keeps_its_share_of_each_events_excess() -> None:
    """A version fully adapted to an event (residual 0) serves at the base rate however drifted
    the time; one adapted only to the first of two events still suffers the second; one that
    keeps 0.4 of the first event's excess has 0.05 + 0.4 x 0.25 = 0.15 on it; a version number
    set by hand (unknown to the model) is adapted to nothing; a negative version (never served)
    reads as the base rate."""
    model = _drift_model("{kind: abrupt, at: 100s, error_rate: 0.3}",
                         "{kind: abrupt, at: 500s, error_rate: 0.2}")
    first = model.add_version(200.0, "retrained", dict.fromkeys(model.onsets_before(200.0), 0.0))
    both = model.add_version(600.0, "retrained", dict.fromkeys(model.onsets_before(600.0), 0.0))
    partly = model.add_version(600.0, "retrained", {0: 0.4})
    assert (first.keeps(0), first.keeps(1), both.keeps(1)) == (0.0, 1.0, 0.0)
    times = [50.0, 300.0, 700.0]
    np.testing.assert_allclose(_rates(model, times, 0), [0.05, 0.3, 0.3])
    np.testing.assert_allclose(_rates(model, times, first.version), [0.05, 0.05, 0.2])
    np.testing.assert_allclose(_rates(model, times, both.version), [0.05, 0.05, 0.05])
    np.testing.assert_allclose(_rates(model, times, partly.version), [0.05, 0.15, 0.2])
    np.testing.assert_allclose(_rates(model, times, 99), [0.05, 0.3, 0.3])
    np.testing.assert_allclose(_rates(model, times, -1), [0.05, 0.05, 0.05])


def test_uncovered_events_combine_by_maximum() -> None:
    """Several uncovered events do not add up: the excess is the largest one's. At 250 s an abrupt
    0.2 and a gradual ramp to 0.45 at its midpoint (0.05 + 0.4 / 2 = 0.25) give 0.25, not 0.45;
    at 150 s only the abrupt is on (0.2); from 300 s the ramp's 0.45."""
    model = _drift_model("{kind: abrupt, at: 100s, error_rate: 0.2}",
                         "{kind: gradual, at: 200s, duration: 100s, error_rate: 0.45}")
    np.testing.assert_allclose(_rates(model, [150.0, 250.0, 400.0]), [0.2, 0.25, 0.45])


def test_error_rate_is_vectorised_over_times_and_versions() -> None:
    """One call over mixed times and versions (any shape) equals one call per element."""
    model = _drift_model("{kind: abrupt, at: 100s, error_rate: 0.3}",
                         "{kind: gradual, at: 200s, duration: 100s, error_rate: 0.5}")
    model.add_version(150.0, "retrained", {0: 0.0})
    rng = np.random.default_rng(1)
    times = rng.uniform(0.0, 400.0, size=(6, 5))
    versions = rng.integers(-1, 3, size=(6, 5))
    together = model.error_rate(times, versions)
    assert together.shape == times.shape
    one_by_one = np.array([[model.error_rate(np.array([t]), np.array([v]))[0]
                            for t, v in zip(row_t, row_v, strict=True)]
                           for row_t, row_v in zip(times, versions, strict=True)])
    np.testing.assert_array_equal(together, one_by_one)


def test_feature_shift_sums_the_active_events() -> None:
    """The monitored feature shifts by the sum over events of feature_shift x ramp, whatever
    model serves: 0 before any onset, 1 after the abrupt (shift 1), 1 + 2 x 1/2 = 2 at the gradual
    ramp's midpoint (shift 2), 3 once both are in full."""
    model = _drift_model("{kind: abrupt, at: 100s, error_rate: 0.3, feature_shift: 1.0}",
                         "{kind: gradual, at: 200s, duration: 100s, error_rate: 0.5, feature_shift: 2.0}")
    np.testing.assert_allclose(model.feature_shift(np.array([50.0, 150.0, 250.0, 400.0])), [0, 1, 2, 3])


# --------------------------------------------------------------------------------------------
# The seed scenarios, as shipped
# --------------------------------------------------------------------------------------------


# These tests pin down drift-triggered retraining on its own: the development workload that
# base.yaml adds (experiments competing for the same GPUs) is switched off; its own tests
# live in tests/test_training.py.
NO_DEVELOPMENT = ["lifecycle.development=null"]


# (time, serving pool, state of each replica) after every change of a replica's state
StateLog = list[tuple[float, str, list[int]]]


class Run(NamedTuple):
    record: RunRecord
    result: Result
    states: StateLog  # the replicas' states as the run went (the record keeps only GPU holding)


def _watch_states(world: World) -> StateLog:
    """Log each serving pool's replica states at the start and whenever one changes, read from
    the world *during* the run (through the pools' `on_change`): the record says when a replica
    held its GPUs, not whether it was active or draining meanwhile."""
    log: StateLog = []
    for pool in world.pools.values():
        def snapshot(pool: ServingPool = pool) -> None:  # this pool, not the loop's last
            log.append((world.env.now, pool.name, [pool.kernel.state(r) for r in range(pool.replicas)]))

        snapshot()
        pool.on_change(snapshot)
    return log


def _run(path: Path, overrides: list[str] | None = None) -> Run:
    """Run a scenario to its horizon, measure its record and check the conservation laws on it
    (what `sim.runner.run_point` does), keeping the record and the replicas' state log."""
    world = World(sim.load_scenario(path, NO_DEVELOPMENT + (overrides or [])))
    states = _watch_states(world)
    record = world.run()
    result = collect(record)
    check_invariants(record, result.requests, result.tables.get("transfers"))
    return Run(record, result, states)


@pytest.fixture(scope="module")
def seeds() -> dict[str, Run]:
    """One full-day run of each seed scenario (S1..S4), shared by the tests that compare them."""
    return {name: _run(path) for name, path in SEEDS.items()}


def _stages(result: Result) -> pd.DataFrame:
    """The lifecycle table indexed by stage (each stage occurs once in these runs)."""
    table = result.tables["lifecycle"]
    assert not table["stage"].duplicated().any()
    return table.set_index("stage")


def _served_at(record: RunRecord) -> pd.Series:
    """When each request's first token was produced at its pool (NaN if never), the time its
    error rate is taken at."""
    return pd.Series(record.requests.first_token_s)


def test_error_fraction_matches_the_mean_error_rate(seeds: dict[str, Run]) -> None:
    """Among served requests the number of errors is within 4 standard deviations of the sum of
    their error rates (outcomes are independent Bernoulli(p_i) draws, so the count has mean
    sum p_i and variance sum p_i (1 - p_i)), overall and before and after the drift in S1
    (base 0.05, then 0.25 with no recovery). Unserved requests have no outcome."""
    record, result, _ = seeds["s1"]
    frame = result.requests
    served = frame["error_rate"].notna()
    assert frame.loc[~served, "error"].isna().all()
    onset = result.scenario.lifecycle.drift[0].at
    after = _served_at(record) >= onset
    for part in (served, served & ~after, served & after):
        p = frame.loc[part, "error_rate"].to_numpy()
        errors = frame.loc[part, "error"].astype(bool).to_numpy()
        assert len(p) > 10_000
        sigma = math.sqrt(float((p * (1 - p)).sum()))
        assert abs(errors.sum() - p.sum()) <= 4 * sigma
    assert set(frame.loc[served & ~after, "error_rate"]) == {0.05}
    assert set(frame.loc[served & after, "error_rate"]) == {0.25}


def test_outcomes_are_common_random_numbers(seeds: dict[str, Run]) -> None:
    """Request i's outcome is u_i < p with u_i drawn per request index from the seed alone, so:
    where S1 and S2 serve request i with the same version at the same error rate, the outcome is
    the same (every request S2 serves before it recovers at about 9 h: a sixth of the day's
    requests and more, the night being quiet);
    and wherever S1's error rate is at least S2's, an S2 error implies an S1 error (monotone
    coupling: after S2 recovers, its errors are a subset of S1's)."""
    a, b = seeds["s1"].result.requests, seeds["s2"].result.requests
    np.testing.assert_array_equal(a["arrival_s"], b["arrival_s"])
    error_a, error_b = (f["error"].fillna(False).astype(bool) for f in (a, b))
    both = a["error_rate"].notna() & b["error_rate"].notna()
    same = both & (a["model_version"] == b["model_version"]) & (a["error_rate"] == b["error_rate"])
    assert same.sum() > 0.15 * len(a)
    assert (error_a[same] == error_b[same]).all()
    s1_worse = both & (a["error_rate"] >= b["error_rate"])
    assert (s1_worse & (a["error_rate"] > b["error_rate"])).sum() > 10_000  # S2 has recovered
    assert not (s1_worse & error_b & ~error_a).any()


def test_same_scenario_and_seed_repeat_exactly(seeds: dict[str, Run]) -> None:
    """Running S2 again gives an identical lifecycle table, GPU holds, bulk transfers and error
    column."""
    first, again = seeds["s2"].result, _run(S2).result
    for table in ("lifecycle", "gpu_holds", "bulk_transfers"):
        pdt.assert_frame_equal(first.tables[table], again.tables[table], check_exact=True)
    pdt.assert_series_equal(first.requests["error"], again.requests["error"])
    pdt.assert_series_equal(first.requests["error_rate"], again.requests["error_rate"], check_exact=True)


def test_detection_is_shared_by_placements_that_monitor_the_same_stream(
        seeds: dict[str, Run]) -> None:
    """The drift onset is the same everywhere (one drift schedule), and so is detection, up to the
    network.

    S1, S3 and S4 serve on identical premises pools (4 L40S, LAN, same requests) and nothing
    changes a pool before the first detection, so their monitors see the same labels at the same
    times and the same outcomes (same u_i): they detect at exactly the same tick, on the same
    number of values. S2 serves in the cloud: the same requests and outcome draws, but every
    first token and label is later by about the WAN's one-way delay (10 ms), which moves the odd label
    across a tick boundary; the detector then fires on nearly the same sequence at the same tick
    or the next, so S2 detects within one monitoring interval of the others.
    """
    stages = {name: _stages(run.result) for name, run in seeds.items()}
    onsets = {name: run.result.summary["drift_events"][0]["onset_s"] for name, run in seeds.items()}
    assert len(set(onsets.values())) == 1
    detected = {name: s.loc["detected", "start_s"] for name, s in stages.items()}
    assert detected["s1"] == detected["s3"] == detected["s4"]
    assert stages["s1"].loc["detected", "detail"] == stages["s3"].loc["detected", "detail"] \
        == stages["s4"].loc["detected", "detail"]
    interval = seeds["s2"].record.scenario.lifecycle.monitor.interval
    assert abs(detected["s2"] - detected["s1"]) <= interval
    for name, run in seeds.items():
        assert run.result.summary["detection_delay_s"] == detected[name] - onsets[name]


def test_s3_training_takes_serving_gpus(seeds: dict[str, Run]) -> None:
    """S3's shared pool: 2 training GPUs are 2 of the 4 single-GPU replicas. They are active
    before the detection, offline for the whole train stage (the GPU hold covers exactly that
    stage), and all 4 are active again once training releases them (during validation and at
    the end of the day). The pool's record agrees: only the 2 serving replicas hold GPUs
    during the train stage, all 4 otherwise."""
    record, result, states = seeds["s3"]
    stages = _stages(result)
    train = stages.loc["train"]
    holds = result.tables["gpu_holds"]
    assert holds[["site", "pool", "purpose", "gpus"]].values.tolist() == [["premises", "gpus", "retraining", 2]]
    assert holds["start_s"].iloc[0] == train["start_s"]
    assert holds["end_s"].iloc[0] == train["end_s"]
    pool = record.primary_pool
    assert pool == "premises/gpus"
    holding = record.pools[pool].holding
    detected = stages.loc["detected", "start_s"]
    assert _active_at(states, pool, detected) == 4
    assert _holding_at(holding, detected) == 4
    for f in (0.01, 0.5, 0.99):
        t = train["start_s"] + f * (train["end_s"] - train["start_s"])
        at = _states_at(states, pool, t)
        assert at.count(ACTIVE) == 2
        assert at.count(OFFLINE) == 2
        assert _holding_at(holding, t) == 2
    validate = stages.loc["validate"]
    middle = (validate["start_s"] + validate["end_s"]) / 2
    assert _active_at(states, pool, middle) == 4
    assert _holding_at(holding, middle) == 4
    assert _active_at(states, pool, result.scenario.horizon) == 4


def _states_at(states: StateLog, pool: str, t: float) -> list[int]:
    """Each replica's state of a serving pool just after time t, from the run's state log."""
    last: list[int] | None = None
    for when, name, replicas in states:  # appended in time order
        if name == pool and when <= t:
            last = replicas
    assert last is not None
    return last


def _active_at(states: StateLog, pool: str, t: float) -> int:
    return _states_at(states, pool, t).count(ACTIVE)


def _holding_at(holding: pd.DataFrame, t: float) -> int:
    """Replicas holding their GPUs just after time t, from the pool's record."""
    return int(((holding["start_s"] <= t) & (t < holding["end_s"])).sum())


# Requests at 6/s make the two-replica squeeze plain: measured with the seed, mean E2E rises
# by ~17% and mean TPOT by ~18% while S3 trains, against <1% between the windows before the
# drift and after recovery. The test asks for 10%.
LATENCY_BUMP = 1.10


@pytest.fixture(scope="module")
def s3_busy() -> Result:
    """S3 at a steady 6 requests/s over 12 h (the drift at 6 h is recovered by about 8.4 h)."""
    return _run(S3, ["workload.arrivals={process: poisson, rate_per_s: 6}", "horizon=12h"]).result


def test_s3_latency_rises_while_training(s3_busy: Result) -> None:
    """Requests arriving during S3's train stage see a mean E2E and a mean TPOT at least 10%
    above those of requests arriving in windows of the same length just before the drift and
    just after recovery (plus a minute); those two windows agree within 5%."""
    stages = _stages(s3_busy)
    start, end = stages.loc["train", "start_s"], stages.loc["train", "end_s"]
    length = end - start
    onset = s3_busy.scenario.lifecycle.drift[0].at
    recovered = stages.loc["recovered", "end_s"]
    frame = s3_busy.requests

    def means(a: float, b: float) -> pd.Series:
        window = frame[(frame["arrival_s"] >= a) & (frame["arrival_s"] < b) & (frame["status"] == "completed")]
        assert len(window) > 1000
        return window[["e2e_s", "tpot_s"]].mean()

    before, during, after = means(onset - length, onset), means(start, end), means(recovered + 60, recovered + 60 + length)
    assert (during > LATENCY_BUMP * before).all()
    assert (during > LATENCY_BUMP * after).all()
    assert (abs(after / before - 1) < 0.05).all()


def test_s1_without_a_fix_never_recovers(seeds: dict[str, Run]) -> None:
    """S1's vendor release does not fix the drift (and lands after the day anyway): nothing but
    the detection happens, the summary says "not recovered" (recovered False, recovery_time_s
    None) and every request served from the onset to the horizon is degraded (error rate 0.25),
    including those of the last hour."""
    record, result, _ = seeds["s1"]
    assert result.tables["lifecycle"]["stage"].tolist() == ["detected"]
    summary = result.summary
    assert summary["recovered"] is False
    assert summary["recovery_time_s"] is None
    assert summary["drift_events"][0]["recovered_s"] is None
    frame = result.requests
    served_at = _served_at(record)
    onset = result.scenario.lifecycle.drift[0].at
    after = served_at >= onset
    assert summary["degraded_requests"] == int(after.sum())
    assert (frame.loc[after, "error_rate"] == 0.25).all()
    last_hour = served_at >= result.scenario.horizon - 3600
    assert last_hour.sum() > 1000
    assert (frame.loc[last_hour, "error_rate"] == 0.25).all()


VENDOR_FIX = ["horizon=12h", "lifecycle.vendor_updates.fixes_drift=true",
              "lifecycle.vendor_updates.first_at=7h", "lifecycle.vendor_updates.import_lead_time=1h"]


@pytest.fixture(scope="module")
def s1_vendor_fix() -> Run:
    """S1 whose vendor release at 7 h fixes the drift, imported in 1 h."""
    return _run(S1, VENDOR_FIX)


def test_s1_vendor_fix_restores_the_base_rate(s1_vendor_fix: Run) -> None:
    """A vendor release that fixes the drift is imported from its release (7 h) for the lead time
    (1 h), then rolled out replica by replica, each reloading the full bf16 weights
    (2 x 8.03e9 bytes at 2 GB/s = 8.03 s) after draining: the rollout takes at least 4 x 8.03 s.
    Requests served after it are served by the new version at the base rate; those served
    between the onset and the rollout at the drifted rate."""
    record, result, _ = s1_vendor_fix
    stages = _stages(result)
    scenario = record.scenario
    assert stages.loc["vendor_import", "start_s"] == 7 * 3600
    assert stages.loc["vendor_import", "end_s"] == 8 * 3600
    rollout = stages.loc["vendor_rollout"]
    assert rollout["start_s"] == 8 * 3600
    model = scenario.resolved_catalog.models["llama-3.1-8b"]
    reload_s = 2 * model.params / scenario.lifecycle.deployment.load_bandwidth
    assert reload_s == pytest.approx(8.03)
    assert rollout["end_s"] - rollout["start_s"] >= 4 * reload_s
    frame, served_at = result.requests, _served_at(record)
    later = served_at > rollout["end_s"] + 1.0
    assert later.sum() > 1000
    assert (frame.loc[later, "error_rate"] == BASE_RATE).all()
    assert (frame.loc[later, "model_version"] == 1).all()
    onset = scenario.lifecycle.drift[0].at
    stale = (served_at >= onset) & (served_at < rollout["start_s"])
    assert (frame.loc[stale, "error_rate"] == 0.25).all()


def test_s1_vendor_fix_reports_recovery(s1_vendor_fix: Run) -> None:
    """A vendor release that fixes the drift recovers it: recovered True and recovery time =
    vendor release + import lead time + rollout - onset (= end of the vendor rollout - onset)."""
    result = s1_vendor_fix.result
    stages = _stages(result)
    onset = result.scenario.lifecycle.drift[0].at
    assert result.summary["recovered"] is True
    assert result.summary["recovery_time_s"] == pytest.approx(
        stages.loc["vendor_rollout", "end_s"] - onset)


def test_sensitive_transfers_reach_the_network_records(seeds: dict[str, Run]) -> None:
    """What crosses premises -> cloud is in the bulk-transfer records with its data class:
    S2 uploads the collected labelled samples (samples x training_sample = 8000 records of
    2048 tokens x 4 bytes each: monitor.record_bytes is unset, so a record is the sample the
    retraining reads, tokens_per_sample x bytes_per_token); S4 uploads only its sample (round(8000 x 0.3) = 2400 records) and pulls
    the LoRA adapter back cloud -> premises as one model_weights record; S1 and S3 send nothing
    premises -> cloud."""
    tables = {name: run.result.tables["bulk_transfers"] for name, run in seeds.items()}
    scenario = seeds["s2"].record.scenario
    assert scenario.lifecycle.monitor.record_bytes is None
    record_bytes = scenario.lifecycle.retraining.tokens_per_sample * scenario.workload.bytes_per_token
    assert record_bytes == 2048 * 4
    for name, records in (("s2", 8000), ("s4", 2400)):
        up = tables[name][(tables[name]["from_site"] == "premises") & (tables[name]["to_site"] == "cloud")]
        samples = up[up["data_class"] == "labelled_sample"]
        assert samples["records"].tolist() == [records]
        assert samples["bytes"].tolist() == [records * record_bytes]
    down = tables["s4"][tables["s4"]["to_site"] == "premises"]
    assert down[["from_site", "data_class", "records"]].values.tolist() == [["cloud", "model_weights", 1.0]]
    assert down["bytes"].iloc[0] == LORA_R16_LLAMA_8B_BYTES
    for name in ("s1", "s3"):
        assert not (tables[name]["from_site"] == "premises").any()


def test_s4_sends_telemetry_aggregates_to_the_cloud(seeds: dict[str, Run]) -> None:
    """DESIGN §1: S4 runs its detectors on premises and sends aggregates to the cloud, one
    telemetry_aggregate record at every monitor tick."""
    record, result, _ = seeds["s4"]
    table = result.tables["bulk_transfers"]
    telemetry = table[(table["data_class"] == "telemetry_aggregate") & (table["from_site"] == "premises")
                      & (table["to_site"] == "cloud")]
    interval = record.scenario.lifecycle.monitor.interval
    ticks = np.arange(interval, record.scenario.horizon, interval)  # the run stops at the horizon
    np.testing.assert_allclose(np.sort(telemetry["start_s"].to_numpy()), ticks)


def test_a_remote_monitor_that_sees_requests_gets_every_request() -> None:
    """A monitor at another site with monitoring_sees: requests receives a copy of every request
    and response (module docstring; DESIGN §1, S2's monitor "sees every request"), not only the
    label_fraction that get labels: by the last monitor tick before the horizon, every request
    completed so far has been copied as a prompt and a response record."""
    record, result, _ = _run(S4, ["horizon=1h", "placement.monitoring=cloud",
                                  "placement.monitoring_sees=requests"])
    interval = record.scenario.lifecycle.monitor.interval
    last_tick = interval * math.floor((record.scenario.horizon - 1e-9) / interval)
    # completed at the pool (where the copies are sent from) by the last tick; the requests
    # frame's done_s is the response's arrival back at the client, later
    req = record.requests
    completed = int(((req.status == DONE) & (req.done_s <= last_tick)).sum())
    table = result.tables["bulk_transfers"]
    copies = table[(table["from_site"] == "premises") & (table["to_site"] == "cloud")]
    for data_class in ("prompt", "response"):
        assert copies.loc[copies["data_class"] == data_class, "records"].sum() >= completed


def test_recovery_differs_by_placement(seeds: dict[str, Run]) -> None:
    """DESIGN §1's story in one day: S1 does not recover; S2, S3 and S4 do, and their pipelines
    differ where placement says (S3 and S4 detect and collect identically).

    - S2 and S4 rent elastic H100s: acquire_gpus is the 10 min provisioning delay; S3 drains two
      of its own replicas instead (seconds).
    - S4 trains on round(8000 x 0.3) = 2400 of the 8000 samples on the same GPUs as S2, so its
      train stage is 2400/8000 of S2's; S3 trains on L40S, slower than S2's H100 by the ratio of
      peak bf16 x training MFU.
    - S4 pulls the adapter over the WAN (distribute > 0); S2 and S3 train where they serve.
    - Requests served after recovery get the recovered error rate the learning curve gives for
      the samples trained on (base.yaml: beta 0.5, n0 300, LoRA 0.8 of the gain): S2 and S3
      learn from 8000 fresh samples, 0.05 + 0.2 x (1 - 0.8 x (1 - 27.67^-0.5)) = 0.1204; S4
      from 2400, 0.05 + 0.2 x (1 - 0.8 x (1 - 9^-0.5)) = 0.1433: less exposed, worse model.
    - The sooner a placement recovers, the fewer requests a degraded model serves.
    """
    summaries = {name: run.result.summary for name, run in seeds.items()}
    assert summaries["s1"]["recovered"] is False
    stages = {name: _stages(run.result) for name, run in seeds.items() if name != "s1"}
    for name in ("s2", "s3", "s4"):
        assert summaries[name]["recovered"] is True
        assert summaries[name]["recovery_time_s"] < seeds[name].record.scenario.horizon
    # S3 and S4 see the same requests and labels until their pipelines act; S3 serves them on
    # four GPUs and S4 on two, so the labels arrive within a second of each other
    assert stages["s3"].loc["collect", "end_s"] == pytest.approx(stages["s4"].loc["collect", "end_s"], abs=1.0)
    duration = {name: s["end_s"] - s["start_s"] for name, s in stages.items()}
    assert duration["s2"]["acquire_gpus"] == duration["s4"]["acquire_gpus"] == 600.0
    assert duration["s3"]["acquire_gpus"] < 60.0
    assert duration["s4"]["train"] == pytest.approx(duration["s2"]["train"] * 2400 / 8000, rel=1e-12)
    catalog = seeds["s2"].record.scenario.resolved_catalog
    h100, l40s = catalog.gpus["h100-sxm"], catalog.gpus["l40s"]
    speedup = (h100.peak("bf16") * h100.training.lora_mfu) / (l40s.peak("bf16") * l40s.training.lora_mfu)
    assert duration["s3"]["train"] == pytest.approx(duration["s2"]["train"] * speedup, rel=1e-12)
    assert duration["s4"]["distribute"] > 0.0
    assert duration["s2"]["distribute"] == duration["s3"]["distribute"] == 0.0
    reached = {"s2": 0.05 + 0.2 * (1 - 0.8 * (1 - (1 + 8000 / 300) ** -0.5)),
               "s4": 0.05 + 0.2 * (1 - 0.8 * (1 - (1 + 2400 / 300) ** -0.5))}
    reached["s3"] = reached["s2"]
    assert (round(reached["s2"], 4), round(reached["s4"], 4)) == (0.1204, 0.1433)
    for name in ("s2", "s3", "s4"):
        record, result, _ = seeds[name]
        later = _served_at(record) > stages[name].loc["recovered", "end_s"] + 1.0
        np.testing.assert_allclose(result.requests.loc[later, "error_rate"], reached[name], rtol=1e-12)
        assert summaries[name]["recovered_error_rate"] == pytest.approx(reached[name], rel=1e-12)
    by_recovery = sorted(("s2", "s3", "s4"), key=lambda n: summaries[n]["recovery_time_s"])
    degraded = [summaries[n]["degraded_requests"] for n in by_recovery]
    assert degraded == sorted(degraded)
    assert summaries["s1"]["degraded_requests"] > max(degraded)


# --------------------------------------------------------------------------------------------
# A certain drift: every stage time by hand
# --------------------------------------------------------------------------------------------

ONSET_S = 1800.0
SAMPLES = 300
CERTAIN = [
    "horizon=2h", "warmup=1min",
    "lifecycle.base_error_rate=0.0",
    f"lifecycle.drift=[{{kind: abrupt, at: {ONSET_S}s, error_rate: 1.0}}]",
    "lifecycle.monitor.label_fraction=1", "lifecycle.monitor.label_delay=0",
    f"lifecycle.retraining.samples={SAMPLES}",
    # a steep learning curve: S4's 90 uploaded samples leave (1 + 90)^-2 of the excess, well
    # within the recovery tolerance, so every pipeline ends in a recovery
    "lifecycle.retraining.learning_curve={beta: 2, n0: 1, lora_share: 1}",
    "workload.arrivals={process: stages, stages: [{process: constant, rate_per_s: 1, duration: 1h}]}",
]
WAN_BYTES_PER_S = 1e9 / 8  # 1 Gbps
WAN_ONE_WAY_S = 0.010  # 20 ms RTT
# LoRA r=16 on Llama-3.1-8B: 2 bytes x 16 x per-layer (in + out) sums x 32 layers, with per layer
# q (4096 + 4096) + k, v 2 x (4096 + 1024) + o (4096 + 4096) + gate, up, down 3 x (4096 + 14336)
# = 81920, so 2 x 16 x 81920 x 32 = 83,886,080 bytes (80 MiB).
LORA_R16_LLAMA_8B_BYTES = 2 * 16 * (8192 + 2 * 5120 + 8192 + 3 * 18432) * 32
assert LORA_R16_LLAMA_8B_BYTES == 83_886_080


# The engine's front end (API server) delivers a token some milliseconds after the iteration
# that produced it, by an amount that depends on that iteration's duration, which the record
# does not keep. Without it a request's done_s at the pool is the end of its last iteration,
# so the drain wait of S3's shared pool can be computed from the record exactly.
NO_FRONTEND = ["model.efficiency.frontend_s=0", "model.efficiency.frontend_per_step=0"]


@pytest.fixture(scope="module")
def certain() -> dict[str, Run]:
    """S2, S3 and S4 under CERTAIN (S3 without the engine's front end: NO_FRONTEND), each
    serving on four L40S (S2's pool fixed at four instead of autoscaled, S4's four owned)."""
    extra = {"s3": NO_FRONTEND, "s2": ["sites.cloud.pools[0]={name: serving, gpu: l40s, count: 4, roles: [serving]}"],
             "s4": ["sites.premises.pools[0].count=4"]}
    return {name: _run(SEEDS[name], [*CERTAIN, *extra.get(name, [])]) for name in ("s2", "s3", "s4")}


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_a_certain_drift_is_detected_at_the_next_tick(detector: str) -> None:
    """With outcomes 0 before the onset and 1 after, and every label at once, the detector fires
    on the first monitor tick after the onset: onset + interval (the onset, 30 min, is itself a
    tick, whose window holds no request served after it)."""
    result = _run(S4, [*CERTAIN, f"lifecycle.monitor.detector={detector}"]).result
    interval = result.scenario.lifecycle.monitor.interval
    assert _stages(result).loc["detected", "start_s"] == ONSET_S + interval
    assert result.summary["detection_delay_s"] == interval


def _collect_end(record: RunRecord, detected: float) -> float:
    """When the SAMPLES-th label after the detection arrives. A label arrives label_delay after
    its request completes at the pool; the labelled requests are those that completed and drew
    a label. (Collection used to end at the first 60 s poll after that arrival; the wait is
    now exact, so it ends at the arrival itself.)"""
    req = record.requests
    labels = req.done_s[req.labelled] + record.scenario.lifecycle.monitor.label_delay
    after = np.sort(labels[labels > detected])
    return float(after[SAMPLES - 1])


def _train_s(scenario: Scenario, gpu_id: str, samples: int, gpus: int | None = None) -> float:
    """LoRA: 4 x params x tokens / (gpus x peak bf16 x training MFU x scaling efficiency), on
    `gpus` (default: the retraining's)."""
    r = scenario.lifecycle.retraining
    gpus = gpus or r.gpus
    params = scenario.resolved_catalog.models["llama-3.1-8b"].params
    gpu = scenario.resolved_catalog.gpus[gpu_id]
    tokens = samples * r.tokens_per_sample * r.epochs
    return 4 * params * tokens / (gpus * gpu.peak("bf16") * gpu.training.lora_mfu * r.scaling_efficiency)


@pytest.mark.parametrize("name", ["s2", "s4"])
def test_cloud_training_stage_times_by_hand(name: str, certain: dict[str, Run]) -> None:
    """Each stage of a cloud retraining, by hand:

    - collect: ends exactly when the 300th label after detection arrives (no polling step);
    - upload: uploaded = 300 x training_sample (S2 300, S4 90) records of 2048 tokens x 4 bytes
      (retraining.tokens_per_sample x workload.bytes_per_token; monitor.record_bytes unset), premises
      -> cloud, alone on the WAN: bytes / 125 MB/s + 10 ms;
    - acquire_gpus: the elastic H100 pool holds 0 < 2 GPUs, so its provisioning delay, 600 s;
    - train: 4 x params x tokens / (2 x peak bf16 x training MFU x 0.9), tokens = uploaded x
      2048 x 3;
    - validate: 1800 s;
    - distribute: S2 trains, keeps and serves in the cloud (0 s); S4 pulls the 80 MiB adapter
      cloud -> premises: 83,886,080 / 125e6 + 0.01 = 0.681 s;
    - rollout: rolling over 4 idle replicas (arrivals stopped at 1 h): 4 x adapter / 2 GB/s.

    Stages follow each other without gaps, and recovery time = recovered - onset = detection
    delay + the sum of the stages; the summary reports the same numbers.
    """
    record, result, _ = certain[name]
    scenario = record.scenario
    wan = scenario.links["wan"]
    assert (wan.bandwidth, wan.rtt / 2) == pytest.approx((WAN_BYTES_PER_S, WAN_ONE_WAY_S))
    stages = _stages(result)
    detected = stages.loc["detected", "start_s"]
    uploaded = {"s2": 300, "s4": 90}[name]
    load_bandwidth = scenario.lifecycle.deployment.load_bandwidth
    expected = {
        "collect": _collect_end(record, detected) - detected,
        "upload": uploaded * 2048 * 4 / WAN_BYTES_PER_S + WAN_ONE_WAY_S,
        "acquire_gpus": 600.0,
        "train": _train_s(scenario, "h100-sxm", uploaded),
        "validate": 1800.0,
        "distribute": {"s2": 0.0, "s4": LORA_R16_LLAMA_8B_BYTES / WAN_BYTES_PER_S + WAN_ONE_WAY_S}[name],
        "rollout": 4 * LORA_R16_LLAMA_8B_BYTES / load_bandwidth,
    }
    assert load_bandwidth == 2e9
    order = ["detected", *expected, "recovered"]
    assert stages.index.tolist() == order
    np.testing.assert_array_equal(stages["start_s"].iloc[1:].to_numpy(), stages["end_s"].iloc[:-1].to_numpy())
    measured = (stages["end_s"] - stages["start_s"]).to_dict()
    assert {s: measured[s] for s in expected} == pytest.approx(expected, rel=1e-9, abs=1e-9)
    recovery = stages.loc["recovered", "end_s"] - ONSET_S
    assert recovery == pytest.approx(detected - ONSET_S + sum(expected.values()), rel=1e-12)
    assert result.summary["recovery_time_s"] == recovery
    assert result.summary["lifecycle_stages_s"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_shared_pool_stage_times_by_hand(certain: dict[str, Run]) -> None:
    """S3 under CERTAIN: nothing crosses a link (upload and distribute take 0 s); acquire_gpus is
    the wait for the two drained replicas (the two highest-numbered, 3 and 2) to finish the
    requests they were running: it ends exactly at the end of the last iteration either of
    them runs, the done_s at the pool of the last of those requests (no front end, see
    NO_FRONTEND), each replica releasing its GPUs at its own last one; train uses the premises
    L40S (4 x params x 300 x 2048 x 3 / (2 x peak bf16 x MFU x 0.9)); rollout is 4 x adapter /
    load bandwidth, as the replicas are idle by then."""
    record, result, _ = certain["s3"]
    stages = _stages(result)
    duration = (stages["end_s"] - stages["start_s"]).to_dict()
    assert duration["upload"] == duration["distribute"] == 0.0
    # the drain wait used to end on a 1 s poll (a whole number of seconds); it is now exact
    start, end = stages.loc["acquire_gpus", "start_s"], stages.loc["acquire_gpus", "end_s"]
    assert 0.0 <= end - start < 60.0
    req = record.requests
    holding = record.pools["premises/gpus"].holding
    released = holding[(holding["end_s"] >= start) & (holding["end_s"] <= end)]
    assert sorted(released["replica"]) == [2, 3]
    finished = {}
    for r in (2, 3):
        running = (req.replica == r) & (req.dispatch_s <= start)
        finished[r] = float(np.max(req.done_s[running], initial=start))  # start if it ran nothing
        assert released.loc[released["replica"] == r, "end_s"].tolist() == [finished[r]]
    assert end == max(finished.values())
    assert duration["train"] == pytest.approx(_train_s(record.scenario, "l40s", SAMPLES), rel=1e-12)
    assert duration["rollout"] == pytest.approx(4 * LORA_R16_LLAMA_8B_BYTES / 2e9, rel=1e-12)
    assert result.tables["bulk_transfers"].empty


def test_shared_pool_trains_on_the_gpus_it_holds() -> None:
    """S3 asking for all 4 GPUs of its shared pool (the checks allow it): the pool keeps one
    replica serving and lends 3, so training holds 3 GPUs and must be timed on 3, not 4."""
    record, result, _ = _run(S3, ["horizon=12h", "lifecycle.retraining.gpus=4"])
    held = int(result.tables["gpu_holds"]["gpus"].iloc[0])
    assert held == 3
    stages = _stages(result)
    train = stages.loc["train", "end_s"] - stages.loc["train", "start_s"]
    assert train == pytest.approx(_train_s(record.scenario, "l40s", 8000, gpus=held), rel=1e-12)


def test_a_labelled_record_is_the_sample_it_trains_on_unless_sized_by_hand() -> None:
    """A record's bytes follow the token knobs (tokens_per_sample x bytes_per_token) unless
    monitor.record_bytes says otherwise: S4's upload of round(300 x 0.3) = 90 records is
    90 x 1024 x 2 bytes with 1024-token samples at 2 bytes per token, and 90 x 5000 bytes
    with record_bytes: 5000."""
    short = [*CERTAIN, "lifecycle.retraining.tokens_per_sample=1024", "workload.bytes_per_token=2"]
    for extra, size in (([], 1024 * 2), (["lifecycle.monitor.record_bytes=5000"], 5000)):
        transfers = _run(S4, [*short, *extra]).result.tables["bulk_transfers"]
        samples = transfers[transfers["data_class"] == "labelled_sample"]
        assert samples["records"].tolist() == [90.0]
        assert samples["bytes"].tolist() == [90.0 * size]
