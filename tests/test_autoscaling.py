"""The serving autoscaler (`sim.world.autoscaler`) on world runs, against timelines worked out by hand.

Every world here is exact: a deterministic 3 s service time (batch size 1 per replica), the
`shared_queue` router (every active replica pulls from the pool's one FIFO queue, idle ones in
index order), fixed token counts and `stages` arrivals with `process: constant`, so the number
of requests in a pool at each evaluation can be counted on paper. A request sent at s reaches a
cloud pool at s + the link's one-way delay + 11.4 us (1424 bytes at 1 Gbps), a premises pool
at s + 0.25 ms (the LAN) + 1.1 us; those microseconds only ever decide which of two events
comes first, and the timelines below say so where it matters. The kernel takes every event at
or before an evaluation's time before the autoscaler reads it (`advance(t)` takes time <= t).

**The load step** (`step_doc`): clients at a private office, one cloud L4 pool over a link of
1 s RTT (0.5 s one way) with `autoscale: {min 1, max 3, queue_per_replica, target 3,
interval 5 s, provisioning_delay 12 s, cooldown 20 s}`, starting with one replica. Sends: one
every 10 s in [0, 40), one a second in [40, 60) (H0..H19 at 40..59), one every 20 s in
[60, 83.5) (at 60 and 80), then three at 83.5, 83.6 and 83.7; horizon 118 s.

**Scale from zero** (`zero_doc`): clients at a private office with one owned L4 (`local`); a
cloud L4 pool `burst` over a link of 0.5 s RTT, `count: 0`, `autoscale: {min 0, max 2, target
2, interval 10 s, provisioning_delay 15 s, cooldown 30 s}`; one overflow rule, local first,
skipping it above 2 requests (waiting or running) per active replica. Sends at 0 and 100, then
one a second from 199.5 to 238.5 (B0..B39); horizon 400 s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from sim.kernels.batching import OVERFLOW, PREFERRED
from sim.record import RunRecord
from sim.result import Result, collect
from sim.spec.errors import SpecError
from sim.world.autoscaler import WindowMax
from sim.world.world import World

HOUR_S = 3600.0
SERVICE_S = 3.0


def constant(duration: float, rate_per_s: float) -> dict[str, Any]:
    return {"duration": duration, "rate_per_s": rate_per_s, "process": "constant"}


def engine() -> dict[str, Any]:
    """llama-3.1-8b replaced by a deterministic 3 s service time; one FIFO queue per pool."""
    return {"id": "llama-3.1-8b", "service_time": {"dist": "deterministic", "mean": SERVICE_S},
            "serving": {"router": "shared_queue"}}


def lengths() -> dict[str, Any]:
    return {"prompt_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 50}}


# The load step: T = 3 requests per replica, I = 5 s, D = 12 s, C = 20 s.
STEP_TARGET, STEP_INTERVAL_S, STEP_DELAY_S, STEP_COOLDOWN_S = 3, 5.0, 12.0, 20.0
STEP_HORIZON_S = 118.0


def step_doc() -> dict[str, Any]:
    return {
        "name": "load-step",
        "horizon": f"{STEP_HORIZON_S:g}s",
        "warmup": "0s",
        "sites": {
            "office": {"zone": "private"},
            "cloud": {"zone": "third_party", "provider": "aws", "pools": [{
                "name": "burst", "gpu": "l4", "count": 1, "roles": ["serving"], "elastic": True, "max_count": 3,
                "price_usd_per_gpu_hour": 1.0,
                "autoscale": {"min_replicas": 1, "max_replicas": 3, "metric": "queue_per_replica",
                              "target": STEP_TARGET, "interval": f"{STEP_INTERVAL_S:g}s",
                              "provisioning_delay": f"{STEP_DELAY_S:g}s", "cooldown": f"{STEP_COOLDOWN_S:g}s"}}]},
        },
        "links": {"wan": {"ends": ["office", "cloud"], "rtt": "1s", "bandwidth": "1Gbps"}},
        "model": engine(),
        "workload": {"origin": "office", **lengths(), "arrivals": {"process": "stages", "stages": [
            constant(40, 0.1), constant(20, 1), constant(23.5, 0.05), constant(0.3, 10)]}},
        "placement": {"inference": "cloud", "model_registry": "cloud"},
    }


# (t_s, metric, replicas before the decision, desired, action); X = requests in the pool.
# Replica r0 serves alone until r1 is active at 45 + 12 = 57 and r2 at 50 + 12 = 62. r0 runs
# H0..H5 back to back from 40.5 (ends 43.5, 46.5, ..., 58.5), then H7 [58.5, 61.5], H9, H12,
# H15, H18 (three seconds each, from 61.5); r1 runs H6 [57, 60], H8 [60, 63], H11, H14, H17
# and the request sent at 60 [72, 75]; r2 runs H10 [62, 65], H13, H16, H19 [71, 74].
STEP_ROWS: list[tuple[float, float, int, int, str]] = [
    # each low-stage request is done 3.5 s after it was sent: X = 0, desired max(0, min) = 1
    *[(t, 0.0, 1, 1, "hold") for t in (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)],
    # H0..H4 arrived (40.5..44.5), H0 done at 43.5, H1 running: X = 4, ceil(4/3) = 2 > 1: r1
    (45.0, 4.0, 1, 2, "up"),
    # H0..H9 arrived, H0..H2 done (49.5), H3 running: X = 7, ceil(7/3) = 3 > 1 + 1: r2
    (50.0, 7.0, 2, 3, "up"),
    # H0..H14 arrived, H0..H3 done: X = 11 on the one active replica; 3 = 1 active + 2 coming
    (55.0, 11.0, 3, 3, "hold"),
    # 20 arrived, H0..H5 and H6 (r1, at 60 exactly) done: X = 13 on 2 active, ceil(13/3) = 5 -> 3
    (60.0, 13 / 2, 3, 3, "hold"),
    # 21 arrived (the one sent at 60 too), H0..H10 done (H10 on r2 at 65): X = 10 on 3
    (65.0, 10 / 3, 3, 3, "hold"),
    # H0..H14 done (H14 on r1 at 69): X = 6, desired 2 < 3 and 20 s since the last action, but
    # the stabilisation window (the desired counts of 55, 60, 65, 70) still holds 3
    (70.0, 6 / 3, 3, 2, "hold"),
    # all 21 done (the last, on r1, at 75 exactly): X = 0; the window still holds 3 from 60, 65
    (75.0, 0.0, 3, 1, "hold"),
    (80.0, 0.0, 3, 1, "hold"),  # the request sent at 80 runs on r0 in [80.5, 83.5]
    # the three sent at 83.5, 83.6, 83.7 run on r0, r1, r2 (idle, index order) until 87.0,
    # 87.1, 87.2: X = 3, desired 1; window 70..85 holds 2, 35 s since the last action: down to
    # 2, r2 (the highest-numbered) drains and is released when its request ends at 87.2
    (85.0, 3 / 3, 3, 1, "down"),
    # 2 active now; desired 1 but the last action was at 85: cooldown until 105
    (90.0, 0.0, 2, 1, "hold"),
    (95.0, 0.0, 2, 1, "hold"),
    (100.0, 0.0, 2, 1, "hold"),
    (105.0, 0.0, 2, 1, "down"),  # r1, idle, released at once
    (110.0, 0.0, 1, 1, "hold"),
    (115.0, 0.0, 1, 1, "hold"),  # none at 118: the run ends first
]

# Replica instances (replica, held from, held until): r1 and r2 from their scale-up decisions
# (provisioning is held), r2 until its last request ends (87.2 plus the microseconds of the
# path), r1 from 45 to its release at 105, r0 throughout.
STEP_HOLDING = [(0, 0.0, STEP_HORIZON_S), (1, 45.0, 105.0), (2, 50.0, 87.2)]


# Scale from zero: T = 2, I = 10 s, D = 15 s, C = 30 s.
ZERO_DELAY_S, ZERO_COOLDOWN_S = 15.0, 30.0
ZERO_HORIZON_S = 400.0


def zero_doc(billing: str = "per_second") -> dict[str, Any]:
    return {
        "name": "burst-from-zero",
        "horizon": f"{ZERO_HORIZON_S:g}s",
        "warmup": "0s",
        "sites": {
            "office": {"zone": "private", "pools": [{"name": "local", "gpu": "l4", "count": 1, "roles": ["serving"]}]},
            "cloud": {"zone": "third_party", "provider": "aws", "pools": [{
                "name": "burst", "gpu": "l4", "count": 0, "roles": ["serving"], "elastic": True, "max_count": 2,
                "price_usd_per_gpu_hour": 1.0, "billing": billing,
                "autoscale": {"min_replicas": 0, "max_replicas": 2, "target": 2, "interval": "10s",
                              "provisioning_delay": f"{ZERO_DELAY_S:g}s", "cooldown": f"{ZERO_COOLDOWN_S:g}s"}}]},
        },
        "links": {"wan": {"ends": ["office", "cloud"], "rtt": "500ms", "bandwidth": "1Gbps"}},
        "model": engine(),
        "workload": {"origin": "office", **lengths(), "arrivals": {"process": "stages", "stages": [
            constant(199.5, 0.01), constant(40, 1)]}},
        "placement": {"inference": "office", "model_registry": "office"},
        "routing": [{"pools": ["office/local", "cloud/burst"], "policy": "overflow",
                     "overflow": {"queue_per_replica": 2}}],
    }


# The burst B_k is sent at 199.5 + k. Local serves B0 from 199.5 (ends 202.5, then every 3 s).
# At B2's send (201.5) it holds B0 and B1: 2, within the threshold; from B3 on (202.5, B0 still
# running by its microseconds) it holds 3 or more, so each send skips it, reaches the cloud pool
# with no active replica (sought), and, local being the last available pool, queues at local.
# B3..B25 (202.5..224.5) are sought; the cloud is active from 210 + 15 = 225, and B26..B39
# (225.5..238.5) overflow to it, arriving at 225.75 + j (j = 0..13). Its two replicas alternate:
# c0 runs j = 0, 2, ..., 12 from 225.75, 228.75, 231.75, ... (the last ends 246.75), c1 runs
# j = 1, 3, ..., 13 from 226.75, 229.75, ... (the last ends 247.75).
ZERO_ROWS: list[tuple[float, float, int, int, str]] = [
    *[(float(t), 0.0, 0, 0, "hold") for t in range(10, 210, 10)],  # nothing sought the cloud
    (210.0, 8.0, 0, 2, "up"),  # sought B3..B10: X = 8 (per max(active, 1)), ceil(8/2) = 4 -> max 2
    (220.0, 10.0, 2, 2, "hold"),  # sought B11..B20
    # sought B21..B25 (5), and at the pool j = 2, 3 running, j = 4 waiting (j = 0, 1 done): 8 / 2
    (230.0, 4.0, 2, 2, "hold"),
    (240.0, 3.0, 2, 2, "hold"),  # j = 0..13 arrived, j = 0..7 done (238.75): X = 6
    (250.0, 0.0, 2, 0, "hold"),  # all done at 247.75; the window 230..250 holds 2
    (260.0, 0.0, 2, 0, "hold"),  # the window 240..260 holds 2
    (270.0, 0.0, 2, 0, "down"),  # the window holds 0, 60 s since the last action: both released
    *[(float(t), 0.0, 0, 0, "hold") for t in range(280, 400, 10)],
]
ZERO_HOLDING = [(0, 210.0, 270.0), (1, 210.0, 270.0)]
CLOUD_SENDS = [225.5 + j for j in range(14)]


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def run(doc: dict[str, Any], overrides: list[str] | None = None) -> RunRecord:
    return World(sim.load_scenario(doc, overrides or [])).run()


def decisions(record: RunRecord, pool: str) -> list[tuple[float, float, int, int, str]]:
    frame = record.autoscaling[record.autoscaling["pool"] == pool]
    return [(float(row.t_s), float(row.metric), int(row.replicas), int(row.desired), str(row.action))
            for row in frame.itertuples()]


def assert_decisions(record: RunRecord, pool: str, expected: list[tuple[float, float, int, int, str]]) -> None:
    got = decisions(record, pool)
    assert [row[0] for row in got] == [row[0] for row in expected], "evaluation times"
    for g, e in zip(got, expected, strict=True):
        assert (g[0], g[2], g[3], g[4]) == (e[0], e[2], e[3], e[4]), f"(t, replicas, desired, action) at {e[0]} s"
        assert g[1] == pytest.approx(e[1]), f"metric at {e[0]} s"


def holding(record: RunRecord, pool: str) -> list[tuple[int, float, float]]:
    frame = record.pools[pool].holding.sort_values(["replica", "start_s"])
    return [(int(r.replica), float(r.start_s), float(r.end_s)) for r in frame.itertuples()]


def assert_holding(record: RunRecord, pool: str, expected: list[tuple[int, float, float]]) -> None:
    got = holding(record, pool)
    assert [r for r, _, _ in got] == [r for r, _, _ in expected]
    for (_, start, end), (_, start_e, end_e) in zip(got, expected, strict=True):
        assert start == pytest.approx(start_e, abs=1e-3) and end == pytest.approx(end_e, abs=1e-3)


def requests_frame(record: RunRecord) -> pd.DataFrame:
    r = record.requests
    return pd.DataFrame({"send_s": r.send_s, "pool": r.pool, "reason": r.reason, "replica": r.replica,
                         "arrival_s": r.pool_arrival_s, "dispatch_s": r.dispatch_s, "done_s": r.done_s})


def cloud_gpu_rows(result: Result) -> pd.DataFrame:
    costs = result.tables["costs"]
    return costs[costs["component"] == "cloud_gpu"]


def held_seconds(intervals: list[tuple[int, float, float]]) -> float:
    return sum(end - start for _, start, end in intervals)


@pytest.fixture(scope="module")
def step() -> RunRecord:
    return run(step_doc())


@pytest.fixture(scope="module")
def zero() -> RunRecord:
    return run(zero_doc())


# ------------------------------------------------------------------------------------------
# A load step
# ------------------------------------------------------------------------------------------


def test_the_autoscaler_follows_a_load_step_with_its_delays(step: RunRecord) -> None:
    """Every 5 s from t = 5: up by what queue_per_replica asks at once (45 and 50), hold while
    the new replicas provision and the queue drains, down only once the stabilisation window
    and the cooldown allow (85 and 105): the hand-computed table `STEP_ROWS`, row by row."""
    assert_decisions(step, "cloud/burst", STEP_ROWS)
    assert set(step.autoscaling["pool"]) == {"cloud/burst"}


def test_a_scaled_up_replica_holds_from_the_decision_and_serves_after_the_delay(step: RunRecord) -> None:
    """r1 and r2 are held (billed) from their scale-up decisions at 45 and 50, and take their
    first requests when they become active 12 s later: H6 on r1 at 57, H10 on r2 at 62 (the
    head of the pool's queue at that moment); no request is dispatched on them before."""
    assert_holding(step, "cloud/burst", STEP_HOLDING)
    q = requests_frame(step)
    first = q.groupby("replica")["dispatch_s"].min()
    assert first[1] == 45.0 + STEP_DELAY_S and first[2] == 50.0 + STEP_DELAY_S
    h6, h10 = np.flatnonzero(q["send_s"] == 46.0)[0], np.flatnonzero(q["send_s"] == 50.0)[0]
    assert (q.at[h6, "replica"], q.at[h6, "dispatch_s"]) == (1, 57.0)
    assert (q.at[h10, "replica"], q.at[h10, "dispatch_s"]) == (2, 62.0)
    for replica, active_from in ((1, 57.0), (2, 62.0)):
        assert (q.loc[q["replica"] == replica, "dispatch_s"] >= active_from).all()


def test_a_scaled_down_replica_is_released_when_its_last_request_ends(step: RunRecord) -> None:
    """The scale-down at 85 drains r2 while it runs the request sent at 83.7; r2 takes nothing
    more and is released exactly when that request ends (87.2), not at the decision. r1, idle
    at the scale-down at 105, is released at once."""
    q = requests_frame(step)
    last_on_r2 = q[q["replica"] == 2].sort_values("dispatch_s").iloc[-1]
    assert last_on_r2["send_s"] == pytest.approx(83.7)
    assert last_on_r2["dispatch_s"] < 85.0 < last_on_r2["done_s"]
    assert last_on_r2["done_s"] == pytest.approx(83.7 + 0.5 + SERVICE_S, abs=1e-3)
    released = {r: end for r, _, end in holding(step, "cloud/burst")}
    assert released[2] == last_on_r2["done_s"]
    assert released[1] == 105.0
    assert (q.loc[q["replica"] == 1, "done_s"] <= 105.0).all()


def test_no_scale_down_within_the_cooldown_of_the_last_action(step: RunRecord) -> None:
    """Every `down` comes at least `cooldown` after the previous up or down; and where desired
    is below the replicas but the last action is less than a cooldown ago (90, 95, 100 after
    the scale-down at 85), the autoscaler holds."""
    acted = [(t, action) for t, _, _, _, action in decisions(step, "cloud/burst") if action in ("up", "down")]
    assert [action for _, action in acted] == ["up", "up", "down", "down"]
    for (before, _), (t, action) in zip(acted, acted[1:], strict=False):
        if action == "down":
            assert t - before >= STEP_COOLDOWN_S
    waiting = [(t, action) for t, _, replicas, desired, action in decisions(step, "cloud/burst")
               if desired < replicas and 85.0 < t < 85.0 + STEP_COOLDOWN_S]
    assert waiting == [(90.0, "hold"), (95.0, "hold"), (100.0, "hold")]


def test_a_cooldown_of_zero_scales_down_at_once() -> None:
    """`cooldown: 0` (allowed: >= 0) crashed the autoscaler on an empty stabilisation window.
    With no window and no wait, every evaluation that wants fewer replicas than it has scales
    down, and every one that wants more scales up: the step's decisions, row by row."""
    record = run(step_doc(), ["sites.cloud.pools[0].autoscale.cooldown=0"])
    rows = decisions(record, "cloud/burst")
    assert len(rows) == int(STEP_HORIZON_S // STEP_INTERVAL_S)
    for t, _, replicas, desired, action in rows:
        expected = "down" if desired < replicas else "up" if desired > replicas else "hold"
        assert action == expected, (t, replicas, desired, action)
    assert {"up", "down"} <= {row[4] for row in rows}


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(0, 5), min_size=1, max_size=40), window=st.sampled_from([0.0, 1.0, 2.5, 7.0]))
def test_the_stabilisation_window_is_the_highest_desired_count_within_the_cooldown(
        values: list[int], window: float) -> None:
    """`WindowMax` (O(1) a push, so that a short interval under a long cooldown does not make
    every evaluation scan the whole window) gives what the plain definition gives: the highest
    value pushed at a time t' with t' > t - window, the newest always included."""
    maximum = WindowMax(window)
    for k, value in enumerate(values):
        t = float(k)
        expected = max(v for j, v in enumerate(values[: k + 1]) if j == k or float(j) > t - window)
        assert maximum.push(t, value) == expected


def test_the_load_step_bills_what_the_replicas_held() -> None:
    """Per second: 118 s (r0) + 60 s (r1) + 37.2 s (r2) of one L4 each = 0.0598 GPU-h, the
    pool's `gpu_hours` and its cloud GPU line at $1/GPU-h."""
    result = collect(run(step_doc()))
    expected_h = held_seconds(STEP_HOLDING) / HOUR_S
    pool = result.summary["pools"]["cloud/burst"]
    assert pool["gpu_hours"] == pytest.approx(expected_h, abs=1e-6)
    assert (pool["replicas_max"], pool["requests"]) == (3, 29)
    rows = cloud_gpu_rows(result)
    assert len(rows) == 1
    assert rows["quantity"].iloc[0] == pytest.approx(pool["gpu_hours"])
    assert rows["usd"].iloc[0] == pytest.approx(pool["gpu_hours"] * 1.0)


# ------------------------------------------------------------------------------------------
# Scale to zero
# ------------------------------------------------------------------------------------------


def test_a_pool_scaled_to_zero_costs_nothing_while_empty() -> None:
    """Stopped at 190 s, before the burst: local serves the two quiet requests, nothing seeks
    the cloud pool, every evaluation holds at 0 replicas, and the pool held nothing: 0
    GPU-hours, no cloud GPU line, no cloud GPU cost."""
    record = run(zero_doc(), ["horizon=190s"])
    assert_decisions(record, "cloud/burst", [row for row in ZERO_ROWS if row[0] < 190.0])
    assert record.pools["cloud/burst"].holding.empty
    assert list(record.requests.pool) == [0, 0]
    result = collect(record)
    burst = result.summary["pools"]["cloud/burst"]
    assert (burst["gpu_hours"], burst["replicas_max"], burst["requests"]) == (0.0, 0, 0)
    assert cloud_gpu_rows(result).empty
    assert result.summary["cost_usd_by_component"]["cloud_gpu"] == 0.0


def test_overflow_demand_scales_a_pool_up_from_zero(zero: RunRecord) -> None:
    """The requests that sought the empty cloud pool (B3..B10 before 210) scale it up to 2 at
    210; it serves from 225 (B26..B39, as overflow), and goes back to zero at 270: the table
    `ZERO_ROWS` and two replica instances held [210, 270)."""
    assert_decisions(zero, "cloud/burst", ZERO_ROWS)
    assert_holding(zero, "cloud/burst", ZERO_HOLDING)
    q = requests_frame(zero)
    cloud = q[q["pool"] == 1]
    assert list(cloud["send_s"]) == CLOUD_SENDS
    assert (cloud["reason"] == OVERFLOW).all()
    assert cloud["dispatch_s"].min() >= 210.0 + ZERO_DELAY_S
    assert cloud["done_s"].max() == pytest.approx(247.75, abs=1e-3)
    local = q[q["pool"] == 0]
    assert len(local) == 2 + 26 and (local["reason"] == PREFERRED).all()


def test_gpu_hours_of_a_pool_scaled_from_zero_are_its_holding_intervals(zero: RunRecord) -> None:
    """Per second: two instances x 60 s x 1 GPU = 120 GPU-s = 0.0333 GPU-h, nothing for the
    210 s it was empty; 0.3 replicas on average over the 400 s."""
    result = collect(zero)
    burst = result.summary["pools"]["cloud/burst"]
    assert burst["gpu_hours"] == pytest.approx(held_seconds(ZERO_HOLDING) / HOUR_S)
    assert burst["gpu_hours"] == pytest.approx(120.0 / HOUR_S)
    assert burst["replicas_mean"] == pytest.approx(120.0 / ZERO_HORIZON_S)
    assert (burst["replicas_max"], burst["requests"]) == (2, len(CLOUD_SENDS))
    rows = cloud_gpu_rows(result)
    assert list(rows["pool"]) == ["burst"]
    assert rows["quantity"].iloc[0] == pytest.approx(burst["gpu_hours"])


def test_per_pool_gpu_hours_add_up_to_the_cost_lines() -> None:
    """Billed per hour, each of the two 60 s instances is paid as a whole hour: 2 GPU-h, the
    cloud pool's `gpu_hours`, its cloud GPU line's quantity and, at $1/GPU-h, its dollars. The
    owned local L4 holds 400 s = 0.111 GPU-h: its capex lines price that one GPU over the
    horizon, and the GPU pool's held time in `gpu_usage` is the same."""
    result = collect(run(zero_doc("per_hour")))
    pools = result.summary["pools"]
    costs = result.tables["costs"]
    burst, local = pools["cloud/burst"], pools["office/local"]
    assert burst["gpu_hours"] == pytest.approx(2.0)
    rows = cloud_gpu_rows(result)
    assert list(zip(rows["site"], rows["pool"], strict=True)) == [("cloud", "burst")]
    assert rows["quantity"].sum() == pytest.approx(burst["gpu_hours"])
    assert rows["usd"].sum() == pytest.approx(2.0 * 1.0)
    assert "billed per hour" in rows["detail"].iloc[0]
    assert local["gpu_hours"] == pytest.approx(ZERO_HORIZON_S / HOUR_S)
    capex = costs[(costs["component"] == "capex") & (costs["pool"] == "local")]
    assert list(capex["quantity"] * ZERO_HORIZON_S / HOUR_S) == pytest.approx([local["gpu_hours"]] * 2)
    usage = result.tables["gpu_usage"].set_index(["site", "pool"])
    for name, pool in pools.items():
        site, pool_name = name.split("/")
        assert usage.loc[(site, pool_name), "held_gpu_s"] / HOUR_S == pytest.approx(pool["gpu_hours"])
    third_party = sum(p["gpu_hours"] for name, p in pools.items() if name.startswith("cloud/"))
    assert costs.loc[costs["component"] == "cloud_gpu", "quantity"].sum() == pytest.approx(third_party)
    assert result.summary["cost_usd_by_component"]["cloud_gpu"] == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


VALIDATION_CASES: list[tuple[str, Callable[[], dict[str, Any]], list[str], str, list[str]]] = [
    ("premises beyond owned GPUs", zero_doc,
     ["sites.office.pools[0].autoscale={min_replicas: 0, max_replicas: 2, target: 2}"],
     "sites.office.pools[0].autoscale.max_replicas", ["'local'", "1 GPUs it owns"]),
    ("cloud pool not elastic", step_doc, ["sites.cloud.pools[0].elastic=false"],
     "sites.cloud.pools[0].elastic", ["'burst'", "not elastic"]),
    ("min equals max", zero_doc, ["sites.cloud.pools[0].autoscale.min_replicas=2"],
     "sites.cloud.pools[0].autoscale.max_replicas", ["'burst'", "can never scale"]),
    ("shared with training", step_doc, ["sites.cloud.pools[0].roles=[serving, training]"],
     "sites.cloud.pools[0].roles", ["'burst'", "lends GPUs to training"]),
]


@pytest.mark.parametrize(("case", "doc", "overrides", "path", "words"), VALIDATION_CASES,
                         ids=[case[0] for case in VALIDATION_CASES])
def test_an_autoscaler_that_cannot_scale_is_an_error_at_the_pool(
        case: str, doc: Callable[[], dict[str, Any]], overrides: list[str], path: str, words: list[str]) -> None:
    """Each autoscaler that could not take effect is a SpecError at the pool's field, naming
    the pool."""
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(doc(), overrides)
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert path in issues, f"{case}: {issues}"
    assert all(word in issues[path] for word in words), issues[path]
