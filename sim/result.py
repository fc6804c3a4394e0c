"""What a run leaves behind: tidy tables, a one-row summary, and the files they go to.

A `Result` holds pandas DataFrames built once, at the end of a run, from the kernel's arrays:
`requests` (one row per request, times in seconds from the start, units in column names).
Its `summary` is a flat dictionary with the field names of DESIGN.md §2 (`ttft_p99_s`,
`throughput_rps`, ...); breakdowns are nested dictionaries under the same stems.

Latency is measured from the client: TTFT is the first token back at the client, E2E the
whole response back at the client, TPOT the mean time per output token after the first (at
the serving site). Each decomposes into network (both directions), queueing (arrival at the
pool to first scheduled), prefill (first scheduled to first token) and decode (first token to
last) parts. Steady-state metrics leave out requests that arrived during the warm-up.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.kernels.batching import DONE, FAILED, REJECTED
from sim.metrics import measure
from sim.metrics.availability import (
    availability,
    client_times,
    fault_table,
    lifecycle_outage_delay,
    request_outcomes,
)

if TYPE_CHECKING:
    from sim.spec.scenario import Scenario
    from sim.world.world import World

STATUS_CATEGORIES = ["completed", "rejected", "failed", "unfinished"]


@dataclass
class Result:
    scenario: Scenario
    replication: int
    requests: pd.DataFrame
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary_frame(self) -> pd.DataFrame:
        """The summary as a one-row DataFrame (nested breakdowns flattened with dots)."""
        return pd.json_normalize(self.summary)

    def write(self, out_dir: str | Path) -> Path:
        """Write requests.parquet, one Parquet file per table (transfers, costs, gpu_usage,
        lifecycle, ...), summary.json and the resolved scenario.yaml."""
        from sim import __version__
        from sim.spec import dump_scenario, spec_hash

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"scenario": self.scenario.name, "seed": str(self.scenario.seed),
                "replication": str(self.replication), "spec_hash": spec_hash(self.scenario),
                "deploysim_version": __version__}
        table = self.requests.copy()
        table.attrs = meta
        table.to_parquet(out / "requests.parquet", index=False)
        for name, frame in self.tables.items():
            frame.to_parquet(out / f"{name}.parquet", index=False)
        payload = {"meta": meta, **self.summary}
        (out / "summary.json").write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
        (out / "scenario.yaml").write_text(dump_scenario(self.scenario))
        return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _percentiles(values: np.ndarray, stem: str) -> dict[str, float | None]:
    values = values[~np.isnan(values)]
    out: dict[str, float | None] = {}
    for q in (50, 90, 99):
        out[f"{stem}_p{q}_s"] = float(np.percentile(values, q)) if len(values) else None
    out[f"{stem}_mean_s"] = float(values.mean()) if len(values) else None
    return out


def collect(world: World) -> Result:
    started = time.perf_counter()
    scenario = world.scenario
    k = request_outcomes(world)  # per request, over every pool that served (a fallback's merged in)
    req = world.requests
    status = k.status
    done = status == DONE
    pool_first = k.first_token_s
    pool_done = k.done_s
    # responses come back over the same path: the first token as a small payload, the whole
    # response as its bytes, FIFO in the order the serving site sends them
    first_bytes = np.full(req.count, scenario.workload.bytes_per_token + scenario.workload.request_overhead)
    client_first, client_done = client_times(world, k, first_bytes)  # over the path each took, after outages
    arrival = req.arrival_s if req.clients == 0 else k.arrival_s - world.path.one_way_s
    uplink = world.pool_arrival_s if req.clients == 0 else k.arrival_s
    ttft = client_first - arrival
    e2e = client_done - arrival
    out_tokens = req.output_tokens.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out_tokens > 1, (pool_done - pool_first) / (out_tokens - 1), np.nan)
    tpot[~done] = np.nan
    codes = np.full(req.count, STATUS_CATEGORIES.index("unfinished"), dtype=np.int8)
    codes[done] = STATUS_CATEGORIES.index("completed")
    codes[status == REJECTED] = STATUS_CATEGORIES.index("rejected")
    codes[status == FAILED] = STATUS_CATEGORIES.index("failed")
    frame = pd.DataFrame({
        "request": np.arange(req.count, dtype=np.int64),
        "arrival_s": arrival,
        "prompt_tokens": req.prompt_tokens,
        "output_tokens": req.output_tokens,
        "prefix_group": req.prefix_group,
        "status": pd.Categorical.from_codes(codes, categories=STATUS_CATEGORIES),
        "replica": k.replica,
        "model_version": k.version,
        "preemptions": k.preemptions,
        "attempts": k.attempts,
        "served_by": pd.Categorical(k.served_by),
        "pool_arrival_s": uplink,
        "dispatch_s": k.dispatch_s,
        "first_token_s": client_first,
        "done_s": client_done,
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e_s": e2e,
        "network_s": (uplink - arrival) + (client_done - pool_done),
        "queueing_s": k.dispatch_s - uplink,
        "prefill_s": pool_first - k.dispatch_s,
        "decode_s": pool_done - pool_first,
    })
    lifecycle = world.lifecycle
    served = ~np.isnan(pool_first)
    p_error = np.full(req.count, np.nan)
    p_error[served] = lifecycle.drift.error_rate(pool_first[served], k.version[served])
    error = np.zeros(req.count, dtype=bool)
    error[served] = lifecycle.outcome_u[served] < p_error[served]
    frame["error_rate"] = p_error
    frame["error"] = pd.array(np.where(served, error, None), dtype="boolean")
    frame["labelled"] = ~np.isnan(lifecycle.label_times())
    tables = lifecycle_tables(world)
    summary = summarise(frame, world)
    summary.update(lifecycle_summary(frame, tables["lifecycle"], world))
    summary.update(availability(world, k, client_first, client_done))
    summary.update(lifecycle_outage_delay(world, tables["lifecycle"]))
    tables["faults"] = fault_table(world)
    summary.update(training_summary(frame, tables, world))
    metric_tables, metric_summary = measure(world)  # privacy ledger (transfers), costs, gpu_usage
    tables.update(metric_tables)
    summary.update(metric_summary)
    return Result(scenario, world.replication, frame, summary, tables=tables,
                  wall_s=time.perf_counter() - started)


def lifecycle_tables(world: World) -> dict[str, pd.DataFrame]:
    lifecycle = world.lifecycle
    stages = pd.DataFrame(
        [vars(r) for r in lifecycle.stages],
        columns=["stage", "start_s", "end_s", "drift_event", "version", "detail"],
    )
    stages["duration_s"] = stages["end_s"] - stages["start_s"]
    holds = pd.DataFrame([vars(h) for h in lifecycle.holds],
                         columns=["site", "pool", "purpose", "gpus", "start_s", "end_s"])
    horizon = world.scenario.horizon
    holds["end_s"] = holds["end_s"].fillna(horizon).clip(upper=horizon)
    transfers = pd.DataFrame([vars(t) for t in world.network.records],
                             columns=["start_s", "from_site", "to_site", "data_class", "bytes", "records",
                                      "purpose", "end_s"])
    jobs = pd.DataFrame(
        [{"name": j.name, "purpose": j.purpose, "submitted_s": j.submitted_s, "started_s": j.started_s,
          "finished_s": j.finished_s, "wait_s": j.wait_s, "gpus": j.gpus, "detail": j.detail}
         for j in lifecycle.jobs],
        columns=["name", "purpose", "submitted_s", "started_s", "finished_s", "wait_s", "gpus", "detail"])
    return {"lifecycle": stages, "gpu_holds": holds, "bulk_transfers": transfers,
            "utilisation": utilisation_timeline(world), "training_jobs": jobs}


PURPOSES = ("serving", "retraining", "development")


def training_summary(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], world: World) -> dict[str, Any]:
    """The training application: queue waits, jobs done, GPU-hours and cloud cost by purpose,
    and how stale and how often degraded the served model was."""
    from sim.metrics.cost import cloud_gpu_price

    scenario = world.scenario
    horizon = scenario.horizon
    jobs = tables["training_jobs"]
    holds = tables["gpu_holds"]
    busy_hours = {"serving": float(np.minimum(world.kernel.busy_s, horizon).sum()) * world.serving.tp / 3600}
    held_hours = {"serving": world.pool.gpu_seconds_held(horizon) / 3600}
    cloud_usd = dict.fromkeys((*PURPOSES, "provisioning"), 0.0)
    serving_site = scenario.sites[world.serving.site]
    if serving_site.zone == "third_party":
        price, _ = cloud_gpu_price(world.serving.pool, serving_site, scenario.resolved_catalog)
        cloud_usd["serving"] = held_hours["serving"] * price
    for purpose in ("retraining", "development", "provisioning"):
        mine = holds[holds["purpose"] == purpose]
        hours = float((mine["gpus"] * (mine["end_s"] - mine["start_s"])).sum()) / 3600
        held_hours[purpose] = hours
        if purpose != "provisioning":
            busy_hours[purpose] = hours
        for row in mine.itertuples():
            site = scenario.sites[row.site]
            if site.zone == "third_party":
                pool = next(p for p in site.pools if p.name == row.pool)
                price, _ = cloud_gpu_price(pool, site, scenario.resolved_catalog)
                cloud_usd[purpose] += row.gpus * (row.end_s - row.start_s) / 3600 * price
    started = jobs[jobs["started_s"].notna()]
    done = jobs[jobs["finished_s"].notna()]
    served = frame["error_rate"].notna()
    versions = world.lifecycle.drift.versions
    created = frame.loc[served, "model_version"].map(lambda v: versions[v].created_s if v in versions else 0.0)
    served_at = frame.loc[served, "dispatch_s"] + frame.loc[served, "prefill_s"]
    staleness = (served_at - created).to_numpy(dtype=float)
    degraded = (frame.loc[served, "error_rate"] > world.lifecycle.drift.base + 1e-12).to_numpy()
    return {
        "gpu_hours_by_purpose": busy_hours,
        "gpu_hours_held_by_purpose": held_hours,
        "cloud_gpu_cost_usd_by_purpose": cloud_usd,
        "training_jobs_submitted_by_purpose": {p: int((jobs["purpose"] == p).sum()) for p in PURPOSES[1:]},
        "training_jobs_completed_by_purpose": {p: int((done["purpose"] == p).sum()) for p in PURPOSES[1:]},
        "training_queue_wait_s": float(started["wait_s"].mean()) if len(started) else None,
        "training_queue_wait_s_by_purpose": {
            p: (float(started.loc[started["purpose"] == p, "wait_s"].mean())
                if (started["purpose"] == p).any() else None) for p in PURPOSES[1:]},
        "model_staleness_mean_s": float(staleness.mean()) if len(staleness) else None,
        "model_staleness_max_s": float(staleness.max()) if len(staleness) else None,
        "degraded_share": float(degraded.mean()) if len(degraded) else None,
    }


def utilisation_timeline(world: World) -> pd.DataFrame:
    """Per time slice: busy fraction of the serving pool's GPUs, and GPUs held for training."""
    rows = []
    timeline = world.busy_timeline
    pool = world.pool
    holds = world.lifecycle.holds
    capacity = world.serving.replicas * world.serving.tp
    for (t0, busy0, _), (t1, busy1, in_use) in zip(timeline, timeline[1:], strict=False):
        span = t1 - t0
        if span <= 0:
            continue
        serving_busy = float((np.minimum(busy1, t1) - np.minimum(busy0, t1)).sum()) * world.serving.tp
        training = sum(h.gpus * max(0.0, min(t1, h.end_s if not math.isnan(h.end_s) else t1) - max(t0, h.start_s))
                       for h in holds if h.purpose == "retraining") / span
        rows.append({"start_s": t0, "end_s": t1, "pool": pool.name,
                     "serving_gpus": in_use, "serving_busy_gpus": serving_busy / span,
                     "serving_utilisation": serving_busy / (span * capacity) if capacity else 0.0,
                     "training_gpus": training})
    return pd.DataFrame(rows, columns=["start_s", "end_s", "pool", "serving_gpus", "serving_busy_gpus",
                                       "serving_utilisation", "training_gpus"])


STAGE_ORDER = ("detected", "collect", "upload", "acquire_gpus", "train", "validate", "distribute", "rollout")


def lifecycle_summary(frame: pd.DataFrame, stages: pd.DataFrame, world: World) -> dict[str, Any]:
    """Per drift event: detection delay, stage durations and recovery time (DESIGN.md §2)."""
    drift = world.lifecycle.drift
    base = drift.base
    horizon = world.scenario.horizon
    events: list[dict[str, Any]] = []
    for i, event in enumerate(drift.events):
        if event.at >= horizon:
            continue
        mine = stages[stages["drift_event"] == i]
        detected = mine.loc[mine["stage"] == "detected", "start_s"]
        recovered = mine.loc[mine["stage"] == "recovered", "end_s"]
        durations = {stage: float(mine.loc[mine["stage"] == stage, "duration_s"].sum())
                     for stage in STAGE_ORDER[1:] if (mine["stage"] == stage).any()}
        events.append({
            "drift_event": i, "kind": event.kind, "onset_s": event.at,
            "detected_s": float(detected.min()) if len(detected) else None,
            "detection_delay_s": float(detected.min() - event.at) if len(detected) else None,
            "recovered_s": float(recovered.min()) if len(recovered) else None,
            "recovery_time_s": float(recovered.min() - event.at) if len(recovered) else None,
            "stages_s": durations,
        })
    served = frame["error_rate"].notna()
    excess = (frame.loc[served, "error_rate"] - base).clip(lower=0.0)
    degraded = int((excess > 1e-12).sum())
    # area under the excess-error curve: mean excess of the requests served in each minute
    served_at = (frame.loc[served, "dispatch_s"] + frame.loc[served, "prefill_s"]).to_numpy()
    minute = np.floor(served_at / 60.0).astype(np.int64)
    area = float(pd.Series(excess.to_numpy()).groupby(minute).mean().sum() * 60.0) if len(minute) else 0.0
    first = events[0] if events else {}
    errors = frame["error"].dropna()
    return {
        "detection_delay_s": first.get("detection_delay_s"),
        "recovery_time_s": first.get("recovery_time_s"),
        "recovered": bool(first.get("recovered_s") is not None) if events else None,
        "degraded_requests": degraded,
        "excess_error_area_s": area,
        "error_rate_observed": float(errors.mean()) if len(errors) else None,
        "detections": len(world.lifecycle.detections),
        "drift_events": events,
        "lifecycle_stages_s": first.get("stages_s", {}),
    }


def summarise(frame: pd.DataFrame, world: World) -> dict[str, Any]:
    scenario = world.scenario
    horizon, warmup = scenario.horizon, scenario.warmup
    steady = frame[frame["arrival_s"] >= warmup]
    completed = steady["status"] == "completed"
    summary: dict[str, Any] = {
        "requests_total": int(len(frame)),
        "requests_completed": int((frame["status"] == "completed").sum()),
        "requests_failed": int((frame["status"] == "failed").sum()),
        "requests_rejected": int((frame["status"] == "rejected").sum()),
        "requests_unfinished": int((frame["status"] == "unfinished").sum()),
        "steady_state_requests": int(len(steady)),
    }
    for stem in ("ttft", "tpot", "e2e"):
        summary.update(_percentiles(steady.loc[completed, f"{stem}_s"].to_numpy(dtype=float), stem))
    done = steady[completed]
    ttft_network = (done["pool_arrival_s"] - done["arrival_s"]) + (done["first_token_s"] - (done["dispatch_s"] + done["prefill_s"]))
    summary["ttft_parts_mean_s"] = {
        "network": _mean(ttft_network), "queueing": _mean(done["queueing_s"]), "prefill": _mean(done["prefill_s"]),
    }
    summary["e2e_parts_mean_s"] = {
        "network": _mean(done["network_s"]), "queueing": _mean(done["queueing_s"]),
        "prefill": _mean(done["prefill_s"]), "decode": _mean(done["decode_s"]),
    }
    summary["slo_attainment"] = slo_attainment(steady, scenario)
    summary["slo"] = slo_checks(summary, scenario)
    window = horizon - warmup
    finished_in_window = frame[(frame["status"] == "completed") & (frame["done_s"] >= warmup) & (frame["done_s"] <= horizon)]
    summary["throughput_rps"] = len(finished_in_window) / window
    summary["output_tokens_per_s"] = float(finished_in_window["output_tokens"].sum()) / window
    summary["gpu_utilisation"] = {world.pool.name: gpu_utilisation(world)}
    summary["preemptions"] = int(frame["preemptions"].sum())
    stages = stage_summary(frame, scenario)
    if stages:
        summary["stages"] = stages
    return summary


def stage_windows(scenario: Scenario) -> list[tuple[int, float, float, float]]:
    """(stage index, start, end, rate) of every stage occurrence of a `stages` workload."""
    arrivals = scenario.workload.arrivals
    if arrivals.process != "stages":
        return []
    windows = []
    start = 0.0
    while start < scenario.horizon:
        for k, stage in enumerate(arrivals.stages):
            windows.append((k, start, min(start + stage.duration, scenario.horizon), stage.rate_per_s))
            start += stage.duration
            if start >= scenario.horizon:
                break
        if not arrivals.repeat:
            break
    return windows


def stage_summary(frame: pd.DataFrame, scenario: Scenario) -> list[dict[str, Any]]:
    """TTFT, TPOT and E2E of the requests sent during each load stage (all occurrences of a
    repeated stage together), as load tests report them; unfinished requests are counted."""
    windows = stage_windows(scenario)
    if not windows:
        return []
    sent = frame["arrival_s"].to_numpy(dtype=float)
    out = []
    for k in sorted({w[0] for w in windows}):
        mine = np.zeros(len(frame), dtype=bool)
        for index, start, end, _ in windows:
            if index == k:
                mine |= (sent >= start) & (sent < end)
        chosen = frame[mine]
        completed = chosen[chosen["status"] == "completed"]
        entry: dict[str, Any] = {
            "stage": k, "rate_per_s": next(w[3] for w in windows if w[0] == k),
            "windows_s": [[w[1], w[2]] for w in windows if w[0] == k],
            "requests": int(len(chosen)), "requests_completed": int(len(completed)),
            "requests_unfinished": int((chosen["status"] == "unfinished").sum()),
        }
        for stem in ("ttft", "tpot", "e2e"):
            entry.update(_percentiles(completed[f"{stem}_s"].to_numpy(dtype=float), stem))
        out.append(entry)
    return out


def _mean(series: pd.Series) -> float | None:
    return float(series.mean()) if len(series) else None


def gpu_utilisation(world: World) -> float:
    """Busy fraction of the pool's serving GPUs over the horizon (iterations / time)."""
    k = world.kernel
    horizon = world.scenario.horizon
    replicas = max(world.serving.active_replicas, 1)
    return float(np.minimum(k.busy_s, horizon).sum() / (replicas * horizon))


def slo_attainment(steady: pd.DataFrame, scenario: Scenario) -> float | None:
    """Share of steady-state requests that completed within every per-request target.

    The SLO's percentile targets double as per-request thresholds; rejected and unfinished
    requests count as misses.
    """
    if len(steady) == 0:
        return None
    ok = (steady["status"] == "completed").to_numpy().copy()
    slo = scenario.slo
    for stem in ("ttft", "tpot", "e2e"):
        targets = [getattr(slo, f"{stem}_{p}", None) for p in ("p90", "p99")]
        targets = [t for t in targets if t is not None]
        if not targets:
            continue
        values = steady[f"{stem}_s"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            ok &= ~(values > max(targets))
    return float(ok.mean())


def slo_checks(summary: dict[str, Any], scenario: Scenario) -> dict[str, dict[str, Any]]:
    """Each SLO target with the measured percentile and whether it was met."""
    checks: dict[str, dict[str, Any]] = {}
    for name, target in scenario.slo.model_dump().items():
        if target is None:
            continue
        measured = summary.get(f"{name}_s")
        checks[name] = {"target_s": target, "measured_s": measured,
                        "met": measured is not None and measured <= target}
    return checks
