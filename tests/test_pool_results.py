"""Per-pool and per-class results, measured from a hand-built two-pool record.

The record (built by hand, as `sim.record` intends, so that every number below is checked
against arithmetic rather than against a run) is a 4 h horizon with no warm-up:

- `premises/local`: 2 owned L40S replicas (1 GPU each) held for the whole horizon, busy
  7200 s and 3600 s;
- `cloud/burst`: an autoscaled L4 pool in an AWS region (2 GPUs per replica, 0 to 3
  replicas, billed per hour at a scenario price of $1/GPU-h), whose replica instances held
  [3600, 5400), [4000, 8000) and [10000, horizon) (that one still held at the end), and was
  empty in between; busy 1000 s and 2000 s.

Two traffic classes: `public` (its own data class `public_prompt`, the scenario's SLO: TTFT
p99 1 s, E2E p99 10 s) and `confidential` (data class `confidential_prompt`, its own SLO: TTFT
p99 0.5 s), which stays on premises. Three public requests overflowed to the cloud pool.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sim.experiment import Comparison, digest
from sim.kernels.batching import DONE, OVERFLOW, PREFERRED, REJECTED, WAITING
from sim.metrics import measure
from sim.metrics.ledger import privacy_ledger
from sim.record import NO_POOL, PoolRecord, RequestTable, RunRecord
from sim.report.figures import all_figures, missing_figures
from sim.report.terminal import comparison_rows
from sim.result import Result, collect
from sim.spec.scenario import Scenario

HORIZON_S = 4 * 3600.0
HOUR_S = 3600.0
PUBLIC, CONFIDENTIAL = 0, 1
LOCAL, BURST = 0, 1


def scenario_doc() -> dict[str, Any]:
    return {
        "name": "burst",
        "horizon": "4h",
        "warmup": "0s",
        "sites": {
            "premises": {"zone": "private",
                         "pools": [{"name": "local", "gpu": "l40s", "count": 2, "roles": ["serving"]}]},
            "cloud": {"zone": "third_party", "provider": "aws",
                      "pools": [{"name": "burst", "gpu": "l4", "count": 6, "roles": ["serving"],
                                 "price_usd_per_gpu_hour": 1.0}]},
        },
        "links": {"wan": {"ends": ["premises", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}},
        "model": {"id": "llama-3.1-8b", "service_time": {"dist": "deterministic", "mean": 0.5}},
        "workload": {
            "origin": "premises",
            "arrivals": {"process": "poisson", "rate_per_s": 1},
            "prompt_tokens": {"dist": "fixed", "value": 100},
            "output_tokens": {"dist": "fixed", "value": 50},
            "classes": [
                {"name": "public", "share": 0.5, "data_class": "public_prompt"},
                {"name": "confidential", "share": 0.5, "data_class": "confidential_prompt",
                 "residency": ["private"], "slo": {"ttft_p99": 0.5}},
            ],
        },
        "placement": {"inference": "premises", "model_registry": "premises"},
        "slo": {"ttft_p99": 1.0, "e2e_p99": 10.0},
        "privacy": {"data_classes": {
            "prompt": {"sensitivity": 1.0}, "response": {"sensitivity": 0.5},
            "public_prompt": {"sensitivity": 0.1}, "confidential_prompt": {"sensitivity": 10.0}}},
    }


def hand_scenario() -> Scenario:
    # validated as a model only: the metrics read sites, links, workload classes, SLOs and
    # privacy, and a hand-built record needs no world (nor the world's cross-field checks)
    return Scenario.model_validate(scenario_doc())


# (send_s, class, pool, reason, status, ttft_s, e2e_s); times at the pool equal the client's
# here (a 0 s network) except that cloud payloads cross the link, which the ledger reads
REQUESTS: list[tuple[float, int, int, int, int, float, float]] = [
    (100.0, CONFIDENTIAL, LOCAL, PREFERRED, DONE, 0.2, 2.0),
    (200.0, CONFIDENTIAL, LOCAL, PREFERRED, DONE, 0.4, 2.0),
    (300.0, CONFIDENTIAL, LOCAL, PREFERRED, DONE, 0.8, 3.0),  # misses its class's 0.5 s, not the scenario's 1 s
    (400.0, CONFIDENTIAL, LOCAL, PREFERRED, WAITING, math.nan, math.nan),  # unfinished: a miss
    (500.0, PUBLIC, LOCAL, PREFERRED, DONE, 0.3, 3.0),
    (3700.0, PUBLIC, BURST, OVERFLOW, DONE, 0.6, 5.0),
    (4100.0, PUBLIC, BURST, OVERFLOW, DONE, 0.9, 8.0),
    (6000.0, PUBLIC, LOCAL, PREFERRED, DONE, 0.5, 4.0),
    (11000.0, PUBLIC, BURST, OVERFLOW, DONE, 0.7, 6.0),
    (HORIZON_S - 5.0, PUBLIC, LOCAL, PREFERRED, WAITING, math.nan, math.nan),  # in the last 10 s: not judged
    (7000.0, PUBLIC, NO_POOL, -1, REJECTED, math.nan, math.nan),  # never routed
]
REQUEST_BYTES, RESPONSE_BYTES = 1000.0, 2000.0


def request_table() -> RequestTable:
    send, cls, pool, reason, status, ttft, e2e = (np.array(column) for column in zip(*REQUESTS, strict=True))
    n = len(send)
    done = status == DONE
    first = np.where(done, send + ttft, np.nan)
    finished = np.where(done, send + e2e, np.nan)
    arrived = np.where(pool >= 0, send, np.nan)
    at_cloud = pool == BURST
    return RequestTable(
        send_s=send, prompt_tokens=np.full(n, 100), output_tokens=np.full(n, 50), prefix_group=np.full(n, -1),
        pool=pool.astype(np.int16), status=status.astype(np.int8), pool_arrival_s=arrived,
        dispatch_s=np.where(done, send, np.nan), first_token_s=first, done_s=finished,
        replica=np.where(pool >= 0, 0, -1), version=np.zeros(n, dtype=np.int64), preemptions=np.zeros(n, dtype=np.int64),
        attempts=np.ones(n, dtype=np.int64), client_first_s=first, client_done_s=finished,
        request_bytes=np.full(n, REQUEST_BYTES), response_bytes=np.full(n, RESPONSE_BYTES),
        uplink_send_s=np.where(at_cloud, send, np.nan), downlink_send_s=np.where(at_cloud & done, finished, np.nan),
        delayed=np.zeros(n, dtype=bool), cut_off=np.zeros(n, dtype=bool), diverted=np.zeros(n, dtype=bool),
        error_rate=np.where(done, 0.05, np.nan), error=np.zeros(n, dtype=bool), labelled=np.zeros(n, dtype=bool),
        traffic_class=cls.astype(np.int32), reason=reason.astype(np.int8),
    )


def holding(intervals: list[tuple[int, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(intervals, columns=["replica", "start_s", "end_s"])
    return frame.astype({"replica": np.int64, "start_s": np.float64, "end_s": np.float64})


BURST_HOLDING = [(0, 3600.0, 5400.0), (1, 4000.0, 8000.0), (0, 10000.0, HORIZON_S)]


def pool_record(name: str, site: str, zone: str, gpu: str, gpus: int, busy_s: list[float],
                intervals: list[tuple[int, float, float]], **autoscaling: Any) -> PoolRecord:
    replicas = len(busy_s)
    return PoolRecord(
        name=f"{site}/{name}", site=site, zone=zone, pool=name, gpu=gpu, gpus_per_replica=gpus, replicas=replicas,
        active_replicas=replicas, elastic=False, busy_s=np.array(busy_s), iterations=np.zeros(replicas, dtype=np.int64),
        holding=holding(intervals), timeline_s=np.zeros(0), timeline_busy_s=np.zeros((0, replicas)),
        timeline_gpus=np.zeros(0, dtype=np.int64), **autoscaling,
    )


def hand_record(billing: str = "per_hour", burst_holding: list[tuple[int, float, float]] | None = None) -> RunRecord:
    local = pool_record("local", "premises", "private", "l40s", 1, [7200.0, 3600.0],
                        [(0, 0.0, HORIZON_S), (1, 0.0, HORIZON_S)])
    burst = pool_record("burst", "cloud", "third_party", "l4", 2, [1000.0, 2000.0, 0.0],
                        BURST_HOLDING if burst_holding is None else burst_holding,
                        autoscaled=True, min_replicas=0, max_replicas=3, billing=billing)
    return RunRecord(scenario=hand_scenario(), replication=0, requests=request_table(),
                     pools={local.name: local, burst.name: burst}, primary_pool=local.name,
                     class_names=["public", "confidential"])


@pytest.fixture(scope="module")
def result() -> Result:
    return collect(hand_record())


def cloud_gpu_rows(result: Result) -> pd.DataFrame:
    costs = result.tables["costs"]
    return costs[costs["component"] == "cloud_gpu"]


# ------------------------------------------------------------------------------------------
# The requests table
# ------------------------------------------------------------------------------------------


def test_requests_say_their_class_and_route(result: Result) -> None:
    """`traffic_class` names each request's class; `route` why it went to its pool, missing
    for the request that was never routed."""
    q = result.requests
    assert list(q["traffic_class"].cat.categories) == ["public", "confidential"]
    assert list(q["traffic_class"].astype(str)) == [["public", "confidential"][r[1]] for r in REQUESTS]
    assert list(q["route"].cat.categories) == ["preferred", "overflow", "failover", "weighted"]
    assert q["route"].isna().tolist() == [False] * 10 + [True]
    assert (q["route"] == "overflow").sum() == 3
    assert list(q.loc[q["route"] == "overflow", "site"].astype(str)) == ["cloud"] * 3


# ------------------------------------------------------------------------------------------
# Pools
# ------------------------------------------------------------------------------------------


def test_pools_summary_by_hand(result: Result) -> None:
    """Premises: 2 replicas x 1 GPU x 4 h = 8 GPU-h, busy (7200 + 3600) / 28800 = 0.375,
    7 of the 10 routed requests. Cloud, billed per hour: the instances released after 0.5 h
    and 1.11 h pay 1 h and 2 h, the one held at the horizon its 1.22 h: (3600 + 7200 + 4400)
    s x 2 GPUs = 30400 GPU-s = 8.444 GPU-h, busy 3000 s x 2 GPUs; 3 of 10 requests."""
    pools = result.summary["pools"]
    assert set(pools) == {"premises/local", "cloud/burst"}
    local, burst = pools["premises/local"], pools["cloud/burst"]
    assert (local["site"], local["gpu"], local["requests"]) == ("premises", "l40s", 7)
    assert local["requests_share"] == pytest.approx(0.7)
    assert local["gpu_hours"] == pytest.approx(8.0)
    assert local["utilisation"] == pytest.approx(10800 / 28800)
    assert (local["replicas_mean"], local["replicas_max"]) == (pytest.approx(2.0), 2)
    assert (burst["site"], burst["gpu"], burst["requests"]) == ("cloud", "l4", 3)
    assert burst["requests_share"] == pytest.approx(0.3)
    assert burst["gpu_hours"] == pytest.approx(30400 / HOUR_S)
    assert burst["utilisation"] == pytest.approx(6000 / 30400)
    assert result.summary["gpu_utilisation"]["cloud/burst"] == burst["utilisation"]


def test_replicas_mean_and_max_by_hand(result: Result) -> None:
    """Replica-seconds held (not rounded to the bill): 1800 + 4000 + 4400 = 10200 over the
    14400 s horizon = 0.7083 replicas on average; two at once during [4000, 5400)."""
    burst = result.summary["pools"]["cloud/burst"]
    assert burst["replicas_mean"] == pytest.approx(10200 / HORIZON_S)
    assert burst["replicas_max"] == 2
    back_to_back = collect(hand_record(burst_holding=[(0, 0.0, 3600.0), (1, 3600.0, 7200.0)]))
    assert back_to_back.summary["pools"]["cloud/burst"]["replicas_max"] == 1  # released at t, acquired at t


def test_per_hour_rounds_each_instance_up_and_per_second_does_not() -> None:
    """Per hour: 1 h + 2 h + 1.222 h (still held at the horizon: charged to it) per GPU;
    per second: 0.5 h + 1.111 h + 1.222 h; x 2 GPUs x $1/GPU-h. The rows say which."""
    per_hour = cloud_gpu_rows(collect(hand_record("per_hour")))
    per_second = cloud_gpu_rows(collect(hand_record("per_second")))
    assert per_hour["quantity"].sum() == pytest.approx(2 * (1 + 2 + 4400 / HOUR_S))
    assert per_second["quantity"].sum() == pytest.approx(2 * 10200 / HOUR_S)
    assert per_hour["usd"].sum() == pytest.approx(per_hour["quantity"].sum() * 1.0)
    assert all("billed per hour" in d and "rounded up to whole hours" in d for d in per_hour["detail"])
    assert all("billed per second" in d for d in per_second["detail"])


def test_pool_gpu_hours_add_up_to_the_cloud_gpu_cost_lines(result: Result) -> None:
    """The summary's GPU-hours of the cloud serving pools are what the cloud GPU lines charge,
    pool by pool; premises GPUs are owned (capex, no GPU-hour line)."""
    rows = cloud_gpu_rows(result)
    cloud = {name: p for name, p in result.summary["pools"].items() if name.startswith("cloud/")}
    assert rows["quantity"].sum() == pytest.approx(sum(p["gpu_hours"] for p in cloud.values()))
    assert set(rows["site"]) == {"cloud"}
    for name, pool in cloud.items():
        assert rows.loc[rows["detail"].str.contains(f"serving pool {name} "), "quantity"].sum() == \
            pytest.approx(pool["gpu_hours"])
    usage = result.tables["gpu_usage"].set_index(["site", "pool"])
    assert usage.loc[("cloud", "burst"), "held_gpu_s"] / HOUR_S == pytest.approx(rows["quantity"].sum())


def test_an_autoscaled_pool_scaled_to_zero_costs_nothing() -> None:
    """With no replica instance ever held, the autoscaled cloud pool has no GPU-hours, no
    cloud GPU line and no cloud GPU cost (its spec count of 6 GPUs is not charged)."""
    empty = collect(hand_record(burst_holding=[]))
    assert empty.summary["pools"]["cloud/burst"]["gpu_hours"] == 0.0
    assert empty.summary["pools"]["cloud/burst"]["replicas_mean"] == 0.0
    assert empty.summary["pools"]["cloud/burst"]["replicas_max"] == 0
    assert cloud_gpu_rows(empty).empty
    assert empty.summary["cost_usd_by_component"]["cloud_gpu"] == 0.0


# ------------------------------------------------------------------------------------------
# Traffic classes
# ------------------------------------------------------------------------------------------


def test_per_class_slo_attainment_and_verdict(result: Result) -> None:
    """Confidential, against its own 0.5 s TTFT: 0.2 and 0.4 meet it, 0.8 misses (it would
    meet the scenario's 1 s), the unfinished one misses: 2/4, not met. Public, against the
    scenario's SLO: the five requests judged meet it (the one sent in the last 10 s, the
    largest target, is left out, the never-routed rejection at 7000 s is a miss): 5/6."""
    classes = result.summary["classes"]
    confidential, public = classes["confidential"], classes["public"]
    assert (confidential["requests"], confidential["requests_completed"]) == (4, 3)
    assert confidential["slo_attainment"] == pytest.approx(0.5)
    assert confidential["slo_met"] is False
    assert (public["requests"], public["requests_completed"]) == (7, 5)
    assert public["slo_attainment"] == pytest.approx(5 / 6)
    assert public["slo_met"] is False  # the rejected request counts as infinitely slow
    assert public["ttft_p50_s"] == pytest.approx(0.6)
    assert confidential["ttft_p99_s"] == pytest.approx(np.percentile([0.2, 0.4, 0.8], 99))


def test_a_class_meets_its_slo_when_every_judged_request_does() -> None:
    """Without the rejection, every judged public request is within 1 s and 10 s: met."""
    record = hand_record()
    keep = np.arange(len(REQUESTS) - 1)
    req = record.requests
    record.requests = RequestTable(**{name: getattr(req, name)[keep] for name in req.__dataclass_fields__})
    public = collect(record).summary["classes"]["public"]
    assert public["slo_attainment"] == 1.0 and public["slo_met"] is True


def test_ledger_rows_go_to_the_pool_site_with_the_class_data_class(result: Result) -> None:
    """The three overflowed public requests cross premises -> cloud as `public_prompt` (the
    class's own data class) and come back as `response` (the workload's), one row per minute
    they were sent in; bulk transfers aside, every payload row names its traffic class."""
    ledger = privacy_ledger(hand_record())
    up = ledger[ledger["purpose"] == "request"]
    down = ledger[ledger["purpose"] == "response"]
    assert len(up) == 3 and len(down) == 3
    assert set(zip(up["from_site"], up["to_site"], up["data_class"], up["link"], strict=True)) == \
        {("premises", "cloud", "public_prompt", "wan")}
    assert set(zip(down["from_site"], down["to_site"], down["data_class"], strict=True)) == \
        {("cloud", "premises", "response")}
    assert set(ledger["traffic_class"]) == {"public"}
    assert up["bytes"].sum() == 3 * REQUEST_BYTES and down["bytes"].sum() == 3 * RESPONSE_BYTES
    assert list(up["time_s"]) == [3700.0, 4100.0, 11000.0]


def test_a_class_that_stays_on_premises_exposes_nothing(result: Result) -> None:
    """Confidential never left the premises: zero exposure. Public: 3 prompts (sensitivity
    0.1) and the 3 responses the cloud generated (0.5): 6 records, 9000 bytes, score 1.8;
    the run's exposure is public's."""
    classes = result.summary["classes"]
    assert classes["confidential"]["exposure"] == {"exposed_bytes": 0.0, "exposed_records": 0, "exposure_score": 0.0}
    public = classes["public"]["exposure"]
    assert public["exposed_records"] == 6
    assert public["exposed_bytes"] == pytest.approx(3 * (REQUEST_BYTES + RESPONSE_BYTES))
    assert public["exposure_score"] == pytest.approx(3 * 0.1 + 3 * 0.5)
    assert result.summary["exposed_records"] == 6
    assert result.summary["exposure_score"] == pytest.approx(public["exposure_score"])
    _, summary = measure(hand_record())
    assert summary["exposed_records_by_class"]["confidential_prompt"] == 0


def test_burst_share_is_the_overflowed_share_of_routed_requests(result: Result) -> None:
    """3 overflowed of the 10 routed requests (the never-routed one is not counted)."""
    assert result.summary["burst_share"] == pytest.approx(0.3)
    routing = result.tables["routing"]
    assert routing.loc[routing["route"] == "overflow", "requests"].sum() == 3
    assert routing["requests"].sum() == 10


# ------------------------------------------------------------------------------------------
# Compare: table and figures
# ------------------------------------------------------------------------------------------


def hand_comparison() -> Comparison:
    runs = [digest(collect(hand_record())), digest(collect(hand_record("per_second")))]
    for k, run in enumerate(runs):
        run.replication = k
    return Comparison([hand_scenario()], {"burst": runs}, replications=2)


def test_compare_table_shows_per_pool_load_and_the_burst_share() -> None:
    rows = {row["metric"]: row for row in comparison_rows(hand_comparison())}
    for pool in ("premises/local", "cloud/burst"):
        for field in ("requests_share", "gpu_hours", "replicas_mean", "replicas_max"):
            assert f"pools.{pool}.{field}" in rows
    assert rows["pools.cloud/burst.requests_share"]["cells"]["burst"] == "30.00%"
    assert rows["burst_share"]["cells"]["burst"] == "30.00%"


def test_burst_share_and_replica_figures_are_drawn_with_units() -> None:
    """The burst-share timeline and the autoscaled pool's replica steps are drawn, every axis
    labelled with a unit; without overflow and autoscaling they are left out with a reason."""
    comparison = hand_comparison()
    figures = all_figures(comparison)
    for name in ("burst_share_over_time", "replicas_over_time"):
        assert name in figures
        for ax in figures[name].axes:
            if ax.has_data():
                assert "(" in ax.get_xlabel() and "(" in ax.get_ylabel()
                assert ax.get_title() or ax.get_title(loc="left")
    for run in comparison.runs["burst"]:
        run.summary["burst_share"] = 0.0
        run.tables["routing"] = run.tables["routing"][run.tables["routing"]["route"] != "overflow"]
        run.tables["pools"] = run.tables["pools"].assign(autoscaled=False)
    missing = missing_figures(comparison)
    assert {"burst_share_over_time", "replicas_over_time"} <= set(missing)
