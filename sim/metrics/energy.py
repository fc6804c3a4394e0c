"""Energy and carbon: the power each GPU pool drew for the GPU time it held.

GPU-seconds held and busy per pool come from `sim.metrics.utilisation.gpu_time` (the one
definition of GPU time); this module turns them into energy.

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
from typing import Any

import numpy as np
import pandas as pd

from sim.catalog import GPU, Catalog
from sim.metrics.utilisation import GPU_TIME_COLUMNS, gpu_time
from sim.record import RunRecord
from sim.spec.scenario import Site

DEFAULT_PREMISES_PROFILE = "us-commercial"
DEFAULT_CLOUD_PROFILE = "hyperscale"
J_PER_KWH = 3.6e6

USAGE_COLUMNS = [*GPU_TIME_COLUMNS, "power_profile", "pue", "usd_per_kwh", "grid_kgco2e_per_kwh", "it_energy_kwh",
                 "energy_kwh", "carbon_kgco2e"]


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
# Energy per pool
# ------------------------------------------------------------------------------------------


def gpu_usage(record: RunRecord) -> pd.DataFrame:
    """One row per GPU pool of every site: GPU-seconds held and busy, utilisation, energy and
    carbon."""
    scenario = record.scenario
    catalog = scenario.resolved_catalog
    frame = gpu_time(record)
    power = {name: power_settings(site, catalog) for name, site in scenario.sites.items()}
    it_kwh = [gpu_energy_kwh(catalog.gpus[row.gpu], row.held_gpu_s, row.busy_gpu_s) for row in frame.itertuples()]
    frame["power_profile"] = [power[site].profile for site in frame["site"]]
    frame["pue"] = [power[site].pue for site in frame["site"]]
    frame["usd_per_kwh"] = [power[site].usd_per_kwh for site in frame["site"]]
    frame["grid_kgco2e_per_kwh"] = [power[site].grid_kgco2e_per_kwh for site in frame["site"]]
    frame["it_energy_kwh"] = np.asarray(it_kwh, dtype=np.float64)
    frame["energy_kwh"] = frame["it_energy_kwh"] * frame["pue"]
    frame["carbon_kgco2e"] = frame["energy_kwh"] * frame["grid_kgco2e_per_kwh"]
    return frame[USAGE_COLUMNS]


# ------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------


def completed_work(record: RunRecord) -> tuple[int, int]:
    """Requests completed (by any pool), and their output tokens."""
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
