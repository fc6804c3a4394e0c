"""Checks that look at more than one field, or at the catalog.

Pydantic checks each value on its own; these checks ask whether the scenario as a whole can
run: that placement names sites that exist, that the GPUs and the model are in the catalog,
that the model fits the GPUs that serve it, that sites which must exchange data are linked,
that training has GPUs where it is placed, that the routing rules give every traffic class a
pool and every serving pool some traffic (`sim.spec.routing`), that an autoscaler has room
to grow, and that nothing would make a run hang: no periodic process or random fault firing
more than `MAX_PERIODIC_EVENTS` times, no token bound past int32. Each returns `SpecIssue`s with
the path of the field a user should change and what they may change it to.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from sim.catalog import Catalog, MissingPrice
from sim.catalog.sizing import DEFAULT_RESERVE_BYTES, replica_memory, smallest_fitting_tp
from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.files import MAX_TRACE_BYTES, check_file
from sim.spec.routing import class_routes, implicit_pools, is_serving, pool_name, serving_pools
from sim.spec.scenario import (
    NONE_SITE,
    ZONES,
    LinkOutage,
    Pool,
    ReplicaFailures,
    RoutingRule,
    Scenario,
    SiteOutage,
)
from sim.spec.units import format_bytes, format_duration
from sim.workload.lengths import INT32_MAX
from sim.workload.limits import MAX_PERIODIC_EVENTS
from sim.workload.requests import SHARE_TOLERANCE


def _site_issue(path: str, name: str, sites: list[str], optional: bool) -> SpecIssue:
    options = [*sites, NONE_SITE] if optional else sites
    return SpecIssue(path, f"no site named {name!r}{suggest(name, options)}", name, ", ".join(options))


def check_sites_named(s: Scenario) -> list[SpecIssue]:
    sites = list(s.sites)
    issues: list[SpecIssue] = []
    for name in sites:  # pools are named "site/pool" in rules, results and the world
        if "/" in name or not name.strip():
            issues.append(SpecIssue(f"sites.{name}", "a site name is a label, and pools are named 'site/pool', so it "
                                    "must be non-empty and hold no '/'", name, "a name without '/', e.g. premises"))
    for stage, site in s.placement.sites_named().items():
        if site == NONE_SITE and stage != "inference":
            continue
        if site not in s.sites:
            issues.append(_site_issue(f"placement.{stage}", site, sites, optional=stage != "inference"))
    if s.workload.origin not in s.sites:
        issues.append(_site_issue("workload.origin", s.workload.origin, sites, optional=False))
    for name, link in s.links.items():
        for i, end in enumerate(link.ends):
            if end not in s.sites:
                issues.append(_site_issue(f"links.{name}.ends[{i}]", end, sites, optional=False))
    return issues


def check_catalog_ids(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    gpus = sorted(catalog.gpus)
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            if pool.gpu not in catalog.gpus and not pool.is_api and pool.gpu:  # no gpu: check_api_pools
                issues.append(SpecIssue(
                    f"sites.{site_name}.pools[{i}].gpu",
                    f"unknown GPU id{suggest(pool.gpu, gpus)}", pool.gpu, ", ".join(gpus)))
    if s.model.id not in catalog.models:
        models = sorted(catalog.models)
        issues.append(SpecIssue("model.id", f"unknown model id{suggest(s.model.id, models)}",
                                s.model.id, ", ".join(models)))
    engines = sorted(catalog.engines)
    if s.model.engine not in catalog.engines:
        issues.append(SpecIssue("model.engine", f"unknown engine{suggest(s.model.engine, engines)}",
                                s.model.engine, ", ".join(engines)))
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            if pool.engine is not None and pool.engine not in catalog.engines:
                issues.append(SpecIssue(f"sites.{site_name}.pools[{i}].engine",
                                        f"unknown engine{suggest(pool.engine, engines)}", pool.engine,
                                        ", ".join(engines)))
    return issues


def check_model_fits(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    """placement.inference has GPUs that serve, and every pool that serves (at any site: a
    routing rule may send requests there) holds a replica: weights, plus KV for one
    max-length sequence."""
    issues: list[SpecIssue] = []
    model = catalog.models.get(s.model.id)
    if model is None or s.placement.inference not in s.sites:
        return issues
    serving = s.model.serving
    if not any(is_serving(p) for p in s.sites[s.placement.inference].pools):
        issues.append(SpecIssue(
            f"sites.{s.placement.inference}.pools",
            f"placement.inference is {s.placement.inference!r}, but that site has no GPUs for serving",
            has_value=False,
            allowed="a pool with count >= 1 (or elastic with max_count >= 1) and role 'serving'"))
        return issues
    # a pool of no capacity serves nowhere, but at placement.inference it is surely a mistake
    serving_pools = [(f"sites.{site_name}.pools[{i}]", p) for site_name, site in s.sites.items()
                     for i, p in enumerate(site.pools)
                     if is_serving(p) or ("serving" in p.roles and site_name == s.placement.inference)]
    for path, pool in serving_pools:
        gpu = catalog.gpus.get(pool.gpu)
        if gpu is None:
            continue
        tp = pool.tp(s.model)
        tp_field = f"{path}.tensor_parallel" if pool.tensor_parallel is not None else "model.tensor_parallel"
        if s.model.service_time is not None:
            continue  # a plain distribution: nothing to fit
        if model.kind == "classic":
            batching = s.model.batching
            known = {b.gpu for b in model.batch_latency}
            overridden = batching.latency_a is not None and batching.latency_c_per_item is not None
            if pool.gpu not in known and not overridden:
                issues.append(SpecIssue(
                    f"{path}.gpu", f"the catalog has no batch latency for {s.model.id} on {pool.gpu}", pool.gpu,
                    f"a GPU with catalog entries ({', '.join(sorted(known)) or 'none'}), or set "
                    "model.batching.latency_a and model.batching.latency_c_per_item"))
            continue
        if s.model.precision in ("fp8",) and "fp8" not in gpu.peak_flops:
            issues.append(SpecIssue(
                "model.precision", f"{pool.gpu} has no fp8 tensor cores", s.model.precision,
                f"one of {', '.join(p for p in ('bf16', 'fp16', 'int8', 'int4') if p in gpu.peak_flops or p in ('int8', 'int4'))}"))
            continue
        if pool.capacity < tp:
            issues.append(SpecIssue(
                f"{path}.count", f"a replica needs tensor_parallel={tp} GPUs but the pool has {pool.capacity}",
                pool.capacity, f"a value >= {tp}, or a smaller {tp_field}"))
            continue
        if pool.count % tp or pool.capacity % tp:
            issues.append(SpecIssue(
                f"{path}.count", f"GPUs are grouped into replicas of tensor_parallel={tp}", pool.count,
                f"a multiple of {tp}"))
        engine = catalog.engines.get(pool.engine_of(s.model))
        reserve = engine.reserve_bytes(serving.max_num_batched_tokens) if engine else DEFAULT_RESERVE_BYTES
        memory = replica_memory(
            model, gpu, s.model.precision, tp, serving.gpu_memory_utilization,
            serving.max_model_len, serving.kv_cache_precision, reserve, serving.block_size)
        if not memory.fits:
            need_tp = smallest_fitting_tp(
                model, gpu, s.model.precision, gpu_memory_utilization=serving.gpu_memory_utilization,
                max_model_len=serving.max_model_len, kv_precision=serving.kv_cache_precision,
                reserve_bytes=reserve, block_size=serving.block_size)
            hint = f"{tp_field} >= {need_tp}" if need_tp else "a GPU with more memory"
            issues.append(SpecIssue(
                f"{path}.gpu",
                f"{s.model.id} at {s.model.precision} with tensor_parallel={tp} does not fit a {pool.gpu}: "
                f"{format_bytes(memory.weights_per_gpu_bytes)} of weights per GPU, "
                f"{format_bytes(memory.usable_per_gpu_bytes)} usable, room for {memory.kv_tokens} KV tokens "
                f"of the {memory.needed_tokens} one sequence needs",
                pool.gpu, f"{hint}, a smaller precision (fp8, int8, int4), or a smaller serving.max_model_len"))
    return issues


def _linked(s: Scenario, a: str, b: str) -> bool:
    return a == b or s.link_between(a, b) is not None


def check_links(s: Scenario) -> list[SpecIssue]:
    """Sites that exchange data must be joined by a link (no multi-hop routing)."""
    p = s.placement
    flows = [
        ("workload.origin", s.workload.origin, p.inference, "requests and responses"),
        ("placement.model_registry", p.model_registry, p.inference, "model weights"),
        ("placement.monitoring", p.monitoring, p.inference, "monitoring data"),
        ("placement.training_data", s.workload.origin, p.training_data, "labelled samples"),
        ("placement.training", p.training_data, p.training, "training data"),
        ("placement.training", p.training, p.model_registry, "trained artifacts"),
    ]
    pools = serving_pools(s)
    for k, rule in enumerate(s.routing):  # a rule may send requests to any site, which then loads the model
        for j, name in enumerate(rule.pools):
            if name in pools:
                flows += [(f"routing[{k}].pools[{j}]", s.workload.origin, pools[name][0], "requests and responses")]
                if not pools[name][1].is_api:  # a provider's API loads no weights of ours
                    flows += [(f"routing[{k}].pools[{j}]", p.model_registry, pools[name][0], "model weights")]
    issues: list[SpecIssue] = []
    reported: set[frozenset[str]] = set()
    for path, a, b, what in flows:
        if NONE_SITE in (a, b) or a not in s.sites or b not in s.sites or _linked(s, a, b):
            continue
        pair = frozenset((a, b))
        if pair in reported:
            continue
        reported.add(pair)
        issues.append(SpecIssue(
            path, f"sites {a!r} and {b!r} exchange {what} but no link joins them", has_value=False,
            allowed=f"a link under links: with ends: [{a}, {b}]"))
    return issues


def check_training(s: Scenario) -> list[SpecIssue]:
    site_name = s.placement.training
    if site_name == NONE_SITE or site_name not in s.sites:
        return []
    site = s.sites[site_name]
    gpus = sum(p.capacity for p in site.pools if "training" in p.roles)
    if gpus == 0:
        return [SpecIssue(
            "placement.training", f"training is placed at {site_name!r}, which has no GPUs for training",
            site_name, "a site with a pool whose roles include 'training', or 'none'")]
    issues: list[SpecIssue] = []
    sharing = s.lifecycle.gpu_sharing
    shared = site_name == s.placement.inference and any(
        "training" in p.roles and "serving" in p.roles and p.capacity > 0 for p in site.pools)
    if shared and sharing.policy == "reserved":
        shared_pool = next(p for p in site.pools if "training" in p.roles and "serving" in p.roles)
        tp, pool_gpus = shared_pool.tp(s.model), shared_pool.count
        if sharing.reserved_gpus < 1 or sharing.reserved_gpus > pool_gpus - tp:
            issues.append(SpecIssue(
                "lifecycle.gpu_sharing.reserved_gpus", "the reserved GPUs must leave at least one serving replica",
                sharing.reserved_gpus, f"a value between 1 and {pool_gpus - tp}"))
        elif (pool_gpus - sharing.reserved_gpus) % tp:
            issues.append(SpecIssue(
                "lifecycle.gpu_sharing.reserved_gpus", f"serving keeps whole replicas of tensor_parallel={tp}",
                sharing.reserved_gpus, f"a value that leaves a multiple of {tp} GPUs to serve"))
        gpus = sharing.reserved_gpus
    need = s.lifecycle.retraining.gpus
    if need > gpus:
        issues.append(SpecIssue(
            "lifecycle.retraining.gpus", f"retraining asks for {need} GPUs but {site_name!r} has {gpus} for training",
            need, f"a value <= {gpus}"))
    development = s.lifecycle.development
    if development is not None:
        for i, job in enumerate(development.jobs):
            if job.gpus > gpus:
                issues.append(SpecIssue(f"lifecycle.development.jobs[{i}].gpus",
                                        f"the job asks for {job.gpus} GPUs but {site_name!r} has {gpus} for training",
                                        job.gpus, f"a value <= {gpus}"))
            if job.data_class not in s.privacy.data_classes:
                classes = sorted(s.privacy.data_classes)
                issues.append(SpecIssue(f"lifecycle.development.jobs[{i}].data_class",
                                        f"unknown data class{suggest(job.data_class, classes)}", job.data_class,
                                        ", ".join(classes)))
        if development.arrivals == "schedule" and not development.at:
            issues.append(SpecIssue("lifecycle.development.at", "a schedule needs submission times", [],
                                    "a list of times, e.g. [1d, 3d, 5d]"))
    return issues


def check_cloud_pools(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    """Cloud pools can be priced as asked (no fallback to another pricing model), spot pools
    know how often they are reclaimed, and the cloud-only fields are not set on premises."""
    issues: list[SpecIssue] = []
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            path = f"sites.{site_name}.pools[{i}]"
            if pool.elastic and site.zone == "private":
                issues.append(SpecIssue(
                    f"{path}.elastic", "premises pools cannot grow on demand", True,
                    "elastic: true only at third_party sites"))
            gpu = catalog.gpus.get(pool.gpu)
            if site.zone == "private":
                issues += _cloud_fields_on_premises(path, site_name, pool)
                continue
            if gpu is None:
                continue
            if pool.pricing != "spot":
                for field in ("interruptions_per_hour", "interruption_notice"):
                    if getattr(pool, field) is not None:
                        issues.append(SpecIssue(f"{path}.{field}", f"only spot instances are interrupted; pool "
                                                f"{pool.name!r} is {pool.pricing}", getattr(pool, field),
                                                "pricing: spot, or leave it unset"))
            if pool.price_usd_per_gpu_hour is not None:
                offer = None
                if pool.instance is not None and not any(c.instance == pool.instance for c in gpu.cloud_prices):
                    known = sorted({c.instance for c in gpu.cloud_prices}) or ["none"]
                    issues.append(SpecIssue(f"{path}.instance", f"the catalog sells no {pool.instance!r} with "
                                            f"{pool.gpu}", pool.instance, ", ".join(known)))
            else:
                try:
                    offer = s.cloud_offer(site_name, pool)
                except MissingPrice as missing:
                    issues.append(SpecIssue(f"{path}.pricing", str(missing), pool.pricing,
                                            "set price_usd_per_gpu_hour, or a pricing/instance the catalog has"))
                    continue
            if pool.pricing == "spot" and pool.interruptions_per_hour is None and (
                    offer is None or offer.interruptions_per_hour is None):
                issues.append(SpecIssue(
                    f"{path}.interruptions_per_hour",
                    f"no interruption rate for spot {pool.gpu}" + (f" on {offer.instance}" if offer else "")
                    + " in the catalog (TCO.md has no Spot Advisor band for it)", has_value=False,
                    allowed="reclaims per instance-hour, e.g. 0.0003 (a 20% chance a month: -ln(0.8)/720)"))
    return issues


def _cloud_fields_on_premises(path: str, site: str, pool: Pool) -> list[SpecIssue]:
    """Owned GPUs are not rented: a pricing model or an instance there would be ignored."""
    issues = []
    for field, default in (("pricing", "on_demand"), ("instance", None), ("interruptions_per_hour", None),
                           ("interruption_notice", None)):
        value = getattr(pool, field)
        if value != default:
            issues.append(SpecIssue(f"{path}.{field}", f"pool {pool.name!r} is on premises (site {site!r}, zone "
                                    "private): owned GPUs are paid for by capex, not rented", value,
                                    "leave it unset on premises"))
    return issues


def check_prices(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    profiles = sorted(catalog.prices.power)
    for site_name, site in s.sites.items():
        profile = site.power.profile
        if profile is not None and profile not in catalog.prices.power:
            issues.append(SpecIssue(
                f"sites.{site_name}.power.profile", f"unknown power profile{suggest(profile, profiles)}",
                profile, ", ".join(profiles)))
        server = site.capex.server
        if server is not None and server not in catalog.servers:
            servers = sorted(catalog.servers)
            issues.append(SpecIssue(f"sites.{site_name}.capex.server", f"unknown server class{suggest(server, servers)}",
                                    server, ", ".join(servers)))
        provider = site.provider
        if site.zone == "third_party" and provider is not None and provider not in catalog.prices.egress:
            providers = sorted(catalog.prices.egress)
            issues.append(SpecIssue(
                f"sites.{site_name}.provider", f"no egress prices for provider{suggest(provider, providers)}",
                provider, ", ".join(providers)))
    return issues


def check_files(s: Scenario) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    parts = {"workload.arrivals": s.workload.arrivals, "workload.prompt_tokens": s.workload.prompt_tokens,
             "workload.output_tokens": s.workload.output_tokens}
    for k, traffic_class in enumerate(s.workload.classes):
        for key in ("arrivals", "prompt_tokens", "output_tokens"):
            part = getattr(traffic_class, key)
            if part is not None:
                parts[f"workload.classes[{k}].{key}"] = part
    for path, part in parts.items():
        for field in part.file_fields:  # each family member names the fields that hold files
            file = getattr(part, field)
            if file is not None and not Path(file).exists():
                issues.append(SpecIssue(f"{path}.{field}", "file not found", file,
                                        "a CSV file, relative to the scenario file"))
            elif file is not None:
                try:  # a regular file within the trace cap: a FIFO would block the run, /dev/zero never end
                    check_file(file, MAX_TRACE_BYTES, "trace (CSV file)", f"{path}.{field}")
                except SpecError as exc:
                    issues += [replace(issue, message=f"{file} {issue.message}") for issue in exc.issues]
    return issues


def check_token_bounds(s: Scenario) -> list[SpecIssue]:
    """Token lengths are int32 in the run: a bound past that is refused here, by `validate` too,
    not only when a run samples the lengths (`sim.workload.lengths.sample_lengths`)."""
    parts = {"workload.prompt_tokens": s.workload.prompt_tokens, "workload.output_tokens": s.workload.output_tokens}
    for k, traffic_class in enumerate(s.workload.classes):
        for key in ("prompt_tokens", "output_tokens"):
            if getattr(traffic_class, key) is not None:
                parts[f"workload.classes[{k}].{key}"] = getattr(traffic_class, key)
    issues: list[SpecIssue] = []
    for path, spec in parts.items():
        name = spec.largest
        if name is not None and getattr(spec, name) > INT32_MAX:
            issues.append(SpecIssue(f"{path}.{name}", "more tokens than a run can hold (lengths are 32-bit)",
                                    getattr(spec, name), f"at most {INT32_MAX:,}"))
    return issues


def check_data_classes(s: Scenario) -> list[SpecIssue]:
    classes = sorted(s.privacy.data_classes)
    issues = []
    named: list[tuple[str, str | None]] = [("workload.data_class", s.workload.data_class),
                                           ("workload.response_data_class", s.workload.response_data_class)]
    for k, traffic_class in enumerate(s.workload.classes):
        named += [(f"workload.classes[{k}].data_class", traffic_class.data_class),
                  (f"workload.classes[{k}].response_data_class", traffic_class.response_data_class)]
    for path, name in named:
        if name is not None and name not in s.privacy.data_classes:
            issues.append(SpecIssue(path, f"unknown data class{suggest(name, classes)}", name,
                                    f"{', '.join(classes)}, or a class added under privacy.data_classes"))
    return issues


def check_traffic_classes(s: Scenario) -> list[SpecIssue]:
    """Traffic classes: distinct names; every request of the main stream in exactly one class
    (the shares of the share classes sum to 1, and some class has a share); own arrivals only
    beside an open-loop main stream; residencies that name zones or sites that exist."""
    classes = s.workload.classes
    issues: list[SpecIssue] = []
    first_of: dict[str, int] = {}
    for k, traffic_class in enumerate(classes):
        if traffic_class.name in first_of:
            issues.append(SpecIssue(f"workload.classes[{k}].name",
                                    f"class name already used by workload.classes[{first_of[traffic_class.name]}]",
                                    traffic_class.name, "a name unique within workload.classes"))
        first_of.setdefault(traffic_class.name, k)
    shared = [(k, c) for k, c in enumerate(classes) if c.share is not None]
    total = sum(c.share or 0.0 for _, c in shared)
    if shared and abs(total - 1.0) > SHARE_TOLERANCE:
        terms = " + ".join(f"{c.name} {c.share:g}" for _, c in shared)
        issues.append(SpecIssue("workload.classes", f"the shares split workload.arrivals' requests between the "
                                f"classes and must sum to 1; they sum to {total:.12g} ({terms})", total,
                                "shares that sum to 1"))
    if classes and not shared:
        issues.append(SpecIssue("workload.classes", "every class has arrivals of its own, so the requests of "
                                "workload.arrivals would belong to no class", [c.name for c in classes],
                                "one or more classes with a share of workload.arrivals (shares sum to 1)"))
    if s.workload.arrivals.closed_loop() is not None:
        for k, traffic_class in enumerate(classes):
            if traffic_class.arrivals is not None:
                issues.append(SpecIssue(
                    f"workload.classes[{k}].arrivals", "workload.arrivals is a closed loop (concurrency), whose send "
                    "times the servers set; a class's own arrivals cannot be merged with it",
                    traffic_class.arrivals.process,
                    "share: a fraction of the closed loop's requests, or an open-loop workload.arrivals"))
    return issues + _residency_issues(s)


def _residency_issues(s: Scenario) -> list[SpecIssue]:
    """Each residency entry is a zone that has sites, or a site; never a name that is both."""
    zones_with_sites = {site.zone for site in s.sites.values()}
    options = [*ZONES, *s.sites]
    allowed = f"a zone ({', '.join(ZONES)}) or a site ({', '.join(s.sites)})"
    issues: list[SpecIssue] = []
    for k, traffic_class in enumerate(s.workload.classes):
        for j, name in enumerate(traffic_class.residency or []):
            path = f"workload.classes[{k}].residency[{j}]"
            if name in ZONES and name in s.sites:
                issues.append(SpecIssue(path, f"{name!r} is both a zone and a site name, so it is unclear "
                                        "where the class may be served", name, f"rename the site {name!r}"))
            elif name in ZONES and name not in zones_with_sites:
                issues.append(SpecIssue(path, f"no site is in zone {name!r}", name,
                                        f"a zone with sites ({', '.join(sorted(zones_with_sites))}) or a site "
                                        f"({', '.join(s.sites)})"))
            elif name not in ZONES and name not in s.sites:
                issues.append(SpecIssue(path, f"no zone or site named {name!r}{suggest(name, options)}", name,
                                        allowed))
    return issues


def check_bounds(s: Scenario) -> list[SpecIssue]:
    """Relations between fields of one part, reported at the field to change."""
    issues: list[SpecIssue] = []
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            path = f"sites.{site_name}.pools[{i}]"
            if not pool.roles:
                issues.append(SpecIssue(f"{path}.roles", "a pool must be usable for something", [],
                                        "one or more of: serving, training"))
            if pool.elastic and pool.max_count is None:
                issues.append(SpecIssue(f"{path}.max_count", "an elastic pool needs max_count (the most GPUs it may hold)",
                                        has_value=False, allowed=f"a value >= count ({pool.count})"))
            if pool.max_count is not None and pool.max_count < pool.count:
                issues.append(SpecIssue(f"{path}.max_count", f"max_count is below count ({pool.count})",
                                        pool.max_count, f"a value >= {pool.count}"))
    if s.warmup >= s.horizon:
        horizon = format_duration(s.horizon)
        issues.append(SpecIssue("warmup", f"warmup must be shorter than horizon ({horizon})",
                                format_duration(s.warmup), f"a duration shorter than horizon ({horizon})"))
    base = s.lifecycle.base_error_rate
    for i, event in enumerate(s.lifecycle.drift):
        if event.error_rate < base:
            issues.append(SpecIssue(f"lifecycle.drift[{i}].error_rate",
                                    f"drift raises the error rate, but this is below base_error_rate ({base})",
                                    event.error_rate, f"a value between {base} and 1"))
    return issues


def check_monitor(s: Scenario) -> list[SpecIssue]:
    """The detector must know its parameters and suit the monitored signal."""
    if s.placement.monitoring == NONE_SITE:
        return []
    from sim.detectors import check_params, check_signal  # River is imported on first use

    monitor = s.lifecycle.monitor
    issues = check_params(monitor.detector, dict(monitor.params))
    signal = check_signal(monitor.detector, monitor.signal)
    drift = s.lifecycle.drift
    if monitor.signal == "feature" and drift and not any(e.feature_shift for e in drift):
        issues.append(SpecIssue(
            "lifecycle.monitor.signal",
            "a label-free monitor watches the input feature, but no drift event moves it, so it can "
            "never detect them: give the events a feature_shift (std. devs), or watch errors",
            monitor.signal, "errors, or feature with a drift event's feature_shift set"))
    return issues + ([signal] if signal is not None else [])


def check_pool_billing_and_autoscale(s: Scenario) -> list[SpecIssue]:
    """A pool's billing and autoscaler can take effect: per-hour billing only where a provider
    bills (not on premises); an autoscaler only on a serving pool, with room between
    min_replicas and max_replicas, and GPUs to grow into (premises: the GPUs it owns; cloud:
    an elastic pool up to its max_count)."""
    issues: list[SpecIssue] = []
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            if pool.is_api:
                continue  # check_api_pools: none of this applies
            path = f"sites.{site_name}.pools[{i}]"
            tp = pool.tp(s.model)
            for key in ("tensor_parallel", "engine"):
                if getattr(pool, key) is not None and "serving" not in pool.roles:
                    issues.append(SpecIssue(
                        f"{path}.{key}", f"pool {pool.name!r} does not serve (roles {pool.roles}), and {key} is "
                        "how its serving replicas are built", getattr(pool, key),
                        "unset it, or add the 'serving' role"))
            if pool.billing != "per_second" and site.zone == "private":
                issues.append(SpecIssue(
                    f"{path}.billing", f"pool {pool.name!r} is on premises (site {site_name!r}, zone private): "
                    "owned GPUs are paid for by capex and power, not billed by time", pool.billing,
                    "per_second (the default) on a private-zone pool; per_hour only at third_party sites"))
            scale = pool.autoscale
            if scale is None:
                continue
            if "serving" not in pool.roles:
                issues.append(SpecIssue(
                    f"{path}.autoscale", f"pool {pool.name!r} does not serve (roles {pool.roles}), and the "
                    "autoscaler scales serving replicas", has_value=False,
                    allowed="roles that include 'serving', or no autoscale"))
                continue
            if "training" in pool.roles:
                issues.append(SpecIssue(
                    f"{path}.roles", f"pool {pool.name!r} has an autoscaler and also lends GPUs to training: both "
                    "would take and return its replicas, and neither would know what the other holds",
                    pool.roles, "roles [serving] with an autoscaler, or a separate training pool"))
                continue
            if scale.min_replicas > scale.max_replicas:
                issues.append(SpecIssue(
                    f"{path}.autoscale.min_replicas", f"pool {pool.name!r}: min_replicas is above max_replicas "
                    f"({scale.max_replicas})", scale.min_replicas, f"a value <= {scale.max_replicas}"))
            elif scale.min_replicas == scale.max_replicas:
                issues.append(SpecIssue(
                    f"{path}.autoscale.max_replicas", f"pool {pool.name!r} can never scale: min_replicas and "
                    f"max_replicas are both {scale.max_replicas}", scale.max_replicas,
                    f"a value > min_replicas ({scale.min_replicas}), or no autoscale (a fixed pool of count GPUs)"))
            gpus = scale.max_replicas * tp
            if site.zone == "private":
                if gpus > pool.count:
                    issues.append(SpecIssue(
                        f"{path}.autoscale.max_replicas", f"premises pool {pool.name!r} can grow only up to the "
                        f"{pool.count} GPUs it owns (count), but max_replicas {scale.max_replicas} x tensor_parallel "
                        f"{tp} is {gpus} GPUs", scale.max_replicas,
                        f"a value <= {pool.count // tp}, or a larger count (GPUs bought)"))
            elif not pool.elastic:
                issues.append(SpecIssue(
                    f"{path}.elastic", f"cloud pool {pool.name!r} has an autoscaler but cannot grow: it is not "
                    "elastic", pool.elastic, f"elastic: true with max_count >= {gpus} "
                    f"(max_replicas {scale.max_replicas} x tensor_parallel {tp})"))
            elif pool.max_count is not None and pool.max_count < gpus:
                issues.append(SpecIssue(
                    f"{path}.max_count", f"cloud pool {pool.name!r} may grow only to max_count GPUs, fewer than its "
                    f"autoscaler's max_replicas {scale.max_replicas} x tensor_parallel {tp} = {gpus}",
                    pool.max_count, f"a value >= {gpus}, or autoscale.max_replicas <= {pool.max_count // tp}"))
            if site.zone == "third_party" and pool.count > gpus:
                issues.append(SpecIssue(
                    f"{path}.count", f"cloud pool {pool.name!r} would hold more GPUs from the start than its "
                    f"autoscaler may run (max_replicas {scale.max_replicas} x tensor_parallel {tp} = {gpus})",
                    pool.count, f"a value <= {gpus}"))
    return issues


def _pool_names(s: Scenario) -> list[str]:
    return [pool_name(site_name, pool) for site_name, site in s.sites.items() for pool in site.pools]


def _check_rule_pools(s: Scenario, k: int, rule: RoutingRule) -> list[SpecIssue]:
    """Each pool of a rule is a serving pool, named once."""
    issues: list[SpecIssue] = []
    serving = serving_pools(s)
    every = {pool_name(site_name, pool): pool for site_name, site in s.sites.items() for pool in site.pools}
    allowed = f"serving pools as 'site/pool': {', '.join(serving) or '(none)'}"
    seen: dict[str, int] = {}
    for j, name in enumerate(rule.pools):
        path = f"routing[{k}].pools[{j}]"
        if name in seen:
            issues.append(SpecIssue(path, f"pool {name!r} is already routing[{k}].pools[{seen[name]}]; a pool "
                                    "appears once in a rule", name, "each pool once, in order of preference"))
        seen.setdefault(name, j)
        pool = every.get(name)
        if pool is None:
            hint = "" if "/" in name else " (pools are named 'site/pool')"
            issues.append(SpecIssue(path, f"no pool named {name!r}{hint}{suggest(name, _pool_names(s))}",
                                    name, allowed))
        elif "serving" not in pool.roles:
            issues.append(SpecIssue(path, f"pool {name!r} does not serve (roles {pool.roles})", name,
                                    f"add 'serving' to its roles, or one of the {allowed}"))
        elif pool.capacity == 0 and not pool.is_api:
            issues.append(SpecIssue(path, f"pool {name!r} has no GPUs (count 0, not elastic)", name,
                                    f"a count >= 1 for it, or one of the {allowed}"))
    return issues


def _check_rule_policy(k: int, rule: RoutingRule) -> list[SpecIssue]:
    """overflow takes thresholds, weighted takes one weight per pool (>= 0, some > 0)."""
    path = f"routing[{k}]"
    if rule.policy == "overflow":
        if rule.weights is not None:
            return [SpecIssue(f"{path}.weights", "weights split requests only under policy weighted; this rule's "
                              "policy is overflow", rule.weights,
                              "policy: weighted, or no weights (overflow uses the pools' order)")]
        return []
    issues: list[SpecIssue] = []
    if rule.overflow is not None:
        issues.append(SpecIssue(f"{path}.overflow", "overflow thresholds apply only under policy overflow; this "
                                "rule's policy is weighted", has_value=False,
                                allowed="policy: overflow, or no overflow (weighted splits by weights)"))
    n = len(rule.pools)
    if rule.weights is None:
        issues.append(SpecIssue(f"{path}.weights", "policy weighted needs a weight per pool", has_value=False,
                                allowed=f"one weight >= 0 per pool ({n}), e.g. weights: [{', '.join(['1'] * n)}]"))
    elif len(rule.weights) != n:
        issues.append(SpecIssue(f"{path}.weights", f"{len(rule.weights)} weights for {n} pools", rule.weights,
                                f"one weight per pool: {n} weights >= 0"))
    elif sum(rule.weights) <= 0:
        issues.append(SpecIssue(f"{path}.weights", "the weights sum to 0, so no pool would be chosen",
                                rule.weights, "weights >= 0 with at least one > 0"))
    elif not math.isfinite(sum(rule.weights)):  # the draw would be u x inf: always the last pool
        issues.append(SpecIssue(f"{path}.weights", "the weights sum past the largest number, so the split "
                                "between the pools could not be drawn", rule.weights,
                                "weights whose sum is finite, e.g. fractions that sum to 1"))
    return issues


def check_routing(s: Scenario) -> list[SpecIssue]:
    """The routing rules name serving pools and traffic classes that exist, each class takes
    exactly one rule (named once; the catch-all for the rest), every rule takes some class, and
    each rule's policy has what it needs (and nothing of the other policy)."""
    issues: list[SpecIssue] = []
    class_names = s.workload.class_names()
    named_by: dict[str, int] = {}
    catch_all: int | None = None
    for k, rule in enumerate(s.routing):
        issues += _check_rule_pools(s, k, rule) + _check_rule_policy(k, rule)
        if rule.classes is None:
            if catch_all is not None:
                issues.append(SpecIssue(f"routing[{k}].classes", f"routing[{catch_all}] already takes every class "
                                        "that no rule names, so this rule would take none", has_value=False,
                                        allowed=f"classes: a list of traffic classes ({', '.join(class_names)})"))
            catch_all = k if catch_all is None else catch_all
            continue
        for j, name in enumerate(rule.classes):
            path = f"routing[{k}].classes[{j}]"
            if name not in class_names:
                issues.append(SpecIssue(path, f"no traffic class named {name!r}{suggest(name, class_names)}", name,
                                        f"{', '.join(class_names)} (workload.classes)"))
            elif name in named_by:
                issues.append(SpecIssue(path, f"class {name!r} already takes routing[{named_by[name]}] (a class "
                                        "takes the first rule that names it)", name, "each class in one rule"))
            else:
                named_by[name] = k
    if not s.routing:
        return issues
    unnamed = [name for name in class_names if name not in named_by]
    if catch_all is None and unnamed:
        them = "them" if len(unnamed) > 1 else "it"
        issues.append(SpecIssue("routing", f"no rule takes class{'es' if len(unnamed) > 1 else ''} "
                                f"{', '.join(map(repr, unnamed))}", has_value=False,
                                allowed=f"a rule that names {them} in classes, or a rule without classes "
                                        "(it takes every class no rule names)"))
    elif catch_all is not None and not unnamed:
        issues.append(SpecIssue(f"routing[{catch_all}]", "every class is named by a rule, so this rule without "
                                f"classes would take none ({', '.join(class_names)})", has_value=False,
                                allowed="remove the rule, or name the classes it is for"))
    return issues


def check_routes(s: Scenario) -> list[SpecIssue]:
    """What the rules resolve to (`sim.spec.routing.class_routes`): every class keeps some pool
    after its residency (a weighted one, some weight), and every serving pool is on some
    class's route (a pool that takes requests only on failover counts). Assumes
    `check_routing` passed."""
    issues: list[SpecIssue] = []
    routes = class_routes(s)
    for k, (traffic_class, route) in enumerate(zip(s.workload.class_specs(), routes.values(), strict=True)):
        name, residency = traffic_class.name, traffic_class.residency or []
        rule = "the implicit rule (no routing: placement.inference, then placement.fallback)" \
            if route.rule is None else f"routing[{route.rule}]"
        sites = ", ".join(sorted(traffic_class.allowed_sites(s))) or "no site"
        where = f"class {name!r} may be served only at {sites} (residency [{', '.join(residency)}])"
        if not route.pools:
            issues.append(SpecIssue(
                f"workload.classes[{k}].residency", f"{where}, and {rule} has no serving pool there", residency,
                f"a wider residency, or a rule for {name!r} with a serving pool at {sites}"))
        elif route.policy == "weighted" and sum(route.weights) <= 0:
            issues.append(SpecIssue(
                f"workload.classes[{k}].residency", f"{where}, where {rule} gives its pools "
                f"({', '.join(route.pools)}) weight 0", residency,
                f"a wider residency, or a weight > 0 in {rule} for a pool at {sites}"))
    reached = {pool for route in routes.values() for pool in route.pools}
    named = {pool for rule in s.routing for pool in rule.pools} if s.routing else set(implicit_pools(s))
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            name = pool_name(site_name, pool)
            if not is_serving(pool) or name in reached:
                continue
            path = f"sites.{site_name}.pools[{i}].roles"
            fix = f"a routing rule that names {name!r}, roles [training] for a training pool, or remove the pool"
            if name in named and not s.routing:
                message = (f"pool {pool.name!r} may serve, but no class may be served at site {site_name!r} "
                           "(residency)")
            elif name in named:
                message = (f"pool {pool.name!r} may serve, but no class that takes a rule naming {name!r} may be "
                           f"served at site {site_name!r} (residency)")
            elif not s.routing:
                message = (f"pool {pool.name!r} may serve, but no request is sent to site {site_name!r} "
                           f"(placement.inference is {s.placement.inference!r}, placement.fallback "
                           f"{s.placement.fallback!r}, and there are no routing rules)")
            else:
                message = f"pool {pool.name!r} may serve, but no routing rule names {name!r}"
            issues.append(SpecIssue(path, message, pool.roles, fix))
    return issues


def check_elastic_pools(s: Scenario) -> list[SpecIssue]:
    """Every elastic pool has something that grows it: training (at placement.training) or an
    autoscaler; nothing a user writes is silently ignored."""
    issues: list[SpecIssue] = []
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            if not pool.elastic or (pool.max_count or 0) <= pool.count:
                continue
            trains_here = s.placement.training == site_name and "training" in pool.roles
            if not trains_here and pool.autoscale is None:
                issues.append(SpecIssue(
                    f"sites.{site_name}.pools[{i}].elastic", f"elastic pool {pool.name!r} would never grow: only "
                    "training or an autoscaler provisions GPUs, and this pool has no autoscale and does not train "
                    f"(placement.training is {s.placement.training!r})", True,
                    "autoscale: {...} on a serving pool, a training pool at placement.training, or elastic: false"))
    return issues


# The fields a pool of kind api may set; every other field of `Pool` is about GPUs of ours.
API_POOL_FIELDS = frozenset({"name", "kind", "api", "rate_limit", "roles"})


def check_api_pools(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    """A managed API pool names a catalog API that serves the scenario's model, only serves,
    sits at a third-party site, and sets nothing that belongs to GPUs (count, gpu,
    tensor_parallel, autoscale, engine, pricing, ...): such a field could not take effect. A
    GPU pool names its gpu and count, and sets nothing that belongs to an API."""
    issues: list[SpecIssue] = []
    apis = sorted(catalog.apis)
    if s.model.service_time is not None and any(p.is_api for site in s.sites.values() for p in site.pools):
        issues.append(SpecIssue(
            "model.service_time", "a managed API pool answers with its own latency profile, per token; a plain "
            "service-time model counts no tokens, so the API's per-token time could not take effect",
            has_value=False, allowed="no service_time (the engine model), or no pool of kind api"))
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            path = f"sites.{site_name}.pools[{i}]"
            if not pool.is_api:
                issues += [SpecIssue(f"{path}.{key}", f"pool {pool.name!r} is a pool of GPUs (kind gpus); {key} is "
                                     "for a managed API", getattr(pool, key), "kind: api, or remove it")
                           for key in ("api", "rate_limit") if getattr(pool, key) is not None]
                missing = [key for key, absent in (("gpu", not pool.gpu), ("count", "count" not in pool.model_fields_set))
                           if absent]
                issues += [SpecIssue(f"{path}.{key}", f"a pool of GPUs (kind gpus) needs its {key}", has_value=False,
                                     allowed="a GPU id from the catalog" if key == "gpu" else "a number of GPUs")
                           for key in missing]
                continue
            # what differs from its default was written (a resolved scenario.yaml spells every default out)
            written = {key for key, field in type(pool).model_fields.items()
                       if getattr(pool, key) != field.get_default(call_default_factory=True)}
            for key in sorted(written - API_POOL_FIELDS):
                issues.append(SpecIssue(
                    f"{path}.{key}", f"pool {pool.name!r} is a managed API (kind api): it runs on the provider's "
                    f"capacity, not on GPUs of ours, so {key} cannot take effect", getattr(pool, key),
                    f"remove it (an API pool takes {', '.join(sorted(API_POOL_FIELDS))}), or kind: gpus"))
            if "training" in pool.roles:
                issues.append(SpecIssue(f"{path}.roles", f"pool {pool.name!r} is a managed API: it only serves "
                                        "(nothing of ours trains on it)", pool.roles, "[serving] (the default)"))
            if pool.api is None:
                issues.append(SpecIssue(f"{path}.api", "a managed API pool names its API", has_value=False,
                                        allowed=", ".join(apis)))
            elif pool.api not in catalog.apis:
                issues.append(SpecIssue(f"{path}.api", f"unknown API{suggest(pool.api, apis)}", pool.api,
                                        ", ".join(apis)))
            elif catalog.apis[pool.api].model != s.model.id:
                served = catalog.apis[pool.api].model
                issues.append(SpecIssue(
                    f"{path}.api", f"API {pool.api!r} serves {served}, but the scenario's model is {s.model.id}: "
                    "every pool of a scenario serves the same model", pool.api,
                    ", ".join(a for a in apis if catalog.apis[a].model == s.model.id) or "none in the catalog"))
            if site.zone != "third_party":
                issues.append(SpecIssue(
                    f"sites.{site_name}.zone", f"pool {pool.name!r} is a managed API: its site is the provider, a "
                    "third party (every prompt sent there is exposure)", site.zone, "third_party"))
    return issues


WEEK_S = 7 * 86400.0


def _periodic_firings(s: Scenario) -> list[tuple[str, Any, float, str]]:
    """Every periodic process and random-fault entry that runs: (field path, its value, about
    how many times it fires over the horizon, what to change it to)."""
    h, cap = s.horizon, MAX_PERIODIC_EVENTS

    def period(path: str, seconds: float) -> tuple[str, Any, float, str]:
        return (path, format_duration(seconds), h / seconds,
                f"a period of at least {format_duration(h / cap)}, or a shorter horizon")

    out: list[tuple[str, Any, float, str]] = [
        period(f"sites.{site_name}.pools[{i}].autoscale.interval", pool.autoscale.interval)
        for site_name, site in s.sites.items() for i, pool in enumerate(site.pools) if pool.autoscale is not None]
    life = s.lifecycle
    if s.placement.monitoring != NONE_SITE:
        out.append(period("lifecycle.monitor.interval", life.monitor.interval))
    if s.placement.training != NONE_SITE and life.retraining.policy in ("scheduled", "both"):
        out.append(period("lifecycle.retraining.every", life.retraining.every))
    development = life.development
    if s.placement.training != NONE_SITE and development is not None and development.arrivals == "poisson":
        out.append(("lifecycle.development.rate_per_week", development.rate_per_week,
                    development.rate_per_week * h / WEEK_S,
                    f"a rate of at most {cap * WEEK_S / h:.6g} per week, or a shorter horizon"))
    if life.vendor_updates is not None:
        out.append(period("lifecycle.vendor_updates.cadence", life.vendor_updates.cadence))
    faults = s.faults
    entries: list[tuple[str, ReplicaFailures | LinkOutage | SiteOutage, int]]
    entries = [(f"faults.replica_failures[{k}]", f, _fault_replicas(s, f.site, f.pool))
               for k, f in enumerate(faults.replica_failures)]
    entries += [(f"faults.link_outages[{k}]", f, 1) for k, f in enumerate(faults.link_outages)]
    entries += [(f"faults.site_outages[{k}]", f, 1) for k, f in enumerate(faults.site_outages)]
    for path, fault, copies in entries:
        if fault.mtbf is not None and fault.mttr is not None:
            # up and repair times alternate: one failure per mtbf + mttr, for each replica
            out.append((f"{path}.mtbf", format_duration(fault.mtbf), copies * h / (fault.mtbf + fault.mttr),
                        f"mtbf + mttr of at least {format_duration(copies * h / cap)}"
                        + (f" ({copies} replicas fail each on their own)" if copies > 1 else "")
                        + ", or a shorter horizon"))
    return out


def _fault_replicas(s: Scenario, site: str, pool: str | None) -> int:
    """How many replicas one replica-failure entry fails at random, each on its own."""
    from sim.spec.faults import pool_replicas, serving_pool_name

    name = pool or (serving_pool_name(s, site) if site in s.sites else None)
    if site not in s.sites or name not in [p.name for p in s.sites[site].pools]:
        return 1  # check_faults reports the name
    return max(pool_replicas(s, site, str(name)), 1)


def check_periodic_events(s: Scenario) -> list[SpecIssue]:
    """No periodic process or random-fault entry fires more than MAX_PERIODIC_EVENTS times
    over the horizon: each firing is simulated, and a period of a microsecond would run for
    ever (`sim.workload.limits.MAX_PERIODIC_EVENTS` says what one firing costs)."""
    return [SpecIssue(path, f"would fire about {firings:,.0f} times over the horizon "
                      f"({format_duration(s.horizon)}); at most {MAX_PERIODIC_EVENTS:,} per process, since each "
                      "firing is simulated", value, fix)
            for path, value, firings, fix in _periodic_firings(s) if firings > MAX_PERIODIC_EVENTS]


def check_scenario(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    issues = check_bounds(s) + check_sites_named(s) + check_catalog_ids(s, catalog) + check_api_pools(s, catalog)
    issues += check_data_classes(s) + check_traffic_classes(s) + check_files(s) + check_prices(s, catalog)
    issues += check_token_bounds(s)
    issues += check_monitor(s) + check_pool_billing_and_autoscale(s) + check_routing(s)
    if issues:  # the checks below assume names resolve
        return issues
    from sim.spec.faults import check_faults

    return (check_model_fits(s, catalog) + check_links(s) + check_training(s) + check_cloud_pools(s, catalog)
            + check_routes(s) + check_elastic_pools(s) + check_faults(s) + check_periodic_events(s))
