"""Energy and carbon: the power each GPU pool and its servers drew for the work they did.

GPU-seconds held and busy per pool come from `sim.metrics.utilisation.gpu_time` (the one
definition of GPU time), the work of each serving replica from its record (`PoolRecord.compute_s`
and `memory_s`, `sim.kernels.roofline.work_seconds`); this module turns them into energy.

**GPU power from work, not "busy".** Under continuous batching a replica is "busy" almost all
the time at any load, so busy time says little about power. A GPU instead draws (TCO.md §8.1,
§9):

- `idle_w` while powered with no engine on it (premises GPUs no replica or job holds, and GPUs
  being provisioned);
- `loaded_idle_w` while an engine holds its weights and KV pool (a serving replica), plus a
  dynamic share for the work it does:
  P = loaded_idle_w + (tdp_w - loaded_idle_w) x a, with activity
  a = u_compute + MEMORY_WEIGHT x u_memory, where u_compute is the share of the time the
  replica's FLOPs would take at the engine's achievable FLOP rate (`compute_s` / held) and
  u_memory the share its bytes would take at the engine's achievable bandwidth (`memory_s` /
  held); a replica is never more active than busy (the activity-seconds are capped at its busy
  seconds). Sources: Splitwise (Patel et al., ISCA 2024) finds compute-bound prefill runs near
  the power limit (u_compute -> 1 gives TDP); ML.ENERGY v3.0 (Chung et al. 2026) measures
  ≈ 300 W per H100 decoding at batch 1, a memory-bound step (u_memory ≈ 1), and fleet-sim's
  A100 profile 175 W: MEMORY_WEIGHT = (300 - 110) / (700 - 110) = 0.32 (H100) and
  (175 - 65) / (400 - 65) = 0.33 (A100) [E], so 1/3. The linear form is fleet-sim's
  (`vllm-project/semantic-router`, P = idle + (active - idle) x activity) [S]. A pool whose
  service model has no roofline (a plain service-time distribution, classic models) has no
  work counters: its busy time counts as activity 1.
- `TRAINING_POWER_SHARE` x `tdp_w` while a training job holds it: 75% (Epoch's planning value
  for average draw during training; Newkirk et al. 2025 measured ≈ 76% of an 8x H100 server's
  rating under intensive training; TCO.md §8.2) [S].

So IT energy of a pool = idle_w x (held - serving held - training) + loaded_idle_w x serving
held + (tdp_w - loaded_idle_w) x activity GPU-s + 0.75 tdp_w x training GPU-s.

**Host power.** Each GPU sits in a server of its class (catalog `servers`, TCO.md §8.2): the
host (CPUs, memory, NICs, fans, PSU loss) draws host_idle_w + (host_load_w - host_idle_w) x the
pool's mean activity, per server; a pool smaller than a server counts GPUs / gpus_per_server
of one. Premises pools are held for the whole horizon; a cloud pool's hosts for the GPU-time it
holds (an estimate: the provider's meter, inside its price). Facility energy = (GPUs + hosts)
x PUE.

**Power settings** per site: the site's `power.profile` from the price catalog, with any of
`price_usd_per_kwh`, `pue` and `grid_kgco2e_per_kwh` set on the site taking precedence. With no
profile, premises use `us-commercial` (EIA 2023 commercial rate, Uptime 2023 PUE: the bill an
office or small server room pays) and cloud sites `hyperscale` (PUE 1.10).

**Summary** (`energy`): `energy_kwh` is what the premises meter sees (facility kWh of private
sites); cloud GPUs' energy is estimated with the same formula and reported apart as
`cloud_energy_kwh` (the provider's meter, not ours, and already inside the GPU-hour price).
`energy_kwh_by_site` has every site that holds GPUs (premises metered, cloud estimated), so
energy_kwh + cloud_energy_kwh = its sum. `energy_kwh_per_1m_output_tokens` and the carbon
figures (facility kWh x the site's grid intensity) cover all sites, so that placements that
move GPUs to the cloud compare fairly; `carbon_kgco2e_by_site` likewise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.catalog import GPU, Catalog, ServerClass
from sim.metrics.utilisation import GPU_TIME_COLUMNS, gpu_time, held_gpu_seconds, serving_pools_on
from sim.record import PoolRecord, RunRecord
from sim.spec.scenario import Site

DEFAULT_PREMISES_PROFILE = "us-commercial"
DEFAULT_CLOUD_PROFILE = "hyperscale"
J_PER_KWH = 3.6e6
MEMORY_WEIGHT = 1 / 3  # [E] from the batch-1 decode anchors of TCO.md §9 (see the module doc)
TRAINING_POWER_SHARE = 0.75  # [S] of TDP while training (Epoch; Newkirk et al. 2025; TCO.md §8.2)

USAGE_COLUMNS = [*GPU_TIME_COLUMNS, "serving_held_gpu_s", "activity_gpu_s", "servers", "power_profile", "pue",
                 "usd_per_kwh", "grid_kgco2e_per_kwh", "gpu_it_kwh", "host_it_kwh", "it_energy_kwh", "energy_kwh",
                 "carbon_kgco2e"]


@dataclass(frozen=True)
class PowerSettings:
    profile: str
    usd_per_kwh: float
    pue: float
    grid_kgco2e_per_kwh: float


def power_settings(site: Site, catalog: Catalog) -> PowerSettings:
    """The site's power price, PUE and grid intensity: its profile, overridden field by field."""
    default = DEFAULT_PREMISES_PROFILE if site.zone == "private" else DEFAULT_CLOUD_PROFILE
    profile = site.power.profile or default
    base = catalog.prices.power[profile]
    power = site.power
    return PowerSettings(
        profile=profile,
        usd_per_kwh=power.price_usd_per_kwh if power.price_usd_per_kwh is not None else base.usd_per_kwh,
        pue=power.pue if power.pue is not None else base.pue,
        grid_kgco2e_per_kwh=(power.grid_kgco2e_per_kwh if power.grid_kgco2e_per_kwh is not None
                             else base.grid_kgco2e_per_kwh),
    )


def gpu_power_w(gpu: GPU, activity: float) -> float:
    """Board power of a GPU serving with an engine loaded, at an activity in [0, 1]."""
    return gpu.loaded_idle_w + (gpu.tdp_w - gpu.loaded_idle_w) * activity


def activity_seconds(pool: PoolRecord, horizon_s: float) -> float:
    """GPU-seconds of activity of a serving pool's replicas: per replica, compute_s +
    MEMORY_WEIGHT x memory_s, never more than its busy seconds (busy seconds when the pool has
    no work counters)."""
    busy = np.minimum(pool.busy_s, horizon_s)
    if pool.compute_s is None or pool.memory_s is None:
        return float(busy.sum()) * pool.gpus_per_replica
    work = pool.compute_s + MEMORY_WEIGHT * pool.memory_s
    return float(np.minimum(work, busy).sum()) * pool.gpus_per_replica


def gpu_energy_j(gpu: GPU, held_gpu_s: float, serving_held_gpu_s: float, activity_gpu_s: float,
                 training_gpu_s: float) -> float:
    """IT energy of a GPU pool (see the module doc for the four power levels)."""
    unloaded = max(held_gpu_s - serving_held_gpu_s - training_gpu_s, 0.0)
    return (gpu.idle_w * unloaded + gpu.loaded_idle_w * serving_held_gpu_s
            + (gpu.tdp_w - gpu.loaded_idle_w) * activity_gpu_s
            + TRAINING_POWER_SHARE * gpu.tdp_w * training_gpu_s)


def host_power_w(server: ServerClass, activity: float) -> float:
    """One server's host draw beyond its GPUs at a mean GPU activity in [0, 1]."""
    return server.host_idle_w + (server.host_load_w - server.host_idle_w) * activity


# ------------------------------------------------------------------------------------------
# Energy per pool
# ------------------------------------------------------------------------------------------


def server_of(site: Site, gpu_id: str, catalog: Catalog) -> ServerClass:
    """The server class a site's GPUs are in: the site's capex.server, else the GPU's."""
    return catalog.servers[site.capex.server or catalog.gpus[gpu_id].server]


def gpu_usage(record: RunRecord) -> pd.DataFrame:
    """One row per GPU pool of every site: GPU-seconds held, busy and active, servers, and
    the energy and carbon of GPUs and hosts."""
    scenario = record.scenario
    catalog = scenario.resolved_catalog
    horizon = record.horizon_s
    frame = gpu_time(record)
    power = {name: power_settings(site, catalog) for name, site in scenario.sites.items()}
    serving_held, active, servers, gpu_kwh, host_kwh = [], [], [], [], []
    for row in frame.itertuples():
        pools = [record.pools[name] for name in serving_pools_on(record, row.site, row.pool)]
        held_serving = sum(held_gpu_seconds(p, 0.0, horizon) for p in pools)
        serving_activity = sum(activity_seconds(p, horizon) for p in pools)
        gpu = catalog.gpus[row.gpu]
        server = server_of(scenario.sites[row.site], row.gpu, catalog)
        serving_held.append(held_serving)
        active.append(serving_activity)
        gpu_kwh.append(gpu_energy_j(gpu, row.held_gpu_s, held_serving, serving_activity, row.training_gpu_s)
                       / J_PER_KWH)
        servers.append(row.gpus / server.gpus_per_server)
        # the hosts follow their GPUs: serving activity, and training at its share of full power
        load = serving_activity + TRAINING_POWER_SHARE * row.training_gpu_s
        mean_activity = min(load / row.held_gpu_s, 1.0) if row.held_gpu_s > 0 else 0.0
        host_kwh.append(host_power_w(server, mean_activity) * row.held_gpu_s / server.gpus_per_server / J_PER_KWH)
    frame["serving_held_gpu_s"] = np.asarray(serving_held, dtype=np.float64)
    frame["activity_gpu_s"] = np.asarray(active, dtype=np.float64)
    frame["servers"] = np.asarray(servers, dtype=np.float64)
    frame["power_profile"] = [power[site].profile for site in frame["site"]]
    frame["pue"] = [power[site].pue for site in frame["site"]]
    frame["usd_per_kwh"] = [power[site].usd_per_kwh for site in frame["site"]]
    frame["grid_kgco2e_per_kwh"] = [power[site].grid_kgco2e_per_kwh for site in frame["site"]]
    frame["gpu_it_kwh"] = np.asarray(gpu_kwh, dtype=np.float64)
    frame["host_it_kwh"] = np.asarray(host_kwh, dtype=np.float64)
    frame["it_energy_kwh"] = frame["gpu_it_kwh"] + frame["host_it_kwh"]
    frame["energy_kwh"] = frame["it_energy_kwh"] * frame["pue"]
    frame["carbon_kgco2e"] = frame["energy_kwh"] * frame["grid_kgco2e_per_kwh"]
    return frame[USAGE_COLUMNS]


# ------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------


def completed_work(record: RunRecord) -> tuple[int, int]:
    """Requests completed (by any pool), and their output tokens."""
    if record.tally is not None:
        return record.tally.completed, record.tally.completed_output_tokens
    done = record.requests.completed
    return int(done.sum()), int(record.requests.output_tokens[done].sum())


def per_million(value: float, count: float) -> float | None:
    """value per 1M units of `count`; None when nothing was counted."""
    return value / count * 1e6 if count > 0 else None


def energy(record: RunRecord, usage: pd.DataFrame | None = None) -> dict[str, Any]:
    """Summary fields of energy and carbon (see the module doc for what each covers)."""
    usage = gpu_usage(record) if usage is None else usage
    holding = usage[usage["held_gpu_s"] > 0]
    premises = holding["zone"] == "private"
    by_site = holding.groupby("site", sort=True)[["energy_kwh", "carbon_kgco2e"]].sum()
    _, tokens = completed_work(record)
    total_kwh = float(holding["energy_kwh"].sum())
    return {
        "energy_kwh": float(holding.loc[premises, "energy_kwh"].sum()),
        "cloud_energy_kwh": float(holding.loc[~premises, "energy_kwh"].sum()),
        "energy_kwh_by_site": {site: float(v) for site, v in by_site["energy_kwh"].items()},
        "energy_kwh_per_1m_output_tokens": per_million(total_kwh, tokens),
        "carbon_kgco2e": float(holding["carbon_kgco2e"].sum()),
        "carbon_kgco2e_by_site": {site: float(v) for site, v in by_site["carbon_kgco2e"].items()},
    }
