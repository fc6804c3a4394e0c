"""What a placement costs over the horizon, component by component.

`cost_breakdown` returns one row per priced item: `component`, `site`, `pool`, a `detail` a
reader can check by hand, `usd`, and the `quantity` and `unit` it was priced on. Components:

- **cloud_gpu**: GPU-hours held by each third-party pool (see `sim.metrics.utilisation` for what
  "held" means: non-elastic pools for the whole horizon, elastic pools and pools an autoscaled
  serving pool lives on for what they hold, provisioning included), at the pool's
  `price_usd_per_gpu_hour`, else the catalog's price for the site's provider (any provider
  when the site names none) and the pool's `pricing`. When several catalog prices match, the
  most recent `as_of` wins, ties going to the lowest price. A pool that pays for what it holds
  has one row per serving pool on it, whose quantity is that serving pool's `gpu_hours` in the
  summary's `pools` (its replica instances' intervals x GPUs per replica, each interval rounded
  up to whole hours when the pool is billed `per_hour`; the row's detail says which), and one
  row for its training and provisioning holds.
- **egress**: per direction (from -> to) of the privacy ledger, GB x price. The link's
  `egress_usd_per_gb['from->to']` when set; otherwise data leaving a third-party site pays its
  provider's catalog price (inter-region when it goes to another site of the same provider,
  internet egress otherwise) and data leaving a private site is free (ingress is free; our own
  uplink is not metered per GB). The provider's free allowance, pro-rated to the horizon
  (free_gb_per_month x horizon / month), is taken off catalog-priced internet egress, shared
  among that provider's directions in proportion to their GB. GB = 1e9 bytes.
- **storage**: data at rest at third-party sites (GB-days from the ledger, per site and data
  class; `sim.metrics.ledger.at_rest`) / 30.44 x the site's `storage_usd_per_gb_month`, else
  its provider's catalog price. The model weights a cloud registry keeps are not counted.
- **capex**: every GPU of every premises pool, used or not, amortised linearly per second of
  simulated time: (gpu_usd or catalog purchase_usd) and (server_usd_per_gpu or the catalog's)
  x GPUs x horizon / amortisation; one row for the GPUs, one for their servers.
- **ops**: a premises site's `ops_usd_per_year` x horizon / year (365 days).
- **energy**: premises GPUs' facility kWh (`sim.metrics.energy.gpu_energy_kwh` x PUE) x the
  site's price per kWh. Cloud energy is inside the GPU-hour price.
- **api_tokens**: each managed API pool (kind api), two rows: the prompt tokens and the output
  tokens of the requests it completed within the horizon, in millions, x its catalog price per
  1M input and output tokens (`sim.catalog.ManagedApi`; a negotiated price goes in a catalog
  file). A request answered 429 is not billed; one still running at the horizon is billed in
  the next period. An API holds no GPUs: no GPU-hours, capex or energy.

`cost_summary` totals them: `cost_usd` over the horizon, `cost_usd_per_month` (a month is
30.44 days), `cost_usd_per_1m_requests` and `cost_usd_per_1m_output_tokens` over the requests
completed within the horizon, and `cost_usd_by_component` (every component, 0 when absent).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sim.catalog import Catalog
from sim.metrics.energy import completed_work, gpu_usage, per_million
from sim.metrics.ledger import BYTES_PER_GB, DAY_S, at_rest
from sim.metrics.utilisation import holds_what_it_uses, pool_held_gpu_seconds, serving_pools_on
from sim.record import PoolRecord, RunRecord
from sim.spec.scenario import Pool, Scenario, Site

COMPONENTS = ("cloud_gpu", "egress", "storage", "capex", "ops", "energy", "api_tokens")
COST_COLUMNS = ["component", "site", "pool", "detail", "usd", "quantity", "unit"]
MONTH_S = 30.44 * DAY_S
YEAR_S = 365 * DAY_S  # as sim.spec.units reads "1y"
HOUR_S = 3600.0


def _row(component: str, site: str, pool: str, detail: str, usd: float, quantity: float,
         unit: str) -> dict[str, Any]:
    return {"component": component, "site": site, "pool": pool, "detail": detail, "usd": float(usd),
            "quantity": float(quantity), "unit": unit}


def _duration(seconds: float) -> str:
    for unit, size in (("y", YEAR_S), ("d", DAY_S), ("h", HOUR_S)):
        if seconds >= size:
            return f"{seconds / size:.4g} {unit}"
    return f"{seconds:.4g} s"


# ------------------------------------------------------------------------------------------
# Prices
# ------------------------------------------------------------------------------------------


def cloud_gpu_price(pool: Pool, site: Site, catalog: Catalog) -> tuple[float, str]:
    """USD per GPU-hour of a cloud pool, and where the number comes from."""
    if pool.price_usd_per_gpu_hour is not None:
        return pool.price_usd_per_gpu_hour, "scenario price"
    gpu = catalog.gpus[pool.gpu]
    matches = [c for c in gpu.cloud_prices
               if c.pricing == pool.pricing and site.provider in (None, c.provider)]
    if not matches:  # the scenario checks reject this; a hand-built scenario may not be checked
        raise ValueError(f"no {pool.pricing} price for {pool.gpu} at provider {site.provider!r}; "
                         "set price_usd_per_gpu_hour on the pool")
    best = max(matches, key=lambda c: (c.as_of, -c.usd_per_gpu_hour))
    return best.usd_per_gpu_hour, f"{best.provider} {best.instance}, {best.pricing}, as of {best.as_of}"


def storage_price(site: Site, catalog: Catalog) -> tuple[float, str]:
    """USD per GB-month at a third-party site, and where it comes from."""
    if site.storage_usd_per_gb_month is not None:
        return site.storage_usd_per_gb_month, "scenario price"
    entry = catalog.prices.storage.get(site.provider or "")
    if entry is None:
        return 0.0, "no provider storage price: not priced"
    return entry.usd_per_gb_month, f"{site.provider} catalog"


# ------------------------------------------------------------------------------------------
# Components
# ------------------------------------------------------------------------------------------


def cloud_gpu_rows(record: RunRecord, usage: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per third-party GPU pool rented for the horizon; for a pool that pays for what it
    holds, one row per serving pool on it (its replicas' GPU-hours as billed) and one for the
    training and provisioning holds."""
    scenario = record.scenario
    catalog = scenario.resolved_catalog
    rows = []
    for use in usage[(usage["zone"] == "third_party") & (usage["held_gpu_s"] > 0)].itertuples():
        site = scenario.sites[use.site]
        pool = next(p for p in site.pools if p.name == use.pool)
        price, source = cloud_gpu_price(pool, site, catalog)
        priced = f"x ${price:.4g}/GPU-h ({source})"
        if not holds_what_it_uses(record, use.site, pool):
            hours = use.held_gpu_s / HOUR_S
            rows.append(_row("cloud_gpu", use.site, use.pool, f"{hours:.4g} GPU-h {pool.gpu} ({pool.count} GPUs x "
                             f"{_duration(scenario.horizon)}, not elastic) {priced}", hours * price, hours, "GPU-h"))
            continue
        serving_s = 0.0
        on_it = serving_pools_on(record, use.site, use.pool)
        for name in on_it:
            held_s = pool_held_gpu_seconds(record.pools[name], scenario.horizon)
            serving_s += held_s
            if held_s > 0:
                hours = held_s / HOUR_S
                rows.append(_row("cloud_gpu", use.site, use.pool, f"{hours:.4g} GPU-h {pool.gpu} held by serving pool "
                                 f"{name} ({_billing(record.pools[name])}) {priced}", hours * price, hours, "GPU-h"))
        holds_s = use.held_gpu_s - serving_s
        if holds_s > 1e-9 * max(use.held_gpu_s, 1.0):
            hours = holds_s / HOUR_S
            how = (f"{use.training_gpu_s / HOUR_S:.4g} training + {use.provisioning_gpu_s / HOUR_S:.4g} "
                   "provisioning GPU-h" + ("" if on_it or not pool.count
                                           else f", {pool.count} GPUs held throughout"))
            rows.append(_row("cloud_gpu", use.site, use.pool, f"{hours:.4g} GPU-h {pool.gpu} ({how}) {priced}",
                             hours * price, hours, "GPU-h"))
    return rows


def _billing(pool: PoolRecord) -> str:
    """How a serving pool's replicas were billed, as a cost row says it."""
    instances = int((pool.holding["end_s"] > pool.holding["start_s"]).sum())
    gpus = pool.gpus_per_replica
    what = f"{instances} replica instance{'s' if instances != 1 else ''} x {gpus} GPU{'s' if gpus != 1 else ''}"
    if pool.billing == "per_hour":
        return f"{what}, billed per hour: each instance rounded up to whole hours"
    return f"{what}, billed per second"


def _egress_price(scenario: Scenario, src: str, dst: str) -> tuple[float, str, str | None]:
    """(USD per GB, source, provider whose free allowance applies or None)."""
    found = scenario.link_between(src, dst)
    key = f"{src}->{dst}"
    if found is not None and key in found[1].egress_usd_per_gb:
        return found[1].egress_usd_per_gb[key], f"links.{found[0]}.egress_usd_per_gb", None
    sender, receiver = scenario.sites[src], scenario.sites[dst]
    if sender.zone == "private":
        return 0.0, "sent from premises: not metered", None
    entry = scenario.resolved_catalog.prices.egress.get(sender.provider or "")
    if entry is None:
        return 0.0, "no provider egress price: not priced", None
    if receiver.zone == "third_party" and receiver.provider == sender.provider:
        return entry.inter_region_usd_per_gb, f"{sender.provider} inter-region", None
    return entry.usd_per_gb, f"{sender.provider} internet egress", sender.provider


def egress_rows(scenario: Scenario, ledger: pd.DataFrame) -> list[dict[str, Any]]:
    if ledger.empty:
        return []
    catalog = scenario.resolved_catalog
    per_direction = ledger.groupby(["from_site", "to_site"], sort=True)["bytes"].sum() / BYTES_PER_GB
    priced = {pair: _egress_price(scenario, *pair) for pair in per_direction.index}
    # the free allowance of each provider, shared among its internet-egress directions by GB
    allowance_gb: dict[str, float] = {}
    provider_gb: dict[str, float] = {}
    for pair, gb in per_direction.items():
        provider = priced[pair][2]
        if provider is not None:
            provider_gb[provider] = provider_gb.get(provider, 0.0) + gb
            allowance_gb[provider] = catalog.prices.egress[provider].free_gb_per_month * scenario.horizon / MONTH_S
    rows = []
    for (src, dst), gb in per_direction.items():
        price, source, provider = priced[(src, dst)]
        free = 0.0
        if provider is not None and provider_gb[provider] > 0:
            free = min(allowance_gb[provider], provider_gb[provider]) * gb / provider_gb[provider]
        detail = f"{gb:.4g} GB x ${price:.4g}/GB ({source})"
        if provider is not None:
            detail += f", {free:.4g} GB free ({allowance_gb[provider]:.4g} GB allowance over the horizon)"
        rows.append(_row("egress", src, "", f"{src}->{dst}: {detail}", (gb - free) * price, gb, "GB"))
    return rows


def storage_rows(scenario: Scenario, ledger: pd.DataFrame) -> list[dict[str, Any]]:
    catalog = scenario.resolved_catalog
    rows = []
    for rest in at_rest(ledger, scenario, scenario.horizon).itertuples():
        price, source = storage_price(scenario.sites[rest.site], catalog)
        gb_months = rest.gb_days / (MONTH_S / DAY_S)
        rows.append(_row("storage", rest.site, "", f"{rest.data_class}: {rest.gb_days:.4g} GB-days / 30.44 x "
                         f"${price:.4g}/GB-month ({source})", gb_months * price, gb_months, "GB-month"))
    return rows


def capex_rows(scenario: Scenario) -> list[dict[str, Any]]:
    catalog = scenario.resolved_catalog
    horizon = scenario.horizon
    rows = []
    for site_name, site in scenario.sites.items():
        if site.zone != "private":
            continue
        capex = site.capex
        share = horizon / capex.amortisation
        for pool in site.pools:
            if pool.capacity == 0:
                continue
            gpu = catalog.gpus[pool.gpu]
            parts = (("GPUs", capex.gpu_usd if capex.gpu_usd is not None else gpu.purchase_usd),
                     ("servers", capex.server_usd_per_gpu if capex.server_usd_per_gpu is not None
                      else gpu.server_usd_per_gpu))
            for what, usd_each in parts:
                rows.append(_row("capex", site_name, pool.name or "", f"{what}: {pool.capacity} x ${usd_each:,.0f} "
                                 f"({pool.gpu}) x {_duration(horizon)} / {_duration(capex.amortisation)}",
                                 pool.capacity * usd_each * share, pool.capacity, "GPU"))
        if capex.ops_usd_per_year > 0:
            years = horizon / YEAR_S
            rows.append(_row("ops", site_name, "", f"${capex.ops_usd_per_year:,.0f}/y x {_duration(horizon)}",
                             capex.ops_usd_per_year * years, years, "y"))
    return rows


def energy_rows(usage: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for use in usage[(usage["zone"] == "private") & (usage["held_gpu_s"] > 0)].itertuples():
        rows.append(_row("energy", use.site, use.pool,
                         f"{use.it_energy_kwh:.4g} kWh at the GPUs ({use.gpus} x {use.gpu}, "
                         f"{use.utilisation:.1%} busy) x PUE {use.pue:.3g} x ${use.usd_per_kwh:.4g}/kWh "
                         f"({use.power_profile})", use.energy_kwh * use.usd_per_kwh, use.energy_kwh, "kWh"))
    return rows


def api_token_rows(record: RunRecord) -> list[dict[str, Any]]:
    """Per managed API pool: its completed requests' prompt and output tokens x its prices."""
    requests = record.requests
    catalog = record.scenario.resolved_catalog
    rows = []
    for p, pool in enumerate(record.pools.values()):
        if not pool.api:
            continue
        api = catalog.apis[pool.api]
        mine = (requests.pool == p) & requests.completed
        for what, tokens, price in (
                ("input", requests.prompt_tokens[mine], api.usd_per_1m_input_tokens),
                ("output", requests.output_tokens[mine], api.usd_per_1m_output_tokens)):
            millions = int(tokens.sum()) / 1e6
            rows.append(_row("api_tokens", pool.site, pool.pool, f"{millions:.6g}M {what} tokens of {int(mine.sum())} "
                             f"completed requests x ${price:.4g}/1M ({pool.api}, {api.provider}, as of {api.as_of})",
                             millions * price, millions, f"M {what} tokens"))
    return rows


# ------------------------------------------------------------------------------------------
# The breakdown and its summary
# ------------------------------------------------------------------------------------------


def cost_breakdown(record: RunRecord, ledger: pd.DataFrame, usage: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per priced item over the horizon (see the module doc)."""
    scenario = record.scenario
    usage = gpu_usage(record) if usage is None else usage
    rows = (cloud_gpu_rows(record, usage) + egress_rows(scenario, ledger) + storage_rows(scenario, ledger)
            + capex_rows(scenario) + energy_rows(usage) + api_token_rows(record))
    return pd.DataFrame(rows, columns=COST_COLUMNS).astype({"usd": float, "quantity": float})


def cost_summary(costs: pd.DataFrame, record: RunRecord) -> dict[str, Any]:
    """cost_usd and its normalisations (over the requests every pool completed), with the
    total per component."""
    horizon = record.horizon_s
    total = float(costs["usd"].sum())
    requests, tokens = completed_work(record)
    by_component = costs.groupby("component")["usd"].sum()
    return {
        "cost_usd": total,
        "cost_usd_per_month": total * MONTH_S / horizon,
        "cost_usd_per_1m_requests": per_million(total, requests),
        "cost_usd_per_1m_output_tokens": per_million(total, tokens),
        "cost_usd_by_component": {c: float(by_component.get(c, 0.0)) for c in COMPONENTS},
    }
