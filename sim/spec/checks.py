"""Checks that look at more than one field, or at the catalog.

Pydantic checks each value on its own; these checks ask whether the scenario as a whole can
run: that placement names sites that exist, that the GPUs and the model are in the catalog,
that the model fits the GPUs that serve it, that sites which must exchange data are linked,
and that training has GPUs where it is placed. Each returns `SpecIssue`s with the path of the
field a user should change and what they may change it to.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sim.catalog import Catalog
from sim.catalog.sizing import DEFAULT_RESERVE_BYTES, replica_memory, smallest_fitting_tp
from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.files import MAX_TRACE_BYTES, check_file
from sim.spec.scenario import NONE_SITE, Scenario
from sim.spec.units import format_bytes, format_duration


def _site_issue(path: str, name: str, sites: list[str], optional: bool) -> SpecIssue:
    options = [*sites, NONE_SITE] if optional else sites
    return SpecIssue(path, f"no site named {name!r}{suggest(name, options)}", name, ", ".join(options))


def check_sites_named(s: Scenario) -> list[SpecIssue]:
    sites = list(s.sites)
    issues: list[SpecIssue] = []
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
            if pool.gpu not in catalog.gpus:
                issues.append(SpecIssue(
                    f"sites.{site_name}.pools[{i}].gpu",
                    f"unknown GPU id{suggest(pool.gpu, gpus)}", pool.gpu, ", ".join(gpus)))
    if s.model.id not in catalog.models:
        models = sorted(catalog.models)
        issues.append(SpecIssue("model.id", f"unknown model id{suggest(s.model.id, models)}",
                                s.model.id, ", ".join(models)))
    if s.model.engine not in catalog.engines:
        engines = sorted(catalog.engines)
        issues.append(SpecIssue("model.engine", f"unknown engine{suggest(s.model.engine, engines)}",
                                s.model.engine, ", ".join(engines)))
    return issues


def check_model_fits(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    """Every pool that serves must hold a replica: weights, plus KV for one max-length sequence."""
    issues: list[SpecIssue] = []
    model = catalog.models.get(s.model.id)
    if model is None or s.placement.inference not in s.sites:
        return issues
    tp = s.model.tensor_parallel
    serving = s.model.serving
    site = s.sites[s.placement.inference]
    serving_pools = [(i, p) for i, p in enumerate(site.pools) if "serving" in p.roles]
    if not serving_pools or all(p.capacity == 0 for _, p in serving_pools):
        issues.append(SpecIssue(
            f"sites.{s.placement.inference}.pools",
            f"placement.inference is {s.placement.inference!r}, but that site has no GPUs for serving",
            has_value=False,
            allowed="a pool with count >= 1 (or elastic with max_count >= 1) and role 'serving'"))
        return issues
    for i, pool in serving_pools:
        gpu = catalog.gpus.get(pool.gpu)
        if gpu is None:
            continue
        path = f"sites.{s.placement.inference}.pools[{i}]"
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
                pool.capacity, f"a value >= {tp}, or a smaller model.tensor_parallel"))
            continue
        if pool.count % tp or pool.capacity % tp:
            issues.append(SpecIssue(
                f"{path}.count", f"GPUs are grouped into replicas of tensor_parallel={tp}", pool.count,
                f"a multiple of {tp}"))
        engine = catalog.engines.get(s.model.engine)
        reserve = engine.reserve_bytes(serving.max_num_batched_tokens) if engine else DEFAULT_RESERVE_BYTES
        memory = replica_memory(
            model, gpu, s.model.precision, tp, serving.gpu_memory_utilization,
            serving.max_model_len, serving.kv_cache_precision, reserve, serving.block_size)
        if not memory.fits:
            need_tp = smallest_fitting_tp(
                model, gpu, s.model.precision, gpu_memory_utilization=serving.gpu_memory_utilization,
                max_model_len=serving.max_model_len, kv_precision=serving.kv_cache_precision,
                reserve_bytes=reserve, block_size=serving.block_size)
            hint = f"model.tensor_parallel >= {need_tp}" if need_tp else "a GPU with more memory"
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
        tp = s.model.tensor_parallel
        pool_gpus = next(p.count for p in site.pools if "training" in p.roles and "serving" in p.roles)
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
    issues: list[SpecIssue] = []
    for site_name, site in s.sites.items():
        for i, pool in enumerate(site.pools):
            path = f"sites.{site_name}.pools[{i}]"
            if pool.elastic and site.zone == "private":
                issues.append(SpecIssue(
                    f"{path}.elastic", "premises pools cannot grow on demand", True,
                    "elastic: true only at third_party sites"))
            gpu = catalog.gpus.get(pool.gpu)
            if site.zone != "third_party" or gpu is None or pool.price_usd_per_gpu_hour is not None:
                continue
            prices = [c for c in gpu.cloud_prices if site.provider in (None, c.provider)]
            if not any(c.pricing == pool.pricing for c in prices):
                known = sorted({f"{c.provider}/{c.pricing}" for c in gpu.cloud_prices}) or ["none"]
                issues.append(SpecIssue(
                    f"{path}.price_usd_per_gpu_hour",
                    f"the catalog has no {pool.pricing} price for {pool.gpu} at provider {site.provider!r}",
                    has_value=False,
                    allowed=f"set price_usd_per_gpu_hour, or a provider/pricing the catalog has: {', '.join(known)}"))
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


def check_data_classes(s: Scenario) -> list[SpecIssue]:
    classes = sorted(s.privacy.data_classes)
    issues = []
    for path, name in (("workload.data_class", s.workload.data_class),
                       ("workload.response_data_class", s.workload.response_data_class)):
        if name not in s.privacy.data_classes:
            issues.append(SpecIssue(path, f"unknown data class{suggest(name, classes)}", name,
                                    f"{', '.join(classes)}, or a class added under privacy.data_classes"))
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
    return issues + ([signal] if signal is not None else [])


def check_serving_pools(s: Scenario) -> list[SpecIssue]:
    """Every pool that may serve must be able to receive requests, and every elastic pool
    must have something that grows it: nothing a user writes is silently ignored.

    Requests go to the first serving pool at `placement.inference` (and, while the path to it
    is cut, to the first serving pool at `placement.fallback`); until routing rules exist a
    second serving pool at a site, or one at a site nothing routes to, would never serve.
    An elastic pool grows only for training (the training queue provisions it); serving
    replicas never scale.
    """
    issues: list[SpecIssue] = []
    routed = {s.placement.inference, s.placement.fallback} - {NONE_SITE}
    for site_name, site in s.sites.items():
        seen_serving = False
        for i, pool in enumerate(site.pools):
            path = f"sites.{site_name}.pools[{i}]"
            if "serving" in pool.roles and pool.capacity > 0:
                if site_name not in routed:
                    issues.append(SpecIssue(f"{path}.roles", f"pool {pool.name!r} may serve, but no request is sent "
                                            f"to site {site_name!r} (placement.inference is {s.placement.inference!r})",
                                            pool.roles, "roles [training] for a training pool, or remove the pool"))
                elif seen_serving:
                    issues.append(SpecIssue(f"{path}.roles", f"pool {pool.name!r} would never serve: requests at "
                                            f"{site_name!r} go to its first serving pool", pool.roles,
                                            "one serving pool per site (routing between pools is not supported "
                                            "yet), or roles [training]"))
                seen_serving = True
            if pool.elastic and (pool.max_count or 0) > pool.count:
                trains_here = s.placement.training == site_name and "training" in pool.roles
                if not trains_here:
                    issues.append(SpecIssue(f"{path}.elastic", f"elastic pool {pool.name!r} would never grow: only "
                                            "training provisions GPUs, and this pool does not train "
                                            f"(placement.training is {s.placement.training!r})", True,
                                            "elastic: false, or a training pool at placement.training"))
    return issues


def check_scenario(s: Scenario, catalog: Catalog) -> list[SpecIssue]:
    issues = check_bounds(s) + check_sites_named(s) + check_catalog_ids(s, catalog)
    issues += check_data_classes(s) + check_files(s) + check_prices(s, catalog) + check_monitor(s)
    if issues:  # the checks below assume names resolve
        return issues
    from sim.spec.faults import check_faults

    return (check_model_fits(s, catalog) + check_links(s) + check_training(s) + check_cloud_pools(s, catalog)
            + check_serving_pools(s) + check_faults(s))
