"""The model lifecycle, measured: drift recovery per event, and the training application.

**Drift recovery** (`lifecycle_summary`, DESIGN.md §2): per drift event within the horizon,
when it was detected and when the model was recovered, how long each stage of the pipeline
took (`RunRecord.stages`), and over the run the requests served by a degraded model, the area
under the excess-error curve (the mean excess over the base rate of the requests served in
each minute, x 60 s, summed) and the observed error rate. The first event's figures are the
summary's headline fields.

*Recovered* means back within the tolerance of the pre-drift rate: a version whose error rate
on the event is at most base + `lifecycle.recovery_tolerance` x (event error_rate - base)
serves (the lifecycle logs a `recovered` stage when it rolls out). `recovery_time_s` runs from
onset to that rollout; a retraining that lands above the tolerance is no recovery.
`recovered_error_rate` is the error rate on the event (in full) of the last version rolled
out, once the event is recovered (None otherwise): no rollout makes a model worse, so this is
what the model reached after its last recovery or improvement. A request is *degraded* when
its model was not within the tolerance at the time: its error rate exceeds base + tolerance x
(what a stale model's would be - base).

**Training application** (`training_summary`): queue waits and jobs done by purpose, GPU-hours
busy and held by purpose (`sim.metrics.utilisation`), the cloud GPU cost of each purpose
(GPU-hours held on third-party pools x their price), and how stale (time since the serving
version was created) and how often degraded the served model was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.metrics.cost import HOUR_S, cloud_gpu_price
from sim.metrics.utilisation import (
    HOLD_PURPOSES,
    PURPOSES,
    gpu_hours_by_purpose,
    serving_gpu_seconds,
)
from sim.record import RunRecord

STAGE_ORDER = ("detected", "collect", "upload", "acquire_gpus", "train", "validate", "distribute", "rollout")
DEGRADED_EPSILON = 1e-12


def stages_table(record: RunRecord) -> pd.DataFrame:
    """The lifecycle's stage records with their duration."""
    stages = record.stages.copy()
    stages["duration_s"] = stages["end_s"] - stages["start_s"]
    return stages


def lifecycle_summary(record: RunRecord, stages: pd.DataFrame) -> dict[str, Any]:
    """Per drift event: detection delay, stage durations and recovery time (see the module doc)."""
    horizon = record.horizon_s
    events: list[dict[str, Any]] = []
    for i, (kind, onset) in enumerate(record.drift_onsets):
        if onset >= horizon:
            continue
        mine = stages[stages["drift_event"] == i]
        detected = mine.loc[mine["stage"] == "detected", "start_s"]
        recovered = mine.loc[mine["stage"] == "recovered", "end_s"]
        reached = recovered_error_rate(record, stages, i) if len(recovered) else None
        durations = {stage: float(mine.loc[mine["stage"] == stage, "duration_s"].sum())
                     for stage in STAGE_ORDER[1:] if (mine["stage"] == stage).any()}
        events.append({
            "drift_event": i, "kind": kind, "onset_s": onset,
            "detected_s": float(detected.min()) if len(detected) else None,
            "detection_delay_s": float(detected.min() - onset) if len(detected) else None,
            "recovered_s": float(recovered.min()) if len(recovered) else None,
            "recovery_time_s": float(recovered.min() - onset) if len(recovered) else None,
            "recovered_error_rate": reached,
            "stages_s": durations,
        })
    degraded_count, area, error_rate = _served_outcomes(record)
    first = events[0] if events else {}
    return {
        "detection_delay_s": first.get("detection_delay_s"),
        "recovery_time_s": first.get("recovery_time_s"),
        "recovered_error_rate": first.get("recovered_error_rate"),
        "recovered": bool(first.get("recovered_s") is not None) if events else None,
        "degraded_requests": degraded_count,
        "excess_error_area_s": area,
        "error_rate_observed": error_rate,
        "detections": len(record.detections),
        "drift_events": events,
        "lifecycle_stages_s": first.get("stages_s", {}),
    }


def _served_outcomes(record: RunRecord) -> tuple[int, float, float | None]:
    """Degraded requests, the excess error's area (per minute of service, the mean excess
    over the requests served in it, x 60 s, summed) and the observed error rate."""
    tally = record.tally
    if tally is not None:  # a streamed run: the same, from its per-minute sums
        used = tally.served_by_minute > 0
        area = float((tally.excess_by_minute[used] / tally.served_by_minute[used]).sum() * 60.0)
        return tally.degraded, area, tally.errors / tally.served if tally.served else None
    req = record.requests
    served = req.served
    excess = np.clip(req.error_rate[served] - record.base_error_rate, 0.0, None)
    minute = np.floor(req.first_token_s[served] / 60.0).astype(np.int64)
    area = float(pd.Series(excess).groupby(minute).mean().sum() * 60.0) if len(minute) else 0.0
    errors = req.error[served]
    return int(degraded_requests(record).sum()), area, float(errors.mean()) if len(errors) else None


def recovered_error_rate(record: RunRecord, stages: pd.DataFrame, event: int) -> float:
    """The error rate on drift event `event` (in full) of the last version rolled out."""
    rollouts = stages[stages["stage"].isin(("rollout", "vendor_rollout", "recovered"))]
    last = int(rollouts.sort_values(["end_s", "version"]).iloc[-1]["version"])
    keeps = record.version_residual.get(last, {}).get(event, 1.0)
    base = record.base_error_rate
    return float(base + keeps * (record.scenario.lifecycle.drift[event].error_rate - base))


def degraded_requests(record: RunRecord) -> np.ndarray:
    """Per served request: was its model outside the recovery tolerance when it served it?
    (error rate above base + tolerance x (a stale model's - base); see the module doc)"""
    req = record.requests
    served = req.served
    return degraded(req.error_rate[served], req.stale_error_rate[served], record.base_error_rate,
                    record.scenario.lifecycle.recovery_tolerance)


def degraded(error_rate: np.ndarray, stale_error_rate: np.ndarray, base: float, tolerance: float) -> np.ndarray:
    """Per served request, from its error rate and a stale model's: was it degraded?"""
    threshold = base + tolerance * (stale_error_rate - base)
    return error_rate > np.maximum(threshold, base) + DEGRADED_EPSILON


def cloud_cost_by_purpose(record: RunRecord) -> dict[str, float]:
    """USD of GPU-hours held on third-party pools, by purpose (serving by every cloud serving
    pool's replicas)."""
    scenario = record.scenario
    catalog = scenario.resolved_catalog
    usd = dict.fromkeys((*PURPOSES, "provisioning"), 0.0)

    def price(site_name: str, pool_name: str) -> float:
        site = scenario.sites[site_name]
        pool = next(p for p in site.pools if p.name == pool_name)
        return cloud_gpu_price(pool, site, catalog)[0]

    for name, (held, _) in serving_gpu_seconds(record).items():
        pool = record.pools[name]
        if pool.zone == "third_party" and not pool.api:  # a managed API holds no GPUs
            usd["serving"] += held / HOUR_S * price(pool.site, pool.pool)
    holds = record.gpu_holds
    for row in holds[holds["purpose"].isin(HOLD_PURPOSES)].itertuples():
        if scenario.sites[str(row.site)].zone == "third_party":
            gpu_s = float(row.gpus * (row.end_s - row.start_s))  # type: ignore[operator]
            usd[str(row.purpose)] += gpu_s / HOUR_S * price(str(row.site), str(row.pool))
    return usd


def training_summary(record: RunRecord) -> dict[str, Any]:
    """The training application: queue waits, jobs done, GPU-hours and cloud cost by purpose,
    and how stale and how often degraded the served model was."""
    jobs = record.jobs
    busy_hours, held_hours = gpu_hours_by_purpose(record)
    started = jobs[jobs["started_s"].notna()]
    done = jobs[jobs["finished_s"].notna()]
    staleness_mean, staleness_max, degraded_share = _staleness(record)
    training = PURPOSES[1:]
    return {
        "gpu_hours_by_purpose": busy_hours,
        "gpu_hours_held_by_purpose": held_hours,
        "cloud_gpu_cost_usd_by_purpose": cloud_cost_by_purpose(record),
        "training_jobs_submitted_by_purpose": {p: int((jobs["purpose"] == p).sum()) for p in training},
        "training_jobs_completed_by_purpose": {p: int((done["purpose"] == p).sum()) for p in training},
        "training_queue_wait_s": float(started["wait_s"].mean()) if len(started) else None,
        "training_queue_wait_s_by_purpose": {
            p: (float(started.loc[started["purpose"] == p, "wait_s"].mean())
                if (started["purpose"] == p).any() else None) for p in training},
        "model_staleness_mean_s": staleness_mean,
        "model_staleness_max_s": staleness_max,
        "degraded_share": degraded_share,
    }


def _staleness(record: RunRecord) -> tuple[float | None, float | None, float | None]:
    """Mean and most time from a served request's model version's creation to its service,
    and the share of served requests that were degraded."""
    tally = record.tally
    if tally is not None:
        mean, most = tally.staleness(record.version_created_s)
        return mean, most, tally.degraded / tally.served if tally.served else None
    req = record.requests
    served = req.served
    created = np.array([record.version_created_s.get(int(v), 0.0) for v in req.version[served]], dtype=np.float64)
    staleness = req.first_token_s[served] - created
    degraded = degraded_requests(record)
    return (float(staleness.mean()) if len(staleness) else None, float(staleness.max()) if len(staleness) else None,
            float(degraded.mean()) if len(degraded) else None)
