"""Cost and energy, one component at a time, against numbers computed by hand.

The worlds are small and exact: one request a second (constant arrivals, t_k = k, 3600
requests in a 1 h horizon), 100-token prompts and 50-token outputs, and a deterministic 0.5 s
service time, so one replica is busy exactly 1800 s of the hour (utilisation 0.5) and every
request completes. Catalog numbers used: L4 loaded idle 35 W, TDP 72 W, in a pcie-small server
(8 GPUs; host 200 W idle, 500 W busy), AWS on-demand $0.8048/GPU-h (g6.xlarge), GCP $0.71; L40S
$8,500 + $4,500 of server per GPU; H100 SXM AWS on-demand $6.88 (p5.48xlarge, 8 GPUs, as of
2026-11-09, newer than the $12.29 of 2023); AWS egress $0.09/GB with 100 GB/month free, GCP
$0.12 with none; AWS storage $0.023/GB-month; power profiles us-commercial ($0.127/kWh,
PUE 1.58, 0.37 kgCO2e/kWh) and hyperscale (PUE 1.10).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import sim
from sim.catalog import load_catalog
from sim.metrics import (
    cost_breakdown,
    cost_summary,
    energy,
    exposure,
    gpu_usage,
    measure,
    privacy_ledger,
)
from sim.metrics.cost import cloud_gpu_price
from sim.metrics.energy import gpu_energy_j, gpu_power_w
from sim.record import HOLD_COLUMNS, RunRecord
from sim.spec.scenario import Pool, Site
from sim.world import World

S2 = Path(__file__).parent.parent / "scenarios" / "s2_cloud_training.yaml"
N = 3600
HOUR_S = 3600.0
MONTH_S = 30.44 * 86400
MB = 1e6


def workload(overhead_bytes: float = 1024.0) -> dict[str, Any]:
    return {
        "origin": "office",
        "arrivals": {"process": "constant", "rate_per_s": 1},
        "prompt_tokens": {"dist": "fixed", "value": 100},
        "output_tokens": {"dist": "fixed", "value": 50},
        "request_overhead": overhead_bytes,
    }


def cloud_doc(gpus: int = 1, overhead_bytes: float = 1024.0) -> dict[str, Any]:
    """Clients in a private office; `gpus` L4s serving in an AWS region over a 1 Gbps link."""
    return {
        "name": "cloud-serving",
        "horizon": "1h",
        "sites": {
            "office": {"zone": "private"},
            "cloud": {"zone": "third_party", "provider": "aws",
                      "pools": [{"name": "serving", "gpu": "l4", "count": gpus, "roles": ["serving"]}]},
        },
        "links": {"wan": {"ends": ["office", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}},
        "model": {"id": "llama-3.1-8b", "service_time": {"dist": "deterministic", "mean": 0.5}},
        "workload": workload(overhead_bytes),
        "placement": {"inference": "cloud", "model_registry": "cloud"},
        "privacy": {"data_classes": {"prompt": {"sensitivity": 1.0, "retention": "30d"},
                                     "response": {"sensitivity": 0.5, "retention": "30d"}}},
    }


def premises_doc(gpu: str = "l4", gpus: int = 1) -> dict[str, Any]:
    """Everything in one private office: clients and `gpus` GPUs, no cloud."""
    return {
        "name": "premises",
        "horizon": "1h",
        "sites": {"office": {"zone": "private",
                             "pools": [{"name": "gpus", "gpu": gpu, "count": gpus, "roles": ["serving"]}]}},
        "model": {"id": "llama-3.1-8b", "service_time": {"dist": "deterministic", "mean": 0.5}},
        "workload": workload(),
        "placement": {"inference": "office", "model_registry": "office"},
    }


def run(doc: dict[str, Any] | Path, overrides: list[str] | None = None) -> RunRecord:
    return World(sim.load_scenario(doc, overrides or [])).run()


def costs_of(record: RunRecord) -> pd.DataFrame:
    return cost_breakdown(record, privacy_ledger(record))


def with_holds(record: RunRecord, holds: list[tuple[str, str, str, int, float, float]]) -> RunRecord:
    """The record with these GPU holds (site, pool, purpose, gpus, start_s, end_s) added."""
    extra = pd.DataFrame(holds, columns=list(HOLD_COLUMNS)).astype(HOLD_COLUMNS)
    record.gpu_holds = pd.concat([record.gpu_holds, extra], ignore_index=True)
    return record


def usd(costs: pd.DataFrame, component: str, **match: str) -> float:
    rows = costs[costs["component"] == component]
    for column, value in match.items():
        rows = rows[rows[column] == value]
    return float(rows["usd"].sum())


# ------------------------------------------------------------------------------------------
# Cloud GPU-hours
# ------------------------------------------------------------------------------------------


def test_non_elastic_cloud_pool_pays_every_gpu_for_the_horizon() -> None:
    """2 L4s rented at AWS on demand for 1 h (two one-GPU g6.xlarge): 2 GPU-h x $0.8048, busy
    or not; with a scenario price of $1.50/GPU-h: $3.00."""
    costs = costs_of(run(cloud_doc(gpus=2)))
    row = costs[costs["component"] == "cloud_gpu"].iloc[0]
    assert row["quantity"] == pytest.approx(2.0) and row["unit"] == "GPU-h"
    assert row["usd"] == pytest.approx(2 * 0.8048)
    priced = costs_of(run(cloud_doc(gpus=2), ["sites.cloud.pools[0].price_usd_per_gpu_hour=1.5"]))
    assert usd(priced, "cloud_gpu") == pytest.approx(3.0)


def test_catalog_price_is_the_newest_then_the_cheapest() -> None:
    """Several catalog prices of one instance match: the most recent as_of wins (p5.48xlarge on
    demand: $6.88 of 2026-11 over $12.29 of 2023); among instances the cheapest per replica (an
    L4 site without a provider: AWS g6.xlarge $0.8048, GCP g2-standard-4 $0.71: $0.71); equal
    dates of one instance go to the lowest price."""
    catalog = load_catalog()
    h100 = Pool(name="t", gpu="h100-sxm", count=1)
    assert cloud_gpu_price(h100, Site(zone="third_party", provider="aws"), catalog)[0] == 6.88
    l4 = Pool(name="s", gpu="l4", count=1)
    assert cloud_gpu_price(l4, Site(zone="third_party"), catalog)[0] == 0.71
    tie = {"source": "test", "as_of": dt.date(2030, 1, 1), "provider": "aws", "instance": "x",
           "gpus_per_instance": 1, "pricing": "on_demand"}
    custom = load_catalog({"gpus": {"l4": {"cloud_prices": [{**tie, "usd_per_gpu_hour": 0.9},
                                                            {**tie, "usd_per_gpu_hour": 0.6}]}}})
    assert cloud_gpu_price(l4, Site(zone="third_party", provider="aws"), custom)[0] == 0.6


def elastic_doc(baseline: int) -> dict[str, Any]:
    """cloud_doc plus an elastic H100 training pool; training is placed there (an elastic pool
    only training grows is refused otherwise), but with no drift and no development nothing
    trains: the pool's holds are the ones a test adds."""
    doc = cloud_doc()
    doc["sites"]["cloud"]["pools"].append({"name": "training", "gpu": "h100-sxm", "count": baseline,
                                           "elastic": True, "max_count": 8, "roles": ["training"],
                                           "instance": "p5.48xlarge"})
    doc["placement"]["training"] = "cloud"
    return doc


def test_elastic_pool_pays_only_for_what_it_holds() -> None:
    """An elastic H100 pool (count 0) that provisions 2 GPUs for 600 s, trains on them for
    1800 s, and later holds 1 GPU from 3000 s to the horizon (a hold still open). Its H100s are
    8-GPU p5.48xlarge instances, so every hold pays 8 GPUs: 8 x (600 + 1800 + 600) = 24,000
    GPU-s = 6.667 GPU-h, x $6.88. Provisioning is billed (clouds bill from instance start).
    With a baseline of 1 GPU the pool rents one instance for the whole hour plus one instance
    for each hold above it: 8 x 3600 + 8 x (600 + 1800) = 48,000 GPU-s. (A record's holds are
    clipped to the horizon, so the hold still open is written ending at 3600 s.)"""
    holds = [("cloud", "training", "provisioning", 2, 600.0, 1200.0),
             ("cloud", "training", "retraining", 2, 1200.0, 3000.0),
             ("cloud", "training", "retraining", 1, 3000.0, HOUR_S)]
    record = run(elastic_doc(baseline=0))
    assert record.gpu_holds.empty  # no lifecycle here: the holds are only the ones added below
    costs = costs_of(with_holds(record, holds))
    rows = costs[(costs["component"] == "cloud_gpu") & (costs["pool"] == "training")]
    assert rows["quantity"].sum() == pytest.approx(24000 / HOUR_S)
    assert rows["usd"].sum() == pytest.approx(24000 / HOUR_S * 6.88)
    record = with_holds(run(elastic_doc(baseline=1)), holds)
    assert usd(costs_of(record), "cloud_gpu", pool="training") == pytest.approx(48000 / HOUR_S * 6.88)


def test_s2_cloud_gpus_match_its_holds() -> None:
    """S2 over its day: its autoscaled L40S pool pays $1.861 per GPU-hour its replicas held
    (from each scale-up request to the release, per second), and the elastic H100 pool pays its
    lifecycle holds (provisioning, retraining, development) at $6.88 on single-GPU p5.4xlarge
    instances (as cheap per GPU as the 8-GPU p5.48xlarge, and no GPU paid idle)."""
    record = run(S2)
    costs = costs_of(record)
    holding = record.pools["cloud/serving"].holding
    held_h = float((holding["end_s"] - holding["start_s"]).sum()) / HOUR_S
    assert 24 <= held_h < 3 * 24  # one replica at least all day, never all three
    assert usd(costs, "cloud_gpu", pool="serving") == pytest.approx(held_h * 1.861)
    holds = record.gpu_holds[(record.gpu_holds["site"] == "cloud") & (record.gpu_holds["pool"] == "training")]
    held_s = float((holds["gpus"] * (holds["end_s"] - holds["start_s"])).sum())
    assert held_s > 0
    assert usd(costs, "cloud_gpu", pool="training") == pytest.approx(held_s / HOUR_S * 6.88)


# ------------------------------------------------------------------------------------------
# Egress and storage
# ------------------------------------------------------------------------------------------

# With 1 MB of overhead per payload: 3600 responses of 1,000,200 bytes come back = 3.60072 GB;
# 3600 requests of 1,000,400 bytes go up = 3.60144 GB.
RESPONSE_GB = N * (50 * 4 + MB) / 1e9
REQUEST_GB = N * (100 * 4 + MB) / 1e9


def test_egress_from_the_cloud_pays_the_catalog_price_minus_the_free_allowance() -> None:
    """3.60072 GB leave AWS: 100 GB/month free, pro-rated to 1 h = 100 x 3600 / (30.44 d)
    = 0.1369 GB, so $0.09 x (3.60072 - 0.1369); the 3.60144 GB going up are free."""
    costs = costs_of(run(cloud_doc(overhead_bytes=MB)))
    free = 100 * HOUR_S / MONTH_S
    assert usd(costs, "egress", site="cloud") == pytest.approx(0.09 * (RESPONSE_GB - free))
    assert usd(costs, "egress", site="office") == 0.0
    up = costs[(costs["component"] == "egress") & (costs["site"] == "office")].iloc[0]
    assert up["quantity"] == pytest.approx(REQUEST_GB)


def test_egress_link_override_and_provider_without_allowance() -> None:
    """A link price overrides the catalog and gets no allowance: cloud->office at $0.05/GB
    = 0.05 x 3.60072; and an override on the private direction is charged too
    (office->cloud at $0.01/GB = 0.01 x 3.60144). GCP has no free allowance: 0.12 x 3.60072."""
    overrides = ["links.wan.egress_usd_per_gb={cloud->office: 0.05, office->cloud: 0.01}"]
    costs = costs_of(run(cloud_doc(overhead_bytes=MB), overrides))
    assert usd(costs, "egress", site="cloud") == pytest.approx(0.05 * RESPONSE_GB)
    assert usd(costs, "egress", site="office") == pytest.approx(0.01 * REQUEST_GB)
    gcp = costs_of(run(cloud_doc(overhead_bytes=MB), ["sites.cloud.provider=gcp"]))
    assert usd(gcp, "egress") == pytest.approx(0.12 * RESPONSE_GB)


def test_storage_prices_gb_days_at_rest() -> None:
    """Everything exposed rests in the cloud until the horizon (retention 30 d):
    prompts 1,000,400 bytes x sum_k (3600 - k) s and responses 1,000,200 bytes x
    sum_k (3600 - k - 0.51 - 1,000,400 / 1.25e8) s, in GB-days; / 30.44 x $0.023;
    with a site price of $0.10/GB-month instead, x 0.10."""
    record = run(cloud_doc(overhead_bytes=MB))
    k = np.arange(N, dtype=float)
    prompt = (100 * 4 + MB) * (HOUR_S - k).sum()
    response = (50 * 4 + MB) * (HOUR_S - k - 0.5 - 0.010 - (100 * 4 + MB) / 1.25e8).sum()
    gb_days = (prompt + response) / 1e9 / 86400
    assert exposure(privacy_ledger(record), record.scenario, HOUR_S)["third_party_gb_days"] == pytest.approx(gb_days)
    assert usd(costs_of(record), "storage") == pytest.approx(gb_days / 30.44 * 0.023)
    priced = run(cloud_doc(overhead_bytes=MB), ["sites.cloud.storage_usd_per_gb_month=0.1"])
    assert usd(costs_of(priced), "storage") == pytest.approx(gb_days / 30.44 * 0.1)


# ------------------------------------------------------------------------------------------
# Premises: capex, ops and energy
# ------------------------------------------------------------------------------------------


def test_capex_amortises_gpus_and_servers_per_second() -> None:
    """4 L40S owned, 1 h of a 3 y life: 4 x ($8,500 + $4,500) x 3600 / (3 x 365 x 86400);
    with the site's own prices ($10,000 + $2,000 per GPU, 5 y) and $365,000/y of ops:
    4 x 12,000 x 3600 / (5 y) and 365,000 x 3600 / (365 x 86400) = $41.67."""
    costs = costs_of(run(premises_doc(gpu="l40s", gpus=4)))
    assert usd(costs, "capex") == pytest.approx(4 * (8500 + 4500) * HOUR_S / (3 * 365 * 86400))
    assert usd(costs, "ops") == 0.0
    overrides = ["sites.office.capex={amortisation: 5y, gpu_usd: 10000, server_usd_per_gpu: 2000, "
                 "ops_usd_per_year: 365000}"]
    costs = costs_of(run(premises_doc(gpu="l40s", gpus=4), overrides))
    assert usd(costs, "capex") == pytest.approx(4 * 12000 * HOUR_S / (5 * 365 * 86400))
    assert usd(costs, "ops") == pytest.approx(365000 * HOUR_S / (365 * 86400))


def test_power_is_idle_plus_dynamic_share_of_tdp() -> None:
    """The shared formula: an L4 serving at activity 0.5 draws 35 + (72 - 35) x 0.5 = 53.5 W;
    held 3600 GPU-s serving with 1800 of activity, that is 53.5 Wh."""
    l4 = load_catalog().gpus["l4"]
    assert gpu_power_w(l4, 0.5) == pytest.approx(53.5)
    assert gpu_energy_j(l4, 3600.0, 3600.0, 1800.0, 0.0) == pytest.approx(53.5 * 3600)


def test_premises_energy_from_a_known_utilisation() -> None:
    """One L4 busy exactly 1800 s of the hour (3600 requests x 0.5 s; a service-time model has
    no work counters, so busy is activity 1): 53.5 Wh at the GPU, and its 1/8 of a pcie-small
    host at activity 0.5, (200 + 300 x 0.5) / 8 = 43.75 Wh: 0.09725 kWh; at the site's PUE 1.5
    and $0.20/kWh, 0.145875 kWh. Without power settings the us-commercial profile applies:
    x 1.58, x $0.127 and x 0.37 kgCO2e/kWh."""
    it_kwh = 0.0535 + 0.04375
    record = run(premises_doc(), ["sites.office.power={pue: 1.5, price_usd_per_kwh: 0.2}"])
    usage = gpu_usage(record)
    assert usage["utilisation"].iloc[0] == pytest.approx(0.5)
    assert usd(costs_of(record), "energy") == pytest.approx(it_kwh * 1.5 * 0.2)
    assert energy(record, usage)["energy_kwh"] == pytest.approx(it_kwh * 1.5)
    record = run(premises_doc())
    s = energy(record)
    assert s["energy_kwh"] == pytest.approx(it_kwh * 1.58)
    assert s["carbon_kgco2e"] == pytest.approx(it_kwh * 1.58 * 0.37)
    assert usd(costs_of(record), "energy") == pytest.approx(it_kwh * 1.58 * 0.127)


def test_idle_gpus_still_draw_idle_power() -> None:
    """Two L4s serving, sharing the same 1800 busy GPU-seconds: 2 x 35 W x 1 h + 37 W x 1800 s
    = 70 Wh + 18.5 Wh = 88.5 Wh at the GPUs."""
    usage = gpu_usage(run(premises_doc(gpus=2)))
    assert usage["busy_gpu_s"].iloc[0] == pytest.approx(1800.0)
    assert usage["gpu_it_kwh"].iloc[0] == pytest.approx(0.0885)


def test_cloud_energy_is_estimated_apart() -> None:
    """An L4 in the cloud at activity 0.5: 0.09725 kWh (GPU and its share of a host, as on
    premises) x hyperscale PUE 1.10, reported as cloud_energy_kwh (and by site), not in the
    premises energy_kwh nor its cost; per 1M output tokens: that / (3600 x 50) x 1e6."""
    record = run(cloud_doc())
    s = energy(record)
    kwh = (0.0535 + 0.04375) * 1.10
    assert s["energy_kwh"] == 0.0
    assert s["cloud_energy_kwh"] == pytest.approx(kwh)
    assert s["energy_kwh_by_site"] == pytest.approx({"cloud": kwh})
    assert s["energy_kwh_per_1m_output_tokens"] == pytest.approx(kwh / (N * 50) * 1e6)
    assert usd(costs_of(record), "energy") == 0.0


# ------------------------------------------------------------------------------------------
# Totals and normalisations
# ------------------------------------------------------------------------------------------


def test_totals_are_sums_of_components_and_normalise_by_completed_work() -> None:
    """cost_usd is the sum of the rows and of cost_usd_by_component; per month x 30.44 d / 1 h;
    per 1M requests / 3600 completed x 1e6; per 1M output tokens / (3600 x 50) x 1e6."""
    record = run(cloud_doc(overhead_bytes=MB))
    tables, summary = measure(record)
    costs = tables["costs"]
    assert set(costs["component"]) == {"cloud_gpu", "egress", "storage"}
    total = summary["cost_usd"]
    assert total == pytest.approx(costs["usd"].sum())
    assert total == pytest.approx(sum(summary["cost_usd_by_component"].values()))
    assert summary == {**summary, **cost_summary(costs, record)}
    assert summary["cost_usd_per_month"] == pytest.approx(total * MONTH_S / HOUR_S)
    assert summary["cost_usd_per_1m_requests"] == pytest.approx(total / N * 1e6)
    assert summary["cost_usd_per_1m_output_tokens"] == pytest.approx(total / (N * 50) * 1e6)
    assert all(math.isfinite(v) for v in costs["usd"])
