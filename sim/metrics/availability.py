"""Availability: what share of requests a placement served while things failed, and proof that
every request and every byte is accounted for.

**Availability** is measured over the steady-state requests (sent at or after the warm-up)
that *ended* within the horizon: completed, failed (client timeout, out of attempts, cut off
on the way) or rejected (too long for the model). Requests still in progress at the horizon
have not had their chance and are left out (they are counted as `requests_unfinished`).

    availability      = completed / ended
    availability_slo  = completed within every per-request SLO target / ended

The per-request targets are the SLO's percentile targets, as for `slo_attainment`. With no
faults and no rejections, availability is 1. Next to it: failed and retried requests, the
requests served by the fallback pool, delayed or cut off by outages, and per kind of fault the
number of faults, the mean time to restore and the time spent down (within the horizon).

**Lifecycle delay** caused by outages (`lifecycle_outage_delay`): bulk transfers of the
recovery pipeline paused on a cut link, training work lost since the last checkpoint, time
training waited for repairs, waits for a site to be reachable, and waits for an elastic pool
that could not grow (capacity shortages). Causes add up; overlapping ones count twice.

**Conservation** (`check_invariants`, run after every run): every generated request ends
exactly once (completed, failed, rejected, or unfinished at the horizon) in exactly one pool,
with times that make sense; and, per link direction, the privacy ledger records exactly the
bytes handed to the link. A broken invariant raises `InvariantError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.kernels.batching import DONE, FAILED, REJECTED
from sim.spec.scenario import Scenario

if TYPE_CHECKING:
    from sim.result import Result
    from sim.world.faults import Outcomes
    from sim.world.world import World

FAULT_KINDS = ("replica_failure", "link_outage", "site_outage", "capacity_shortage")
FAULT_COLUMNS = ["kind", "target", "replica", "start_s", "end_s", "restored", "time_to_restore_s",
                 "requests_retried", "requests_failed", "requests_delayed", "requests_cut_off", "requests_diverted"]
STATUS_OF_CODE = {DONE: "completed", REJECTED: "rejected", FAILED: "failed"}
BYTES_TOLERANCE = 1e-6  # relative, for sums of float byte counts


# ------------------------------------------------------------------------------------------
# Outcomes, whether or not faults were installed
# ------------------------------------------------------------------------------------------


def request_outcomes(world: World) -> Outcomes:
    """Per-request outcomes over every pool that served (the fallback pool's merged in)."""
    from sim.world.faults import Outcomes

    injector = getattr(world, "faults", None)
    if injector is not None:
        return injector.request_outcomes()
    k = world.kernel
    return Outcomes(status=k.status.copy(), arrival_s=k.arrival_s.copy(), dispatch_s=k.dispatch_s.copy(),
                    first_token_s=k.first_token_s.copy(), done_s=k.done_s.copy(), replica=k.replica.copy(),
                    version=k.version.copy(), preemptions=k.preemptions.copy(), attempts=k.attempts.copy(),
                    served_by=np.full(k.n, world.pool.name, dtype=object))


def first_token_bytes(world: World) -> np.ndarray:
    workload = world.scenario.workload
    return np.full(world.requests.count, workload.bytes_per_token + workload.request_overhead)


def client_times(world: World, outcomes: Outcomes, first_bytes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First token and whole response back at the client, over the path each request took."""
    first_bytes = first_token_bytes(world) if first_bytes is None else first_bytes
    injector = getattr(world, "faults", None)
    if injector is not None:
        return injector.client_times(outcomes, first_bytes)
    done = np.where(outcomes.status == DONE, outcomes.done_s, np.nan)
    return world.downlink(outcomes.first_token_s, first_bytes), world.downlink(done, world.response_bytes)


def status_names(status: np.ndarray) -> np.ndarray:
    """The result's status category of each kernel status code."""
    names = np.full(len(status), "unfinished", dtype=object)
    for code, name in STATUS_OF_CODE.items():
        names[status == code] = name
    return names


def send_times(world: World) -> np.ndarray:
    """When each request left its client."""
    req = world.requests
    if req.clients == 0:
        return np.asarray(req.arrival_s, dtype=np.float64)
    return world.kernel.arrival_s - world.path.one_way_s


# ------------------------------------------------------------------------------------------
# Availability
# ------------------------------------------------------------------------------------------


def slo_thresholds(scenario: Scenario) -> dict[str, float]:
    """The per-request target of each latency stem (the largest of its percentile targets)."""
    out: dict[str, float] = {}
    for stem in ("ttft", "tpot", "e2e"):
        found = [getattr(scenario.slo, f"{stem}_{p}", None) for p in ("p90", "p99")]
        targets = [float(t) for t in found if t is not None]
        if targets:
            out[stem] = max(targets)
    return out


def within_slo(world: World, outcomes: Outcomes, client_first: np.ndarray, client_done: np.ndarray) -> np.ndarray:
    """Completed requests that met every per-request SLO target."""
    send = send_times(world)
    out_tokens = world.requests.output_tokens.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "ttft": client_first - send,
            "e2e": client_done - send,
            "tpot": np.where(out_tokens > 1, (outcomes.done_s - outcomes.first_token_s) / (out_tokens - 1), np.nan),
        }
    ok = outcomes.status == DONE
    for stem, target in slo_thresholds(world.scenario).items():
        with np.errstate(invalid="ignore"):
            ok &= ~(values[stem] > target)
    return ok


def fault_table(world: World) -> pd.DataFrame:
    """One row per fault injected (empty without faults); see `FaultInjector.table`."""
    injector = getattr(world, "faults", None)
    if injector is None:
        return empty_fault_table()
    return injector.table()


def empty_fault_table() -> pd.DataFrame:
    dtypes = {"kind": object, "target": object, "replica": np.int64, "start_s": np.float64, "end_s": np.float64,
              "restored": bool, "time_to_restore_s": np.float64}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, np.int64)) for c in FAULT_COLUMNS})


def availability(world: World, outcomes: Outcomes | None = None, client_first: np.ndarray | None = None,
                 client_done: np.ndarray | None = None) -> dict[str, Any]:
    """Summary fields: availability, failed / retried / fallback requests, time to restore."""
    scenario = world.scenario
    outcomes = request_outcomes(world) if outcomes is None else outcomes
    if client_first is None or client_done is None:
        client_first, client_done = client_times(world, outcomes)
    steady = send_times(world) >= scenario.warmup
    status = outcomes.status
    ended = steady & np.isin(status, (DONE, FAILED, REJECTED))
    completed = steady & (status == DONE)
    good = steady & within_slo(world, outcomes, client_first, client_done)
    n_ended = int(ended.sum())
    injector = getattr(world, "faults", None)
    routing = getattr(injector, "routing", None)
    retried = outcomes.attempts > 1
    summary: dict[str, Any] = {
        "availability": float(completed.sum() / n_ended) if n_ended else None,
        "availability_slo": float(good.sum() / n_ended) if n_ended else None,
        "requests_ended": n_ended,
        "requests_retried": int(retried.sum()),
        "retries": int((outcomes.attempts - 1).sum()),
        "requests_failed_after_retries": int((retried & (status == FAILED)).sum()),
        "requests_fallback": int(routing.diverted.sum()) if routing is not None else 0,
        "requests_delayed_by_outages": int(routing.delayed.sum()) if routing is not None else 0,
        "requests_cut_off": int((routing.cut_off & (status == FAILED)).sum()) if routing is not None else 0,
    }
    table = fault_table(world)
    horizon = scenario.horizon
    down = (table["end_s"].clip(upper=horizon) - table["start_s"]).clip(lower=0.0) if len(table) else table["end_s"]
    summary["faults_injected"] = int(len(table))
    summary["faults_by_kind"] = {k: int((table["kind"] == k).sum()) for k in FAULT_KINDS}
    restored = table[table["restored"].astype(bool)] if len(table) else table
    summary["time_to_restore_mean_s"] = float(restored["time_to_restore_s"].mean()) if len(restored) else None
    summary["time_to_restore_mean_s_by_kind"] = {
        k: (float(restored.loc[restored["kind"] == k, "time_to_restore_s"].mean())
            if (restored["kind"] == k).any() else None) for k in FAULT_KINDS}
    summary["downtime_s_by_kind"] = {k: float(down[table["kind"] == k].sum()) if len(table) else 0.0
                                     for k in FAULT_KINDS}
    return summary


# ------------------------------------------------------------------------------------------
# Lifecycle delay caused by outages
# ------------------------------------------------------------------------------------------


LIFECYCLE_PURPOSES = ("training data", "artifact")


def lifecycle_outage_delay(world: World, lifecycle: pd.DataFrame | None = None) -> dict[str, Any]:
    """How much outages held up the model lifecycle (see the module doc).

    `lifecycle` (the result's lifecycle table) attributes transfer pauses to drift events:
    a pause counts for the event whose stages span the transfer's start.
    """
    from sim.world.faults import overlap_s

    injector = getattr(world, "faults", None)
    scenario = world.scenario
    horizon = scenario.horizon
    causes = {"transfer_pause": 0.0, "training_lost_work": 0.0, "training_wait": 0.0, "unreachable_wait": 0.0,
              "capacity_wait": 0.0}
    by_event: dict[int, float] = {}
    if injector is not None:
        spans: list[tuple[int, float, float]] = []
        if lifecycle is not None and len(lifecycle):
            for event, rows in lifecycle.groupby("drift_event"):
                spans.append((int(event), float(rows["start_s"].min()), float(rows["end_s"].max())))
        for record in world.network.records:
            if record.purpose not in LIFECYCLE_PURPOSES:
                continue
            found = scenario.link_between(record.from_site, record.to_site)
            if found is None:
                continue
            end = record.end_s if not np.isnan(record.end_s) else horizon
            paused = overlap_s(injector.plan.link_down(scenario, found[0]), record.start_s, end)
            causes["transfer_pause"] += paused
            for event, start, stop in spans:
                if start <= record.start_s <= stop:
                    by_event[event] = by_event.get(event, 0.0) + paused
                    break
        for run in injector.training_runs:
            if run.purpose != "retraining":
                continue  # development jobs are not on the model's recovery path
            causes["training_lost_work"] += run.lost_s
            causes["training_wait"] += run.waited_s
        causes["unreachable_wait"] = float(sum(end - start for _, _, start, end in injector.reachability_waits))
        causes["capacity_wait"] = float(sum(end - start for _, start, end in injector.capacity_waits))
    return {"lifecycle_outage_delay_s": float(sum(causes.values())),
            "lifecycle_outage_delay_s_by_cause": causes,
            "lifecycle_outage_delay_s_by_drift_event": by_event}


# ------------------------------------------------------------------------------------------
# Conservation checks
# ------------------------------------------------------------------------------------------


class InvariantError(AssertionError):
    """A run broke a conservation law: a request did not end exactly once, or bytes went missing."""


def _fail(message: str, examples: np.ndarray | None = None) -> None:
    if examples is not None and len(examples):
        message += f" (requests {', '.join(str(int(i)) for i in examples[:5])}{', ...' if len(examples) > 5 else ''})"
    raise InvariantError(message)


def check_requests(world: World, frame: pd.DataFrame, outcomes: Outcomes | None = None) -> None:
    """Every generated request ends exactly once, in one pool, with consistent times."""
    n = world.requests.count
    horizon = world.scenario.horizon
    outcomes = request_outcomes(world) if outcomes is None else outcomes
    if len(frame) != n:
        _fail(f"the requests table has {len(frame)} rows for {n} generated requests")
    ids = frame["request"].to_numpy()
    if not np.array_equal(np.sort(ids), np.arange(n)):
        _fail("the requests table does not list every request exactly once")
    status = frame["status"].astype(object).to_numpy()
    missing = np.flatnonzero(pd.isna(status))
    if len(missing):
        _fail("requests without a status", missing)
    expected = status_names(outcomes.status)
    wrong = np.flatnonzero(status != expected)
    if len(wrong):
        i = wrong[0]
        _fail(f"{len(wrong)} requests have a status in the table that differs from how they ended "
              f"(request {i}: table says {status[i]!r}, the pools say {expected[i]!r})", wrong)
    # terminal in at most one pool
    injector = getattr(world, "faults", None)
    fallback = getattr(injector, "fallback", None)
    if fallback is not None:
        terminal = np.isin(world.kernel.status, (DONE, FAILED, REJECTED))
        both = np.flatnonzero(terminal & np.isin(fallback.kernel.status, (DONE, FAILED, REJECTED)))
        if len(both):
            _fail("requests ended in both the primary and the fallback pool", both)
    ended = np.isin(outcomes.status, (DONE, FAILED, REJECTED))
    done = outcomes.done_s
    # a request whose last iteration ended by the horizon may still be in the engine's front end
    lag = max([world.kernel.frontend_lag_bound_s]
              + ([fallback.kernel.frontend_lag_bound_s] if fallback is not None else []))
    with np.errstate(invalid="ignore"):
        bad_end = np.flatnonzero(ended & ~(done <= horizon + np.where(outcomes.status == DONE, lag, 0.0)))
        bad_open = np.flatnonzero(~ended & ~np.isnan(done))
        early = np.flatnonzero((outcomes.status == DONE) & ~(done >= outcomes.first_token_s))
        before = np.flatnonzero((outcomes.status == DONE) & ~(outcomes.first_token_s >= outcomes.arrival_s))
    if len(bad_end):
        _fail("ended requests without an end time within the horizon", bad_end)
    if len(bad_open):
        _fail("requests that did not end but have an end time", bad_open)
    if len(early):
        _fail("completed requests that ended before their first token", early)
    if len(before):
        _fail("completed requests whose first token came before they arrived", before)
    limit = world.scenario.faults.retry.max_attempts
    over = np.flatnonzero(outcomes.attempts > limit)
    if injector is not None and len(over):
        _fail(f"requests that made more than max_attempts={limit} attempts", over)


def carried_bytes(world: World, outcomes: Outcomes | None = None) -> dict[tuple[str, str], float]:
    """Bytes handed to each link direction: bulk transfers, request and response payloads."""
    scenario = world.scenario
    carried: dict[tuple[str, str], float] = {}
    for (src, dst), direction in world.network.directions.items():
        if direction.bytes_accepted:
            carried[(src, dst)] = direction.bytes_accepted
    origin, site = scenario.workload.origin, scenario.placement.inference
    if origin != site:
        outcomes = request_outcomes(world) if outcomes is None else outcomes
        injector = getattr(world, "faults", None)
        if injector is not None:
            sent = injector.request_send_times()
        else:
            from sim.metrics.ledger import request_send_times

            sent = request_send_times(world)
        up = float(world.request_bytes[~np.isnan(sent)].sum())
        primary = outcomes.served_by == world.pool.name
        down = float(world.response_bytes[primary & (outcomes.status == DONE)].sum())
        for key, nbytes in (((origin, site), up), ((site, origin), down)):
            if nbytes:
                carried[key] = carried.get(key, 0.0) + nbytes
    return carried


def check_ledger(world: World, ledger: pd.DataFrame, outcomes: Outcomes | None = None) -> None:
    """Per link direction, the ledger's bytes equal the bytes handed to the link, and no
    direction sent more than it was given."""
    recorded = ledger.groupby(["from_site", "to_site"])["bytes"].sum().to_dict() if len(ledger) else {}
    carried = carried_bytes(world, outcomes)
    for key in sorted(set(recorded) | set(carried)):
        a, b = float(recorded.get(key, 0.0)), float(carried.get(key, 0.0))
        if abs(a - b) > BYTES_TOLERANCE * max(1.0, a, b):
            raise InvariantError(f"the ledger records {a:.6g} bytes from {key[0]} to {key[1]}, "
                                 f"but the link was handed {b:.6g}")
    for (src, dst), direction in world.network.directions.items():
        if direction.bytes_sent > direction.bytes_accepted * (1 + BYTES_TOLERANCE) + 1.0:
            raise InvariantError(f"the link from {src} to {dst} sent {direction.bytes_sent:.6g} bytes "
                                 f"of the {direction.bytes_accepted:.6g} it was given")
    for record in world.network.records:
        if not np.isnan(record.end_s) and record.end_s < record.start_s:
            raise InvariantError(f"a transfer from {record.from_site} to {record.to_site} ended before it started")


def check_invariants(world: World, result: Result) -> None:
    """Raise InvariantError if a request did not end exactly once or the ledger lost bytes."""
    outcomes = request_outcomes(world)
    check_requests(world, result.requests, outcomes)
    transfers = result.tables.get("transfers")
    if transfers is not None:
        check_ledger(world, transfers, outcomes)
