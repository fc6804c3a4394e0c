"""Conservation: every request ends exactly once and every byte the ledger records was handed
to a link, under random fault schedules; and the check really catches a broken run.

`check_invariants(record, requests, ledger)` (sim.metrics.invariants) runs on the record of
every run (`sim.runner.run_point`). Here hypothesis draws fault schedules (replica failures,
link and site outages, client timeouts, retry limits, a local fallback) on short S1- and
S2-like runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim
from sim.kernels.batching import DONE, FAILED, PENDING, REJECTED, RUNNING, WAITING
from sim.metrics.invariants import InvariantError, check_invariants
from sim.record import RunRecord
from sim.result import STATUS_CATEGORIES, Result, collect
from sim.world import World

SCENARIOS = Path(__file__).parent.parent / "scenarios"
S1, S2 = SCENARIOS / "s1_local.yaml", SCENARIOS / "s2_cloud_training.yaml"


def run_checked(scenario: sim.Scenario) -> tuple[RunRecord, Result]:
    """Run a World, measure its record and check the invariants on it."""
    record = World(scenario).run()
    result = collect(record)
    check_invariants(record, result.requests, result.tables["transfers"])
    return record, result


def check(record: RunRecord, result: Result) -> None:
    check_invariants(record, result.requests, result.tables["transfers"])


def _window(start: float, duration: float) -> str:
    return f"{{start: {start:.3f}s, duration: {duration:.3f}s}}"


@st.composite
def fault_schedules(draw: st.DrawFn) -> tuple[Path, list[str]]:
    horizon = 1800.0
    path = draw(st.sampled_from([S1, S2]))
    serving = "premises, pool: gpus" if path == S1 else "cloud, pool: serving"
    overrides = [f"horizon={horizon}s", "warmup=0s",
                 f"workload.arrivals.rate_per_s={draw(st.sampled_from([1, 3, 8]))}",
                 f"faults.retry.max_attempts={draw(st.integers(1, 3))}"]
    timeout = draw(st.sampled_from([None, 5.0, 60.0]))
    if timeout is not None:
        overrides.append(f"faults.retry.timeout={timeout}s")
    times = st.floats(0.0, horizon, allow_nan=False)
    durations = st.floats(1.0, 900.0, allow_nan=False)
    replicas = 2 if path == S1 else 3  # S1 owns two L40S; S2's autoscaler runs up to three
    failures = draw(st.lists(st.tuples(st.integers(0, replicas - 1), times, durations), max_size=4))
    entries = [f"{{site: {serving}, replica: {r}, at: [{t:.3f}s], mttr: {d:.3f}s, distribution: deterministic}}"
               for r, t, d in failures]
    if draw(st.booleans()):
        entries.append(f"{{site: {serving}, mtbf: {draw(st.sampled_from([600, 3600]))}s, mttr: 120s}}")
    if entries:
        overrides.append(f"faults.replica_failures=[{', '.join(entries)}]")
    outages = draw(st.lists(st.tuples(times, durations), max_size=3))
    if outages:
        windows = ", ".join(_window(t, d) for t, d in outages)
        overrides.append(f"faults.link_outages=[{{link: wan, windows: [{windows}]}}]")
    if draw(st.booleans()):
        site = draw(st.sampled_from(["premises", "cloud"]))
        t, d = draw(times), draw(durations)
        overrides.append(f"faults.site_outages=[{{site: {site}, windows: [{_window(t, d)}]}}]")
    if path == S2 and draw(st.booleans()):
        overrides += ["placement.fallback=premises",
                      "sites.premises.pools=[{name: fallback, gpu: l4, count: 1, roles: [serving]}]"]
    return path, overrides


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fault_schedules())
def test_invariants_hold_under_random_fault_schedules(schedule: tuple[Path, list[str]]) -> None:
    """Whatever fails and when, every request ends exactly once, the ledger balances, and how
    each request ended agrees with what could end it."""
    path, overrides = schedule
    scenario = sim.load_scenario(path, overrides)
    record, result = run_checked(scenario)
    req = record.requests
    retry = scenario.faults.retry
    # every request is in exactly one known state, and the summary counts add up
    assert np.isin(req.status, (PENDING, WAITING, RUNNING, DONE, REJECTED, FAILED)).all()
    s = result.summary
    assert (s["requests_completed"] + s["requests_failed"] + s["requests_rejected"] + s["requests_unfinished"]
            == s["requests_total"] == len(req))
    # a completed request was served by one pool, on a replica, by a model version
    done = req.status == DONE
    assert (req.pool[done] >= 0).all() and (req.replica[done] >= 0).all() and (req.version[done] >= 0).all()
    assert (req.attempts >= 1).all() and (req.attempts <= retry.max_attempts).all()
    # without a client timeout a request fails only by running out of attempts or being cut off
    if retry.timeout is None:
        failed = (req.status == FAILED) & ~req.cut_off
        assert (req.attempts[failed] == retry.max_attempts).all()
    # requests sent to the fallback were served there, the others by the primary pool
    primary = record.pool_names.index(record.primary_pool)
    assert (req.pool[req.diverted] != primary).all()
    assert (req.pool[~req.diverted & (req.pool >= 0)] == primary).all()
    assert not req.diverted.any() or scenario.placement.fallback != "none"


def test_the_fault_scenarios_keep_their_invariants(scenarios_dir: Path) -> None:
    """The shipped fault scenarios, cut to their first 12 hours (the WAN outage included)."""
    files = sorted((scenarios_dir / "faults").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        record, _ = run_checked(sim.load_scenario(path, ["horizon=12h", "replications=1"]))
        assert len(record.faults) >= 1


def _small_run() -> tuple[RunRecord, Result]:
    return run_checked(sim.load_scenario(S2, [
        "horizon=20min", "warmup=0s", "faults.retry.timeout=30s",
        "faults.link_outages=[{link: wan, windows: [{start: 5min, duration: 5min}]}]"]))


def test_a_request_with_a_wrong_status_breaks_the_invariant() -> None:
    record, result = _small_run()
    status = result.requests["status"].astype(object).to_numpy()
    failed = np.flatnonzero(status == "failed")
    assert len(failed) > 0
    result.requests["status"] = pd.Categorical(np.where(np.arange(len(status)) == failed[0], "completed", status),
                                               categories=STATUS_CATEGORIES)
    with pytest.raises(InvariantError, match="differs from how they ended"):
        check(record, result)


def test_a_missing_request_breaks_the_invariant() -> None:
    record, result = _small_run()
    result.requests = result.requests.iloc[1:]
    with pytest.raises(InvariantError, match="rows for"):
        check(record, result)


def test_an_open_request_with_an_end_time_breaks_the_invariant() -> None:
    """A request still in flight at the horizon that also has an end time is caught."""
    record, result = _small_run()
    req = record.requests
    open_ = np.flatnonzero(~np.isin(req.status, (DONE, FAILED, REJECTED)))
    assert len(open_) > 0  # the small run always ends with requests still in flight
    req.done_s[open_[0]] = 1.0
    with pytest.raises(InvariantError, match="did not end but have an end time"):
        check(record, result)


def test_a_request_ending_in_two_pools_breaks_the_invariant() -> None:
    """A pool that says it ended more requests than ended (one ended in two pools) is caught."""
    record, result = _small_run()
    pool = record.pools[record.primary_pool]
    pool.requests_ended += 1
    with pytest.raises(InvariantError, match="more than one pool"):
        check(record, result)


def test_more_attempts_than_allowed_break_the_invariant() -> None:
    record, result = _small_run()
    assert record.retry_limit is not None
    record.requests.attempts[0] = record.retry_limit + 1
    with pytest.raises(InvariantError, match="max_attempts"):
        check(record, result)


def test_ledger_bytes_that_no_link_carried_break_the_invariant() -> None:
    record, result = _small_run()
    transfers = result.tables["transfers"].copy()
    transfers.loc[transfers.index[0], "bytes"] += 1e6
    result.tables["transfers"] = transfers
    with pytest.raises(InvariantError, match="the ledger records"):
        check(record, result)


def test_requests_cut_off_by_an_outage_expose_nothing() -> None:
    """The ledger counts a prompt only if it crossed the link: requests cut off by a WAN
    outage (never sent) are not exposed, so exposed prompts = requests - requests never sent."""
    scenario = sim.load_scenario(S2, ["horizon=20min", "warmup=0s", "faults.retry.timeout=30s",
                                      "faults.link_outages=[{link: wan, windows: [{start: 5min, duration: 5min}]}]"])
    record, result = run_checked(scenario)
    never_sent = int(np.isnan(record.requests.uplink_send_s).sum())
    assert never_sent > 0 and int(record.requests.cut_off.sum()) > 0
    assert result.summary["exposed_records_by_class"]["prompt"] == result.summary["requests_total"] - never_sent
