"""What a run leaves behind: tidy tables, a one-row summary, and the files they go to.

A `Result` is measured once from a run's `RunRecord` (`collect`), through `sim.metrics`
alone: `requests` (one row per request, times in seconds from the start, units in column
names; `pool` and `site` say which serving pool served it, empty when none did,
`traffic_class` its class, `route` why it went to its pool: preferred, overflow, failover or
weighted, missing when it was never routed), the small tables (`lifecycle`, `gpu_holds`,
`bulk_transfers`, `utilisation`, `training_jobs`, `faults`, `transfers` (the privacy ledger),
`costs`, `gpu_usage`, and for the serving pools `pools` (one row each: where, what, its
autoscaling bounds and billing, and its load as in the summary), `pool_holding` (when each
replica instance held its GPUs), `routing` (requests per 5-minute bin of their send time, pool
and route) and `autoscaling` (the autoscalers' decisions)), and a `summary`: a dictionary with
the field names of DESIGN.md §2 (`ttft_p99_s`, `throughput_rps`, ...), breakdowns nested
under the same stems. Latency and the SLO verdict are defined in `sim.metrics.latency`,
GPU-hours and replicas held in `sim.metrics.utilisation`.

Besides DESIGN.md §2's fields the summary has:

- `pools`: per serving pool, `site`, `gpu`, `requests` (sent to it), `requests_share` (of the
  requests sent to any pool), `gpu_hours` (held, as billed), `replicas_mean` (time-average of
  the replicas holding GPUs over the horizon), `replicas_max` and `utilisation` (busy / held);
- `classes`: per traffic class, `requests`, `requests_completed`, TTFT/TPOT/E2E percentiles
  (steady state, completed), `slo_attainment` and `slo_met` against the class's SLO (its own,
  else the scenario's; the scenario verdict's rules) and `exposure` (bytes, records and score
  its payloads exposed: `sim.metrics.ledger.traffic_class_exposure`);
- `burst_share`: the share of routed requests sent to a pool because the pools before it in
  their route were loaded beyond the route's thresholds (reason overflow; 0 when none were).
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

from sim.kernels.batching import DONE, FAILED, FAILOVER, OVERFLOW, PREFERRED, REJECTED, WEIGHTED
from sim.metrics import measure
from sim.metrics.availability import availability, lifecycle_outage_delay
from sim.metrics.latency import (
    STEMS,
    class_slo_targets,
    latency_summary,
    percentiles,
    request_latencies,
    slo_attainment,
    slo_met,
    slo_targets,
    steady_percentiles,
)
from sim.metrics.ledger import traffic_class_exposure
from sim.metrics.lifecycle import lifecycle_summary, stages_table, training_summary
from sim.metrics.utilisation import (
    HOUR_S,
    pool_held_gpu_seconds,
    replicas_max,
    replicas_mean,
    serving_utilisation,
    utilisation_timeline,
)
from sim.record import AUTOSCALE_COLUMNS, RunRecord, empty_frame
from sim.workload.arrivals import Stages

if TYPE_CHECKING:
    from sim.spec.scenario import Scenario

STATUS_CATEGORIES = ["completed", "rejected", "failed", "unfinished"]
ROUTE_NAMES = {PREFERRED: "preferred", OVERFLOW: "overflow", FAILOVER: "failover", WEIGHTED: "weighted"}
ROUTE_CATEGORIES = [ROUTE_NAMES[code] for code in range(len(ROUTE_NAMES))]  # category i is reason code i
ROUTING_BIN_S = 300.0  # the `routing` table's bins of send time


@dataclass
class Result:
    scenario: Scenario
    replication: int
    requests: pd.DataFrame
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    wall_s: float = 0.0
    tally: Any = None
    """A streamed run's `sim.metrics.tally.RequestTally` (what it kept of its requests:
    `requests` is empty); None for an exact run."""

    def summary_frame(self) -> pd.DataFrame:
        """The summary as a one-row DataFrame (nested breakdowns flattened with dots)."""
        return pd.json_normalize(self.summary)

    def write(self, out_dir: str | Path, requests: bool = True) -> Path:
        """Write requests.parquet (unless `requests` is False), one Parquet file per table
        (transfers, costs, gpu_usage, lifecycle, ...), summary.json and the resolved scenario.yaml."""
        from sim.spec import dump_scenario, spec_hash
        from sim.version import __version__

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"scenario": self.scenario.name, "seed": str(self.scenario.seed),
                "replication": str(self.replication), "spec_hash": spec_hash(self.scenario),
                "deploysim_version": __version__}
        if requests and self.summary.get("results_mode") != "streamed":  # a streamed run kept none
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


def collect(record: RunRecord) -> Result:
    """The Result of a run: its tables and summary, measured from its record alone."""
    if record.streamed:
        return collect_streamed(record)
    started = time.perf_counter()
    scenario = record.scenario
    req = record.requests
    latencies = request_latencies(req)
    codes = np.full(len(req), STATUS_CATEGORIES.index("unfinished"), dtype=np.int8)
    codes[req.status == DONE] = STATUS_CATEGORIES.index("completed")
    codes[req.status == REJECTED] = STATUS_CATEGORIES.index("rejected")
    codes[req.status == FAILED] = STATUS_CATEGORIES.index("failed")
    pool_names = [*record.pool_names, ""]
    pool_codes = np.where(req.pool >= 0, req.pool, len(record.pool_names)).astype(np.int16)
    sites = [*(p.site for p in record.pools.values()), ""]
    frame = pd.DataFrame({
        "request": np.arange(len(req), dtype=np.int64),
        "arrival_s": req.send_s,
        "prompt_tokens": req.prompt_tokens,
        "output_tokens": req.output_tokens,
        "prefix_group": req.prefix_group,
        "status": pd.Categorical.from_codes(codes, categories=STATUS_CATEGORIES),
        "pool": pd.Categorical.from_codes(pool_codes, categories=pool_names),
        "site": pd.Categorical(np.array(sites, dtype=object)[pool_codes]),
        "traffic_class": pd.Categorical.from_codes(req.traffic_class.astype(np.int64), categories=record.class_names),
        "route": pd.Categorical.from_codes(np.where(req.reason >= 0, req.reason, -1).astype(np.int64),
                                           categories=ROUTE_CATEGORIES),
        "replica": req.replica,
        "model_version": req.version,
        "preemptions": req.preemptions,
        "attempts": req.attempts,
        "pool_arrival_s": req.pool_arrival_s,
        "dispatch_s": req.dispatch_s,
        "first_token_s": req.client_first_s,
        "done_s": req.client_done_s,
        **latencies,
        "error_rate": req.error_rate,
        "error": _outcome(req.error, req.served),
        "labelled": req.labelled,
    })
    stages = stages_table(record)
    tables = _record_tables(record, stages, _requests_by_pool(frame), routing_timeline(frame))
    summary = {"results_mode": "exact", **summarise(frame, record)}
    _measure_the_rest(record, summary, tables, stages, latencies)
    return Result(scenario, record.replication, frame, summary, tables=tables,
                  wall_s=record.wall_s + time.perf_counter() - started)


def _record_tables(record: RunRecord, stages: pd.DataFrame, requests_by_pool: Any,
                   routing: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables both modes read off the record; they differ only in where the requests per
    pool and the routing timeline come from (the request table, or the tally)."""
    return {
        "lifecycle": stages, "gpu_holds": record.gpu_holds, "bulk_transfers": record.transfers,
        "utilisation": utilisation_timeline(record), "training_jobs": record.jobs, "faults": record.faults,
        "pools": pools_table(requests_by_pool, record), "pool_holding": pool_holding(record),
        "routing": routing,
        "autoscaling": record.autoscaling if len(record.autoscaling) else empty_frame(AUTOSCALE_COLUMNS),
    }


def _measure_the_rest(record: RunRecord, summary: dict[str, Any], tables: dict[str, pd.DataFrame],
                      stages: pd.DataFrame, latencies: dict[str, np.ndarray]) -> None:
    """Lifecycle, availability, training, privacy, cost and energy: the same for both modes."""
    summary.update(lifecycle_summary(record, stages))
    summary.update(availability(record, latencies))
    summary.update(lifecycle_outage_delay(record, stages))
    summary.update(training_summary(record))
    metric_tables, metric_summary = measure(record)  # privacy ledger (transfers), costs, gpu_usage
    tables.update(metric_tables)
    summary.update(metric_summary)
    for name, exposed in traffic_class_exposure(tables["transfers"], record.scenario).items():
        summary["classes"][name]["exposure"] = exposed


STREAMED_REQUESTS_NOTE = ("not kept: a streamed run summarises its requests as they end (counts and sums exact, "
                          "percentiles from a sketch); run with --keep-requests for requests.parquet")


def collect_streamed(record: RunRecord) -> Result:
    """The Result of a streamed run, from its tally (`sim.metrics.tally`): the summary's
    fields and the tables an exact run has, but no per-request table (`requests` is empty;
    `summary['requests_table']` says why). Percentiles come from sketches and are within
    `summary['latency_relative_error']` of the exact ones."""
    started = time.perf_counter()
    scenario = record.scenario
    tally = record.tally
    if tally is None:
        raise ValueError("a streamed record is measured from the tally its requests went to: attach it "
                         "(sim.runner.run_world does)")
    stages = stages_table(record)
    tables = _record_tables(record, stages, _tallied_by_pool(record), _tallied_routing(record))
    summary: dict[str, Any] = {"results_mode": "streamed", "latency_relative_error": tally.relative_accuracy,
                               "requests_table": STREAMED_REQUESTS_NOTE, **tallied_summary(record)}
    _measure_the_rest(record, summary, tables, stages, {})
    frame = pd.DataFrame({"request": np.empty(0, dtype=np.int64)})
    return Result(scenario, record.replication, frame, summary, tables=tables,
                  wall_s=record.wall_s + time.perf_counter() - started, tally=tally)


def _requests_by_pool(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["pool"].value_counts()
    return {str(name): int(count) for name, count in counts.items()}


def _tallied_by_pool(record: RunRecord) -> dict[str, int]:
    per_pool = record.tally.counts.sum(axis=(0, 2, 3))
    return {name: int(per_pool[p]) for p, name in enumerate(record.pool_names)} | {"": int(per_pool[-1])}


def _tallied_routing(record: RunRecord) -> pd.DataFrame:
    """`routing_timeline` from a streamed run's bins."""
    names = record.pool_names
    rows = [(b * ROUTING_BIN_S, names[p], ROUTE_NAMES[r], record.tally.routing[b, p, r])
            for b, p, r in zip(*np.nonzero(record.tally.routing), strict=True)]
    frame = pd.DataFrame(rows, columns=["start_s", "pool", "route", "requests"])
    frame = frame.sort_values(["start_s", "pool", "route"], kind="stable").reset_index(drop=True)
    return frame.astype({"start_s": np.float64, "requests": np.int64})


def tallied_summary(record: RunRecord) -> dict[str, Any]:
    """`summarise` of a streamed run: the same fields, from its tally."""
    scenario = record.scenario
    tally = record.tally
    horizon, warmup = scenario.horizon, scenario.warmup
    summary: dict[str, Any] = {
        "requests_total": tally.requests,
        "requests_completed": tally.status_count(0),
        "requests_failed": tally.status_count(2),
        "requests_rejected": tally.status_count(1),
        "requests_unfinished": tally.status_count(3),
        "steady_state_requests": int(tally.steady.sum()),
    }
    for stem in STEMS:
        summary.update(tally.percentiles(tally.merged_latency(stem), stem))
    parts = {name: tally.parts_sum[name] / n if (n := tally.parts_count[name]) else None for name in tally.parts_sum}
    summary["ttft_parts_mean_s"] = {p: parts[f"ttft_{p}"] for p in ("network", "queueing", "prefill")}
    summary["e2e_parts_mean_s"] = {p: parts[f"e2e_{p}"] for p in ("network", "queueing", "prefill", "decode")}
    summary.update(_tallied_slo(record))
    window = horizon - warmup
    summary["throughput_rps"] = tally.finished_in_window / window
    summary["output_tokens_per_s"] = tally.finished_output_tokens / window
    summary["gpu_utilisation"] = serving_utilisation(record)
    per_pool = _tallied_by_pool(record)
    summary["requests_by_pool"] = {name: per_pool[name] for name in record.pool_names}
    summary["pools"] = pools_summary(pools_table(per_pool, record))
    summary["classes"] = {}
    for k, spec in enumerate(scenario.workload.class_specs()):
        counts = tally.counts[k]
        entry: dict[str, Any] = {"requests": int(counts.sum()), "requests_completed": int(counts[:, 0, :].sum())}
        for stem in STEMS:
            entry.update(tally.percentiles(tally.latency[k][stem], stem))
        entry["slo_attainment"] = float(tally.window_ok[k] / tally.window[k]) if tally.window[k] else None
        entry["slo_met"] = (all(_verdict(tally, name, target, [k])["met"] for name, target in tally.targets[k].items())
                            if tally.targets[k] else None)
        summary["classes"][spec.name] = entry
    reasons = tally.counts.sum(axis=(0, 1, 2))
    routed = int(reasons[1:].sum())
    summary["burst_share"] = float(reasons[1 + OVERFLOW]) / routed if routed else 0.0
    summary["preemptions"] = tally.preemptions
    return summary


def _verdict(tally: Any, name: str, target: float, classes: list[int]) -> dict[str, Any]:
    value = tally.verdict_value(name, classes)
    finite = math.isfinite(value)
    return {"target_s": target, "measured_s": value if finite else None, "met": bool(finite and value <= target)}


def _tallied_slo(record: RunRecord) -> dict[str, Any]:
    """`latency_summary`'s attainment and verdict, from the tally: each class against its
    own SLO when it has one; the scenario's verdict over the classes without."""
    scenario = record.scenario
    tally = record.tally
    specs = scenario.workload.class_specs()
    own = [k for k, c in enumerate(specs) if c.slo is not None]
    judged = int(tally.window.sum())
    rest = [k for k in range(len(specs)) if k not in own]
    targets = slo_targets(scenario)
    # as `latency_summary`: the scenario's verdict always without classes of their own SLO,
    # else when the other classes sent requests
    judged_by_scenario = not own or (bool(rest) and int(tally.counts[rest].sum()) > 0)
    return {"slo_attainment": float(tally.window_ok.sum() / judged) if judged else None,
            "slo": ({name: _verdict(tally, name, target, rest) for name, target in targets.items()}
                    if judged_by_scenario else {})}


def _outcome(error: np.ndarray, served: np.ndarray) -> pd.arrays.BooleanArray:
    """Each request's drawn outcome (error or not), missing where it was never served."""
    return pd.arrays.BooleanArray(error.astype(bool), ~served)


def summarise(frame: pd.DataFrame, record: RunRecord) -> dict[str, Any]:
    """Request counts, latency (`sim.metrics.latency`), throughput and GPU utilisation."""
    scenario = record.scenario
    horizon, warmup = scenario.horizon, scenario.warmup
    steady = frame[frame["arrival_s"] >= warmup]
    summary: dict[str, Any] = {
        "requests_total": int(len(frame)),
        "requests_completed": int((frame["status"] == "completed").sum()),
        "requests_failed": int((frame["status"] == "failed").sum()),
        "requests_rejected": int((frame["status"] == "rejected").sum()),
        "requests_unfinished": int((frame["status"] == "unfinished").sum()),
        "steady_state_requests": int(len(steady)),
    }
    summary.update(latency_summary(frame, scenario))
    window = horizon - warmup
    finished_in_window = frame[(frame["status"] == "completed") & (frame["done_s"] >= warmup)
                               & (frame["done_s"] <= horizon)]
    summary["throughput_rps"] = len(finished_in_window) / window
    summary["output_tokens_per_s"] = float(finished_in_window["output_tokens"].sum()) / window
    summary["gpu_utilisation"] = serving_utilisation(record)
    summary["requests_by_pool"] = {name: int((frame["pool"] == name).sum()) for name in record.pool_names}
    summary["pools"] = pools_summary(pools_table(_requests_by_pool(frame), record))
    summary["classes"] = classes_summary(frame, record)
    summary["burst_share"] = burst_share(record)
    summary["preemptions"] = int(frame["preemptions"].sum())
    stages = stage_summary(frame, scenario)
    if stages:
        summary["stages"] = stages
    return summary


# ------------------------------------------------------------------------------------------
# Serving pools, traffic classes and routes
# ------------------------------------------------------------------------------------------

POOL_COLUMNS = ["pool", "site", "zone", "gpu", "gpus_per_replica", "autoscaled", "min_replicas", "max_replicas",
                "billing", "requests", "requests_share", "gpu_hours", "replicas_mean", "replicas_max", "utilisation"]
POOL_SUMMARY_FIELDS = ("site", "gpu", "requests", "requests_share", "gpu_hours", "replicas_mean", "replicas_max",
                       "utilisation")


def pools_table(counts: dict[str, int], record: RunRecord) -> pd.DataFrame:
    """One row per serving pool: where it is, its GPUs, autoscaling bounds and billing, and
    its load: requests sent to it (`counts`: requests by pool name, '' for none) and their
    share, GPU-hours held (as billed), replicas holding GPUs (time-average and most at once)
    and utilisation (`sim.metrics.utilisation`)."""
    horizon = record.horizon_s
    routed = sum(counts.values()) - counts.get("", 0)
    utilisation = serving_utilisation(record)
    rows = []
    for name, pool in record.pools.items():
        requests = int(counts.get(name, 0))
        rows.append({
            "pool": name, "site": pool.site, "zone": pool.zone, "gpu": f"api {pool.api}" if pool.api else pool.gpu,
            "gpus_per_replica": pool.gpus_per_replica, "autoscaled": pool.autoscaled,
            "min_replicas": pool.min_replicas, "max_replicas": pool.max_replicas, "billing": pool.billing,
            "requests": requests, "requests_share": requests / routed if routed else 0.0,
            "gpu_hours": pool_held_gpu_seconds(pool, horizon) / HOUR_S,
            "replicas_mean": replicas_mean(pool, horizon), "replicas_max": replicas_max(pool),
            "utilisation": utilisation.get(name, 0.0),  # a managed API: no GPUs of ours
        })
    return pd.DataFrame(rows, columns=POOL_COLUMNS)


def pools_summary(pools: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The summary's `pools` object from `pools_table`."""
    return {str(row["pool"]): {key: _plain(row[key]) for key in POOL_SUMMARY_FIELDS}
            for row in pools.to_dict("records")}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def pool_holding(record: RunRecord) -> pd.DataFrame:
    """When each replica instance of every serving pool held its GPUs: pool, replica,
    start_s, end_s, gpus."""
    frames = [pool.holding[["replica", "start_s", "end_s"]].assign(pool=name, gpus=pool.gpus_per_replica)
              for name, pool in record.pools.items() if len(pool.holding)]
    columns = ["pool", "replica", "start_s", "end_s", "gpus"]
    if not frames:
        return empty_frame({"pool": object, "replica": np.int64, "start_s": np.float64, "end_s": np.float64,
                            "gpus": np.int64})
    return pd.concat(frames, ignore_index=True)[columns]


def routing_timeline(frame: pd.DataFrame) -> pd.DataFrame:
    """Routed requests per ROUTING_BIN_S bin of their send time, pool and route."""
    routed = frame[frame["route"].notna() & frame["arrival_s"].notna()]
    start = np.floor(routed["arrival_s"].to_numpy(dtype=float) / ROUTING_BIN_S) * ROUTING_BIN_S
    grouped = (routed.assign(start_s=start, pool=routed["pool"].astype(str), route=routed["route"].astype(str))
               .groupby(["start_s", "pool", "route"], sort=True).size())
    return grouped.rename("requests").reset_index().astype({"requests": np.int64})


def burst_share(record: RunRecord) -> float:
    """Share of routed requests whose reason is OVERFLOW (0 when none was routed)."""
    reason = record.requests.reason
    routed = int((reason >= 0).sum())
    return float((reason == OVERFLOW).sum()) / routed if routed else 0.0


def classes_summary(frame: pd.DataFrame, record: RunRecord) -> dict[str, dict[str, Any]]:
    """Per traffic class: requests, completed, latency percentiles (steady state), and SLO
    attainment and verdict against the class's targets (`sim.metrics.latency`)."""
    scenario = record.scenario
    out: dict[str, dict[str, Any]] = {}
    for spec in scenario.workload.class_specs():
        mine = frame[frame["traffic_class"] == spec.name]
        targets = class_slo_targets(scenario, spec)
        out[spec.name] = {
            "requests": int(len(mine)),
            "requests_completed": int((mine["status"] == "completed").sum()),
            **steady_percentiles(mine, scenario),
            "slo_attainment": slo_attainment(mine, scenario, targets),
            "slo_met": slo_met(mine, scenario, targets),
        }
    return out


# ------------------------------------------------------------------------------------------
# Load stages
# ------------------------------------------------------------------------------------------


def stage_windows(scenario: Scenario) -> list[tuple[int, float, float, float]]:
    """(stage index, start, end, rate) of every stage occurrence of a `stages` workload."""
    arrivals = scenario.workload.arrivals
    if not isinstance(arrivals, Stages):
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
        for stem in STEMS:
            entry.update(percentiles(completed[f"{stem}_s"].to_numpy(dtype=float), stem))
        out.append(entry)
    return out
