"""Availability: what share of requests a placement served while things failed, and proof that
every request and every byte is accounted for.

**Availability** is measured over the requests an SLO verdict judges
(`sim.metrics.latency.verdict_window`): steady state (sent at or after the warm-up) and sent
at least the largest SLO target before the horizon, so each had the time to finish. Of those,
requests that did not complete (failed: client timeout, out of attempts, cut off on the way;
rejected: too long for the model; or still unfinished) are misses, as everywhere else. A
scenario without SLO targets judges only the requests that ended within the horizon.

    availability      = completed / judged
    availability_slo  = completed within every per-request SLO target / judged

The per-request targets are the SLO's percentile targets, as for `slo_attainment`
(`sim.metrics.latency.within_slo`, the one definition): each traffic class's own SLO, else
the scenario's, so `availability_slo` equals `slo_attainment`. With no faults, no rejections and no backlog, availability is 1. Next to it: failed and retried requests, the
requests served by the fallback pool, delayed or cut off by outages, and per kind of fault the
number of faults, the mean time to restore and the time spent down (within the horizon); and
for spot pools the instances reclaimed (`spot_interruptions`, reclaims of replicas holding an
instance, and of training pools) with the requests they sent back to be retried
(`spot_requests_retried`) or failed (`spot_requests_failed`).

**Lifecycle delay** caused by outages (`lifecycle_outage_delay`): bulk transfers of the
recovery pipeline paused on a cut link, training work lost since the last checkpoint, time
training waited for repairs, waits for a site to be reachable, and waits for an elastic pool
that could not grow (capacity shortages). Causes add up; overlapping ones count twice.

Conservation laws (every request ends once, every byte is in the ledger) are checked in
`sim.metrics.invariants`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.kernels.batching import DONE, FAILED, REJECTED
from sim.kernels.windows import overlap_s
from sim.metrics.latency import class_slo_targets, verdict_window, within_slo
from sim.record import RunRecord

FAULT_KINDS = ("replica_failure", "link_outage", "site_outage", "capacity_shortage", "spot_interruption")
LIFECYCLE_PURPOSES = ("training data", "artifact")


# ------------------------------------------------------------------------------------------
# Availability
# ------------------------------------------------------------------------------------------


def availability(record: RunRecord, latencies: dict[str, np.ndarray]) -> dict[str, Any]:
    """Summary fields: availability, failed / retried / fallback requests, time to restore.

    `latencies`: the per-request latencies of `sim.metrics.latency.request_latencies`."""
    summary = _request_availability(record, latencies)
    summary.update(fault_summary(record))
    return summary


def _request_availability(record: RunRecord, latencies: dict[str, np.ndarray]) -> dict[str, Any]:
    """The request counts of `availability` (a streamed run's from its tally)."""
    tally = record.tally
    if tally is not None:
        a = tally.availability
        judged = a["judged"]
        return {
            "availability": a["completed"] / judged if judged else None,
            "availability_slo": a["good"] / judged if judged else None,
            "requests_ended": a["ended"], "requests_judged": judged, "requests_retried": a["retried"],
            "retries": a["retries"], "requests_failed_after_retries": a["failed_after_retries"],
            "requests_fallback": a["fallback"], "requests_delayed_by_outages": a["delayed"],
            "requests_cut_off": a["cut_off"],
        }
    scenario = record.scenario
    req = record.requests
    status = req.status
    n = len(status)
    ended, judged, good = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    classes = np.asarray(req.traffic_class)
    for k, traffic_class in enumerate(scenario.workload.class_specs()):  # each against its own SLO
        targets = class_slo_targets(scenario, traffic_class)
        window = verdict_window(req.send_s, scenario, targets) & (classes == k)
        ended_k = window & np.isin(status, (DONE, FAILED, REJECTED))
        judged_k = window if targets else ended_k  # unfinished ones are misses when the SLO gives them time
        ended |= ended_k
        judged |= judged_k
        good |= judged_k & within_slo(latencies, status, scenario, targets)
    completed = judged & (status == DONE)
    n_judged = int(judged.sum())
    retried = req.attempts > 1
    summary: dict[str, Any] = {
        "availability": float(completed.sum() / n_judged) if n_judged else None,
        "availability_slo": float(good.sum() / n_judged) if n_judged else None,
        "requests_ended": int(ended.sum()),
        "requests_judged": n_judged,
        "requests_retried": int(retried.sum()),
        "retries": int((req.attempts - 1).sum()),
        "requests_failed_after_retries": int((retried & (status == FAILED)).sum()),
        "requests_fallback": int(req.diverted.sum()),
        "requests_delayed_by_outages": int(req.delayed.sum()),
        "requests_cut_off": int((req.cut_off & (status == FAILED)).sum()),
    }
    return summary


def fault_summary(record: RunRecord) -> dict[str, Any]:
    """Faults injected, their time to restore and downtime, by kind."""
    summary: dict[str, Any] = {}
    table = record.faults
    horizon = record.horizon_s
    down = (table["end_s"].clip(upper=horizon) - table["start_s"]).clip(lower=0.0)
    summary["faults_injected"] = int(len(table))
    summary["faults_by_kind"] = {k: int((table["kind"] == k).sum()) for k in FAULT_KINDS}
    restored = table[table["restored"].astype(bool)]
    summary["time_to_restore_mean_s"] = float(restored["time_to_restore_s"].mean()) if len(restored) else None
    summary["time_to_restore_mean_s_by_kind"] = {
        k: (float(restored.loc[restored["kind"] == k, "time_to_restore_s"].mean())
            if (restored["kind"] == k).any() else None) for k in FAULT_KINDS}
    summary["downtime_s_by_kind"] = {k: float(down[table["kind"] == k].sum()) for k in FAULT_KINDS}
    spot = table[table["kind"] == "spot_interruption"]
    summary["spot_interruptions"] = int(len(spot))
    summary["spot_requests_retried"] = int(spot["requests_retried"].sum())
    summary["spot_requests_failed"] = int(spot["requests_failed"].sum())
    return summary


# ------------------------------------------------------------------------------------------
# Lifecycle delay caused by outages
# ------------------------------------------------------------------------------------------


def lifecycle_outage_delay(record: RunRecord, stages: pd.DataFrame | None = None) -> dict[str, Any]:
    """How much outages held up the model lifecycle (see the module doc).

    `stages` (the lifecycle table) attributes transfer pauses to drift events: a pause counts
    for the event whose stages span the transfer's start.
    """
    scenario = record.scenario
    horizon = record.horizon_s
    causes = {"transfer_pause": 0.0, "training_lost_work": 0.0, "training_wait": 0.0, "unreachable_wait": 0.0,
              "capacity_wait": 0.0}
    by_event: dict[int, float] = {}
    spans: list[tuple[int, float, float]] = []
    if stages is not None and len(stages):
        for event, rows in stages.groupby("drift_event"):
            spans.append((int(event), float(rows["start_s"].min()), float(rows["end_s"].max())))  # type: ignore[call-overload]
    for transfer in record.transfers.itertuples():
        if transfer.purpose not in LIFECYCLE_PURPOSES:
            continue
        found = scenario.link_between(str(transfer.from_site), str(transfer.to_site))
        if found is None:
            continue
        start = float(transfer.start_s)  # type: ignore[arg-type]
        end = float(transfer.end_s) if not np.isnan(transfer.end_s) else horizon  # type: ignore[arg-type]
        paused = overlap_s(record.link_down.get(found[0], []), start, end)
        causes["transfer_pause"] += paused
        for event, first, last in spans:
            if first <= start <= last:
                by_event[event] = by_event.get(event, 0.0) + paused
                break
    runs = record.training_runs
    recovery = runs[runs["purpose"] == "retraining"]  # development jobs are not on the model's recovery path
    causes["training_lost_work"] = float(recovery["lost_s"].sum())
    causes["training_wait"] = float(recovery["waited_s"].sum())
    causes["unreachable_wait"] = float(sum(end - start for _, _, start, end in record.reachability_waits))
    causes["capacity_wait"] = float(sum(end - start for _, start, end in record.capacity_waits))
    return {"lifecycle_outage_delay_s": float(sum(causes.values())),
            "lifecycle_outage_delay_s_by_cause": causes,
            "lifecycle_outage_delay_s_by_drift_event": by_event}
