"""The SimPy world around the serving kernel: control calls on a ServingPool, slicing, and
exact waits."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pandas.testing as pdt
import pytest

import sim
from sim.kernels.batching import ACTIVE, DRAINING
from sim.result import Result, collect
from sim.world import World

S1 = Path(__file__).parent.parent / "scenarios" / "s1_local.yaml"
SHORT = ["horizon=20min", "warmup=2min", "sites.premises.pools[0].count=4"]
DRAIN_AT = 300.0
OFFLINE_FOR = 60.0
# A burst of 40 req/s just before the drain: every replica runs max_num_seqs sequences and has
# a queue of its own when replica 0 is drained, so the drain has queued requests to hand over.
BURST = ("workload.arrivals={process: stages, stages: [{duration: 270s, rate_per_s: 2}, "
         "{duration: 30s, rate_per_s: 40}, {duration: 1h, rate_per_s: 2}]}")
LOADS = {"steady": [], "burst": [BURST]}


def _run_with_control(scenario: sim.Scenario) -> tuple[Result, dict[str, Any]]:
    """Run a World with one more control process that cycles replica 0, through the pool's
    public calls only.

    At DRAIN_AT it drains replica 0, waits until it is idle, releases it, keeps it offline
    for OFFLINE_FOR seconds, sets version 1 and activates it again.
    """
    world = World(scenario)
    env, pool = world.env, world.pools["premises/gpus"]
    marks: dict[str, Any] = {}

    def control() -> Generator[Any, Any, None]:
        yield env.timeout(DRAIN_AT)
        pool.sync()
        marks["busy_at_drain"] = not pool.is_idle(0)
        marks["queued_at_drain"] = pool.has_queued(0)
        pool.drain(0)
        marks["drain"] = env.now
        marks["state_after_drain"] = pool.state(0)
        yield from pool.wait_idle(0)
        marks["idle"] = env.now
        pool.release(0)
        marks["offline"] = pool.is_offline(0)
        marks["gpus_offline"] = pool.gpus_in_use()
        marks["active_offline"] = pool.active_replicas()
        yield env.timeout(OFFLINE_FOR)
        pool.set_version(0, 1)
        pool.activate(0)
        marks["activate"] = env.now
        marks["state_after_activate"] = pool.state(0)

    env.process(control())
    record = world.run()
    marks["gpus_end"] = pool.gpus_in_use()
    marks["frontend_lag"] = record.pools[record.primary_pool].frontend_lag_bound_s
    return collect(record), marks


@pytest.fixture(scope="module", params=sorted(LOADS))
def controlled(request: pytest.FixtureRequest) -> tuple[Result, dict[str, Any], sim.Scenario]:
    """S1 (20 min) with replica 0 cycled, at steady load and with a burst before the drain."""
    scenario = sim.load_scenario(S1, [*SHORT, *LOADS[request.param]])
    result, marks = _run_with_control(scenario)
    marks["load"] = request.param
    return result, marks, scenario


def test_control_calls_take_effect_at_their_times(controlled: tuple[Result, dict[str, Any], sim.Scenario]) -> None:
    """drain -> DRAINING, wait_idle returns once it runs nothing, release frees its GPU,
    activate brings it back ACTIVE; every step happens at the SimPy time it was called."""
    _, marks, scenario = controlled
    assert marks["busy_at_drain"]  # the drain interrupts real work
    assert marks["queued_at_drain"] == (marks["load"] == "burst")
    assert marks["drain"] == DRAIN_AT
    assert marks["state_after_drain"] == DRAINING
    assert DRAIN_AT <= marks["idle"] < DRAIN_AT + 120
    assert marks["offline"]
    assert marks["gpus_offline"] == 3  # four L40S, one per replica
    assert 0 not in marks["active_offline"] and len(marks["active_offline"]) == 3
    assert marks["activate"] == marks["idle"] + OFFLINE_FOR
    assert marks["state_after_activate"] == ACTIVE
    assert marks["gpus_end"] == 4
    assert scenario.horizon > marks["activate"] + 600  # plenty of traffic after reactivation


def test_model_version_follows_the_replica(controlled: tuple[Result, dict[str, Any], sim.Scenario]) -> None:
    """Requests admitted to replica 0 before the drain carry version 0, after reactivation 1;
    the other replicas stay at version 0."""
    result, marks, _ = controlled
    frame = result.requests
    assert frame["preemptions"].sum() == 0  # so each request's replica and version are its only ones
    on0 = frame[frame["replica"] == 0]
    before = on0[on0["dispatch_s"] < marks["drain"]]
    after = on0[on0["dispatch_s"] >= marks["activate"]]
    assert len(before) > 0 and len(after) > 0
    assert (before["model_version"] == 0).all()
    assert (after["model_version"] == 1).all()
    others = frame[(frame["replica"] >= 0) & (frame["replica"] != 0)]
    assert len(others) > 0 and (others["model_version"] == 0).all()
    assert set(frame.loc[frame["replica"] < 0, "model_version"]) <= {-1}


def test_drained_replica_admits_nothing_until_activated(
        controlled: tuple[Result, dict[str, Any], sim.Scenario]) -> None:
    """No request is dispatched to replica 0 between its drain and its reactivation, while it
    finishes the requests it was already running (some after the drain)."""
    result, marks, _ = controlled
    frame = result.requests
    on0 = frame[frame["replica"] == 0]
    window = (on0["dispatch_s"] >= marks["drain"]) & (on0["dispatch_s"] < marks["activate"])
    assert not window.any()
    before = on0[on0["dispatch_s"] < marks["drain"]]
    assert (before["status"] == "completed").all()
    finished_after_drain = before[before["done_s"] > marks["drain"]]
    assert len(finished_after_drain) > 0
    # ...and their last iteration ended when wait_idle let the replica go: the engine's front
    # end delivered the final tokens at most its lag bound later (the GPU was already free)
    pool_done = finished_after_drain["dispatch_s"] + finished_after_drain["prefill_s"] \
        + finished_after_drain["decode_s"]
    assert 0 < marks["frontend_lag"] < 1.0
    assert (pool_done <= marks["idle"] + marks["frontend_lag"]).all()
    assert pool_done.max() > marks["idle"] - 1.0  # the wait ended with the last of them, not later
    # the rest of the pool kept serving during the window
    others = frame[(frame["replica"] != 0) & (frame["dispatch_s"] >= marks["drain"])
                   & (frame["dispatch_s"] < marks["activate"])]
    assert len(others) > 0


def test_no_request_is_lost(controlled: tuple[Result, dict[str, Any], sim.Scenario]) -> None:
    """Every generated request has exactly one state; nothing is rejected, failed or stranded:
    all requests that arrived well before the horizon completed, with consistent times."""
    result, _, scenario = controlled
    frame = result.requests
    baseline = sim.simulate(scenario)
    assert len(frame) == len(baseline.requests)
    assert frame["request"].is_unique
    assert frame["status"].notna().all()
    assert set(frame["status"].unique()) <= {"completed", "unfinished"}
    s = result.summary
    assert s["requests_completed"] + s["requests_unfinished"] == s["requests_total"] == len(frame)
    done = frame[frame["status"] == "completed"]
    assert done["done_s"].notna().all() and (done["replica"] >= 0).all()
    unfinished = frame[frame["status"] == "unfinished"]
    assert unfinished["done_s"].isna().all()
    assert (unfinished["arrival_s"] > scenario.horizon - 120).all()
    # the control cycle does not change how many requests complete by much
    assert abs(len(done) - baseline.summary["requests_completed"]) <= 5


@pytest.mark.parametrize("scenario_overrides", [[], ["workload.arrivals.rate_per_s=40"]])
def test_advance_slicing_does_not_change_results(scenario_overrides: list[str]) -> None:
    """World.run with 1 or 200 clock slices gives identical requests frames (the kernel resumes
    exactly where it stopped), at normal load and in overload."""
    scenario = sim.load_scenario(S1, [*SHORT, *scenario_overrides])
    one = collect(World(scenario).run(slices=1))
    many = collect(World(scenario).run(slices=200))
    pdt.assert_frame_equal(one.requests, many.requests, check_exact=True)
    assert one.summary == many.summary
    assert np.isfinite(one.requests["arrival_s"]).all()


def test_rollout_ends_at_the_hand_computed_time() -> None:
    """A rolling update drains the replica, waits for its running request to finish, reloads
    the weights and activates it: with one replica, deterministic 4 s service and a request
    every 10 s, a vendor release imported at 101 s ends its rollout exactly at
    (request 10's arrival at the pool + 4 s) + weight bytes / load bandwidth (to 1e-9 s; a
    polled wait would end up to a poll step later)."""
    scenario = sim.load_scenario(S1, [
        "horizon=10min", "warmup=0s", "lifecycle.drift=[]",
        "workload.arrivals={process: constant, rate_per_s: 0.1}",
        "model.service_time={dist: deterministic, mean: 4s}", "sites.premises.pools[0].count=1",
        "lifecycle.vendor_updates={cadence: 1d, first_at: 95s, import_lead_time: 6s}"])
    record = World(scenario).run()
    lan = scenario.sites["premises"].lan
    request_bytes = record.requests.request_bytes[10]
    arrives = 100.0 + lan.rtt / 2 + request_bytes / lan.bandwidth  # sent at 100 s, in service until +4 s
    model = scenario.resolved_catalog.models[scenario.model.id]
    reload_s = model.weight_bytes(scenario.model.precision) / scenario.lifecycle.deployment.load_bandwidth
    rollout = record.stages[record.stages["stage"] == "vendor_rollout"].iloc[0]
    assert rollout["start_s"] == 101.0
    assert abs(rollout["end_s"] - (arrives + 4.0 + reload_s)) < 1e-9
    # the next request waited for the reactivated replica, which serves it at once
    assert abs(record.requests.dispatch_s[11] - rollout["end_s"]) < 1e-9
    assert record.requests.version[11] == 1 and record.requests.version[10] == 0
