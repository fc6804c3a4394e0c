"""What a placement costs over the horizon, component by component.

`cost_breakdown` returns one row per priced item: `component`, `site`, `pool`, a `detail` a
reader can check by hand, `usd`, and the `quantity` and `unit` it was priced on. Components:

- **cloud_gpu**: GPU-hours paid for by each third-party pool, **instances as sold**: the pool
  rents the instance type its `instance` names, else the catalog's cheapest per replica for the
  site's provider (any provider when the site names none) and the pool's `pricing`
  (`sim.catalog.cloud_offer`: per instance type the newest price wins; a commitment the
  catalog does not list is derived [E] from on-demand and the provider's discount; a price the
  catalog lacks is a validation error, never another pricing model's). Every replica, hold or
  pool count rents whole instances: 3 GPUs wanted on 8-GPU instances pay 8, and the row's
  detail says so. `price_usd_per_gpu_hour` on the pool overrides the price (per GPU, on its
  `instance` when named, else per single GPU). How the GPUs are held (`sim.metrics.utilisation`):
  - committed pricing (reserved_1y, reserved_3y, savings_plan, capacity_block): the pool's whole capacity
    (`max_count` when elastic) for the horizon, used or not (TCO.md §2);
  - not elastic and no autoscaled serving pool on it: `count` for the horizon;
  - otherwise what it holds: one row per serving pool on it (its replica instances' intervals,
    each rounded up to whole hours when the pool is billed `per_hour`, x the GPUs billed per
    replica), a baseline row for an elastic pool's `count` when no serving pool lives on it,
    and one row per purpose of its training and provisioning holds (GPUs above the baseline).
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
  simulated time over `capex.amortisation`: one row for the GPUs (gpu_usd or catalog
  purchase_usd), one for their servers (`capex.server_usd_per_gpu`, else the server class's
  host_usd_per_gpu; catalog `servers`, TCO.md §7).
- **support**: hardware support at `support_share_per_year` of that capex a year (catalog
  `prices.facility`, 10% [E], TCO.md §8.4).
- **colocation**: the pool's rated power (GPUs x TDP + its servers' host_max_w; a pool smaller
  than a server counts that share of one) x `colocation_usd_per_kw_month` (catalog: CBRE H2
  2024 $184.06 [P], TCO.md §8.3) x months; set it to 0 on a site whose space is paid elsewhere.
- **ops**: a premises site's `ops_usd_per_year` x horizon / year (365 days).
- **energy**: premises facility kWh x the site's price per kWh, one row for the GPUs and one
  for their hosts (`sim.metrics.energy`: power from work, host power per server, x PUE). Cloud
  energy is inside the GPU-hour price.
- **api_tokens**: each managed API pool (kind api), two rows: the prompt tokens and the output
  tokens of the requests it completed within the horizon, in millions, x its catalog price per
  1M input and output tokens (`sim.catalog.ManagedApi`; a negotiated price goes in a catalog
  file). A request answered 429 is not billed; one still running at the horizon is billed in
  the next period. An API holds no GPUs: no GPU-hours, capex or energy.

`cost_summary` totals them: `cost_usd` over the horizon, `cost_usd_per_day`,
`cost_usd_per_month` (a month is 30.44 days), `cost_usd_per_1m_requests` and
`cost_usd_per_1m_output_tokens` over the requests completed within the horizon, and
`cost_usd_by_component` (every component, 0 when absent).

**Projection** (`projection`), labelled as such in `projection_basis`: the simulated horizon
is taken to repeat. Each line is either paid as used (`scales_with_traffic`: cloud GPUs of
pools that hold what they use, egress, storage, energy) or fixed (capex, support, colocation,
ops, committed or non-elastic cloud capacity). With the scenario's
`projection.traffic_growth_per_month` g (`--set projection.traffic_growth_per_month=0.05`),
month m = 0..11 costs fixed + usage x (1 + g)^m: `cost_usd_month_12_projected` and
`cost_usd_per_year_projected`. It assumes the owned and committed capacity still carries the
grown traffic; whether it does is a question for a run at the grown load (`deploysim plan`).
Energy counts as usage although idle power is not (an overestimate of its growth).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.catalog import COMMITTED, Catalog, CloudOffer, cloud_offer
from sim.metrics.energy import completed_work, gpu_usage, per_million, server_of
from sim.metrics.ledger import BYTES_PER_GB, DAY_S, at_rest
from sim.metrics.utilisation import (
    HOLD_PURPOSES,
    holds_what_it_uses,
    pool_held_gpu_seconds,
    serving_pools_on,
)
from sim.record import PoolRecord, RunRecord
from sim.spec.scenario import Pool, Scenario, Site

COMPONENTS = ("cloud_gpu", "egress", "storage", "capex", "support", "colocation", "ops", "energy", "api_tokens")
COST_COLUMNS = ["component", "site", "pool", "detail", "usd", "quantity", "unit", "scales_with_traffic"]
USAGE_COMPONENTS = ("egress", "storage", "energy", "api_tokens")  # always paid in proportion to use
MONTH_S = 30.44 * DAY_S
YEAR_S = 365 * DAY_S  # as sim.spec.units reads "1y"
HOUR_S = 3600.0


def _row(component: str, site: str, pool: str, detail: str, usd: float, quantity: float,
         unit: str, scales: bool = False) -> dict[str, Any]:
    """One cost line; `scales`: paid as used (it grows with the traffic in a projection)."""
    return {"component": component, "site": site, "pool": pool, "detail": detail, "usd": float(usd),
            "quantity": float(quantity), "unit": unit, "scales_with_traffic": scales or component in USAGE_COMPONENTS}


def _duration(seconds: float) -> str:
    for unit, size in (("y", YEAR_S), ("d", DAY_S), ("h", HOUR_S)):
        if seconds >= size:
            return f"{seconds / size:.4g} {unit}"
    return f"{seconds:.4g} s"


# ------------------------------------------------------------------------------------------
# Prices
# ------------------------------------------------------------------------------------------


def cloud_rate(pool: Pool, site: Site, catalog: Catalog, scenario: Scenario | None = None) -> CloudOffer:
    """The instance a cloud pool rents and its price per GPU-hour (`Scenario.cloud_offer`; a
    pool outside a scenario rents one GPU at a time). A scenario price (`price_usd_per_gpu_hour`)
    is per GPU; it rents the pool's `instance` when that is in the catalog, else single GPUs."""
    if pool.price_usd_per_gpu_hour is None:
        if scenario is not None:
            site_name = next(name for name, s in scenario.sites.items() if s is site)
            return scenario.cloud_offer(site_name, pool)
        return cloud_offer(catalog, pool.gpu, site.provider, pool.pricing, pool.instance)
    sold = [c for c in catalog.gpus[pool.gpu].cloud_prices if c.instance == pool.instance]
    per_instance = sold[0].gpus_per_instance if sold else 1
    spot = [c for c in sold if c.pricing == "spot"]
    return CloudOffer(site.provider or "", pool.instance or f"{pool.gpu} (per GPU)", per_instance,
                      pool.price_usd_per_gpu_hour, pool.pricing, "scenario price",
                      spot[0].interruptions_per_hour if spot else None, spot[0].interruption_notice_s if spot else None)


def cloud_gpu_price(pool: Pool, site: Site, catalog: Catalog) -> tuple[float, str]:
    """USD per GPU-hour of a cloud pool, and where the number comes from."""
    offer = cloud_rate(pool, site, catalog)
    return offer.usd_per_gpu_hour, offer.source


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


def _priced(offer: CloudOffer) -> str:
    return (f"x ${offer.usd_per_gpu_hour:.4g}/GPU-h ({offer.instance}, {offer.gpus_per_instance} GPU"
            f"{'s' if offer.gpus_per_instance != 1 else ''} per instance; {offer.source})")


def _hold_rows(record: RunRecord, site: str, pool: Pool, offer: CloudOffer, beyond: int) -> list[dict[str, Any]]:
    """Training and provisioning holds of a cloud pool, each renting whole instances for the
    GPUs it holds above `beyond` (the pool's baseline, rented throughout)."""
    holds = record.gpu_holds
    mine = holds[(holds["site"] == site) & (holds["pool"] == pool.name) & holds["purpose"].isin(HOLD_PURPOSES)]
    rows = []
    for purpose in HOLD_PURPOSES:
        these = mine[mine["purpose"] == purpose]
        gpus = (these["gpus"] - beyond).clip(lower=0).to_numpy()
        seconds = (these["end_s"] - these["start_s"]).clip(lower=0.0).to_numpy()
        billed = np.array([offer.billed_gpus(int(g)) if g > 0 else 0 for g in gpus], dtype=np.float64)
        hours = float((billed * seconds).sum()) / HOUR_S
        if hours <= 0:
            continue
        used = float((gpus * seconds).sum()) / HOUR_S
        rows.append(_row("cloud_gpu", site, pool.name or "", f"{purpose}: {used:.4g} GPU-h held on {len(gpus)} "
                         f"hold{'s' if len(gpus) != 1 else ''}, billed as {hours:.4g} GPU-h of whole instances "
                         f"{_priced(offer)}", hours * offer.usd_per_gpu_hour, hours, "GPU-h", scales=True))
    return rows


def cloud_gpu_rows(record: RunRecord) -> list[dict[str, Any]]:
    """One row per way each third-party GPU pool is paid for (see the module doc): a
    commitment for its capacity, its count for the horizon, the replicas of each serving pool
    on it as billed, and its training and provisioning holds; whole instances throughout."""
    scenario = record.scenario
    catalog = scenario.resolved_catalog
    horizon = scenario.horizon
    rows = []
    for site_name, site in scenario.sites.items():
        if site.zone != "third_party":
            continue
        for pool in site.pools:
            if pool.capacity == 0:
                continue
            offer = cloud_rate(pool, site, catalog, scenario)
            name = pool.name or ""
            if pool.pricing in COMMITTED:
                billed = offer.billed_gpus(pool.capacity)
                hours = billed * horizon / HOUR_S
                rows.append(_row("cloud_gpu", site_name, name, f"{pool.pricing}: committed capacity "
                                 f"{offer.instances_for(pool.capacity)} x {offer.instance} ({billed} GPUs for "
                                 f"{pool.capacity} wanted) x {_duration(horizon)}, paid used or not {_priced(offer)}",
                                 hours * offer.usd_per_gpu_hour, hours, "GPU-h"))
                continue
            if not holds_what_it_uses(record, site_name, pool):
                billed = offer.billed_gpus(pool.count)
                hours = billed * horizon / HOUR_S
                rows.append(_row("cloud_gpu", site_name, name, f"{offer.instances_for(pool.count)} x {offer.instance} "
                                 f"({billed} GPUs for {pool.count} wanted) x {_duration(horizon)}, not elastic "
                                 f"{_priced(offer)}", hours * offer.usd_per_gpu_hour, hours, "GPU-h"))
                rows += _hold_rows(record, site_name, pool, offer, beyond=pool.count)
                continue
            on_it = serving_pools_on(record, site_name, name)
            baseline = 0
            if not on_it and pool.count:
                baseline = pool.count
                billed = offer.billed_gpus(pool.count)
                hours = billed * horizon / HOUR_S
                rows.append(_row("cloud_gpu", site_name, name, f"baseline: {offer.instances_for(pool.count)} x "
                                 f"{offer.instance} ({billed} GPUs for {pool.count} wanted) x {_duration(horizon)} "
                                 f"{_priced(offer)}", hours * offer.usd_per_gpu_hour, hours, "GPU-h"))
            for serving in on_it:
                held_s = pool_held_gpu_seconds(record.pools[serving], horizon)
                if held_s <= 0:
                    continue
                tp = record.pools[serving].gpus_per_replica
                hours = held_s / tp * offer.billed_gpus(tp) / HOUR_S
                rows.append(_row("cloud_gpu", site_name, name, f"{hours:.4g} GPU-h held by serving pool {serving} "
                                 f"({_billing(record.pools[serving], offer)}) {_priced(offer)}",
                                 hours * offer.usd_per_gpu_hour, hours, "GPU-h", scales=True))
            rows += _hold_rows(record, site_name, pool, offer, beyond=baseline)
    return rows


def _billing(pool: PoolRecord, offer: CloudOffer) -> str:
    """How a serving pool's replicas were billed, as a cost row says it."""
    instances = int((pool.holding["end_s"] > pool.holding["start_s"]).sum())
    gpus = pool.gpus_per_replica
    what = (f"{instances} replica instance{'s' if instances != 1 else ''} x {gpus} GPU{'s' if gpus != 1 else ''}"
            f" on {offer.instances_for(gpus)} x {offer.instance} ({offer.billed_gpus(gpus)} GPUs billed per replica)")
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


def premises_rows(scenario: Scenario) -> list[dict[str, Any]]:
    """Owned hardware, per premises pool: capex (GPUs; servers), support and colocation; and
    the site's ops (see the module doc)."""
    catalog = scenario.resolved_catalog
    horizon = scenario.horizon
    facility = catalog.prices.facility
    rows = []
    for site_name, site in scenario.sites.items():
        if site.zone != "private":
            continue
        capex = site.capex
        share = horizon / capex.amortisation
        years = horizon / YEAR_S
        support = capex.support_share_per_year
        if support is None:
            support = facility.support_share_per_year if facility is not None else 0.0
        colocation = capex.colocation_usd_per_kw_month
        if colocation is None:
            colocation = facility.colocation_usd_per_kw_month if facility is not None else 0.0
        for pool in site.pools:
            if pool.capacity == 0:
                continue
            gpu = catalog.gpus[pool.gpu]
            server = server_of(site, pool.gpu, catalog)
            name, n = pool.name or "", pool.capacity
            gpu_usd = capex.gpu_usd if capex.gpu_usd is not None else gpu.purchase_usd
            host_usd = capex.server_usd_per_gpu if capex.server_usd_per_gpu is not None else server.host_usd_per_gpu
            host_from = ("capex.server_usd_per_gpu" if capex.server_usd_per_gpu is not None
                         else f"server class {capex.server or gpu.server}")
            for what, usd_each in ((f"GPUs ({pool.gpu})", gpu_usd), (f"servers ({host_from}, per GPU)", host_usd)):
                rows.append(_row("capex", site_name, name, f"{what}: {n} x ${usd_each:,.0f} x {_duration(horizon)} / "
                                 f"{_duration(capex.amortisation)}", n * usd_each * share, n, "GPU"))
            bought = n * (gpu_usd + host_usd)
            if support > 0:
                rows.append(_row("support", site_name, name, f"{support:.0%} a year of ${bought:,.0f} capex x "
                                 f"{_duration(horizon)}", bought * support * years, years, "y"))
            servers = n / server.gpus_per_server
            rated_kw = (n * gpu.tdp_w + servers * server.host_max_w) / 1000
            if colocation > 0:
                months = horizon / MONTH_S
                rows.append(_row("colocation", site_name, name, f"{rated_kw:.3g} kW rated ({n} x {gpu.tdp_w:g} W GPUs + "
                                 f"{servers:.3g} servers x {server.host_max_w:g} W host) x ${colocation:g}/kW-month "
                                 f"x {months:.3g} months", rated_kw * colocation * months, rated_kw * months,
                                 "kW-month"))
        if capex.ops_usd_per_year > 0:
            rows.append(_row("ops", site_name, "", f"${capex.ops_usd_per_year:,.0f}/y x {_duration(horizon)}",
                             capex.ops_usd_per_year * horizon / YEAR_S, horizon / YEAR_S, "y"))
    return rows


def energy_rows(usage: pd.DataFrame) -> list[dict[str, Any]]:
    """Premises energy per pool: one row for the GPUs, one for their servers' hosts."""
    rows = []
    for use in usage[(usage["zone"] == "private") & (usage["held_gpu_s"] > 0)].itertuples():
        held = use.held_gpu_s
        activity = use.activity_gpu_s / held
        facility = f"x PUE {use.pue:.3g} x ${use.usd_per_kwh:.4g}/kWh ({use.power_profile})"
        rows.append(_row("energy", use.site, use.pool,
                         f"GPUs: {use.gpu_it_kwh:.4g} kWh ({use.gpus} x {use.gpu}; serving {use.serving_held_gpu_s / held:.1%}"
                         f" of the GPU-time at {activity:.1%} mean activity, training {use.training_gpu_s / held:.1%}) "
                         f"{facility}", use.gpu_it_kwh * use.pue * use.usd_per_kwh, use.gpu_it_kwh * use.pue, "kWh"))
        rows.append(_row("energy", use.site, use.pool, f"hosts: {use.host_it_kwh:.4g} kWh ({use.servers:.3g} servers) "
                         f"{facility}", use.host_it_kwh * use.pue * use.usd_per_kwh, use.host_it_kwh * use.pue, "kWh"))
    return rows


def api_token_rows(record: RunRecord) -> list[dict[str, Any]]:
    """Per managed API pool: its completed requests' prompt and output tokens x its prices."""
    catalog = record.scenario.resolved_catalog
    rows = []
    for p, pool in enumerate(record.pools.values()):
        if not pool.api:
            continue
        api = catalog.apis[pool.api]
        completed, prompt, output = _completed_in_pool(record, p)
        for what, tokens, price in (("input", prompt, api.usd_per_1m_input_tokens),
                                    ("output", output, api.usd_per_1m_output_tokens)):
            millions = tokens / 1e6
            rows.append(_row("api_tokens", pool.site, pool.pool, f"{millions:.6g}M {what} tokens of {completed} "
                             f"completed requests x ${price:.4g}/1M ({pool.api}, {api.provider}, as of {api.as_of})",
                             millions * price, millions, f"M {what} tokens"))
    return rows


def _completed_in_pool(record: RunRecord, p: int) -> tuple[int, int, int]:
    """Requests pool p completed, and their prompt and output tokens."""
    tally = record.tally
    if tally is not None:
        completed = int(tally.counts[:, p, 0, :].sum())
        return completed, int(tally.pool_prompt_tokens[p]), int(tally.pool_output_tokens[p])
    requests = record.requests
    mine = (requests.pool == p) & requests.completed
    return int(mine.sum()), int(requests.prompt_tokens[mine].sum()), int(requests.output_tokens[mine].sum())


# ------------------------------------------------------------------------------------------
# The breakdown and its summary
# ------------------------------------------------------------------------------------------


def cost_breakdown(record: RunRecord, ledger: pd.DataFrame, usage: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per priced item over the horizon (see the module doc)."""
    scenario = record.scenario
    usage = gpu_usage(record) if usage is None else usage
    rows = (cloud_gpu_rows(record) + egress_rows(scenario, ledger) + storage_rows(scenario, ledger)
            + premises_rows(scenario) + energy_rows(usage) + api_token_rows(record))
    return pd.DataFrame(rows, columns=COST_COLUMNS).astype({"usd": float, "quantity": float,
                                                            "scales_with_traffic": bool})


def cost_summary(costs: pd.DataFrame, record: RunRecord) -> dict[str, Any]:
    """cost_usd and its normalisations (over the requests every pool completed), with the
    total per component."""
    horizon = record.horizon_s
    total = float(costs["usd"].sum())
    requests, tokens = completed_work(record)
    by_component = costs.groupby("component")["usd"].sum()
    return {
        "cost_usd": total,
        "cost_usd_per_day": total * DAY_S / horizon,
        "cost_usd_per_month": total * MONTH_S / horizon,
        "cost_usd_per_1m_requests": per_million(total, requests),
        "cost_usd_per_1m_output_tokens": per_million(total, tokens),
        "cost_usd_by_component": {c: float(by_component.get(c, 0.0)) for c in COMPONENTS},
        **projection(costs, horizon, record.scenario.projection.traffic_growth_per_month),
    }


def projection(costs: pd.DataFrame, horizon_s: float, growth_per_month: float) -> dict[str, Any]:
    """A year projected from the simulated horizon (see the module doc): month m (0 to 11)
    costs fixed + usage x (1 + growth)^m, each scaled from the horizon to a month."""
    per_month = MONTH_S / horizon_s
    usage = float(costs.loc[costs["scales_with_traffic"].astype(bool), "usd"].sum()) * per_month
    fixed = float(costs["usd"].sum()) * per_month - usage
    growth = [(1 + growth_per_month) ** m for m in range(12)]
    return {
        "projection_basis": (f"projection of the simulated {horizon_s / DAY_S:.3g} day(s), repeated: usage-paid "
                             f"lines grow {growth_per_month:.1%} a month, owned and committed capacity stays as is"),
        "traffic_growth_per_month": growth_per_month,
        "cost_usd_per_month_usage": usage,
        "cost_usd_per_month_fixed": fixed,
        "cost_usd_month_12_projected": fixed + usage * growth[-1],
        "cost_usd_per_year_projected": 12 * fixed + usage * sum(growth),
    }
