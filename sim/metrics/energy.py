"""GPU time and energy: what each pool held, how busy it kept it, and the power that took.

**GPU time** (`gpu_usage`, one row per pool of every site). A pool *holds* GPUs while they
are powered (premises) or paid for (cloud), and keeps some of that time *busy*:

- Premises GPUs are owned and always on: held = capacity x horizon, used or not.
- A non-elastic cloud pool is rented for the whole horizon: held = count x horizon.
- An elastic cloud pool holds what it uses: its serving replicas while they are active or
  draining (`ServingPool.gpu_seconds_held`), and the training and provisioning holds
  (`Lifecycle.holds`) beyond its baseline `count`, which it holds throughout. Provisioning is
  held (and billed) from the moment the GPU is requested: clouds bill from instance start.
- Busy GPU-seconds: serving replicas' iteration time (`kernel.busy_s`, capped at the horizon)
  x GPUs per replica, plus training holds at utilisation 1 for their duration; never more
  than held. Provisioning GPUs are held but idle.

**Power.** A GPU draws `idle_w` when on and idle and `tdp_w` at full load, linearly between:
power = idle_w + (tdp_w - idle_w) x utilisation. Over a pool that is
IT energy = idle_w x held GPU-s + (tdp_w - idle_w) x busy GPU-s, and the facility draws
IT energy x PUE. Only GPU board power is counted (hosts, network gear and cooling beyond the
PUE are not). `gpu_energy_kwh` is this formula, shared by the energy cost in `cost.py`.

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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.catalog import GPU, Catalog
from sim.kernels.batching import DONE
from sim.spec.scenario import Pool, Site

if TYPE_CHECKING:
    from sim.world.world import World

DEFAULT_PREMISES_PROFILE = "us-commercial"
DEFAULT_CLOUD_PROFILE = "hyperscale"
J_PER_KWH = 3.6e6

USAGE_COLUMNS = [
    "site", "zone", "pool", "gpu", "gpus", "elastic", "held_gpu_s", "serving_busy_gpu_s", "training_gpu_s",
    "provisioning_gpu_s", "busy_gpu_s", "utilisation", "power_profile", "pue", "usd_per_kwh",
    "grid_kgco2e_per_kwh", "it_energy_kwh", "energy_kwh", "carbon_kgco2e",
]


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


def gpu_power_w(gpu: GPU, utilisation: float) -> float:
    """Board power of one GPU at a utilisation in [0, 1]: idle + (TDP - idle) x utilisation."""
    return gpu.idle_w + (gpu.tdp_w - gpu.idle_w) * utilisation


def gpu_energy_kwh(gpu: GPU, held_gpu_s: float, busy_gpu_s: float) -> float:
    """IT energy of GPUs on for `held_gpu_s` GPU-seconds, busy for `busy_gpu_s` of them."""
    if held_gpu_s <= 0:
        return 0.0
    return gpu_power_w(gpu, busy_gpu_s / held_gpu_s) * held_gpu_s / J_PER_KWH


# ------------------------------------------------------------------------------------------
# GPU time per pool
# ------------------------------------------------------------------------------------------


TRAINING_PURPOSES = ("retraining", "development")  # holds that run jobs on their GPUs
HOLD_PURPOSES = (*TRAINING_PURPOSES, "provisioning")  # holds that are billed


def _hold_seconds(world: World, site: str, pool: str, purpose: str, beyond: int = 0) -> float:
    """GPU-seconds of the lifecycle's holds on one pool, counting GPUs above `beyond` only."""
    horizon = world.scenario.horizon
    total = 0.0
    for hold in world.lifecycle.holds:
        if hold.site != site or hold.pool != pool or hold.purpose != purpose:
            continue
        end = horizon if np.isnan(hold.end_s) else min(hold.end_s, horizon)
        total += max(hold.gpus - beyond, 0) * max(end - hold.start_s, 0.0)
    return total


def _serving_busy_gpu_s(world: World) -> float:
    horizon = world.scenario.horizon
    return float(np.minimum(world.kernel.busy_s, horizon).sum()) * world.serving.tp


def _held_gpu_s(world: World, site_name: str, site: Site, pool: Pool, serves: bool) -> float:
    horizon = world.scenario.horizon
    if site.zone == "private":
        return pool.capacity * horizon
    if not pool.elastic:
        return pool.count * horizon
    assert pool.name is not None
    if serves:  # the replicas' own record, plus GPUs taken from serving for training
        held = world.pool.gpu_seconds_held(horizon)
        return held + sum(_hold_seconds(world, site_name, pool.name, p) for p in HOLD_PURPOSES)
    extra = sum(_hold_seconds(world, site_name, pool.name, p, beyond=pool.count) for p in HOLD_PURPOSES)
    return pool.count * horizon + extra


def gpu_usage(world: World) -> pd.DataFrame:
    """One row per pool: GPU-seconds held and busy, utilisation, energy and carbon."""
    scenario = world.scenario
    catalog = scenario.resolved_catalog
    serving = world.serving
    rows: list[dict[str, Any]] = []
    for site_name, site in scenario.sites.items():
        power = power_settings(site, catalog)
        for pool in site.pools:
            assert pool.name is not None
            gpu = catalog.gpus[pool.gpu]
            serves = site_name == serving.site and pool.name == serving.pool.name
            held = _held_gpu_s(world, site_name, site, pool, serves)
            serving_busy = _serving_busy_gpu_s(world) if serves else 0.0
            training = sum(_hold_seconds(world, site_name, pool.name, p) for p in TRAINING_PURPOSES)
            busy = min(serving_busy + training, held)
            it_kwh = gpu_energy_kwh(gpu, held, busy)
            rows.append({
                "site": site_name, "zone": site.zone, "pool": pool.name, "gpu": pool.gpu,
                "gpus": pool.capacity, "elastic": pool.elastic, "held_gpu_s": held,
                "serving_busy_gpu_s": serving_busy, "training_gpu_s": training,
                "provisioning_gpu_s": _hold_seconds(world, site_name, pool.name, "provisioning"),
                "busy_gpu_s": busy, "utilisation": busy / held if held > 0 else 0.0,
                "power_profile": power.profile, "pue": power.pue, "usd_per_kwh": power.usd_per_kwh,
                "grid_kgco2e_per_kwh": power.grid_kgco2e_per_kwh, "it_energy_kwh": it_kwh,
                "energy_kwh": it_kwh * power.pue,
                "carbon_kgco2e": it_kwh * power.pue * power.grid_kgco2e_per_kwh,
            })
    return pd.DataFrame(rows, columns=USAGE_COLUMNS)


# ------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------


def completed_work(world: World) -> tuple[int, int]:
    """Requests completed within the horizon, and their output tokens."""
    done = world.kernel.status == DONE
    return int(done.sum()), int(world.requests.output_tokens[done].sum())


def per_million(value: float, count: float) -> float | None:
    """value per 1M units of `count`; None when nothing was counted."""
    return value / count * 1e6 if count > 0 else None


def energy(world: World, usage: pd.DataFrame | None = None) -> dict[str, Any]:
    """Summary fields of energy and carbon (see the module doc for what each covers)."""
    usage = gpu_usage(world) if usage is None else usage
    holding = usage[usage["held_gpu_s"] > 0]
    premises = holding["zone"] == "private"
    by_site = holding.groupby("site", sort=True)[["energy_kwh", "carbon_kgco2e"]].sum()
    _, tokens = completed_work(world)
    total_kwh = float(holding["energy_kwh"].sum())
    return {
        "energy_kwh": float(holding.loc[premises, "energy_kwh"].sum()),
        "cloud_energy_kwh": float(holding.loc[~premises, "energy_kwh"].sum()),
        "energy_kwh_by_site": {site: float(v) for site, v in by_site["energy_kwh"].items()},
        "energy_kwh_per_1m_output_tokens": per_million(total_kwh, tokens),
        "carbon_kgco2e": float(holding["carbon_kgco2e"].sum()),
        "carbon_kgco2e_by_site": {site: float(v) for site, v in by_site["carbon_kgco2e"].items()},
    }
