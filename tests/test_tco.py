"""Total cost of ownership, one component at a time, against numbers computed by hand.

Cloud: instances as sold (whole instances billed), each pricing model, spot interruptions.
Premises: server classes, amortisation, support, colocation, host power. Energy from work (a
GPU's power follows its achieved FLOP and byte rates, not "busy"). The projection of the
simulated horizon to a month and a year with traffic growth.

Catalog numbers used (TCO.md): AWS g6e.xlarge (1x L40S) $1.861/h on demand, $1.06 spot;
g6e.12xlarge (4x L40S) $10.493/h; p5.48xlarge (8x H100) $55.04/h = $6.88/GPU-h; AWS
commitment discounts 41% (1 y) and 64% (3 y); GCP a3-highgpu-8g 1-year CUD $44,810/month;
L40S $8,500 in a pcie-8 server ($4,500 of host per GPU; host 800 W idle, 1,850 W busy, 2,200 W
rated; 8 GPUs), TDP 350 W, loaded idle 83 W; colocation $184.06/kW-month; support 10% a year.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import sim
from sim.catalog import MissingPrice, cloud_offer, load_catalog, shipped_catalog
from sim.kernels.roofline import (
    P_ATTN_FLOPS_PER_PAIR,
    P_ATTN_RATE,
    P_GEMM_RATE,
    P_HEAD_BYTES,
    P_HEAD_FLOPS_PER_TOKEN,
    P_KV_BW,
    P_KV_BYTES_PER_TOKEN,
    P_LINEAR_BYTES,
    P_LINEAR_FLOPS_PER_TOKEN,
    P_WEIGHT_BW,
    EngineProfile,
    pack_params,
    work_seconds,
)
from sim.metrics import cost_breakdown, energy, gpu_usage, measure, privacy_ledger
from sim.metrics.cost import MONTH_S, YEAR_S, projection
from sim.metrics.energy import activity_seconds
from sim.record import PoolRecord, RunRecord
from sim.result import collect
from sim.spec.errors import SpecError
from sim.world import World

SCENARIOS = Path(__file__).parent.parent / "scenarios"
HOUR_S = 3600.0


def doc(pools: list[dict[str, Any]], zone: str = "third_party", rate: float = 1.0, horizon: str = "1h",
        service_s: float = 0.5) -> dict[str, Any]:
    """Clients in a private office; `pools` at an AWS region (or on the premises); constant
    arrivals at `rate` per second, each served in exactly `service_s`."""
    site = {"zone": zone, "pools": pools, **({"provider": "aws"} if zone == "third_party" else {})}
    sites = {"office": {"zone": "private"}, "gpus": site} if zone == "third_party" else {"gpus": site}
    return {
        "name": "tco", "horizon": horizon,
        "sites": sites,
        "links": {"wan": {"ends": ["office", "gpus"], "rtt": "20ms", "bandwidth": "1Gbps"}} if zone != "private"
        else {},
        "model": {"id": "llama-3.1-8b", "service_time": {"dist": "deterministic", "mean": service_s}},
        "workload": {"origin": "office" if zone == "third_party" else "gpus",
                     "arrivals": {"process": "constant", "rate_per_s": rate},
                     "prompt_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 50}},
        "placement": {"inference": "gpus", "model_registry": "gpus"},
    }


def run(document: dict[str, Any] | Path, overrides: list[str] | None = None) -> RunRecord:
    return World(sim.load_scenario(document, overrides or [])).run()


def costs_of(record: RunRecord) -> pd.DataFrame:
    return cost_breakdown(record, privacy_ledger(record))


def usd(costs: pd.DataFrame, component: str) -> float:
    return float(costs.loc[costs["component"] == component, "usd"].sum())


def issue_at(document: dict[str, Any], path: str) -> str:
    """The message of the validation issue at `path` (the scenario must be refused)."""
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(document)
    found = [i for i in caught.value.issues if i.path == path]
    assert found, [i.path for i in caught.value.issues]
    return found[0].message


# ------------------------------------------------------------------------------------------
# Cloud: instances as sold
# ------------------------------------------------------------------------------------------


def test_a_pool_pays_for_whole_instances() -> None:
    """3 H100s wanted on a p5.48xlarge (8 GPUs): 8 GPU-h x $6.88 for the hour, and the cost
    line says 8 GPUs for 3 wanted. 2 L40S on a named g6e.12xlarge (4 GPUs, $10.493/h): one
    instance, $10.493."""
    costs = costs_of(run(doc([{"name": "p", "gpu": "h100-sxm", "count": 3, "instance": "p5.48xlarge",
                               "roles": ["serving"]}])))
    row = costs[costs["component"] == "cloud_gpu"].iloc[0]
    assert row["quantity"] == pytest.approx(8.0)
    assert row["usd"] == pytest.approx(8 * 55.04 / 8)
    assert "8 GPUs for 3 wanted" in row["detail"] and "p5.48xlarge" in row["detail"]
    named = costs_of(run(doc([{"name": "p", "gpu": "l40s", "count": 2, "instance": "g6e.12xlarge",
                               "roles": ["serving"]}])))
    assert usd(named, "cloud_gpu") == pytest.approx(10.493)


def test_replicas_rent_whole_instances_per_hour_when_billed_per_hour() -> None:
    """An autoscaled H100 pool of one-GPU replicas on p5.48xlarge: each replica instance rents
    a whole 8-GPU instance; billed per hour, each instance released before the horizon is
    rounded up to whole hours. The cost is (billed hours of each instance) x 8 x $6.88."""
    pool = {"name": "p", "gpu": "h100-sxm", "count": 1, "elastic": True, "max_count": 3, "roles": ["serving"],
            "instance": "p5.48xlarge",
            "billing": "per_hour", "provisioning_delay": "1min",
            "autoscale": {"min_replicas": 1, "max_replicas": 3, "target": 2, "interval": "30s", "cooldown": "5min"}}
    document = doc([pool], rate=2.0, horizon="3h", service_s=1.5)
    document["workload"]["arrivals"] = {"process": "stages", "stages": [
        {"duration": "1h", "rate_per_s": 0.2}, {"duration": "30min", "rate_per_s": 4}, {"duration": "90min",
                                                                                         "rate_per_s": 0.2}]}
    record = run(document)
    holding = record.pools["gpus/p"].holding
    assert len(holding) > 1  # it scaled up and down
    start, end = holding["start_s"].to_numpy(), holding["end_s"].to_numpy()
    hours = np.where(end < 3 * HOUR_S, np.ceil((end - start) / HOUR_S), (end - start) / HOUR_S)
    assert usd(costs_of(record), "cloud_gpu") == pytest.approx(hours.sum() * 8 * 6.88)


def test_the_cheapest_instance_that_holds_what_is_rented_at_a_time() -> None:
    """AWS sells H100s as p5.4xlarge (1 GPU) and p5.48xlarge (8), both $6.88/GPU-h: a 4-GPU
    training job rents 4 single-GPU instances (no GPU paid idle), a tensor-parallel-4 serving
    replica needs one scale-up domain, so a p5.48xlarge (8 GPUs billed for 4)."""
    catalog = shipped_catalog()
    assert cloud_offer(catalog, "h100-sxm", "aws", "on_demand", gpus_needed=4).instance == "p5.4xlarge"
    replica = cloud_offer(catalog, "h100-sxm", "aws", "on_demand", gpus_needed=4, one_instance=True)
    assert replica.instance == "p5.48xlarge" and replica.billed_gpus(4) == 8


# ------------------------------------------------------------------------------------------
# Cloud: pricing models
# ------------------------------------------------------------------------------------------


def test_each_pricing_model_has_its_price() -> None:
    """One L40S replica on AWS: on demand $1.861 (g6e.xlarge), spot $1.06; reserved 1 y and 3 y
    are derived [E] from on demand with AWS's 41% and 64%; GCP's a3-highgpu-8g lists its own
    1-year CUD ($44,810/month / 730 h / 8). Capacity blocks of p5: $4.916."""
    catalog = shipped_catalog()
    assert cloud_offer(catalog, "l40s", "aws", "on_demand").usd_per_gpu_hour == pytest.approx(1.861)
    spot = cloud_offer(catalog, "l40s", "aws", "spot")
    assert spot.usd_per_gpu_hour == pytest.approx(1.06) and spot.interruption_notice_s == 120
    reserved_1y = cloud_offer(catalog, "l40s", "aws", "reserved_1y")
    assert reserved_1y.usd_per_gpu_hour == pytest.approx(1.861 * 0.59)
    assert reserved_1y.source.startswith("[E]")
    assert cloud_offer(catalog, "l40s", "aws", "reserved_3y").usd_per_gpu_hour == pytest.approx(1.861 * 0.36)
    assert cloud_offer(catalog, "h100-sxm", "gcp", "reserved_1y").usd_per_gpu_hour == pytest.approx(44810 / 730 / 8)
    assert cloud_offer(catalog, "h100-sxm", "aws", "capacity_block").usd_per_gpu_hour == pytest.approx(4.916)


def test_a_price_the_catalog_lacks_is_never_another_models() -> None:
    """No savings-plan rate for GPUs is in TCO.md: asking for one is an error that says so,
    in the catalog and as a validation error at the pool's pricing; a catalog that adds the
    provider's savings-plan discount makes it priceable."""
    with pytest.raises(MissingPrice, match="no savings_plan price for l40s at provider 'aws'"):
        cloud_offer(shipped_catalog(), "l40s", "aws", "savings_plan")
    pool = {"name": "p", "gpu": "l40s", "count": 1, "roles": ["serving"], "pricing": "savings_plan"}
    assert "no savings_plan price" in issue_at(doc([pool]), "sites.gpus.pools[0].pricing")
    custom = load_catalog({"prices": {"commitments": {"aws": {"savings_plan": 0.3}}}})
    assert cloud_offer(custom, "l40s", "aws", "savings_plan").usd_per_gpu_hour == pytest.approx(1.861 * 0.7)


def test_a_commitment_pays_the_whole_capacity_used_or_not() -> None:
    """An elastic L40S pool reserved for 1 y, scaling between 1 and 3 replicas: it pays its
    capacity, 3 GPUs x 1 h x $1.861 x 0.59, whatever it held."""
    pool = {"name": "p", "gpu": "l40s", "count": 1, "elastic": True, "max_count": 3, "roles": ["serving"],
            "pricing": "reserved_1y",
            "autoscale": {"min_replicas": 1, "max_replicas": 3, "target": 16}}
    costs = costs_of(run(doc([pool])))
    assert usd(costs, "cloud_gpu") == pytest.approx(3 * 1.861 * 0.59)
    assert not costs.loc[costs["component"] == "cloud_gpu", "scales_with_traffic"].any()


def test_cloud_only_fields_are_refused_where_they_cannot_take_effect() -> None:
    """Spot on premises, an interruption rate on an on-demand pool, a spot L40S with no
    interruption rate in the catalog (TCO.md has no Spot Advisor band for g6e), and an
    instance the catalog does not sell are each an error at the field."""
    premises = {"name": "p", "gpu": "l40s", "count": 1, "roles": ["serving"], "pricing": "spot"}
    assert "on premises" in issue_at(doc([premises], zone="private"), "sites.gpus.pools[0].pricing")
    on_demand = {"name": "p", "gpu": "l40s", "count": 1, "roles": ["serving"], "interruptions_per_hour": 0.1}
    assert "only spot" in issue_at(doc([on_demand]), "sites.gpus.pools[0].interruptions_per_hour")
    spot = {"name": "p", "gpu": "l40s", "count": 1, "roles": ["serving"], "pricing": "spot"}
    assert "no interruption rate" in issue_at(doc([spot]), "sites.gpus.pools[0].interruptions_per_hour")
    unknown = {"name": "p", "gpu": "l40s", "count": 1, "roles": ["serving"], "instance": "g9.huge"}
    assert "sells no" in issue_at(doc([unknown]), "sites.gpus.pools[0].pricing")


# ------------------------------------------------------------------------------------------
# Spot interruptions
# ------------------------------------------------------------------------------------------


def spot_doc(rate_per_hour: float, horizon: str, provisioning: str = "0s") -> dict[str, Any]:
    """4 one-GPU L40S spot replicas held all along (not elastic) at `rate_per_hour` reclaims
    per instance-hour; light load (one request every 20 s, 10 s each)."""
    pool = {"name": "p", "gpu": "l40s", "count": 4, "roles": ["serving"], "pricing": "spot",
            "interruptions_per_hour": rate_per_hour, "provisioning_delay": provisioning}
    return doc([pool], rate=0.05, horizon=horizon, service_s=10.0)


def test_spot_interruptions_come_at_the_rate_over_a_long_run() -> None:
    """4 replicas x 100 h x 1 reclaim per instance-hour: 400 expected (Poisson, sd 20); the
    count is within 15% (3 sd). Every retry of the run is one of the reclaimed replicas'
    in-flight requests, and at this load some are."""
    record = run(spot_doc(1.0, "100h"))
    summary = collect(record).summary
    assert summary["spot_interruptions"] == pytest.approx(400, rel=0.15)
    assert summary["spot_requests_retried"] == int((record.requests.attempts - 1).sum()) > 0
    assert summary["spot_requests_failed"] == 0  # one reclaim never exhausts 3 attempts here


def test_a_reclaimed_replica_serves_again_when_its_replacement_is_ready() -> None:
    """With a 5 min provisioning delay and AWS's 2 min notice (requested at the notice), a
    reclaimed replica is down 3 min; the same seed draws the same reclaims."""
    record = run(spot_doc(0.5, "10h", provisioning="5min"))
    spot = record.faults[record.faults["kind"] == "spot_interruption"]
    assert len(spot) > 0
    assert np.allclose(spot["end_s"] - spot["start_s"], 180.0)
    again = run(spot_doc(0.5, "10h", provisioning="5min")).faults
    assert again.equals(record.faults)


def test_training_on_spot_is_interrupted_and_resumes_from_its_checkpoint() -> None:
    """S2's H100 training pool on spot at 3 reclaims per instance-hour: training jobs lose
    work to reclaims (and resume), and every reclaim counted fell while a job trained there."""
    record = run(SCENARIOS / "s2_cloud_training.yaml", ["horizon=9h", "sites.cloud.pools[1].pricing=spot",
                                                        "sites.cloud.pools[1].interruptions_per_hour=3"])
    reclaims = record.faults[(record.faults["kind"] == "spot_interruption")
                             & (record.faults["target"] == "cloud/training")]
    assert len(reclaims) > 0 and record.training_runs["interruptions"].sum() >= len(reclaims)
    holds = record.gpu_holds[record.gpu_holds["purpose"].isin(("retraining", "development"))]
    for start in reclaims["start_s"]:
        assert ((holds["start_s"] <= start) & (start < holds["end_s"])).any()


# ------------------------------------------------------------------------------------------
# Premises
# ------------------------------------------------------------------------------------------


def premises(overrides: list[str] | None = None) -> RunRecord:
    pool = {"name": "g", "gpu": "l40s", "count": 4, "roles": ["serving"]}
    return run(doc([pool], zone="private"), overrides)


def test_premises_lines_capex_support_colocation_hand_computed() -> None:
    """4 L40S owned for 1 h of a 3 y life: capex 4 x ($8,500 + $4,500) x 1 h / 3 y; support
    10% a year of $52,000; colocation of 4 x 350 W + 4/8 of a server's 2,200 W host = 2.5 kW x
    $184.06 a month. With the site's own server class (pcie-small: $3,000 of host, 600 W),
    5 y, 15% support and $100/kW-month: each line moves as computed."""
    costs = costs_of(premises())
    assert usd(costs, "capex") == pytest.approx(4 * 13000 * HOUR_S / (3 * YEAR_S))
    assert usd(costs, "support") == pytest.approx(0.10 * 52000 * HOUR_S / YEAR_S)
    assert usd(costs, "colocation") == pytest.approx(2.5 * 184.06 * HOUR_S / MONTH_S)
    own = costs_of(premises(["sites.gpus.capex={amortisation: 5y, server: pcie-small, support_share_per_year: 0.15, "
                             "colocation_usd_per_kw_month: 100}"]))
    assert usd(own, "capex") == pytest.approx(4 * (8500 + 3000) * HOUR_S / (5 * YEAR_S))
    assert usd(own, "support") == pytest.approx(0.15 * 4 * 11500 * HOUR_S / YEAR_S)
    assert usd(own, "colocation") == pytest.approx((1.4 + 0.5 * 0.6) * 100 * HOUR_S / MONTH_S)
    free = costs_of(premises(["sites.gpus.capex.colocation_usd_per_kw_month=0"]))
    assert usd(free, "colocation") == 0.0


def test_host_power_follows_the_servers_and_their_activity() -> None:
    """4 L40S, one request a second of 0.5 s (a service-time model: busy counts as activity),
    shared by 4 replicas: 1800 busy GPU-s of 14,400. GPUs: 4 x 83 W x 1 h + (350 - 83) W x
    1800 s. Hosts: half a pcie-8 server at activity 1800 / 14,400: 0.5 x (800 + 1050 x 0.125) W
    x 1 h. Facility energy = both x PUE 1.58, each a cost line at $0.127/kWh."""
    record = premises()
    usage = gpu_usage(record)
    gpu_kwh = (4 * 83 * HOUR_S + 267 * 1800) / 3.6e6
    host_kwh = 0.5 * (800 + 1050 * 1800 / 14400) * HOUR_S / 3.6e6
    assert usage["gpu_it_kwh"].iloc[0] == pytest.approx(gpu_kwh)
    assert usage["host_it_kwh"].iloc[0] == pytest.approx(host_kwh)
    assert energy(record, usage)["energy_kwh"] == pytest.approx((gpu_kwh + host_kwh) * 1.58)
    lines = costs_of(record)
    lines = lines[lines["component"] == "energy"]
    assert len(lines) == 2 and lines["detail"].str.startswith("hosts").sum() == 1
    assert lines["usd"].sum() == pytest.approx((gpu_kwh + host_kwh) * 1.58 * 0.127)


# ------------------------------------------------------------------------------------------
# Energy from work
# ------------------------------------------------------------------------------------------


def test_work_seconds_are_the_roofline_flops_and_bytes_at_achievable_rates() -> None:
    """Llama-3.1-8B on one L40S: 10 iterations of 100 tokens, 5,000 attention pairs, 2,000 KV
    tokens and 10 LM-head tokens take (2 N_lin x 100 + 2 h V x 10) / gemm rate + 4 L n_h d x
    5000 / attention rate of compute, and 10 x (linear + head weights) / weight bandwidth +
    2000 x kv bytes / KV bandwidth of memory."""
    catalog = shipped_catalog()
    params = pack_params(catalog.models["llama-3.1-8b"], catalog.gpus["l40s"], "bf16", 1, EngineProfile())
    work = np.array([[100.0, 5000.0, 2000.0, 10.0]])
    compute_s, memory_s = work_seconds(params, np.array([10.0]), work)
    assert compute_s[0] == pytest.approx((params[P_LINEAR_FLOPS_PER_TOKEN] * 100 + params[P_HEAD_FLOPS_PER_TOKEN] * 10)
                                         / params[P_GEMM_RATE] + params[P_ATTN_FLOPS_PER_PAIR] * 5000 / params[P_ATTN_RATE])
    assert memory_s[0] == pytest.approx(10 * (params[P_LINEAR_BYTES] + params[P_HEAD_BYTES]) / params[P_WEIGHT_BW]
                                        + 2000 * params[P_KV_BYTES_PER_TOKEN] / params[P_KV_BW])


def test_activity_is_compute_plus_a_third_of_memory_capped_at_busy() -> None:
    """Two 2-GPU replicas: one with 10 s of compute and 30 s of memory work in 100 s busy
    (activity 10 + 30/3 = 20 s), one with 50 + 90/3 = 80 s of work in only 60 s busy (capped
    at 60): (20 + 60) x 2 GPUs = 160 GPU-s."""
    pool = PoolRecord(name="x", site="s", zone="private", pool="g", gpu="l40s", gpus_per_replica=2, replicas=2,
                      active_replicas=2, elastic=False, busy_s=np.array([100.0, 60.0]), iterations=np.zeros(2),
                      holding=pd.DataFrame(columns=["replica", "start_s", "end_s"]), timeline_s=np.zeros(0),
                      timeline_busy_s=np.zeros((0, 2)), timeline_gpus=np.zeros(0),
                      compute_s=np.array([10.0, 50.0]), memory_s=np.array([30.0, 90.0]))
    assert activity_seconds(pool, 1000.0) == pytest.approx(160.0)


def roofline_doc(rate: float) -> dict[str, Any]:
    """Llama-3.1-8B on one L40S under the roofline (continuous batching), 30 min at `rate`."""
    document = doc([{"name": "g", "gpu": "l40s", "count": 1, "roles": ["serving"]}], zone="private", rate=rate,
                   horizon="30min")
    del document["model"]["service_time"]
    return document


def test_power_at_low_load_is_well_below_power_at_high_load() -> None:
    """Under continuous batching the GPU is "busy" most of the time at any load that keeps a
    request in flight, but its power follows the work: at 0.2 req/s the L40S's mean board
    power stays near its loaded idle (83 W) and at 8 req/s it is at least 1.5 times that."""
    watts = {}
    for rate in (0.2, 8.0):
        usage = gpu_usage(run(roofline_doc(rate)))
        watts[rate] = usage["gpu_it_kwh"].iloc[0] * 3.6e6 / usage["held_gpu_s"].iloc[0]
    assert 83 < watts[0.2] < 130
    assert watts[8.0] > 1.5 * watts[0.2]


def test_training_energy_is_counted_where_training_runs() -> None:
    """S3 (premises, with retraining and development on its GPUs) draws more than S1 (the same
    serving, no training) over the first 9 h, and its GPU energy includes 75% of TDP for every
    training GPU-second."""
    s1 = run(SCENARIOS / "s1_local.yaml", ["horizon=9h"])
    s3 = run(SCENARIOS / "s3_local_training.yaml", ["horizon=9h"])
    usage = gpu_usage(s3)
    assert usage["training_gpu_s"].iloc[0] > 0
    assert energy(s3)["energy_kwh"] > energy(s1)["energy_kwh"]
    assert usage["gpu_it_kwh"].iloc[0] * 3.6e6 >= 0.75 * 350 * usage["training_gpu_s"].iloc[0]


# ------------------------------------------------------------------------------------------
# Projection
# ------------------------------------------------------------------------------------------


def test_projection_grows_the_usage_paid_lines_only() -> None:
    """A day of $10 fixed and $5 used, growing 10% a month: month 1 costs 30.44 x 15, month 12
    30.44 x (10 + 5 x 1.1^11), the year 30.44 x (12 x 10 + 5 x (1.1^12 - 1) / 0.1)."""
    costs = pd.DataFrame({"usd": [10.0, 5.0], "scales_with_traffic": [False, True]})
    p = projection(costs, 86400.0, 0.10)
    days = MONTH_S / 86400
    assert p["cost_usd_per_month_fixed"] == pytest.approx(days * 10)
    assert p["cost_usd_month_12_projected"] == pytest.approx(days * (10 + 5 * 1.1 ** 11))
    assert p["cost_usd_per_year_projected"] == pytest.approx(days * (120 + 5 * (1.1 ** 12 - 1) / 0.1))
    assert "projection of the simulated 1 day(s)" in p["projection_basis"]


def test_projection_is_in_the_summary_with_the_scenario_growth() -> None:
    """A cloud pool that holds what it uses grows with the traffic; without growth the year is
    12 first months; with --set projection.traffic_growth_per_month=0.05 it is more."""
    document = doc([{"name": "p", "gpu": "l40s", "count": 1, "elastic": True, "max_count": 2, "roles": ["serving"],
                     "autoscale": {"min_replicas": 1, "max_replicas": 2, "target": 16}}])
    _, flat = measure(run(document))
    assert flat["cost_usd_per_year_projected"] == pytest.approx(12 * flat["cost_usd_per_month"])
    _, grown = measure(run(document, ["projection.traffic_growth_per_month=0.05"]))
    usage = grown["cost_usd_per_month_usage"]
    assert usage > 0
    assert grown["cost_usd_per_year_projected"] == pytest.approx(
        12 * grown["cost_usd_per_month_fixed"] + usage * sum(1.05 ** m for m in range(12)))
    assert math.isclose(grown["traffic_growth_per_month"], 0.05)
