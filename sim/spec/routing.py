"""Which serving pools each traffic class may use, in which order: the routing rules resolved.

A scenario's `routing:` is a list of rules (`sim.spec.scenario.RoutingRule`). A class takes the
first rule that names it, else the first rule without `classes` (the catch-all). Without
`routing:` one implicit rule holds for every class: the serving pools at `placement.inference`,
then those at `placement.fallback`, in file order, policy overflow without thresholds, so a
later pool takes requests only on failover (the path to the earlier one is cut, or it has no
active replica).

A class's residency then removes the pools at sites it may not use, and their weights with
them. What is left, per class, is a `ResolvedRoute`: what the serving kernel's router reads.
The functions here are pure (a scenario in, names and numbers out) and assume a scenario that
`sim.spec.checks` has accepted; the checks use `rule_for_class` and `serving_pool_names` to
find what they reject.

A pool is named "site/pool" everywhere (rules, routes, results); a serving pool is one with the
`serving` role and some capacity (`Pool.capacity` > 0, or a managed API: `Pool.is_api`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.spec.scenario import NONE_SITE, Pool, Scenario, TrafficClass


@dataclass(frozen=True)
class ResolvedRoute:
    """One class's route: its pools after residency, and how a request picks among them."""

    pools: tuple[str, ...]
    """"site/pool" names, in order of preference, at sites the class's residency allows."""
    policy: str
    """'overflow' or 'weighted' (`RoutingRule.policy`)."""
    queue_per_replica: float
    """overflow: skip a pool whose queued requests per active replica exceed this (inf: never)."""
    wait_s: float
    """overflow: skip a pool whose oldest queued request has waited longer (inf: never)."""
    weights: tuple[float, ...]
    """weighted: one per pool, aligned with `pools`; () for overflow."""
    rule: int | None
    """The index of the rule in `scenario.routing`; None for the implicit rule."""


def is_serving(pool: Pool) -> bool:
    """Whether a pool can serve: the `serving` role and some capacity (a managed API's is the
    provider's)."""
    return "serving" in pool.roles and (pool.capacity > 0 or pool.is_api)


def pool_name(site: str, pool: Pool) -> str:
    """A pool's "site/pool" name."""
    return f"{site}/{pool.name}"


def serving_pools(scenario: Scenario) -> dict[str, tuple[str, Pool]]:
    """Every serving pool by "site/pool" name, with its site: sites and pools in file order."""
    return {pool_name(site_name, pool): (site_name, pool)
            for site_name, site in scenario.sites.items() for pool in site.pools if is_serving(pool)}


def serving_pool_names(scenario: Scenario) -> list[str]:
    """Every serving pool, "site/pool": sites in file order, each site's pools in file order."""
    return list(serving_pools(scenario))


def implicit_pools(scenario: Scenario) -> list[str]:
    """The implicit rule's pools: the serving pools at placement.inference, then at
    placement.fallback (unless 'none'), each site's in file order."""
    sites = [scenario.placement.inference]
    if scenario.placement.fallback not in (NONE_SITE, scenario.placement.inference):
        sites.append(scenario.placement.fallback)
    pools = serving_pools(scenario)
    return [name for site in sites for name, (pool_site, _) in pools.items() if pool_site == site]


def rule_for_class(scenario: Scenario, class_name: str) -> int | None:
    """The index in `scenario.routing` of the rule a class takes: the first that names it, else
    the first without `classes`; None for the implicit rule (no `routing:`).

    Raises LookupError when rules exist and none takes the class (a validation error).
    """
    rules = scenario.routing
    if not rules:
        return None
    for k, rule in enumerate(rules):
        if rule.classes is not None and class_name in rule.classes:
            return k
    for k, rule in enumerate(rules):
        if rule.classes is None:
            return k
    raise LookupError(f"no routing rule takes class {class_name!r}")


def route_for(scenario: Scenario, traffic_class: TrafficClass) -> ResolvedRoute:
    """One class's route: its rule's pools at the sites it may use, in the rule's order."""
    k = rule_for_class(scenario, traffic_class.name)
    if k is None:
        names, policy, overflow, weights = implicit_pools(scenario), "overflow", None, None
    else:
        rule = scenario.routing[k]
        names, policy = list(rule.pools), rule.policy
        overflow = rule.overflow if policy == "overflow" else None
        weights = rule.weights if policy == "weighted" else None
    sites = traffic_class.allowed_sites(scenario)
    pools = serving_pools(scenario)
    keep = [i for i, name in enumerate(names) if name in pools and pools[name][0] in sites]
    queue = overflow.queue_per_replica if overflow is not None else None
    wait = overflow.wait if overflow is not None else None
    return ResolvedRoute(
        pools=tuple(names[i] for i in keep),
        policy=policy,
        queue_per_replica=math.inf if queue is None else float(queue),
        wait_s=math.inf if wait is None else float(wait),
        weights=tuple(float(weights[i]) for i in keep) if weights else (),
        rule=k,
    )


def class_routes(scenario: Scenario) -> dict[str, ResolvedRoute]:
    """Each traffic class's route, in `scenario.workload.class_names()` order (the implicit
    `default` class when the workload declares none)."""
    return {c.name: route_for(scenario, c) for c in scenario.workload.class_specs()}
