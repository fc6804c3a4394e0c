"""Checks of a scenario's faults section (readable errors with the field path).

Faults name sites, pools, links and replicas; these checks make sure they exist, before a
world is built. `serving_pool_name` says which pool serves at a site (the first with the
`serving` role and some capacity), as the world builds it. `spot_terms` says how often a spot pool is reclaimed and how fast it is
replaced (`sim.world.faults` draws the interruptions).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import MissingPrice
from sim.spec.errors import SpecIssue, suggest
from sim.spec.scenario import NONE_SITE, Pool, Scenario


def serving_pool_name(scenario: Scenario, site: str) -> str | None:
    """The pool that serves at a site (the first serving pool with GPUs)."""
    pools = [p for p in scenario.sites[site].pools if "serving" in p.roles and p.capacity > 0]
    return pools[0].name if pools else None


def pool_replicas(scenario: Scenario, site: str, pool: str) -> int:
    found = next(p for p in scenario.sites[site].pools if p.name == pool)
    if found.autoscale is not None:
        return found.autoscale.max_replicas
    return found.capacity // found.tp(scenario.model)


@dataclass(frozen=True)
class SpotTerms:
    """How a spot pool is interrupted: reclaims per instance-hour held, the notice before each,
    and the time a replacement instance takes to serve (the pool's provisioning delay)."""

    interruptions_per_hour: float
    notice_s: float
    replace_s: float


def spot_terms(scenario: Scenario, site: str, pool: Pool) -> SpotTerms | None:
    """A spot pool's interruption terms: its own fields, else the catalog's spot price of the
    instance it rents (`sim.catalog.cloud_offer`); None for other pools. The checks make sure a
    spot pool has a rate (`sim.spec.checks.check_cloud_pools`)."""
    if pool.pricing != "spot" or scenario.sites[site].zone != "third_party":
        return None
    rate, notice = pool.interruptions_per_hour, pool.interruption_notice
    if rate is None or notice is None:
        try:
            offer = scenario.cloud_offer(site, pool, "spot")
        except MissingPrice:
            offer = None
        if rate is None:
            rate = offer.interruptions_per_hour if offer is not None else None
        if notice is None:
            notice = offer.interruption_notice_s if offer is not None else None
    assert rate is not None, "check_cloud_pools guarantees a spot pool a rate"
    delay = pool.autoscale.provisioning_delay if pool.autoscale is not None else None
    return SpotTerms(rate, notice or 0.0, pool.provisioning_delay if delay is None else delay)


def check_faults(s: Scenario) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    spec = s.faults
    sites = sorted(s.sites)

    def site_ok(path: str, name: str) -> bool:
        if name in s.sites:
            return True
        issues.append(SpecIssue(path, f"no site named {name!r}{suggest(name, sites)}", name, ", ".join(sites)))
        return False

    for i, rf in enumerate(spec.replica_failures):
        path = f"faults.replica_failures[{i}]"
        if not site_ok(f"{path}.site", rf.site):
            continue
        pools = [p.name for p in s.sites[rf.site].pools if p.name is not None]
        pool = rf.pool or serving_pool_name(s, rf.site)
        if pool is None or pool not in pools:
            issues.append(SpecIssue(f"{path}.pool", f"no pool {pool!r} at site {rf.site!r}"
                                    f"{suggest(str(pool), pools)}", rf.pool, ", ".join(pools) or "(none)",
                                    has_value=rf.pool is not None))
            continue
        if next(p for p in s.sites[rf.site].pools if p.name == pool).is_api:
            issues.append(SpecIssue(f"{path}.pool", f"pool {pool!r} is a managed API: it has no replicas of ours "
                                    "that could fail (a site outage cuts the path to it)", pool,
                                    "a pool of GPUs"))
            continue
        replicas = pool_replicas(s, rf.site, pool)
        if rf.at and rf.replica >= replicas:
            issues.append(SpecIssue(f"{path}.replica", f"pool {pool!r} has {replicas} replicas", rf.replica,
                                    f"0 to {replicas - 1}"))
    links = sorted(s.links)
    for i, lo in enumerate(spec.link_outages):
        if lo.link not in s.links:
            issues.append(SpecIssue(f"faults.link_outages[{i}].link", f"no link named {lo.link!r}"
                                    f"{suggest(lo.link, links)}", lo.link, ", ".join(links) or "(none)"))
    for i, so in enumerate(spec.site_outages):
        site_ok(f"faults.site_outages[{i}].site", so.site)
    for i, cs in enumerate(spec.capacity_shortages):
        path = f"faults.capacity_shortages[{i}]"
        if not site_ok(f"{path}.site", cs.site):
            continue
        by_name = {str(p.name): p for p in s.sites[cs.site].pools}
        if cs.pool not in by_name:
            issues.append(SpecIssue(f"{path}.pool", f"no pool {cs.pool!r} at site {cs.site!r}"
                                    f"{suggest(cs.pool, list(by_name))}", cs.pool, ", ".join(by_name) or "(none)"))
        elif not by_name[cs.pool].elastic:
            issues.append(SpecIssue(f"{path}.pool", "only an elastic pool grows, so only it can be short",
                                    cs.pool, "an elastic pool"))
    fallback = s.placement.fallback
    if fallback != NONE_SITE:
        origin = s.workload.origin
        if fallback not in s.sites:
            issues.append(SpecIssue("placement.fallback", f"no site named {fallback!r}{suggest(fallback, sites)}",
                                    fallback, ", ".join([*sites, NONE_SITE])))
        elif fallback != origin:
            issues.append(SpecIssue("placement.fallback", "the fallback serves the clients locally, at their own "
                                    "site (workload.origin)", fallback, f"{origin!r} or 'none'"))
        elif fallback == s.placement.inference:
            issues.append(SpecIssue("placement.fallback", "the fallback is the inference site itself", fallback,
                                    "another site with a serving pool, or 'none'"))
        elif serving_pool_name(s, fallback) is None:
            issues.append(SpecIssue(f"sites.{fallback}.pools", "the fallback site has no GPUs for serving",
                                    has_value=False, allowed="a pool with count >= 1 and role 'serving'"))
    if s.workload.arrivals.process == "concurrency" and s.workload.origin != s.placement.inference:
        touches = {*(s.link_between(s.workload.origin, s.placement.inference) or ("",))[:1],
                   s.workload.origin, s.placement.inference}
        if any(lo.link in touches for lo in spec.link_outages) or any(so.site in touches for so in spec.site_outages):
            issues.append(SpecIssue("workload.arrivals.process", "outages on the request path need an open-loop "
                                    "workload (a closed loop releases requests as it runs)", "concurrency",
                                    "poisson, constant, bursty, diurnal, stages or trace"))
    return issues
