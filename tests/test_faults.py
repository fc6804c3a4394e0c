"""Faults and outages: failed replicas retry their requests, cut paths cost availability, bulk
transfers pause, training resumes from its checkpoint.

Kernel tests use a made-up engine (tests/test_serving_oracle.py's `tiny_params`: a decode step
takes about 20 ms) so that times are easy to reason about. World tests run the seed scenarios
for a few hours with `--set`-style overrides that inject one fault at a known time.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serving_oracle import tiny_params

import sim
from sim.kernels.batching import ACTIVE, DONE, DOWN, FAILED, OFFLINE, WAITING, PoolKernel
from sim.kernels.windows import merge_windows, window_containing
from sim.metrics.availability import availability, lifecycle_outage_delay
from sim.metrics.latency import request_latencies
from sim.record import RunRecord
from sim.result import Result, collect
from sim.spec.errors import SpecError
from sim.world import World
from sim.world.faults import FaultPlan, train_with_checkpoints
from sim.world.network import Network

SCENARIOS = Path(__file__).parent.parent / "scenarios"
S1, S2 = SCENARIOS / "s1_local.yaml", SCENARIOS / "s2_cloud_training.yaml"
S4 = SCENARIOS / "s4_cloud_served_local_inference.yaml"
HOUR = 3600.0


def pool(n: int = 40, gap_s: float = 0.05, replicas: int = 2, **options: Any) -> PoolKernel:
    """n requests of 50 prompt and 40 output tokens, one every gap_s, on `replicas` replicas."""
    settings: dict[str, Any] = {
        "replicas": replicas, "max_num_seqs": 4, "max_num_batched_tokens": 512, "chunked_prefill": True,
        "kv_capacity_tokens": 10_000, "max_model_len": 4096, "params": tiny_params(),
        "router": "least_outstanding"}
    settings.update(options)
    return PoolKernel(np.arange(n) * gap_s, np.full(n, 50), np.full(n, 40), **settings)


def run_world(path: Path, overrides: list[str]) -> tuple[RunRecord, Result]:
    record = World(sim.load_scenario(path, overrides)).run()
    return record, collect(record)


def availability_of(record: RunRecord) -> dict[str, Any]:
    return availability(record, request_latencies(record.requests))


# ------------------------------------------------------------------------------------------
# The kernel: fail, restore, timeouts
# ------------------------------------------------------------------------------------------


def test_a_failed_replica_retries_its_running_requests_on_another() -> None:
    """Replica 0 fails at 0.5 s with requests running: each of them loses its progress, goes
    back to the shared queue and completes later on replica 1, with 2 attempts recorded."""
    k = pool(max_attempts=3)
    k.advance_to(0.5)
    running = np.flatnonzero((k.status == 2) & (k.replica == 0))
    assert len(running) > 0
    assert len(k.fail(0)) == 0
    assert k.state(0) == DOWN
    assert np.all(k.status[running] == WAITING)
    assert np.all(np.isnan(k.first_token_s[running]))
    k.advance_to(np.inf)
    assert np.all(k.status == DONE)
    assert np.all(k.replica[running] == 1)
    assert np.all(k.attempts[running] == 2)
    assert np.all(k.first_token_s[running] > 0.5)
    assert np.all(k.attempts[np.setdiff1d(np.arange(k.n), running)] == 1)
    assert np.all(k.replica != 0) or np.all(k.dispatch_s[k.replica == 0] < 0.5)


def test_a_restored_replica_serves_again() -> None:
    """After restore(0) at 1 s, replica 0 takes new requests again."""
    k = pool(n=200)
    k.advance_to(0.5)
    k.fail(0)
    k.advance_to(1.0)
    k.restore(0)
    assert k.state(0) == ACTIVE
    k.advance_to(np.inf)
    assert np.all(k.status == DONE)
    assert np.any((k.replica == 0) & (k.dispatch_s > 1.0))
    assert not np.any((k.replica == 0) & (k.dispatch_s > 0.5) & (k.dispatch_s < 1.0))


def test_max_attempts_exhausted_fails_the_request() -> None:
    """With max_attempts=1 a replica failure fails its running requests at once (done = now)."""
    k = pool(max_attempts=1)
    k.advance_to(0.5)
    running = np.flatnonzero((k.status == 2) & (k.replica == 0))
    failed = k.fail(0)
    assert sorted(failed) == sorted(running)
    assert np.all(k.status[running] == FAILED)
    assert np.all(k.done_s[running] == 0.5)
    k.advance_to(np.inf)
    assert np.all(k.status[np.setdiff1d(np.arange(k.n), running)] == DONE)


def test_the_second_failure_exhausts_two_attempts() -> None:
    """max_attempts=2: requests retried from replica 0 onto replica 1 fail when 1 fails too."""
    k = pool(max_attempts=2)
    k.advance_to(0.5)
    first = np.flatnonzero((k.status == 2) & (k.replica == 0))
    k.fail(0)
    moved = first[:0]
    while len(moved) == 0 and k.now < 10.0:  # until replica 1 has room for some of them
        k.advance_to(k.now + 0.1)
        moved = first[(k.status[first] == 2) & (k.replica[first] == 1)]
    assert len(moved) > 0
    k.fail(1)
    assert np.all(k.status[moved] == FAILED)
    assert np.all(k.attempts[moved] == 2)


def test_requests_waiting_past_the_client_timeout_fail_at_their_deadline() -> None:
    """No replica is active: every request waits, and fails at arrival + timeout."""
    k = pool(n=10, active_replicas=0, timeout_s=5.0)
    k.advance_to(100.0)
    assert np.all(k.status == FAILED)
    np.testing.assert_allclose(k.done_s, k.arrival_s + 5.0)


def test_a_request_admitted_at_its_deadline_is_served() -> None:
    """Two requests at t = 0 on one single-sequence replica: the second is admitted when the
    first completes. With the timeout set to exactly that time it is still served (deadlines
    go after arrivals and iteration ends at the same time); a hair shorter and it fails."""
    free = pool(n=2, gap_s=0.0, replicas=1, max_num_seqs=1)
    free.advance_to(np.inf)
    admitted = free.dispatch_s[1]
    assert admitted == free.done_s[0] > 0
    exact = pool(n=2, gap_s=0.0, replicas=1, max_num_seqs=1, timeout_s=admitted)
    exact.advance_to(np.inf)
    assert list(exact.status) == [DONE, DONE]
    assert exact.done_s[1] == free.done_s[1]
    short = pool(n=2, gap_s=0.0, replicas=1, max_num_seqs=1, timeout_s=np.nextafter(admitted, 0))
    short.advance_to(np.inf)
    assert list(short.status) == [DONE, FAILED]


def test_a_retried_request_past_its_deadline_fails_when_its_replica_fails() -> None:
    """Timeout 0.3 s: a request admitted in time but running on the replica that fails at
    0.5 s is past its deadline when it would be retried, so it fails then."""
    k = pool(n=4, gap_s=0.0, timeout_s=0.3, max_attempts=5)
    k.advance_to(0.5)
    on_zero = np.flatnonzero((k.status == 2) & (k.replica == 0))
    k.fail(0)
    assert np.all(k.status[on_zero] == FAILED)
    assert np.all(k.done_s[on_zero] == 0.5)


def test_control_calls_on_a_down_replica_set_the_state_it_returns_to() -> None:
    """A down replica that the lifecycle drains, releases and re-activates comes back ACTIVE;
    one released while down comes back OFFLINE."""
    k = pool()
    k.advance_to(0.3)
    k.fail(0)
    k.drain(0)
    assert k.is_idle(0)
    k.deactivate(0)
    assert k.state(0) == DOWN
    k.restore(0)
    assert k.state(0) == OFFLINE
    k.fail(1)
    k.activate(1)
    k.restore(1)
    assert k.state(1) == ACTIVE


@pytest.mark.parametrize("mode", ["service_time", "dynamic_batch"])
def test_failure_in_the_simpler_service_models(mode: str) -> None:
    """Service-time and dynamic-batching pools retry a failed replica's requests too."""
    n = 30
    options: dict[str, Any] = ({"service_s": np.full(n, 0.2)} if mode == "service_time"
                               else {"batch_latency": (0.05, 0.01), "max_queue_delay_s": 0.01})
    k = pool(n=n, gap_s=0.02, max_attempts=3, **options)
    k.advance_to(0.25)
    hit = np.flatnonzero((k.status == 2) & (k.replica == 0))
    assert len(hit) > 0
    k.fail(0)
    k.advance_to(np.inf)
    assert np.all(k.status == DONE)
    assert np.all(k.attempts[hit] == 2)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.floats(0.0, 4.0), max_size=6),
       fail_at=st.floats(0.05, 1.5), down_for=st.floats(0.0, 1.0), timeout=st.sampled_from([np.inf, 0.4, 1.5]),
       attempts=st.integers(0, 3), router=st.sampled_from(["shared_queue", "round_robin", "least_outstanding"]))
def test_advancing_in_slices_is_bit_identical_with_faults(cuts: list[float], fail_at: float, down_for: float,
                                                          timeout: float, attempts: int, router: str) -> None:
    """Timeouts are kernel events: slicing the advances between the same control calls
    changes nothing (as without faults)."""
    def run(slices: list[float]) -> PoolKernel:
        k = pool(n=60, gap_s=0.03, timeout_s=timeout, max_attempts=attempts, router=router)
        controls = [(fail_at, "fail"), (fail_at + down_for, "restore")]
        for t in sorted({*slices, *(t for t, _ in controls)}):
            k.advance_to(max(t, k.now))
            for when, what in controls:
                if when == t:
                    k.fail(0) if what == "fail" else k.restore(0)
        k.advance_to(np.inf)
        return k

    one, many = run([]), run(cuts)
    for name in ("status", "done_s", "first_token_s", "dispatch_s", "replica", "attempts"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)
    ended = np.isin(one.status, (DONE, FAILED))
    assert ended.all()


# ------------------------------------------------------------------------------------------
# The plan and its windows
# ------------------------------------------------------------------------------------------


def test_windows_merge_and_contain() -> None:
    assert merge_windows([(5, 7), (1, 3), (2, 4), (7, 8)]) == [(1, 4), (5, 8)]
    ends = window_containing([(1, 4), (5, 8)], np.array([0.0, 1.0, 3.9, 4.0, 6.0, 8.0]))
    np.testing.assert_array_equal(ends, [np.nan, 4, 4, np.nan, 8, np.nan])


def test_random_faults_are_the_same_in_every_scenario() -> None:
    """Common random numbers: a random WAN outage falls at the same times in S1 and S2."""
    over = ["faults.link_outages=[{link: wan, mtbf: 6h, mttr: 30min}]"]
    plans = [FaultPlan.draw(sim.load_scenario(path, over), 0).of("link_outage") for path in (S1, S2)]
    assert plans[0] == plans[1] and len(plans[0]) > 0
    other = FaultPlan.draw(sim.load_scenario(S1, over), 1).of("link_outage")
    assert other != plans[0]


def test_fault_spec_mistakes_name_the_field() -> None:
    """Unknown link, replica out of range, a fallback that is not the clients' site: each is
    reported at its field by the loader (sim.spec.checks calls check_faults)."""
    overrides = ["faults.link_outages=[{link: wna, windows: [{start: 1h, duration: 1h}]}]",
                 "faults.replica_failures=[{site: cloud, pool: serving, at: [1h], replica: 9, mttr: 1h}]",
                 "placement.fallback=cloud"]
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(S2, overrides)
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert "did you mean 'wan'" in issues["faults.link_outages[0].link"]
    assert "3 replicas" in issues["faults.replica_failures[0].replica"]  # its autoscaler's max_replicas
    assert "placement.fallback" in issues


def test_a_fault_without_a_time_is_an_error() -> None:
    with pytest.raises(SpecError, match="mtbf"):
        sim.load_scenario(S2, ["faults.link_outages=[{link: wan}]"])


# ------------------------------------------------------------------------------------------
# The world: outages on the request path, replica failures, fallback
# ------------------------------------------------------------------------------------------

OUTAGE = (1 * HOUR, 1.5 * HOUR)
TIMEOUT_S = 60.0
WITH_OUTAGE = ["horizon=3h", "warmup=0s", f"faults.retry.timeout={TIMEOUT_S}s",
               f"faults.link_outages=[{{link: wan, windows: [{{start: {OUTAGE[0]}s, duration: {OUTAGE[1] - OUTAGE[0]}s}}]}}]"]
NO_OUTAGE = ["horizon=3h", "warmup=0s", f"faults.retry.timeout={TIMEOUT_S}s"]


def test_a_wan_outage_costs_s2_the_requests_sent_while_it_lasts() -> None:
    """S2 serves over the WAN: the requests sent in [start, end - timeout) of the outage wait
    longer than their 60 s timeout and fail; the ones sent in its last minute wait and are
    served. Availability drops by exactly that share; nothing else fails."""
    record, _ = run_world(S2, WITH_OUTAGE)
    outcomes = record.requests
    send = outcomes.send_s
    doomed = (send >= OUTAGE[0]) & (send < OUTAGE[1] - TIMEOUT_S)
    assert doomed.sum() > 1000
    np.testing.assert_array_equal(outcomes.status == FAILED, doomed)
    np.testing.assert_allclose(outcomes.done_s[doomed], send[doomed] + TIMEOUT_S)
    late = (send >= OUTAGE[1] - TIMEOUT_S) & (send < OUTAGE[1])
    assert np.all(outcomes.status[late] == DONE)
    assert np.all(outcomes.first_token_s[late] >= OUTAGE[1])
    summary = availability_of(record)
    judged = summary["requests_judged"]
    assert summary["availability"] == pytest.approx(1 - doomed.sum() / judged)
    assert summary["requests_cut_off"] == doomed.sum()
    base, _ = run_world(S2, NO_OUTAGE)
    assert availability_of(base)["availability"] == 1.0


def test_a_wan_outage_leaves_s1_untouched() -> None:
    """S1 serves on premises: the same outage changes no request's outcome or time."""
    record, _ = run_world(S1, WITH_OUTAGE)
    base, _ = run_world(S1, NO_OUTAGE)
    a, b = record.requests, base.requests
    for name in ("status", "done_s", "first_token_s", "replica"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert availability_of(record)["availability"] == 1.0


def test_a_replica_failure_in_a_world_retries_its_in_flight_requests() -> None:
    """S1, replica 0 fails at 30 min for longer than the run: the requests it was running
    complete later on the other replicas with 2 attempts; the fault table counts them."""
    record, _ = run_world(S1, ["horizon=1h", "warmup=0s",
                               "faults.replica_failures=[{site: premises, pool: gpus, replica: 0, at: [30min], "
                               "mttr: 2h, distribution: deterministic}]"])
    outcomes = record.requests
    retried = np.flatnonzero(outcomes.attempts == 2)
    assert len(retried) > 0
    assert np.all(outcomes.status[retried] == DONE)
    assert np.all(outcomes.replica[retried] != 0)
    assert np.all(outcomes.first_token_s[retried] >= 1800.0)
    assert not np.any((outcomes.replica == 0) & (outcomes.dispatch_s > 1800.0))
    table = record.faults
    assert list(table["kind"]) == ["replica_failure"]
    assert table.loc[0, "requests_retried"] == len(retried)
    assert not table.loc[0, "restored"]


def test_a_local_fallback_serves_what_the_cut_wan_cannot() -> None:
    """S2 with one L4 on premises as fallback: requests sent during the outage are served
    locally (over the LAN) instead of failing."""
    record, result = run_world(S2, [*WITH_OUTAGE, "placement.fallback=premises",
                                    "sites.premises.pools=[{name: fallback, gpu: l4, count: 1, roles: [serving]}]"])
    outcomes = record.requests
    send = outcomes.send_s
    during = (send >= OUTAGE[0]) & (send < OUTAGE[1])
    served_by = record.served_by()
    assert np.all(served_by[during] == "premises/fallback")
    assert np.all(served_by[~during] == "cloud/serving")
    assert (outcomes.status[during] == DONE).mean() > 0.5  # one L4 for the whole load: some time out
    assert availability_of(record)["requests_fallback"] == during.sum()
    # the fallback is a pool like any other: measured, billed for its energy, in the utilisation
    assert result.summary["requests_by_pool"]["premises/fallback"] == during.sum()
    assert 0 < result.summary["gpu_utilisation"]["premises/fallback"] < 1
    usage = result.tables["gpu_usage"].set_index(["site", "pool"])
    assert usage.loc[("premises", "fallback"), "serving_busy_gpu_s"] > 0
    fallback_queueing = result.requests.loc[during & (outcomes.status == DONE), "queueing_s"]
    assert fallback_queueing.notna().all() and (fallback_queueing >= 0).all()


def test_s4_recovery_waits_for_the_wan() -> None:
    """S4 uploads its labelled sample and pulls the adapter over the WAN: an outage over the
    whole recovery window pauses those transfers, so the model recovers later."""
    over = ["horizon=14h", "faults.link_outages=[{link: wan, windows: [{start: 6h, duration: 6h}]}]"]
    record, result = run_world(S4, over)
    _, base = run_world(S4, ["horizon=14h"])
    delay = lifecycle_outage_delay(record, result.tables["lifecycle"])
    assert delay["lifecycle_outage_delay_s_by_cause"]["transfer_pause"] > 0
    assert base.summary["recovery_time_s"] is not None
    late = result.summary["recovery_time_s"]
    assert late is None or late > base.summary["recovery_time_s"] + HOUR


# ------------------------------------------------------------------------------------------
# Bulk transfers and training
# ------------------------------------------------------------------------------------------


def _network() -> tuple[simpy.Environment, Network]:
    env = simpy.Environment()
    network = Network(env)
    network.add_link("a", "b", 100.0, 0.5)
    return env, network


def test_a_bulk_transfer_pauses_during_an_outage_and_resumes() -> None:
    """1000 B at 100 B/s (10 s + 0.5 s one way) cut from 2 s to 5 s lands 3 s later: 13.5 s;
    one sent during the outage starts when it ends."""
    env, network = _network()
    landed: dict[str, float] = {}

    def send(name: str, at: float) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(at)
        yield network.transfer("a", "b", 1000.0, "labelled_sample")
        landed[name] = env.now

    def outage() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(2.0)
        network.set_down("a", "b", True)
        yield env.timeout(3.0)
        network.set_down("a", "b", False)

    env.process(send("x", 0.0))
    env.process(outage())
    env.run()
    assert landed["x"] == pytest.approx(13.5)
    direction = network.directions[("a", "b")]
    assert direction.bytes_sent == pytest.approx(direction.bytes_accepted)

    env, network = _network()
    landed.clear()
    env.process(send("y", 3.0))
    env.process(outage())
    env.run()
    assert landed["y"] == pytest.approx(15.5)


def test_training_resumes_from_its_checkpoint() -> None:
    """1 h of work, checkpoints every 15 min, interrupted at 2000 s for 600 s: the 200 s since
    the 1800 s checkpoint are lost, so it ends at 3600 + 200 + 600 = 4400 s."""
    env = simpy.Environment()
    out: dict[str, Any] = {}

    def job() -> Generator[simpy.Event, Any, None]:
        out["run"] = yield from train_with_checkpoints(env, [(2000.0, 2600.0)], 900.0, 3600.0)
        out["end"] = env.now

    env.process(job())
    env.run()
    assert out["end"] == pytest.approx(4400.0)
    assert out["run"].lost_s == pytest.approx(200.0)
    assert out["run"].waited_s == pytest.approx(600.0)
    assert out["run"].interruptions == 1


def test_without_interruptions_training_takes_its_time() -> None:
    env = simpy.Environment()
    out: dict[str, float] = {}

    def job() -> Generator[simpy.Event, Any, None]:
        yield from train_with_checkpoints(env, [(5000.0, 6000.0)], 900.0, 3600.0)
        out["end"] = env.now

    env.process(job())
    env.run()
    assert out["end"] == 3600.0


def test_a_capacity_shortage_blocks_growth_until_it_ends() -> None:
    world = World(sim.load_scenario(S2, ["horizon=1h", "faults.capacity_shortages=[{site: cloud, pool: training, "
                                         "windows: [{start: 10min, duration: 20min}]}]"]))
    faults = world.faults
    assert faults.capacity_blocked_until("cloud", "training", 300.0) == 300.0
    assert faults.capacity_blocked_until("cloud", "training", 900.0) == 1800.0
    assert faults.capacity_blocked_until("cloud", "serving", 900.0) == 900.0
