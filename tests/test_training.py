"""The training application: the training-GPU queue, development jobs, retraining policies and
GPU sharing on a premises pool that also serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim
from sim.kernels.training import training_time_s
from sim.record import RunRecord
from sim.result import collect
from sim.world import World

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
S2 = SCENARIOS / "s2_cloud_training.yaml"
S3 = SCENARIOS / "s3_local_training.yaml"


def run(path: Path, overrides: list[str]) -> tuple[RunRecord, sim.Result]:
    record = World(sim.load_scenario(path, overrides)).run()
    return record, collect(record)


def lora_seconds(scenario: sim.Scenario, gpu_id: str, tokens: float, gpus: int) -> float:
    catalog = scenario.resolved_catalog
    gpu = catalog.gpus[gpu_id]
    return training_time_s(catalog.models[scenario.model.id], gpu, "lora", tokens, gpus,
                           gpu.training.lora_mfu, scenario.lifecycle.retraining.scaling_efficiency)


# A premises site with a serving pool and a separate 2-GPU training pool; three 2-GPU jobs.
DEDICATED_POOL = [
    "sites.premises.pools=[{name: serving, gpu: l40s, count: 2, roles: [serving]},"
    " {name: lab, gpu: l40s, count: 2, roles: [training]}]",
    "horizon=6h", "warmup=10min", "lifecycle.drift=[]",
    "lifecycle.development={arrivals: schedule, at: [1000, 1100, 1200], priority: 1,"
    " jobs: [{name: a, tokens: 2.0e7, gpus: 2}, {name: b, tokens: 1.0e7, gpus: 2}, {name: c, tokens: 5.0e6, gpus: 2}]}",
]


def test_jobs_queue_first_come_first_served_on_a_small_pool() -> None:
    """Three 2-GPU jobs on a 2-GPU pool submitted at 1000, 1100 and 1200 s run one after another:
    job k starts when job k-1 ends, its duration is 4 x params x tokens / (2 x peak x MFU x
    scaling), and its wait is its start minus its submission (exact, to 1e-6 s)."""
    record, result = run(S3, DEDICATED_POOL)
    jobs = result.tables["training_jobs"].sort_values("submitted_s").reset_index(drop=True)
    durations = [lora_seconds(record.scenario, "l40s", t, 2) for t in (2.0e7, 1.0e7, 5.0e6)]
    expected_start = [1000.0, 1000.0 + durations[0], 1000.0 + durations[0] + durations[1]]
    assert jobs["name"].tolist() == ["a", "b", "c"]
    assert jobs["started_s"].to_numpy() == pytest.approx(expected_start, abs=1e-6)
    assert (jobs["finished_s"] - jobs["started_s"]).to_numpy() == pytest.approx(durations, rel=1e-12)
    assert jobs["wait_s"].to_numpy() == pytest.approx(np.array(expected_start) - [1000.0, 1100.0, 1200.0], abs=1e-6)
    assert result.summary["training_jobs_completed_by_purpose"]["development"] == 3


def test_higher_priority_overtakes_queued_jobs() -> None:
    """With the pool busy, a later job of higher priority starts before earlier, lower ones:
    here drift retraining (priority 10) is submitted while job a runs and b, c wait."""
    overrides = [o for o in DEDICATED_POOL if not o.startswith("lifecycle.drift")] + [
        "lifecycle.drift=[{kind: abrupt, at: 1050, error_rate: 1.0}]", "lifecycle.base_error_rate=0.0",
        "lifecycle.monitor={detector: page_hinkley, interval: 60, label_fraction: 1.0, label_delay: 0}",
        "lifecycle.retraining.samples=200", "workload.arrivals={process: constant, rate_per_s: 2}",
    ]
    _, result = run(S3, overrides)
    jobs = result.tables["training_jobs"]
    retraining = jobs[jobs["purpose"] == "retraining"].iloc[0]
    later = jobs[(jobs["purpose"] == "development") & (jobs["submitted_s"] < retraining["submitted_s"])
                 & (jobs["started_s"] > retraining["submitted_s"])]
    assert len(later) >= 1  # someone was waiting when retraining arrived...
    assert (later["started_s"] > retraining["started_s"]).all()  # ...and retraining went first


def test_only_idle_gpus_never_touches_serving() -> None:
    """With `only_idle_gpus`, training may only use GPUs no serving replica holds; S3's pool
    serves on all of them, so every request is served exactly as in a run with no training at
    all (bit-identical latencies), and the jobs are still waiting at the horizon."""
    common = ["horizon=8h", "warmup=10min", "workload.arrivals.rate_per_s=5"]
    _, idle = run(S3, common + ["lifecycle.gpu_sharing={policy: only_idle_gpus}"])
    _, untouched = run(S3, common + ["placement.training=none", "lifecycle.development=null"])
    pd.testing.assert_series_equal(idle.requests["e2e_s"], untouched.requests["e2e_s"])
    assert idle.summary["training_jobs_completed_by_purpose"] == {"retraining": 0, "development": 0}
    assert idle.summary["gpu_hours_by_purpose"]["development"] == 0.0


def test_preempt_serving_raises_serving_latency_while_training() -> None:
    """With `preempt_serving`, requests arriving while a development job holds two of the
    four GPUs see a higher mean E2E than the same requests in the run where training may use
    idle GPUs only (common random numbers: same arrivals, same lengths)."""
    common = ["horizon=8h", "warmup=10min", "workload.arrivals.rate_per_s=5", "lifecycle.drift=[]"]
    _, preempt = run(S3, common + ["lifecycle.gpu_sharing={policy: preempt_serving}"])
    _, idle = run(S3, common + ["lifecycle.gpu_sharing={policy: only_idle_gpus}"])
    holds = preempt.tables["gpu_holds"]
    holds = holds[holds["purpose"] == "development"]
    assert len(holds) >= 1
    during = np.zeros(len(preempt.requests), dtype=bool)
    for hold in holds.itertuples():
        during |= ((preempt.requests["arrival_s"] >= hold.start_s) & (preempt.requests["arrival_s"] < hold.end_s)).to_numpy()
    assert during.sum() > 100
    assert preempt.requests.loc[during, "e2e_s"].mean() > 1.05 * idle.requests.loc[during, "e2e_s"].mean()


def test_scheduled_retraining_fires_on_its_schedule_and_restores_the_model() -> None:
    """policy `scheduled`, first at 3 h then every 6 h: retraining collects at 3, 9, 15 and 21 h
    (when none is still running); the one after the 6 h drift recovers it."""
    _, result = run(S2, ["lifecycle.retraining.policy=scheduled", "lifecycle.retraining.every=6h",
                             "lifecycle.retraining.first_at=3h", "lifecycle.development=null"])
    stages = result.tables["lifecycle"]
    collects = stages[stages["stage"] == "collect"]["start_s"].to_numpy()
    scheduled = collects[[d.startswith("scheduled") for d in stages.loc[stages["stage"] == "collect", "detail"]]]
    skipped = stages[stages["stage"] == "scheduled_skipped"]["start_s"].to_numpy()
    fired = np.sort(np.concatenate([scheduled, skipped]))
    assert fired == pytest.approx([3 * 3600, 9 * 3600, 15 * 3600, 21 * 3600])
    assert result.summary["recovered"] is True
    assert 9 * 3600 < result.summary["drift_events"][0]["recovered_s"] < 15 * 3600


def test_min_gap_keeps_retrainings_apart() -> None:
    """With `both` and a min_gap of 10 h, a scheduled run due within 10 h of the triggered one
    is skipped."""
    _, result = run(S2, ["lifecycle.retraining.policy=both", "lifecycle.retraining.every=4h",
                         "lifecycle.retraining.min_gap=10h", "lifecycle.development=null"])
    stages = result.tables["lifecycle"]
    starts = np.sort(stages[stages["stage"] == "collect"]["start_s"].to_numpy())
    assert len(starts) >= 2
    assert np.diff(starts).min() >= 10 * 3600 - 1e-6
    assert (stages["stage"] == "scheduled_skipped").any()


def test_gpu_hours_by_purpose_add_up_to_the_pools_busy_gpu_hours() -> None:
    """On S3's shared pool, serving busy GPU-hours + retraining + development GPU-hours equal
    the pool's busy GPU-hours in the usage table (to 1e-9 relative)."""
    _, result = run(S3, [])
    hours = result.summary["gpu_hours_by_purpose"]
    assert hours["retraining"] > 0 and hours["development"] > 0
    usage = result.tables["gpu_usage"]
    pool = usage[(usage["site"] == "premises") & (usage["pool"] == "gpus")].iloc[0]
    assert sum(hours.values()) * 3600 == pytest.approx(pool["busy_gpu_s"], rel=1e-9)


def test_cloud_training_is_billed_by_purpose() -> None:
    """S2 pays for development and retraining GPU-hours on its elastic H100 pool: the cost by
    purpose equals held GPU-hours x the catalog's on-demand price, and provisioning is billed."""
    record, result = run(S2, [])
    s = result.summary
    from sim.metrics.cost import cloud_gpu_price

    site = record.scenario.sites["cloud"]
    pool = next(p for p in site.pools if p.name == "training")
    price, _ = cloud_gpu_price(pool, site, record.scenario.resolved_catalog)
    for purpose in ("retraining", "development"):
        assert s["cloud_gpu_cost_usd_by_purpose"][purpose] == pytest.approx(
            s["gpu_hours_held_by_purpose"][purpose] * price, rel=1e-9)
    assert s["cloud_gpu_cost_usd_by_purpose"]["provisioning"] > 0


def test_staleness_and_degraded_share() -> None:
    """Model staleness is the served version's age at serving time; S3 recovers so its mean
    staleness is below S1's, which serves the initial model all day; the degraded share is
    degraded requests / served requests."""
    _, s3 = run(S3, ["lifecycle.development=null"])
    _, s1 = run(SCENARIOS / "s1_local.yaml", [])
    assert s3.summary["model_staleness_mean_s"] < s1.summary["model_staleness_mean_s"]
    served = s1.requests["error_rate"].notna().sum()
    assert s1.summary["degraded_share"] == pytest.approx(s1.summary["degraded_requests"] / served)
