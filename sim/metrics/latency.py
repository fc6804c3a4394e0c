"""Latency: the one definition of TTFT, TPOT and E2E, their percentiles, and the SLO verdict.

Per request, measured from the client (DESIGN.md §2):

    TTFT = first token back at the client - sent
    E2E  = whole response back at the client - sent
    TPOT = (last token - first token) / (output tokens - 1), at the serving pool (a one-token
           answer has none)

Each decomposes into network (both directions), queueing (arrival at the pool to first
scheduled), prefill (first scheduled to first token) and decode (first token to last) parts.
Steady-state metrics leave out requests sent during the warm-up.

**Percentiles** reported as `ttft_p99_s` etc. are over the steady-state requests that
completed (what a latency histogram shows). **The SLO verdict** (`slo_verdict`, used by the
summary, compare, planning and availability alike) counts every steady-state request that
did not complete (failed, rejected, still unfinished at the horizon) as infinitely slow, so an
overloaded run that finishes few requests cannot pass; requests sent in the last
max(target) seconds before the horizon are left out, as they had no time to finish
(`verdict_window`). `slo_attainment` is the share of the same requests that completed within
every per-request target (the SLO's percentile targets used as per-request thresholds; the
largest target of a metric when it has several); availability's `availability_slo` is the
same share.

**Overloaded** (`overloaded`, the one definition compare, its report and the best-of marks
use): the SLO attainment is below the SLO's own level (0.99 for a p99 target, the strictest
level when there are several) *and* the requests not served (unfinished at the horizon or
rejected) alone exceed the misses that level allows ((1 - level) x requests generated). A
stable run leaves only the requests in flight at the horizon unfinished (well under 1%); a run
whose queue grows without bound leaves a large share. Such a run measures latency on the few
requests it finished, so none of its values may be called best.

**Per traffic class** (`class_slo_targets`): a class is judged against its own SLO when it
has one, else the scenario's, with the same rules (`slo_verdict` and `slo_attainment` take the
targets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from sim.kernels.batching import DONE
from sim.record import RequestTable
from sim.spec.scenario import SLO, Scenario, TrafficClass

STEMS = ("ttft", "tpot", "e2e")
PERCENTILES = (50, 90, 99)


def request_latencies(requests: RequestTable) -> dict[str, np.ndarray]:
    """Per request: ttft_s, tpot_s, e2e_s (NaN where it did not complete) and the parts of
    its latency: network_s, queueing_s, prefill_s, decode_s."""
    send = requests.send_s
    done = requests.status == DONE
    out_tokens = requests.output_tokens.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out_tokens > 1, (requests.done_s - requests.first_token_s) / (out_tokens - 1), np.nan)
    tpot[~done] = np.nan
    return {
        "ttft_s": requests.client_first_s - send,
        "tpot_s": tpot,
        "e2e_s": requests.client_done_s - send,
        "network_s": (requests.pool_arrival_s - send) + (requests.client_done_s - requests.done_s),
        "queueing_s": requests.dispatch_s - requests.pool_arrival_s,
        "prefill_s": requests.first_token_s - requests.dispatch_s,
        "decode_s": requests.done_s - requests.first_token_s,
    }


def percentiles(values: np.ndarray, stem: str) -> dict[str, float | None]:
    """p50/p90/p99 and the mean of the finite values, as `{stem}_p50_s` ... `{stem}_mean_s`."""
    values = values[~np.isnan(values)]
    out: dict[str, float | None] = {}
    for q in PERCENTILES:
        out[f"{stem}_p{q}_s"] = float(np.percentile(values, q)) if len(values) else None
    out[f"{stem}_mean_s"] = float(values.mean()) if len(values) else None
    return out


def order_statistic(values: np.ndarray, q: float) -> float:
    """The q-th percentile with infinities kept honest (np.percentile would give NaN)."""
    if len(values) == 0:
        return math.nan
    ordered = np.sort(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    if math.isinf(high):
        return math.inf if position > math.floor(position) or math.isinf(low) else float(low)
    return float(low + (high - low) * (position - math.floor(position)))


def targets_of(slo: SLO) -> dict[str, float]:
    """An SLO as {'ttft_p99': seconds, ...} (unset targets left out)."""
    return {name: float(target) for name, target in slo.model_dump().items() if target is not None}


def attainment_level(target_names: Iterable[str]) -> float | None:
    """The share of requests an SLO promises within target: 0.99 for `ttft_p99`, the largest
    level of several targets (`e2e_p90` and `ttft_p99` promise 0.99); None without targets."""
    levels = [int(name.rsplit("_p", 1)[1]) / 100 for name in target_names]
    return max(levels) if levels else None


def overloaded(summary: Mapping[str, Any]) -> bool:
    """Whether a run's summary shows an overloaded run (module doc): attainment below the SLO's
    level and more requests unserved than that level allows. False without an SLO verdict."""
    level = attainment_level(summary.get("slo", {}))
    attainment = summary.get("slo_attainment")
    if level is None or attainment is None:
        return False
    unserved = summary.get("requests_unfinished", 0) + summary.get("requests_rejected", 0)
    return attainment < level and unserved > (1.0 - level) * summary.get("requests_total", 0)


def slo_targets(scenario: Scenario) -> dict[str, float]:
    """The scenario's SLO as {'ttft_p99': seconds, ...} (unset targets left out)."""
    return targets_of(scenario.slo)


def class_slo_targets(scenario: Scenario, traffic_class: TrafficClass) -> dict[str, float]:
    """The targets a traffic class is judged against: its own SLO, else the scenario's."""
    return targets_of(traffic_class.slo if traffic_class.slo is not None else scenario.slo)


def per_request_thresholds(targets: Mapping[str, float]) -> dict[str, float]:
    """The per-request threshold of each stem: the largest of its percentile targets."""
    out: dict[str, float] = {}
    for name, target in targets.items():
        stem = name.partition("_p")[0]
        out[stem] = max(out.get(stem, 0.0), float(target))
    return out


def verdict_window(send_s: np.ndarray, scenario: Scenario, targets: Mapping[str, float]) -> np.ndarray:
    """The requests an SLO verdict judges: steady state (sent at or after the warm-up), and
    sent at least max(target) before the horizon, so each had the time to meet its target."""
    tail = max(targets.values(), default=0.0)
    with np.errstate(invalid="ignore"):
        return (send_s >= scenario.warmup) & (send_s < scenario.horizon - tail)


def slo_percentiles(requests: pd.DataFrame, scenario: Scenario, targets: Mapping[str, float]) -> dict[str, float]:
    """Each target's percentile over the requests of the verdict window (`verdict_window`),
    requests that did not complete counted as infinite."""
    if not targets:
        return {}
    window = verdict_window(requests["arrival_s"].to_numpy(dtype=float), scenario, targets)
    completed = (requests["status"] == "completed").to_numpy()
    out: dict[str, float] = {}
    for name in targets:
        stem, _, pct = name.partition("_p")
        values = requests[f"{stem}_s"].to_numpy(dtype=float)
        chosen = window & ~(completed & np.isnan(values))  # a one-token answer has no TPOT
        values = np.where(completed[chosen], values[chosen], np.inf)
        out[name] = order_statistic(values, float(pct))
    return out


def slo_verdict(requests: pd.DataFrame, scenario: Scenario,
                targets: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Each SLO target with the percentile that decides it (unfinished as misses) and
    whether it was met; `measured_s` is None when the percentile is infinite or undefined."""
    targets = slo_targets(scenario) if targets is None else dict(targets)
    measured = slo_percentiles(requests, scenario, targets)
    out: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        value = measured[name]
        finite = math.isfinite(value)
        out[name] = {"target_s": target, "measured_s": value if finite else None,
                     "met": bool(finite and value <= target)}
    return out


def within_slo(latencies: Mapping[str, np.ndarray], status: np.ndarray, scenario: Scenario,
               targets: Mapping[str, float] | None = None) -> np.ndarray:
    """Per request: completed, and within every per-request target (the scenario's SLO unless
    `targets` are given)."""
    ok = status == DONE
    chosen = slo_targets(scenario) if targets is None else targets
    for stem, threshold in per_request_thresholds(chosen).items():
        with np.errstate(invalid="ignore"):
            ok &= ~(latencies[f"{stem}_s"] > threshold)
    return ok


def slo_attainment(requests: pd.DataFrame, scenario: Scenario,
                   targets: Mapping[str, float] | None = None) -> float | None:
    """Share of the verdict window's requests (`verdict_window`) that completed within every
    per-request target (rejected, failed and unfinished ones are misses); the scenario's SLO
    unless `targets` are given."""
    targets = slo_targets(scenario) if targets is None else dict(targets)
    window = verdict_window(requests["arrival_s"].to_numpy(dtype=float), scenario, targets)
    steady = requests[window]
    if len(steady) == 0:
        return None
    ok = (steady["status"] == "completed").to_numpy().copy()
    for stem, threshold in per_request_thresholds(targets).items():
        values = steady[f"{stem}_s"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            ok &= ~(values > threshold)
    return float(ok.mean())


def steady_percentiles(requests: pd.DataFrame, scenario: Scenario) -> dict[str, float | None]:
    """`percentiles` of TTFT, TPOT and E2E over the completed steady-state requests."""
    steady = requests[requests["arrival_s"] >= scenario.warmup]
    done = steady[steady["status"] == "completed"]
    out: dict[str, float | None] = {}
    for stem in STEMS:
        out.update(percentiles(done[f"{stem}_s"].to_numpy(dtype=float), stem))
    return out


def slo_met(requests: pd.DataFrame, scenario: Scenario, targets: Mapping[str, float]) -> bool | None:
    """Were all these targets met (`slo_verdict`)? None when there are none."""
    if not targets:
        return None
    return all(check["met"] for check in slo_verdict(requests, scenario, targets).values())


def latency_summary(requests: pd.DataFrame, scenario: Scenario) -> dict[str, Any]:
    """Percentiles and means of TTFT, TPOT and E2E over completed steady-state requests, the
    mean of each part, the SLO attainment and the SLO verdict. When traffic classes have SLOs
    of their own, the attainment judges each request against its class's targets, and the
    verdict (`slo`) is the scenario SLO's over the classes without one."""
    steady = requests[requests["arrival_s"] >= scenario.warmup]
    done = steady[steady["status"] == "completed"]
    summary: dict[str, Any] = steady_percentiles(requests, scenario)
    ttft_network = (done["pool_arrival_s"] - done["arrival_s"]) + (done["first_token_s"] - (done["dispatch_s"]
                                                                                         + done["prefill_s"]))
    summary["ttft_parts_mean_s"] = {
        "network": _mean(ttft_network), "queueing": _mean(done["queueing_s"]), "prefill": _mean(done["prefill_s"]),
    }
    summary["e2e_parts_mean_s"] = {
        "network": _mean(done["network_s"]), "queueing": _mean(done["queueing_s"]),
        "prefill": _mean(done["prefill_s"]), "decode": _mean(done["decode_s"]),
    }
    own = {c.name: class_slo_targets(scenario, c) for c in scenario.workload.class_specs() if c.slo is not None}
    if not own or "traffic_class" not in requests:
        summary["slo_attainment"] = slo_attainment(requests, scenario)
        summary["slo"] = slo_verdict(requests, scenario)
        return summary
    # classes with SLOs of their own: each request is judged against its class's targets; the
    # scenario's SLO judges the classes without one (`classes` in the summary has each verdict)
    classes = requests["traffic_class"].astype(object).to_numpy()
    hits, judged = 0.0, 0
    for name in dict.fromkeys(classes):
        mine = requests[classes == name]
        targets = own.get(name, slo_targets(scenario))
        share = slo_attainment(mine, scenario, targets)
        count = int(verdict_window(mine["arrival_s"].to_numpy(dtype=float), scenario, targets).sum())
        if share is not None:
            hits += share * count
            judged += count
    summary["slo_attainment"] = hits / judged if judged else None
    rest = ~np.isin(classes, list(own))
    summary["slo"] = slo_verdict(requests[rest], scenario) if rest.any() else {}
    return summary


def _mean(series: pd.Series) -> float | None:
    return float(series.mean()) if len(series) else None
