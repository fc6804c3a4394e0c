"""Capacity planning: the fewest GPUs of each type that meet the SLOs, ranked by what they cost.

The question: "how many GPUs of which type do we need for 40 req/s at p99 TTFT under 800 ms,
and what does each option cost?" `plan(scenario, rate_per_s, slos)` answers it for the
scenario's serving pool (the first pool with the `serving` role at the inference site):

1. For each candidate GPU type, the tensor-parallel degrees to try: the smallest that holds
   the model (`sim.catalog.sizing.smallest_fitting_tp`) and the next power of two, unless
   `tp_options` says otherwise.
2. A queueing bound skips hopeless sizes: a replica cannot serve more than its saturated
   throughput, estimated by a static batch of `max_num_seqs` average requests through the
   serving kernel (`sim.predict`), so fewer than rate / (capacity x HEADROOM) replicas
   cannot keep up. HEADROOM (1.5) covers what the estimate leaves out (prefix caching,
   length variety); the simulator then decides, and the size just below the bound is
   simulated too whenever the bound itself turns out feasible.
3. From the bound, the replica count grows in doubling steps until the SLOs hold, then
   bisection finds the fewest replicas between the last failing and the first passing
   count. Every probe is a real simulation of the scenario, shortened (`horizon`, default
   1 h after a 10 min warm-up) with overrides for the pool's GPU and count,
   `model.tensor_parallel` and the arrival process's rates, set so that its mean rate
   (`mean_rate_per_s`: a bursty process's quiet and burst rates scaled together) is the
   planned rate. This assumes the SLOs hold
   for every count above the answer (more replicas, less queueing: monotone).

A configuration meets an SLO such as `ttft_p99 < 0.8 s` when, in every replication, the 99th
percentile of TTFT over the steady-state requests is at most 0.8 s, counting requests that
never finished as infinitely slow (so an overloaded pool cannot pass by finishing few
requests); requests that arrive in the last `max(target)` seconds are left out, since they
had no time to finish. Options are ranked by `cost_usd_per_month` of the passing
configuration; the exposure score shows what the placement reveals to third parties.

`max_rate(scenario, slos)` answers the inverse: the highest arrival rate the scenario's own
configuration sustains within the SLOs (bisection on the rate, from an upper bound of
replicas x capacity x HEADROOM).

    >>> from sim.planning import plan
    >>> result = plan("scenarios/s1_local.yaml", 40, {"ttft_p99": 0.8, "e2e_p99": 20})  # doctest: +SKIP
    >>> result.best.gpu, result.best.gpus, result.simulations  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.metrics import latency
from sim.runner import executor
from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.scenario import MAX_GPUS_PER_POOL, MAX_REPLICATIONS
from sim.spec.units import UnitError, format_duration, parse_duration
from sim.workload.arrivals import processes_with_rate

if TYPE_CHECKING:
    from sim.result import Result
    from sim.spec.scenario import Scenario

DEFAULT_SLOS: dict[str, float] = {"ttft_p99": 0.8, "e2e_p99": 20.0}
DEFAULT_GPUS: tuple[str, ...] = ("l4", "l40s", "a100-80gb", "h100-sxm")
HEADROOM = 1.5  # the capacity estimate may be this much too pessimistic; see the module doc
SLO_METRICS = ("ttft", "tpot", "e2e")
SLO_PERCENTILES = (50, 90, 99)
MONTH_S = 30.44 * 86400.0


# ------------------------------------------------------------------------------------------
# SLOs
# ------------------------------------------------------------------------------------------

_SLO = re.compile(r"^\s*(?P<name>[A-Za-z0-9_]+)\s*(?P<op><=|<)\s*(?P<value>\S.*?)\s*$")
_SLO_ALLOWED = "metric_pNN<duration with metric ttft, tpot or e2e and NN 50, 90 or 99, e.g. ttft_p99<0.8s, tpot_p99<50ms"


def slo_names() -> list[str]:
    return [f"{m}_p{q}" for m in SLO_METRICS for q in SLO_PERCENTILES]


def _check_slo(name: str, target: Any, where: str, text: Any) -> tuple[tuple[str, float] | None, list[SpecIssue]]:
    if name not in slo_names():
        return None, [SpecIssue(where, f"unknown latency metric {name!r}{suggest(name, slo_names())}", text,
                                _SLO_ALLOWED)]
    try:
        seconds = parse_duration(target)
    except UnitError as exc:
        return None, [SpecIssue(where, str(exc).partition("; allowed: ")[0], text, _SLO_ALLOWED)]
    if not seconds > 0:
        return None, [SpecIssue(where, "a latency target must be positive", text, "a duration > 0, e.g. 800ms")]
    return (name, seconds), []


def parse_slo(text: str, where: str = "--slo") -> tuple[str, float]:
    """'ttft_p99<0.8s' -> ('ttft_p99', 0.8); a bare number is seconds; SpecError otherwise."""
    match = _SLO.match(text) if isinstance(text, str) else None
    if not match and isinstance(text, str) and ">" in text:
        raise SpecError([SpecIssue(where, "an SLO is an upper bound: write '<'", text, _SLO_ALLOWED)])
    if not match:
        raise SpecError([SpecIssue(where, "cannot read the SLO", text, _SLO_ALLOWED)])
    parsed, issues = _check_slo(match.group("name"), match.group("value"), where, text)
    if issues:
        raise SpecError(issues)
    assert parsed is not None
    return parsed


def parse_slos(slos: Mapping[str, Any] | Iterable[str] | None) -> dict[str, float]:
    """SLO strings ('e2e_p99<20s') or a mapping ({'e2e_p99': 20, 'ttft_p99': '800ms'}) -> seconds."""
    if slos is None:
        return dict(DEFAULT_SLOS)
    issues: list[SpecIssue] = []
    out: dict[str, float] = {}
    if isinstance(slos, Mapping):
        for name, target in slos.items():
            parsed, problems = _check_slo(str(name), target, f"slos.{name}", target)
            issues += problems
            if parsed:
                out[parsed[0]] = parsed[1]
    else:
        for text in slos:
            try:
                name, seconds = parse_slo(text)
                out[name] = seconds
            except SpecError as exc:
                issues += exc.issues
    if not out and not issues:
        issues.append(SpecIssue("--slo", "at least one SLO is needed", has_value=False, allowed=_SLO_ALLOWED))
    if issues:
        raise SpecError(issues)
    return out


def slo_percentiles(result: Result, slos: Mapping[str, float]) -> dict[str, float]:
    """Each SLO's percentile as the SLO verdict takes it (`sim.metrics.latency.slo_percentiles`:
    unfinished requests count as infinite; requests sent within max(targets) of the horizon
    are left out, as they had no time to finish)."""
    return latency.slo_percentiles(result.requests, result.scenario, slos)


# ------------------------------------------------------------------------------------------
# The scenario and its serving pool
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingPool:
    """Where the scenario's serving pool sits in the document, and what it holds."""

    path: str  # 'sites.premises.pools[0]'
    gpu: str
    count: int
    tp: int
    elastic_max: bool  # the pool has a max_count to keep in step with count
    priced: bool  # the pool names its own price (valid only for its own GPU)
    rate_per_unit: tuple[tuple[str, float], ...] = (("workload.arrivals.rate_per_s", 1.0),)  # fields at 1 req/s
    name: str = ""  # "site/pool"
    engine: str = "vllm"  # the pool's serving engine (its own, else the model's)


def _document(scenario: str | Path | Mapping[str, Any] | Scenario) -> tuple[dict[str, Any], str]:
    from sim.spec.loader import load_document
    from sim.spec.scenario import Scenario

    if isinstance(scenario, Scenario):
        return scenario.model_dump(mode="json"), scenario.source or scenario.name
    if isinstance(scenario, Mapping):
        return copy.deepcopy(dict(scenario)), "<scenario>"
    return load_document(scenario), str(scenario)


def _load(document: dict[str, Any], overrides: Sequence[str], source: str) -> Scenario:
    from sim.spec.loader import load_scenario

    try:
        return load_scenario(document, overrides)
    except SpecError as exc:
        raise exc.with_source(source) from None


def serving_pool(scenario: Scenario, name: str | None = None) -> ServingPool:
    """The pool a plan sizes: `name` ("site/pool", or a pool name that is unique), else the
    first serving pool at the inference site. Its GPUs per replica are its own (the pool's
    `tensor_parallel`, else the model's); the other pools stay as the scenario has them."""
    from sim.spec.routing import serving_pools

    pools = {key: (site, pool) for key, (site, pool) in serving_pools(scenario).items() if not pool.is_api}
    if name is None:
        inference = scenario.placement.inference
        key = next((k for k, (site, pool) in pools.items() if site == inference and pool.capacity > 0), None)
        if key is None:
            raise SpecError([SpecIssue(f"sites.{inference}.pools", "the inference site has no serving pool of GPUs",
                                       has_value=False, allowed="a pool with role 'serving', or --pool SITE/POOL")])
    else:
        matches = [k for k in pools if k == name or k.split("/", 1)[1] == name]
        if len(matches) != 1:
            why = "names more than one pool" if matches else f"not a serving pool of GPUs{suggest(name, pools)}"
            raise SpecError([SpecIssue("--pool", why, name, ", ".join(pools) or "none: the scenario has no serving "
                                       "pool of GPUs (a managed API is not sized)")])
        key = matches[0]
    site, pool = pools[key]
    index = scenario.sites[site].pools.index(pool)
    return ServingPool(f"sites.{site}.pools[{index}]", pool.gpu, pool.capacity, pool.tp(scenario.model),
                       pool.max_count is not None, pool.price_usd_per_gpu_hour is not None,
                       _rate_per_unit(scenario), key, pool.engine_of(scenario.model))


def _rate_of(scenario: Scenario) -> float:
    """The workload's mean rate over the horizon, every arrival stream together (the
    workload's and each traffic class's own): what a planned rate means."""
    total = 0.0
    for path, arrivals in scenario.arrival_streams():
        rate = arrivals.mean_rate_per_s(scenario.horizon)
        if rate is None or arrivals.mean_rate_overrides(rate, scenario.horizon) is None:
            raise SpecError([SpecIssue(f"{path}.process", "planning sets the arrival rate, and this "
                                       "arrival process has none", arrivals.process,
                                       f"{', '.join(processes_with_rate())} (they have a rate to set)")])
        total += float(rate)
    return total


def _rate_per_unit(scenario: Scenario) -> tuple[tuple[str, float], ...]:
    """The arrival fields planning sets (full paths), with their values for a mean rate of
    1 req/s in all: each stream keeps its share of the scenario's total."""
    total = _rate_of(scenario)  # a clear error for a process without a rate
    out: list[tuple[str, float]] = []
    for path, arrivals in scenario.arrival_streams():
        share = float(arrivals.mean_rate_per_s(scenario.horizon)) / total
        out += [(f"{path}.{field}", value)
                for field, value in (arrivals.mean_rate_overrides(share, scenario.horizon) or {}).items()]
    return tuple(out)


def configuration_overrides(pool: ServingPool, gpu: str, gpus: int, tp: int, rate_per_s: float) -> list[str]:
    """The overrides that put `gpus` x `gpu` (TP `tp`) in the serving pool at `rate_per_s`."""
    overrides = [f"{pool.path}.gpu={gpu}", f"{pool.path}.count={gpus}", f"{pool.path}.tensor_parallel={tp}",
                 *(f"{path}={per_unit * rate_per_s!r}" for path, per_unit in pool.rate_per_unit)]
    if pool.elastic_max:
        overrides.append(f"{pool.path}.max_count={gpus}")
    if pool.priced and gpu != pool.gpu:
        overrides.append(f"{pool.path}.price_usd_per_gpu_hour=null")  # that price was for another GPU
    return overrides


def replica_capacity_rps(scenario: Scenario, gpu: str, tp: int, engine: str | None = None) -> float | None:
    """Saturated requests/s of one replica, from a static batch of average requests (sim.predict),
    on `engine` (default: the model's).

    None when the kernel cannot say (a classic model, a model that does not fit).
    """
    from sim.predict import predict
    from sim.workload.requests import generate_requests

    catalog = scenario.resolved_catalog
    m = scenario.model
    if catalog.models[m.id].kind != "transformer" or m.service_time is not None:
        return None
    sample = generate_requests(scenario.workload, min(scenario.horizon, 600.0), scenario.seed, 0)
    if sample.count == 0:
        return None
    prompt = max(1, round(float(sample.prompt_tokens.mean())))
    output = max(1, round(float(sample.output_tokens.mean())))
    try:
        answer = predict(model=m.id, gpu=gpu, gpus=tp, precision=m.precision, input_tokens=prompt,
                         output_tokens=output, batch=m.serving.max_num_seqs,
                         max_model_len=max(m.serving.max_model_len, prompt + output),
                         engine=engine or m.engine, overrides=m.efficiency.profile_overrides(), catalog=catalog)
    except SpecError:
        return None
    rps = answer["requests_per_s"]
    return float(rps) if rps > 0 else None


# ------------------------------------------------------------------------------------------
# One configuration
# ------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One simulated configuration: does it meet the SLOs, and what does it cost?"""

    gpu: str
    tp: int
    gpus: int
    rate_per_s: float
    feasible: bool
    measured: dict[str, float]  # SLO name -> worst replication's percentile (s)
    cost_usd_per_month: float
    cost_usd_per_1m_requests: float
    exposure_score: float
    throughput_rps: float
    simulations: int
    wall_s: float

    @property
    def replicas(self) -> int:
        return self.gpus // self.tp


def _mean(values: Sequence[Any]) -> float:
    clean = [float(v) for v in values if v is not None]
    return float(np.mean(clean)) if clean else math.nan


def evaluate(
    scenario: str | Path | Mapping[str, Any] | Scenario,
    rate_per_s: float,
    slos: Mapping[str, Any] | Iterable[str] | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    tp: int | None = None,
    replications: int = 1,
    horizon: str | float = "1h",
    warmup: str | float = "10min",
    overrides: Sequence[str] = (),
) -> Probe:
    """Simulate one configuration (default: the scenario's own pool) at a rate; check the SLOs."""
    document, source = _document(scenario)
    targets = parse_slos(slos)
    base = _load(document, [*overrides, *_run_overrides(horizon, warmup)], source)
    pool = serving_pool(base)
    return _probe(document, [*overrides, *_run_overrides(horizon, warmup)], source, pool, gpu or pool.gpu,
                  tp or pool.tp, gpus or pool.count, rate_per_s, targets, replications)


def _run_overrides(horizon: str | float, warmup: str | float) -> list[str]:
    issues = []
    values = {}
    for name, value in (("horizon", horizon), ("warmup", warmup)):
        try:
            values[name] = parse_duration(value)
        except UnitError as exc:
            issues.append(SpecIssue(f"--{name}", str(exc).partition("; allowed: ")[0], value, "e.g. 1h, 30min"))
    if issues:
        raise SpecError(issues)
    return [f"horizon={values['horizon']!r}", f"warmup={values['warmup']!r}"]


def probe_label(gpu: str, tp: int, gpus: int, rate: float) -> str:
    """The folder label of one probe: GPU type, TP degree, GPUs and rate."""
    return f"{gpu}-tp{tp}-{gpus}gpus-{rate:.6g}rps"


def _probe(document: dict[str, Any], base_overrides: Sequence[str], source: str, pool: ServingPool, gpu: str,
           tp: int, gpus: int, rate: float, slos: Mapping[str, float], replications: int,
           out: Path | None = None) -> Probe:
    from sim.runner import point_folder, run_point

    started = time.perf_counter()
    scenario = _load(document, [*base_overrides, *configuration_overrides(pool, gpu, gpus, tp, rate)], source)
    worst: dict[str, float] = dict.fromkeys(slos, -math.inf)
    summaries = []
    label = probe_label(gpu, tp, gpus, rate)
    for k in range(replications):
        result = run_point(scenario, k, point_folder(out, label, k) if out is not None else None)
        for name, value in slo_percentiles(result, slos).items():
            worst[name] = max(worst[name], value) if not math.isnan(value) else math.inf
        summaries.append(result.summary)
    feasible = all(worst[name] <= target for name, target in slos.items())
    return Probe(
        gpu=gpu, tp=tp, gpus=gpus, rate_per_s=rate, feasible=feasible, measured=worst,
        cost_usd_per_month=_mean([s.get("cost_usd_per_month") for s in summaries]),
        cost_usd_per_1m_requests=_mean([s.get("cost_usd_per_1m_requests") for s in summaries]),
        exposure_score=_mean([s.get("exposure_score") for s in summaries]),
        throughput_rps=_mean([s.get("throughput_rps") for s in summaries]),
        simulations=replications, wall_s=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------


@dataclass
class PlanOption:
    """The fewest GPUs of one type (and TP degree) that meet the SLOs, or why there are none."""

    gpu: str
    tp: int
    feasible: bool
    gpus: int | None = None
    reason: str = ""
    capacity_rps: float | None = None  # estimated saturated requests/s of one replica
    bound_gpus: int | None = None  # the queueing bound: fewer GPUs cannot keep up
    chosen: Probe | None = None
    probes: list[Probe] = field(default_factory=list)

    @property
    def replicas(self) -> int | None:
        return None if self.gpus is None else self.gpus // self.tp

    @property
    def simulations(self) -> int:
        return sum(p.simulations for p in self.probes)

    @property
    def cost_usd_per_month(self) -> float:
        return self.chosen.cost_usd_per_month if self.chosen else math.nan

    def row(self) -> dict[str, Any]:
        chosen = self.chosen
        row: dict[str, Any] = {
            "gpu": self.gpu, "tp": self.tp, "gpus": self.gpus, "replicas": self.replicas, "feasible": self.feasible,
            "cost_usd_per_month": self.cost_usd_per_month,
            "cost_usd_per_1m_requests": chosen.cost_usd_per_1m_requests if chosen else math.nan,
            "exposure_score": chosen.exposure_score if chosen else math.nan,
            "throughput_rps": chosen.throughput_rps if chosen else math.nan,
            "bound_gpus": self.bound_gpus, "capacity_rps_per_replica": self.capacity_rps,
            "simulations": self.simulations, "reason": self.reason,
        }
        for name, value in (chosen.measured.items() if chosen else ()):
            row[f"{name}_s"] = value
        return row


@dataclass
class PlanResult:
    """Every option tried, cheapest feasible first; `simulations` counts every run."""

    scenario: str
    pool: str  # the pool sized, "site/pool" (the others as the scenario has them)
    rate_per_s: float
    slos: dict[str, float]
    horizon_s: float
    warmup_s: float
    max_gpus: int
    replications: int
    options: list[PlanOption]
    wall_s: float = 0.0

    @property
    def best(self) -> PlanOption | None:
        feasible = [o for o in self.options if o.feasible]
        return feasible[0] if feasible else None

    @property
    def simulations(self) -> int:
        return sum(o.simulations for o in self.options)

    @property
    def brute_force_simulations(self) -> int:
        """What simulating every size (tp, 2 tp, ... max_gpus) of every fitting option would take."""
        return sum(self.max_gpus // o.tp for o in self.options if o.reason != "does not fit") * self.replications

    def table(self) -> pd.DataFrame:
        """One row per option, ranked: feasible by cost per month, then the rest."""
        frame = pd.DataFrame([o.row() for o in self.options])
        frame.insert(0, "rank", [i + 1 if o.feasible else None for i, o in enumerate(self.options)])
        frame.insert(1, "pool", self.pool)
        frame["rank"] = frame["rank"].astype("Int64")
        return frame


def _tp_candidates(scenario: Scenario, gpu: str, tp_options: Sequence[int] | None,
                   max_gpus: int, engine_id: str | None = None) -> tuple[list[int], str]:
    from sim.catalog.sizing import replica_memory, smallest_fitting_tp

    catalog = scenario.resolved_catalog
    model = catalog.models[scenario.model.id]
    m = scenario.model
    if model.kind != "transformer":  # classic models: one GPU per replica is the only sensible size
        return list(tp_options or [1]), ""
    engine = catalog.engines[engine_id or m.engine]
    sizing: dict[str, Any] = {"gpu_memory_utilization": m.serving.gpu_memory_utilization, "max_model_len": m.serving.max_model_len,
              "kv_precision": m.serving.kv_cache_precision,
              "reserve_bytes": engine.reserve_bytes(m.serving.max_num_batched_tokens),
              "block_size": m.serving.block_size}
    if tp_options:
        fitting = [tp for tp in tp_options if replica_memory(model, catalog.gpus[gpu], m.precision, tp, **sizing).fits]
        return [tp for tp in fitting if tp <= max_gpus], "" if fitting else "does not fit"
    smallest = smallest_fitting_tp(model, catalog.gpus[gpu], m.precision, max_tp=max_gpus, **sizing)
    if smallest is None:
        return [], "does not fit"
    return [tp for tp in (smallest, 2 * smallest) if tp <= max_gpus], ""


def _check_plan_inputs(rate_per_s: float, gpus: Sequence[str], max_gpus: int, replications: int,
                       scenario: Scenario) -> None:
    catalog = scenario.resolved_catalog
    issues = []
    if not (isinstance(rate_per_s, int | float) and math.isfinite(rate_per_s) and rate_per_s > 0):
        issues.append(SpecIssue("--rate", "out of range", rate_per_s, "requests per second > 0"))
    for gpu in gpus:
        if gpu not in catalog.gpus:
            issues.append(SpecIssue("--gpus", f"unknown GPU id{suggest(gpu, catalog.gpus)}", gpu,
                                    ", ".join(sorted(catalog.gpus))))
    if not gpus:
        issues.append(SpecIssue("--gpus", "no GPU types to try", has_value=False, allowed="e.g. l4,l40s"))
    if not 1 <= max_gpus <= MAX_GPUS_PER_POOL:
        issues.append(SpecIssue("--max-gpus", "out of range", max_gpus, f"a whole number from 1 to {MAX_GPUS_PER_POOL:,}"))
    if not 1 <= replications <= MAX_REPLICATIONS:
        issues.append(SpecIssue("--replications", "out of range", replications,
                                f"a whole number from 1 to {MAX_REPLICATIONS}"))
    if issues:
        raise SpecError(issues)


def _base_scenario(scenario, overrides, horizon, warmup):  # noqa: ANN001, ANN202
    """The scenario as every probe starts from it: its document, source, the run overrides
    (user overrides, then the probe horizon and warm-up) and the loaded, checked scenario."""
    document, source = _document(scenario)
    base_overrides = [*overrides, *_run_overrides(horizon, warmup)]
    base = _load(document, base_overrides, source)
    _rate_of(base)  # fails early, with a clear error, if the workload has no rate to vary
    return document, source, base_overrides, base


def plan(
    scenario: str | Path | Mapping[str, Any] | Scenario,
    rate_per_s: float,
    slos: Mapping[str, Any] | Iterable[str] | None = None,
    gpus: Sequence[str] = DEFAULT_GPUS,
    max_gpus: int = 32,
    tp_options: Sequence[int] | None = None,
    replications: int = 1,
    horizon: str | float = "1h",
    warmup: str | float = "10min",
    overrides: Sequence[str] = (),
    workers: int | None = 1,
    on_progress: Callable[[int, int], None] | None = None,
    out: str | Path | None = None,
    pool: str | None = None,
) -> PlanResult:
    """The fewest GPUs of each type (and TP degree) meeting every SLO at `rate_per_s`, by cost.

    `slos`: {"ttft_p99": 0.8, "e2e_p99": "20s"} or strings like "tpot_p99<50ms" (default:
    ttft_p99 < 0.8 s and e2e_p99 < 20 s). `overrides` are --set overrides applied first.
    `workers` > 1 searches several options at once in separate processes (None: one per CPU);
    the answer does not depend on it. `on_progress(done, total)` counts options searched.
    With `out`, every simulation leaves its workspace in
    `out/runs/<gpu>-tp<k>-<n>gpus-<rate>rps/rep-<k>/` (`sim.runner`). `pool` ("site/pool")
    chooses the pool sized (`serving_pool`); every other pool keeps its configuration.
    """
    started = time.perf_counter()
    targets = parse_slos(slos)
    document, source, base_overrides, base = _base_scenario(scenario, overrides, horizon, warmup)
    gpus = list(gpus)
    _check_plan_inputs(rate_per_s, gpus, max_gpus, replications, base)
    sized = serving_pool(base, pool)
    jobs: list[tuple[str, int]] = []
    options: list[PlanOption] = []
    for gpu in gpus:
        tps, reason = _tp_candidates(base, gpu, tp_options, max_gpus, sized.engine)
        if not tps:
            options.append(PlanOption(gpu, (tp_options or [1])[0], False,
                                      reason=reason or f"one replica needs more than the {max_gpus} GPUs allowed"))
        jobs += [(gpu, tp) for tp in tps]
    folder = Path(out) if out is not None else None
    arguments = [(document, base_overrides, source, sized, gpu, tp, rate_per_s, targets, max_gpus, replications,
                  folder) for gpu, tp in jobs]
    run_with = executor(workers, len(jobs))
    if on_progress:
        on_progress(0, len(jobs))
    for done, (_, option) in enumerate(run_with.run(_plan_option_of, arguments), start=1):
        if isinstance(option, BaseException):
            raise option
        options.append(option)
        if on_progress:
            on_progress(done, len(jobs))
    options.sort(key=lambda o: (not o.feasible, o.cost_usd_per_month if o.feasible else math.inf,
                                gpus.index(o.gpu), o.tp))
    return PlanResult(base.name, sized.name, float(rate_per_s), targets, base.horizon, base.warmup, max_gpus, replications,
                      options, time.perf_counter() - started)


def _plan_option_of(arguments: tuple[Any, ...]) -> PlanOption:
    return _plan_option(*arguments)


def _plan_option(document: dict[str, Any], base_overrides: Sequence[str], source: str, pool: ServingPool,
                 gpu: str, tp: int, rate: float, slos: Mapping[str, float], max_gpus: int,
                 replications: int, out: Path | None = None) -> PlanOption:
    """Bound, then grow and bisect the replica count of one GPU type and TP degree."""
    base = _load(document, [*base_overrides, *configuration_overrides(pool, gpu, tp, tp, rate)], source)
    capacity = replica_capacity_rps(base, gpu, tp, pool.engine)
    most = max_gpus // tp
    least = max(1, math.ceil(rate / (capacity * HEADROOM))) if capacity else 1
    option = PlanOption(gpu, tp, False, capacity_rps=capacity, bound_gpus=least * tp)
    if least > most:
        option.reason = (f"needs at least {least * tp} GPUs ({least} replicas of ~{capacity:.3g} req/s), "
                         f"more than the {max_gpus} allowed")
        return option
    seen: dict[int, Probe] = {}

    def passes(replicas: int) -> bool:
        if replicas not in seen:
            probe = _probe(document, base_overrides, source, pool, gpu, tp, replicas * tp, rate, slos, replications,
                           out)
            seen[replicas] = probe
            option.probes.append(probe)
        return seen[replicas].feasible

    answer = fewest_passing(passes, least, most)
    if answer is None:
        worst = seen.get(most)
        detail = ", ".join(f"{k} {format_duration(v) if math.isfinite(v) else 'unfinished'}"
                           for k, v in (worst.measured.items() if worst else ()))
        option.reason = f"misses the SLOs at {most * tp} GPUs, the most allowed ({detail})"
        return option
    option.feasible, option.gpus, option.chosen = True, answer * tp, seen[answer]
    return option


def fewest_passing(passes: Callable[[int], bool], least: int, most: int) -> int | None:
    """The smallest n in [1, most] with passes(n), assuming passes is monotone and n >= least.

    Starts at the bound `least`; if that passes, checks least - 1 (the bound is an estimate)
    and bisects below when it passes too. Otherwise grows in doubling steps to the first
    passing count, then bisects between it and the last failing one.
    """
    if passes(least):
        if least > 1 and passes(least - 1):
            return _bisect(passes, 0, least - 1)
        return least
    low, step = least, max(1, math.ceil(least / 2))
    while low < most:
        high = min(most, low + step)
        if passes(high):
            return _bisect(passes, low, high)
        low, step = high, step * 2
    return None


def _bisect(passes: Callable[[int], bool], low: int, high: int) -> int:
    """Smallest passing n in (low, high], given that high passes and low (or 0) does not."""
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return high


# ------------------------------------------------------------------------------------------
# The inverse question: the highest rate a configuration sustains
# ------------------------------------------------------------------------------------------


@dataclass
class MaxRateResult:
    scenario: str
    pool: str  # the pool whose configuration is held, "site/pool"
    gpu: str
    gpus: int
    tp: int
    slos: dict[str, float]
    rate_per_s: float  # the highest rate found that meets every SLO (0 if none did)
    upper_rate_per_s: float  # the lowest rate found that misses one (inf if none did)
    capacity_rps: float | None
    chosen: Probe | None
    probes: list[Probe]
    wall_s: float = 0.0

    @property
    def simulations(self) -> int:
        return sum(p.simulations for p in self.probes)


def max_rate(
    scenario: str | Path | Mapping[str, Any] | Scenario,
    slos: Mapping[str, Any] | Iterable[str] | None = None,
    replications: int = 1,
    horizon: str | float = "1h",
    warmup: str | float = "10min",
    overrides: Sequence[str] = (),
    tolerance: float = 0.05,
    rate_high: float | None = None,
    out: str | Path | None = None,
    pool_name: str | None = None,
) -> MaxRateResult:
    """The highest arrival rate the scenario's serving pool sustains within every SLO.

    Bisection on the rate between 0 and an upper bound (replicas x estimated capacity x
    HEADROOM, doubled while it still passes), until the bracket is within `tolerance` of its
    upper end. With `out`, every simulation leaves its workspace there (as `plan`). `pool_name`:
    the pool ("site/pool") whose configuration is held and reported (as `plan`; the others run as they are).
    """
    started = time.perf_counter()
    targets = parse_slos(slos)
    document, source, base_overrides, base = _base_scenario(scenario, overrides, horizon, warmup)
    if not 0 < tolerance < 1:
        raise SpecError([SpecIssue("tolerance", "out of range", tolerance, "a fraction between 0 and 1")])
    pool = serving_pool(base, pool_name)
    capacity = replica_capacity_rps(base, pool.gpu, pool.tp, pool.engine)
    replicas = max(1, pool.count // pool.tp)
    high = rate_high or (replicas * capacity * HEADROOM if capacity else 10.0 * _rate_of(base))
    probes: list[Probe] = []

    def probe(rate: float) -> Probe:
        p = _probe(document, base_overrides, source, pool, pool.gpu, pool.tp, pool.count, rate, targets,
                   replications, Path(out) if out is not None else None)
        probes.append(p)
        return p

    low, best = 0.0, None
    top = probe(high)
    for _ in range(4):  # the bound was too low: widen it
        if not top.feasible:
            break
        low, best, high = high, top, high * 2
        top = probe(high)
    if top.feasible:
        return MaxRateResult(base.name, pool.name, pool.gpu, pool.count, pool.tp, targets, high, math.inf, capacity, top,
                             probes, time.perf_counter() - started)
    while high - low > tolerance * high:
        middle = (low + high) / 2
        p = probe(middle)
        if p.feasible:
            low, best = middle, p
        else:
            high = middle
    return MaxRateResult(base.name, pool.name, pool.gpu, pool.count, pool.tp, targets, low, high, capacity, best, probes,
                         time.perf_counter() - started)
