"""Conservation: every request ends exactly once and every byte the ledger records was handed
to a link, under random fault schedules; and the check really catches a broken run.

`check_invariants(world, result)` (sim.metrics.availability) runs after every run once
world.py calls it. Here hypothesis draws fault schedules (replica failures, link and site
outages, client timeouts, retry limits, a local fallback) on short S1- and S2-like runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim
from sim.kernels.batching import DONE, FAILED
from sim.metrics.availability import (
    InvariantError,
    check_invariants,
    request_outcomes,
)
from sim.result import STATUS_CATEGORIES, Result
from sim.world import World

SCENARIOS = Path(__file__).parent.parent / "scenarios"
S1, S2 = SCENARIOS / "s1_local.yaml", SCENARIOS / "s2_cloud_training.yaml"


def run_checked(scenario: sim.Scenario) -> tuple[World, Result]:
    """Run a World (which installs its faults and checks its invariants at the end), and check
    the invariants once more explicitly."""
    world = World(scenario)
    result = world.run()
    check_invariants(world, result)
    return world, result


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
    failures = draw(st.lists(st.tuples(st.integers(0, 3), times, durations), max_size=4))
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
    """Whatever fails and when, every request ends exactly once and the ledger balances."""
    path, overrides = schedule
    world, result = run_checked(sim.load_scenario(path, overrides))
    outcomes = request_outcomes(world)
    assert np.isin(outcomes.status, (0, 1, 2, DONE, 4, FAILED)).all()


def test_the_fault_scenarios_keep_their_invariants(scenarios_dir: Path) -> None:
    """The shipped fault scenarios, cut to their first 12 hours (the WAN outage included)."""
    files = sorted((scenarios_dir / "faults").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        world, result = run_checked(sim.load_scenario(path, ["horizon=12h", "replications=1"]))
        assert len(world.faults.table()) >= 1


def _small_run() -> tuple[World, Result]:
    return run_checked(sim.load_scenario(S2, [
        "horizon=20min", "warmup=0s", "faults.retry.timeout=30s",
        "faults.link_outages=[{link: wan, windows: [{start: 5min, duration: 5min}]}]"]))


def test_a_request_with_a_wrong_status_breaks_the_invariant() -> None:
    world, result = _small_run()
    status = result.requests["status"].astype(object).to_numpy()
    failed = np.flatnonzero(status == "failed")
    assert len(failed) > 0
    result.requests["status"] = pd.Categorical(np.where(np.arange(len(status)) == failed[0], "completed", status),
                                               categories=STATUS_CATEGORIES)
    with pytest.raises(InvariantError, match="differs from how they ended"):
        check_invariants(world, result)


def test_a_missing_request_breaks_the_invariant() -> None:
    world, result = _small_run()
    result.requests = result.requests.iloc[1:]
    with pytest.raises(InvariantError, match="rows for"):
        check_invariants(world, result)


def test_a_request_ending_in_two_pools_breaks_the_invariant() -> None:
    """A primary-pool outcome that also sets an end time on an unfinished request is caught."""
    world, result = _small_run()
    k = world.kernel
    open_ = np.flatnonzero(~np.isin(k.status, (DONE, FAILED, 4)))
    assert len(open_) > 0  # the small run always ends with requests still in flight
    k.done_s[open_[0]] = 1.0
    with pytest.raises(InvariantError, match="did not end but have an end time"):
        check_invariants(world, result)


def test_ledger_bytes_that_no_link_carried_break_the_invariant() -> None:
    world, result = _small_run()
    transfers = result.tables["transfers"].copy()
    transfers.loc[transfers.index[0], "bytes"] += 1e6
    result.tables["transfers"] = transfers
    with pytest.raises(InvariantError, match="the ledger records"):
        check_invariants(world, result)


def test_requests_cut_off_by_an_outage_expose_nothing() -> None:
    """The ledger counts a prompt only if it crossed the link: requests cut off by a WAN
    outage (never sent) are not exposed, so exposed prompts = requests - requests never sent."""
    scenario = sim.load_scenario(S2, ["horizon=20min", "warmup=0s", "faults.retry.timeout=30s",
                                      "faults.link_outages=[{link: wan, windows: [{start: 5min, duration: 5min}]}]"])
    world = World(scenario)
    result = world.run()
    never_sent = int(np.isnan(world.faults.request_send_times()).sum())
    assert never_sent > 0
    assert result.summary["exposed_records_by_class"]["prompt"] == result.summary["requests_total"] - never_sent
