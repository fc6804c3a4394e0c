"""Decision support: which placement, right-sized, meets the SLOs and the rules at the lowest cost,
and what would change that answer.

`decide(scenarios, requires=..., weights=..., ...)` takes candidate placements (scenario files)
through five steps:

1. **Right-size** (`right_size`). A candidate's *knobs* are the sizes of its serving pools: a
   pool's GPU count, or an autoscaled pool's `max_replicas`. They are searched by simulation
   at the workload's peak: every arrival process replaced by a Poisson process at its
   `peak_rate_per_s` for `sizing_horizon` after `sizing_warmup`, and a size passes when every
   SLO (each traffic class's) holds. From the written sizes, all knobs grow (doubling) until
   the SLOs hold; then each knob in turn is bisected down to the fewest replicas that still
   hold them, the others fixed. The answer is *minimal*: no pool can lose a replica and still
   pass (this assumes more replicas never hurt). An autoscaled pool keeps its `min_replicas`
   (the warm capacity chosen) and its `max_replicas` stays above it. `headroom=1` then adds
   one replica to each sized pool (N+1). `pins` fix a pool's size instead. A pool that also trains keeps enough
   GPUs for the training job plus one serving replica.
2. **Evaluate** the right-sized candidates over their own horizon, `replications` times with
   common random numbers (as `sim.compare`), which also checks the peak sizing against the
   whole day: a candidate whose SLO verdict fails in a replication breaks the rule `slo`.
3. **Constraints**: `requires` such as `exposure_score==0`, `recovery_time_s<6h` or
   `ttft_p99_s<0.8s`, over the replications' mean of a summary field (`recovery_time_s` of a
   run that never recovered is infinite). A candidate breaking one is infeasible and listed
   with the rules it broke.
4. **Ranking** of the feasible candidates by `weights` over the criteria (`CRITERIA`, all
   lower-is-better quantities with a true zero: dollars, seconds, records, kWh). Each
   criterion is divided by its largest value on the *Pareto set* of the feasible candidates
   (n = x / max; where that max is 0, n is 0 at 0 and 1 above), and score = 1 -
   sum(w n) / sum(w): 1 would be free, instant, private and always current. Dividing keeps
   the size of a difference (twice the cost weighs twice) and makes units irrelevant (a
   change of unit scales x and max alike); taking the max over the Pareto set means adding a
   dominated candidate never reorders the others. A score's interval comes from the
   replications: each replication's criteria go through the same normalisation.
5. **Sensitivity** (`SENSITIVITY_INPUTS`, ranges from `sim/catalog/sensitivity.yaml` or a file):
   one input at a time set to its low and its high value for every candidate, replication 0.
   Inputs that only change prices (server and GPU prices, cloud discount, energy price, PUE)
   re-price the same simulated runs (cost is linear in them); the others (traffic, WAN RTT,
   label fraction) are simulated again. The *margin* is the top choice's score minus the best
   other feasible score; where it changes sign inside the range, the value where the top choice
   flips is found by bisection (20 steps on re-priced runs, 4 on simulated ones) and
   confirmed by direct runs on both sides of it: for a price-only input, the top choice and
   its rival simulated with the input set 1% of the range either side; a simulated input's
   bisection already simulates every candidate at each value it tries.

    >>> import sim
    >>> decision = sim.decide(["scenarios/s1_local.yaml", "scenarios/s2_cloud_training.yaml"],
    ...                       requires=["exposure_score==0"], sensitivity=False)  # doctest: +SKIP
    >>> decision.top  # doctest: +SKIP
    's1_local'
"""

from __future__ import annotations

import copy
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.units import UnitError, parse_duration

if TYPE_CHECKING:
    from sim.experiment import Comparison, RunDigest
    from sim.record import RunRecord
    from sim.result import Result
    from sim.runner import Executor
    from sim.spec.scenario import Scenario

DAY_S = 86400.0
SENSITIVITY_FILE = Path(__file__).parent / "catalog" / "sensitivity.yaml"


# ------------------------------------------------------------------------------------------
# Criteria and weights
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    """One axis of the ranking: a value per run, lower is better."""

    name: str
    label: str
    unit: str
    value: Callable[[Mapping[str, Any], Scenario], float]


def _field(name: str) -> Callable[[Mapping[str, Any], Scenario], float]:
    def value(summary: Mapping[str, Any], scenario: Scenario) -> float:
        v = summary.get(name)
        return math.inf if v is None else float(v)
    return value


def cost_per_day(summary: Mapping[str, Any], scenario: Scenario) -> float:
    """USD per simulated day: the run's cost over its horizon, scaled to 24 h."""
    return float(summary["cost_usd"]) * DAY_S / scenario.horizon


def recovery_for_ranking(summary: Mapping[str, Any], scenario: Scenario) -> float:
    """Recovery time; 0 without drift; a run that never recovered counts the whole time it was
    watched after the first drift (horizon - onset: a lower bound on the truth)."""
    if not scenario.lifecycle.drift:
        return 0.0
    value = summary.get("recovery_time_s")
    if value is not None:
        return float(value)
    onset = min(event.at for event in scenario.lifecycle.drift)
    return max(0.0, scenario.horizon - onset)


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("cost", "cost per day", "USD", cost_per_day),
    Criterion("ttft_p99", "TTFT p99", "s", _field("ttft_p99_s")),
    Criterion("e2e_p99", "E2E p99", "s", _field("e2e_p99_s")),
    Criterion("exposure", "exposure score", "", _field("exposure_score")),
    Criterion("recovery", "drift recovery", "s", recovery_for_ranking),
    Criterion("energy", "energy", "kWh", _field("energy_kwh")),
)}
DEFAULT_WEIGHTS: dict[str, float] = {"cost": 0.5, "ttft_p99": 0.2, "exposure": 0.2, "recovery": 0.1}
"""Cost first; latency and privacy next; recovery last (it matters only when drift happens)."""


def parse_weights(weights: Mapping[str, float] | Iterable[str] | None) -> dict[str, float]:
    """{'cost': 0.5} or ['cost=0.5', ...] -> weights (the defaults when None). Weights need not
    sum to 1; a criterion left out has no weight."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    pairs: list[tuple[str, Any, str]] = []
    if isinstance(weights, Mapping):
        pairs = [(str(k), v, f"{k}={v}") for k, v in weights.items()]
    else:
        for text in weights:
            name, sep, value = str(text).partition("=")
            pairs.append((name.strip(), value.strip() if sep else None, str(text)))
    allowed = f"NAME=WEIGHT with NAME one of {', '.join(CRITERIA)} and WEIGHT >= 0, e.g. cost=0.5"
    issues, out = [], {}
    for name, value, text in pairs:
        if name not in CRITERIA:
            issues.append(SpecIssue("--weight", f"unknown criterion {name!r}{suggest(name, CRITERIA)}", text, allowed))
            continue
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            issues.append(SpecIssue("--weight", "a weight is a number >= 0", text, allowed))
            continue
        out[name] = number
    if not issues and not any(v > 0 for v in out.values()):
        issues.append(SpecIssue("--weight", "at least one weight must be above 0", ", ".join(p[2] for p in pairs),
                                allowed))
    if issues:
        raise SpecError(issues)
    return out


# ------------------------------------------------------------------------------------------
# Constraints
# ------------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}
_RULE = re.compile(r"^\s*(?P<field>[A-Za-z0-9_.\-/]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S.*?)\s*$")
_RULE_ALLOWED = ("FIELD OP VALUE with OP one of < <= > >= == != and FIELD a summary field, "
                 "e.g. exposure_score==0, recovery_time_s<6h, ttft_p99_s<0.8s, cost_per_day<100")


@dataclass(frozen=True)
class Rule:
    """A hard constraint on one summary field (mean over the replications)."""

    text: str
    field: str
    op: str
    value: float

    def holds(self, measured: float | None) -> bool:
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            return False
        return _OPS[self.op](float(measured), self.value)


def _rule_value(field_name: str, text: str) -> float:
    """A rule's value: a duration for *_s fields ('6h', '800ms'), a share for '%', else a number."""
    text = text.strip().lstrip("$").replace(",", "")
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    if field_name.endswith("_s"):
        return parse_duration(text)
    return float(text)


def parse_rules(requires: Iterable[str]) -> list[Rule]:
    """'exposure_score==0' -> Rule; field names are checked against the runs later."""
    rules, issues = [], []
    for text in requires:
        match = _RULE.match(text) if isinstance(text, str) else None
        if not match:
            issues.append(SpecIssue("--require", "cannot read the rule", text, _RULE_ALLOWED))
            continue
        try:
            value = _rule_value(match.group("field"), match.group("value"))
        except (ValueError, UnitError) as exc:
            issues.append(SpecIssue("--require", f"cannot read the value ({exc})", text, _RULE_ALLOWED))
            continue
        if not math.isfinite(value):
            issues.append(SpecIssue("--require", "the value must be finite", text, _RULE_ALLOWED))
            continue
        rules.append(Rule(text, match.group("field"), match.group("op"), value))
    if issues:
        raise SpecError(issues)
    return rules


def rule_fields(summary: Mapping[str, Any], scenario: Scenario) -> dict[str, float | None]:
    """What a rule may name: every scalar of the flattened summary, plus `cost_per_day`."""
    from sim.experiment import flat_summary

    values: dict[str, float | None] = dict(flat_summary(dict(summary)))
    values["cost_per_day"] = cost_per_day(summary, scenario)
    if values.get("recovery_time_s") is None and scenario.lifecycle.drift:
        values["recovery_time_s"] = math.inf  # never recovered: slower than any bound
    return values


def check_rule_fields(rules: Sequence[Rule], fields: Iterable[str]) -> None:
    known = set(fields)
    issues = [SpecIssue("--require", f"no summary field {rule.field!r}{suggest(rule.field, sorted(known))}",
                        rule.text, "a field of summary.json (nested ones with dots), or cost_per_day")
              for rule in rules if rule.field not in known]
    if issues:
        raise SpecError(issues)


# ------------------------------------------------------------------------------------------
# Knobs: the pool sizes right-sizing may change
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    """One size right-sizing searches, in replicas: a pool's GPU count (`count`), or an
    autoscaled pool's most replicas (`max_replicas`)."""

    pool: str  # 'premises/gpus'
    site: str
    index: int
    kind: str  # 'count' | 'max_replicas'
    tp: int  # GPUs per replica
    floor: int  # fewest replicas allowed
    written: int  # replicas as the scenario has them
    elastic_max: bool  # a count knob of an elastic pool: keep max_count in step

    def overrides(self, replicas: int, scenario: Scenario) -> list[str]:
        path = f"sites.{self.site}.pools[{self.index}]"
        if self.kind == "count":
            out = [f"{path}.count={replicas * self.tp}"]
            if self.elastic_max:
                out.append(f"{path}.max_count={replicas * self.tp}")
            return out
        pool = scenario.sites[self.site].pools[self.index]
        assert pool.autoscale is not None
        out = [f"{path}.autoscale.max_replicas={replicas}",
               f"{path}.autoscale.min_replicas={min(pool.autoscale.min_replicas, replicas)}"]
        if pool.elastic:
            out.append(f"{path}.max_count={max(replicas * self.tp, pool.count)}")
        return out

    def describe(self, replicas: int) -> str:
        if self.kind == "count":
            return f"{self.pool}: {replicas * self.tp} GPUs" + (f" ({replicas} x TP{self.tp})" if self.tp > 1 else "")
        return f"{self.pool}: autoscaled, at most {replicas} replicas"


def knobs_of(scenario: Scenario) -> list[Knob]:
    """The serving pools' sizes, in the order the scenario lists its sites and pools."""
    from sim.spec.routing import serving_pool_names

    serving = set(serving_pool_names(scenario))
    out = []
    for site_name, site in scenario.sites.items():
        for i, pool in enumerate(site.pools):
            name = f"{site_name}/{pool.name}"
            if name not in serving or pool.kind == "api":  # a managed API has no size of ours to choose
                continue
            tp = pool.tp(scenario.model)
            if pool.autoscale is not None:
                out.append(Knob(name, site_name, i, "max_replicas", tp, pool.autoscale.min_replicas + 1,
                                pool.autoscale.max_replicas, False))
                continue
            floor = 1
            if "training" in pool.roles and scenario.placement.training == site_name:
                floor = math.ceil(scenario.lifecycle.retraining.gpus / tp) + 1  # the job, and one replica serving
            out.append(Knob(name, site_name, i, "count", tp, floor, max(1, pool.count // tp),
                            pool.elastic and pool.max_count is not None))
    return out


def parse_pins(pins: Iterable[str], names: Sequence[str]) -> dict[str, dict[str, int]]:
    """'[SCENARIO:]SITE/POOL=N' -> {scenario or '*': {pool: N}} (N: GPUs of a fixed pool, most
    replicas of an autoscaled one)."""
    allowed = "[SCENARIO:]SITE/POOL=N, e.g. s1_local:premises/gpus=2 or premises/gpus=2"
    out: dict[str, dict[str, int]] = {}
    issues = []
    for text in pins:
        target, sep, value = str(text).partition("=")
        scenario, colon, pool = target.strip().rpartition(":")
        scenario = scenario if colon else "*"
        try:
            n = int(value)
        except ValueError:
            n = -1
        if not sep or "/" not in pool or n < 0:
            issues.append(SpecIssue("--pin", "cannot read the pin", text, allowed))
            continue
        if scenario != "*" and scenario not in names:
            issues.append(SpecIssue("--pin", f"no candidate named {scenario!r}{suggest(scenario, names)}", text,
                                    ", ".join(names)))
            continue
        out.setdefault(scenario, {})[pool.strip()] = n
    if issues:
        raise SpecError(issues)
    return out


# ------------------------------------------------------------------------------------------
# Right-sizing
# ------------------------------------------------------------------------------------------


def peak_overrides(scenario: Scenario) -> list[str] | None:
    """Overrides that replace every arrival process by Poisson at its peak rate; None when one
    has no peak known ahead (a trace, a closed loop): such a workload is sized as it is."""
    out = []
    for path, process in scenario.arrival_streams():
        peak = process.peak_rate_per_s(scenario.horizon)
        if peak is None or peak <= 0:
            return None
        out.append(f"{path}={{process: poisson, rate_per_s: {peak!r}}}")
    return out


def slo_holds(summary: Mapping[str, Any]) -> bool:
    """Every traffic class met its SLO (unfinished requests count as misses)."""
    classes = summary.get("classes") or {}
    verdicts = [c.get("slo_met") for c in classes.values()]
    if not verdicts:
        verdicts = [all(check["met"] for check in (summary.get("slo") or {}).values())]
    return all(v is not False for v in verdicts)


@dataclass
class SizingProbe:
    sizes: dict[str, int]  # pool -> replicas
    feasible: bool
    cost_per_day: float
    wall_s: float


@dataclass
class Sizing:
    """The right-sized pools of one candidate, and how they were found."""

    scenario: str
    knobs: list[Knob]
    sizes: dict[str, int]  # pool -> replicas (knob units)
    feasible: bool
    reason: str = ""
    pinned: dict[str, int] = field(default_factory=dict)
    probes: list[SizingProbe] = field(default_factory=list)
    headroom: int = 0

    def overrides(self, scenario: Scenario) -> list[str]:
        return [o for k in self.knobs for o in k.overrides(self.sizes[k.pool], scenario)]

    def describe(self) -> list[str]:
        return [k.describe(self.sizes[k.pool]) + (" (pinned)" if k.pool in self.pinned else "") for k in self.knobs]

    @property
    def simulations(self) -> int:
        return len(self.probes)


@dataclass(frozen=True)
class Candidate:
    """A scenario as decide starts from it: its document, where it came from, its overrides."""

    name: str
    source: str
    document: dict[str, Any]
    overrides: tuple[str, ...]

    def load(self, extra: Sequence[str] = ()) -> Scenario:
        from sim.spec.loader import load_scenario

        try:
            return load_scenario(self.document, [*self.overrides, *extra])
        except SpecError as exc:
            raise exc.with_source(self.source) from None


def right_size(candidate: Candidate, pins: Mapping[str, int] | None = None, headroom: int = 0,
               sizing_horizon: float = 3600.0, sizing_warmup: float = 600.0, max_growth: int = 4) -> Sizing:
    """The fewest replicas of each serving pool that meet every SLO at the workload's peak (see
    the module doc); pinned pools keep the size given (GPUs, or most replicas if autoscaled)."""
    from sim.runner import run_point

    base = candidate.load()
    knobs = knobs_of(base)
    pins = dict(pins or {})
    unknown = sorted(set(pins) - {k.pool for k in knobs})
    if unknown:
        raise SpecError([SpecIssue("--pin", f"{candidate.name} has no serving pool {p!r}"
                                   f"{suggest(p, [k.pool for k in knobs])}", p,
                                   ", ".join(k.pool for k in knobs) or "no serving pool to size") for p in unknown])
    sizes = {k.pool: k.written for k in knobs}
    pinned = {}
    for k in knobs:
        if k.pool in pins:
            n = pins[k.pool]
            pinned[k.pool] = n
            sizes[k.pool] = max(1, n // k.tp) if k.kind == "count" else n
    free = [k for k in knobs if k.pool not in pinned]
    sizing = Sizing(candidate.name, knobs, dict(sizes), True, pinned=pinned, headroom=headroom)
    if not free:
        return sizing
    peak = peak_overrides(base)
    run_overrides = [*(peak or []), f"horizon={sizing_horizon!r}", f"warmup={sizing_warmup!r}"] if peak else []
    seen: dict[tuple[int, ...], SizingProbe] = {}

    def passes(trial: Mapping[str, int]) -> bool:
        key = tuple(trial[k.pool] for k in knobs)
        if key not in seen:
            started = time.perf_counter()
            overrides = [o for k in knobs for o in k.overrides(trial[k.pool], base)]
            scenario = candidate.load([*overrides, *run_overrides])
            summary = run_point(scenario, 0).summary
            seen[key] = SizingProbe(dict(trial), slo_holds(summary), cost_per_day(summary, scenario),
                                    time.perf_counter() - started)
            sizing.probes.append(seen[key])
        return seen[key].feasible

    growth = 0
    while not passes(sizes):
        if growth == max_growth:
            sizing.feasible = False
            sizing.sizes = dict(sizes)
            sizing.reason = ("misses the SLOs at the peak even with " + ", ".join(
                k.describe(sizes[k.pool]) for k in free))
            return sizing
        for k in free:
            sizes[k.pool] = max(2 * sizes[k.pool], sizes[k.pool] + 1)
        growth += 1
    for k in free:  # shrink each pool in turn to the fewest replicas that still pass
        low, high = k.floor - 1, sizes[k.pool]
        while high - low > 1:
            middle = (low + high) // 2
            if passes({**sizes, k.pool: middle}):
                high = middle
            else:
                low = middle
        sizes[k.pool] = high
    for k in free:
        sizes[k.pool] += headroom
    sizing.sizes = dict(sizes)
    return sizing


def _right_size_task(arguments: tuple[Any, ...]) -> Sizing:
    return right_size(*arguments)


# ------------------------------------------------------------------------------------------
# Sensitivity inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensitivityInput:
    """An uncertain input: how to set it on a candidate (`overrides(scenario, value, folder)`),
    whether it only changes prices (`prices_only`: the runs are re-priced, not re-simulated)."""

    name: str
    label: str
    scale: bool  # value multiplies what the candidate has (1 = as simulated); else sets it
    prices_only: bool
    overrides: Callable[[Scenario, float, Path], list[str]]
    base: Callable[[Scenario], float | None]  # the value as simulated (1 for scale inputs)


def _private_sites(scenario: Scenario) -> list[str]:
    return [name for name, site in scenario.sites.items() if site.zone == "private" and site.pools]


def _catalog_scaled(scenario: Scenario, value: float, folder: Path, section: str, entries: Iterable[str],
                    field_name: str, tag: str) -> list[str]:
    """A catalog file beside the runs with `field_name` of the given entries of a catalog
    section scaled by value, and the override that points the scenario at it (the scenario's
    own catalog entries kept)."""
    from sim.catalog import catalog_raw

    names = sorted(set(entries))
    if not names:
        return []
    own = (yaml.safe_load(Path(scenario.catalog).read_text()) or {}) if scenario.catalog else {}
    raw = _merge(catalog_raw(), own)
    scaled = {}
    for name in names:
        entry = (raw.get(section) or {}).get(name, {})
        if isinstance(entry.get(field_name), int | float):
            scaled[name] = {field_name: float(entry[field_name]) * value}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"catalog-{tag}-{value:.6g}.yaml"
    path.write_text(yaml.safe_dump(_merge(own, {section: scaled}), sort_keys=True))
    return [f"catalog={str(path.resolve())!r}"]


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _server_price(scenario: Scenario, value: float, folder: Path) -> list[str]:
    out = []
    for name in _private_sites(scenario):
        capex = scenario.sites[name].capex
        if capex.server_usd_per_gpu is not None:
            out.append(f"sites.{name}.capex.server_usd_per_gpu={capex.server_usd_per_gpu * value!r}")
    classes = scenario.resolved_catalog.servers  # every class: which one a pool uses is the cost model's business
    return out + _catalog_scaled(scenario, value, folder, "servers", classes, "host_usd_per_gpu", "server")


def _gpu_price(scenario: Scenario, value: float, folder: Path) -> list[str]:
    out = []
    for name in _private_sites(scenario):
        capex = scenario.sites[name].capex
        if capex.gpu_usd is not None:
            out.append(f"sites.{name}.capex.gpu_usd={capex.gpu_usd * value!r}")
    gpus = [pool.gpu for name in _private_sites(scenario) for pool in scenario.sites[name].pools if not pool.is_api]
    return out + _catalog_scaled(scenario, value, folder, "gpus", gpus, "purchase_usd", "gpu")


def _cloud_discount(scenario: Scenario, value: float, folder: Path) -> list[str]:
    from sim.metrics.cost import cloud_gpu_price

    out = []
    for name, site in scenario.sites.items():
        if site.zone != "third_party":
            continue
        for i, pool in enumerate(site.pools):
            if pool.is_api:  # priced per token, not per GPU-hour
                continue
            try:
                price, _ = cloud_gpu_price(pool, site, scenario.resolved_catalog)
            except ValueError:
                continue
            out.append(f"sites.{name}.pools[{i}].price_usd_per_gpu_hour={price * (1.0 - value)!r}")
    return out


def _site_power(field_name: str) -> Callable[[Scenario, float, Path], list[str]]:
    def overrides(scenario: Scenario, value: float, folder: Path) -> list[str]:
        return [f"sites.{name}.power.{field_name}={value!r}" for name in _private_sites(scenario)]
    return overrides


def _site_power_base(attribute: str) -> Callable[[Scenario], float | None]:
    def base(scenario: Scenario) -> float | None:
        from sim.metrics.energy import power_settings

        values = {float(getattr(power_settings(scenario.sites[name], scenario.resolved_catalog), attribute))
                  for name in _private_sites(scenario)}
        return values.pop() if len(values) == 1 else None
    return base


def _traffic(scenario: Scenario, value: float, folder: Path) -> list[str]:
    out = []
    for path, process in scenario.arrival_streams():
        mean = process.mean_rate_per_s(scenario.horizon)
        fields = process.mean_rate_overrides(mean * value, scenario.horizon) if mean else None
        if fields is None:
            raise SpecError([SpecIssue(path, "the traffic input scales the request rate, and this arrival process "
                                             "has none to scale", process.process, "a process with a rate")])
        out += [f"{path}.{name}={v!r}" for name, v in fields.items()]
    return out


def _wan_rtt(scenario: Scenario, value: float, folder: Path) -> list[str]:
    return [f"links.{name}.rtt={value!r}" for name in scenario.links]


def _wan_rtt_base(scenario: Scenario) -> float | None:
    values = {link.rtt for link in scenario.links.values()}
    return values.pop() if len(values) == 1 else None


def _label_fraction(scenario: Scenario, value: float, folder: Path) -> list[str]:
    return [f"lifecycle.monitor.label_fraction={value!r}"]


def _one(scenario: Scenario) -> float:
    return 1.0


SENSITIVITY_INPUTS: dict[str, SensitivityInput] = {i.name: i for i in (
    SensitivityInput("server_price", "server host price per GPU (x catalog)", True, True, _server_price, _one),
    SensitivityInput("gpu_price", "GPU purchase price (x catalog)", True, True, _gpu_price, _one),
    SensitivityInput("cloud_discount", "cloud discount (share off)", False, True, _cloud_discount, lambda s: 0.0),
    SensitivityInput("energy_price", "energy price (USD/kWh)", False, True, _site_power("price_usd_per_kwh"),
                     _site_power_base("usd_per_kwh")),
    SensitivityInput("pue", "PUE", False, True, _site_power("pue"), _site_power_base("pue")),
    SensitivityInput("traffic", "traffic (x the workload's rate)", True, False, _traffic, _one),
    SensitivityInput("wan_rtt", "WAN RTT (s)", False, False, _wan_rtt, _wan_rtt_base),
    SensitivityInput("label_fraction", "label fraction", False, False, _label_fraction,
                     lambda s: s.lifecycle.monitor.label_fraction),
)}


@dataclass(frozen=True)
class Range:
    name: str
    low: float
    high: float
    source: str


def load_ranges(path: str | Path | None = None) -> dict[str, Range]:
    """The shipped ranges (`sim/catalog/sensitivity.yaml`), with a user file's entries on top."""
    from sim.spec.loader import read_yaml

    raw = dict(yaml.safe_load(SENSITIVITY_FILE.read_text()))
    where = str(path) if path is not None else str(SENSITIVITY_FILE)
    if path is not None:
        own = read_yaml(Path(path), str(path))
        if not isinstance(own, Mapping):
            raise SpecError([SpecIssue("", "a ranges file maps input names to {low, high}", type(own).__name__,
                                       ", ".join(SENSITIVITY_INPUTS))]).with_source(where)
        for name, entry in own.items():
            raw[name] = {**(raw.get(name) or {}), **(entry if isinstance(entry, Mapping) else {"low": entry})}
    issues = []
    out = {}
    for name, entry in raw.items():
        if name not in SENSITIVITY_INPUTS:
            issues.append(SpecIssue(str(name), f"unknown input{suggest(str(name), SENSITIVITY_INPUTS)}", name,
                                    ", ".join(SENSITIVITY_INPUTS)))
            continue
        try:
            low, high = float(entry["low"]), float(entry["high"])
        except (KeyError, TypeError, ValueError):
            issues.append(SpecIssue(f"{name}", "needs low and high numbers", entry, "{low: X, high: Y} with X < Y"))
            continue
        if not (math.isfinite(low) and math.isfinite(high) and low < high and low >= 0):
            issues.append(SpecIssue(f"{name}", "needs 0 <= low < high, both finite", entry, "{low: X, high: Y}"))
            continue
        out[name] = Range(name, low, high, str(entry.get("source", "")))
    if issues:
        raise SpecError(issues).with_source(where)
    return out


# ------------------------------------------------------------------------------------------
# Evaluation: the right-sized candidates over their horizon, with re-priced variants
# ------------------------------------------------------------------------------------------


@dataclass
class Evaluated:
    """One replication of one right-sized candidate: its digest, and its cost per day under
    each price-only input value {input: {value: cost per day}}."""

    digest: RunDigest
    repriced: dict[str, dict[float, float]]


def _reprice(record: RunRecord, result: Result, variants: Mapping[str, Mapping[float, Scenario]]) -> dict[str, dict[float, float]]:
    """The same run's cost per day under other prices (`sim.metrics.cost` on the same record)."""
    import dataclasses

    from sim.metrics.cost import cost_breakdown

    out: dict[str, dict[float, float]] = {}
    for name, by_value in variants.items():
        out[name] = {}
        for value, scenario in by_value.items():
            again = dataclasses.replace(record, scenario=scenario)
            costs = cost_breakdown(again, result.tables["transfers"])
            out[name][value] = float(costs["usd"].sum()) * DAY_S / scenario.horizon
    return out


def _evaluate_task(arguments: tuple[Any, ...]) -> Evaluated:
    from sim.experiment import digest
    from sim.runner import run_point

    scenario, replication, workspace, variants = arguments
    repriced: dict[str, dict[float, float]] = {}

    def keep(record: RunRecord, result: Result) -> None:
        repriced.update(_reprice(record, result, variants))

    try:
        result = run_point(scenario, replication, workspace, on_record=keep if variants else None)
    except SpecError as exc:
        raise exc.with_source(exc.source or scenario.source or scenario.name) from None
    return Evaluated(digest(result), repriced)


# ------------------------------------------------------------------------------------------
# Ranking and the Pareto set
# ------------------------------------------------------------------------------------------


def pareto_set(values: Mapping[str, Mapping[str, float]], criteria: Sequence[str]) -> list[str]:
    """The candidates no other candidate dominates (at most as bad on every criterion, better
    on one), in the order given."""
    names = list(values)

    def dominates(a: str, b: str) -> bool:
        pairs = [(values[a][c], values[b][c]) for c in criteria]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return [b for b in names if not any(dominates(a, b) for a in names if a != b)]


def normaliser(values: Mapping[str, Mapping[str, float]], criteria: Sequence[str]
               ) -> Callable[[str, float], float]:
    """n(criterion, x) = x / (the largest value of that criterion on the Pareto set of `values`);
    when that largest value is 0, n is 0 at 0 and 1 above (see the module doc)."""
    front = pareto_set(values, criteria)
    scale = {}
    for c in criteria:
        finite = [values[name][c] for name in front if math.isfinite(values[name][c])]
        scale[c] = max(finite) if finite else math.inf

    def n(criterion: str, x: float) -> float:
        top = scale[criterion]
        if not math.isfinite(x):
            return 1.0 if math.isfinite(top) else 0.0  # infinite: as bad as the worst of the set
        if top > 0 and math.isfinite(top):
            return x / top
        return 0.0 if x <= 0 else 1.0

    return n


def scores(values: Mapping[str, Mapping[str, float]], weights: Mapping[str, float],
           per_run: Mapping[str, Sequence[Mapping[str, float]]] | None = None
           ) -> dict[str, tuple[float, list[float]]]:
    """Score of each candidate (1 best) from its mean criteria, and of each of its runs
    normalised the same way (for the interval)."""
    criteria = [c for c, w in weights.items() if w > 0]
    total = sum(weights[c] for c in criteria)
    n = normaliser(values, criteria)

    def score(point: Mapping[str, float]) -> float:
        return 1.0 - sum(weights[c] * n(c, point[c]) for c in criteria) / total

    return {name: (score(values[name]), [score(run) for run in (per_run or {}).get(name, [])]) for name in values}


def ranked(values: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]) -> list[str]:
    """Candidates best first (ties in the order given)."""
    result = scores(values, weights)
    order = list(values)
    return sorted(order, key=lambda name: (-result[name][0], order.index(name)))


# ------------------------------------------------------------------------------------------
# The decision
# ------------------------------------------------------------------------------------------


@dataclass
class Ranked:
    scenario: str
    source: str
    feasible: bool
    broken: list[str]
    score: float | None
    score_ci: tuple[float, float] | None
    criteria: dict[str, float]  # mean over replications
    sizing: Sizing
    pareto: bool = False

    def row(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "score": self.score,
                "score_ci": list(self.score_ci) if self.score_ci else None, "feasible": self.feasible,
                "broken_rules": self.broken, "pareto": self.pareto,
                "right_sized_pools": {k.pool: {"kind": k.kind, "replicas": self.sizing.sizes[k.pool],
                                               "gpus_per_replica": k.tp, "pinned": k.pool in self.sizing.pinned,
                                               "written_replicas": k.written}
                                      for k in self.sizing.knobs},
                "sizing_simulations": self.sizing.simulations,
                **{f"{name}": _json_number(value) for name, value in self.criteria.items()}}


@dataclass
class Flip:
    """A value past which the top choice is no longer first, and who is first beyond it."""

    at: float
    when: str  # 'below' or 'above'
    to: str | None
    confirmed: bool = False
    confirmation: str = ""

    def row(self) -> dict[str, Any]:
        return {"at": _json_number(self.at), "when": self.when, "to": self.to, "confirmed": self.confirmed,
                "confirmation": self.confirmation}


@dataclass
class Sensitivity:
    input: str
    label: str
    low: float
    high: float
    base: float | None
    source: str
    margin_base: float
    margin_low: float
    margin_high: float
    top_low: str | None
    top_high: str | None
    flips: list[Flip] = field(default_factory=list)  # where the top choice stops being first, per side
    simulations: int = 0

    @property
    def nearest(self) -> Flip | None:
        """The flip closest to the value as simulated (or the only one)."""
        if not self.flips:
            return None
        centre = self.base if self.base is not None else (self.low + self.high) / 2
        return min(self.flips, key=lambda f: abs(f.at - centre))

    @property
    def flips_at(self) -> float | None:
        return self.nearest.at if self.nearest else None

    @property
    def flips_to(self) -> str | None:
        return self.nearest.to if self.nearest else None

    @property
    def flips_when(self) -> str | None:
        return self.nearest.when if self.nearest else None

    @property
    def confirmed(self) -> bool | None:
        return all(f.confirmed for f in self.flips) if self.flips else None

    def describe_flips(self) -> str:
        return "; ".join(f"{f.when} {f.at:.4g} -> {f.to}" for f in self.flips) or "-"

    def row(self) -> dict[str, Any]:
        out = {k: _json_number(v) if isinstance(v, float) else v for k, v in self.__dict__.items() if k != "flips"}
        out.update(flips_at=_json_number(self.flips_at), flips_to=self.flips_to, flips_when=self.flips_when,
                   confirmed=self.confirmed, flips=[f.row() for f in self.flips])
        return out


def _json_number(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


@dataclass
class Decision:
    ranking: list[Ranked]
    rules: list[Rule]
    weights: dict[str, float]
    comparison: Comparison
    sensitivity: list[Sensitivity]
    replications: int
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> list[Ranked]:
        return [r for r in self.ranking if r.feasible]

    @property
    def top(self) -> str | None:
        return self.feasible[0].scenario if self.feasible else None

    @property
    def pareto(self) -> list[str]:
        return [r.scenario for r in self.ranking if r.pareto]

    def to_json(self) -> dict[str, Any]:
        return {"top": self.top, "weights": self.weights, "requires": [r.text for r in self.rules],
                "replications": self.replications, "ranking": [r.row() for r in self.ranking],
                "pareto": self.pareto, "sensitivity": [s.row() for s in self.sensitivity],
                "criteria": {c.name: {"label": c.label, "unit": c.unit} for c in CRITERIA.values()},
                "notes": self.notes, "wall_s": self.wall_s}

    def verdict(self) -> list[str]:
        """Two or three sentences a manager can act on: what to choose, by how much, and what
        would change it."""
        if not self.feasible:
            broken = "; ".join(f"{r.scenario}: {', '.join(r.broken)}" for r in self.ranking)
            return [f"No candidate meets every rule ({broken}). Relax a rule or add capacity."]
        top = self.feasible[0]
        lines = [f"Choose {top.scenario}: " + ", ".join(top.sizing.describe())
                 + f"; about ${top.criteria['cost']:,.0f} a day, TTFT p99 {top.criteria['ttft_p99'] * 1e3:.0f} ms,"
                 f" exposure score {top.criteria['exposure']:,.0f}."]
        if len(self.feasible) > 1:
            second = self.feasible[1]
            assert top.score is not None and second.score is not None
            lines.append(f"It scores {top.score:.2f} against {second.score:.2f} for {second.scenario}, the runner-up"
                         + (f" (cost {second.criteria['cost'] / top.criteria['cost']:.2f}x)"
                            if top.criteria["cost"] > 0 else "") + ".")
        flips = [(s, f) for s in self.sensitivity for f in s.flips]
        if flips:
            lines.append("The choice changes if " + "; or if ".join(
                f"{s.label} goes {f.when} {f.at:.3g} (then {f.to or 'no candidate'})" for s, f in flips) + ".")
        elif self.sensitivity:
            lines.append("No input within its plausible range changes the choice ("
                         + ", ".join(s.input for s in self.sensitivity) + ").")
        infeasible = [r for r in self.ranking if not r.feasible]
        if infeasible:
            lines.append("Excluded: " + "; ".join(f"{r.scenario} ({', '.join(r.broken)})" for r in infeasible) + ".")
        return lines


@dataclass(frozen=True)
class Variant:
    """A candidate that is a scenario file with overrides of its own (and a name, required when
    several variants share a file), e.g. the same placement on another GPU type."""

    path: str | Path
    overrides: tuple[str, ...] = ()
    name: str | None = None


def default_candidates(root: str | Path | None = None) -> list[Path]:
    """The seed scenarios and the shipped examples."""
    base = Path(root) if root is not None else Path.cwd() / "scenarios"
    return sorted(base.glob("s[0-9]*.yaml")) + sorted((base / "examples").glob("*.yaml"))


def _candidates(scenarios: Iterable[str | Path | Variant], overrides: Sequence[str]) -> list[Candidate]:
    from sim.spec.loader import load_document

    out, names = [], []
    for item in scenarios:
        variant = item if isinstance(item, Variant) else Variant(item)
        own = (*overrides, *variant.overrides, *((f"name={variant.name}",) if variant.name else ()))
        document = load_document(variant.path)
        scenario = Candidate("", str(variant.path), document, own).load()
        out.append(Candidate(scenario.name, str(variant.path), document, own))
        names.append(scenario.name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError([SpecIssue("name", f"two candidates share the name {d!r}", d, "distinct names")
                         for d in duplicates])
    if not out:
        raise SpecError([SpecIssue("SCENARIO", "no candidate to decide between", has_value=False,
                                   allowed="one or more scenario files")])
    return out


def decide(
    scenarios: Iterable[str | Path | Variant] | None = None,
    requires: Iterable[str] = (),
    weights: Mapping[str, float] | Iterable[str] | None = None,
    replications: int = 3,
    headroom: int = 0,
    pins: Iterable[str] = (),
    sensitivity: bool = True,
    ranges: str | Path | None = None,
    inputs: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    sizing_horizon: str | float = "1h",
    sizing_warmup: str | float = "10min",
    workers: int | None = None,
    out: str | Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Decision:
    """Right-size, evaluate, constrain, rank and probe the candidates (see the module doc).

    `scenarios`: files or `Variant`s (default: `default_candidates()`). `requires`: rules such
    as "exposure_score==0". `weights`: {"cost": 0.5, ...} or ["cost=0.5", ...] (default
    `DEFAULT_WEIGHTS`). `pins`: "[SCENARIO:]SITE/POOL=N". `ranges`: a YAML file of input
    ranges; `inputs`: only these inputs. `overrides` apply to every candidate first. With
    `out`, every evaluated run leaves its workspace in `out/runs/<candidate>/rep-<k>/`.
    `on_progress(stage, done, total)` follows the stages.
    """
    from sim.runner import executor

    started = time.perf_counter()
    rules = parse_rules(requires)
    weight_of = parse_weights(weights)
    if not 1 <= replications <= 100:
        raise SpecError([SpecIssue("--replications", "out of range", replications, "1 to 100")])
    if headroom < 0:
        raise SpecError([SpecIssue("--headroom", "out of range", headroom, "0 (none) or more spare replicas")])
    ranges_of = load_ranges(ranges) if sensitivity else {}
    if inputs is not None:
        unknown = [i for i in inputs if i not in ranges_of]
        if unknown:
            raise SpecError([SpecIssue("--input", f"unknown input {i!r}{suggest(i, ranges_of)}", i,
                                       ", ".join(ranges_of)) for i in unknown])
        ranges_of = {name: ranges_of[name] for name in inputs}
    horizons = {}
    for name, value in (("--sizing-horizon", sizing_horizon), ("--sizing-warmup", sizing_warmup)):
        try:
            horizons[name] = parse_duration(value)
        except UnitError as exc:
            raise SpecError([SpecIssue(name, str(exc).partition("; allowed: ")[0], value, "e.g. 1h, 10min")]) from None
    candidates = _candidates(scenarios if scenarios is not None else default_candidates(), overrides)
    names = [c.name for c in candidates]
    pin_of = parse_pins(pins, names)
    if rules:  # a rule naming no summary field is a mistake: say so before the long runs
        check_rule_fields(rules, set().union(*(_field_names(c) for c in candidates)))
    folder = Path(out) if out is not None else Path.cwd() / "reports" / "decide"
    notes: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        if on_progress:
            on_progress(stage, done, total)

    # 1. right-size
    pools_of = {c.name: {k.pool for k in knobs_of(c.load())} for c in candidates}
    wildcard = pin_of.get("*", {})
    missing = sorted(set(wildcard) - set().union(*pools_of.values()))
    if missing:  # a pin naming no pool of any candidate is a mistake, not ignored
        raise SpecError([SpecIssue("--pin", f"no candidate has a serving pool {p!r}", p,
                                   ", ".join(sorted(set().union(*pools_of.values())))) for p in missing])
    tasks = [(c, {**{p: n for p, n in wildcard.items() if p in pools_of[c.name]}, **pin_of.get(c.name, {})},
              headroom, horizons["--sizing-horizon"], horizons["--sizing-warmup"]) for c in candidates]
    with executor(workers, len(candidates) * max(replications, 2)) as pool:
        return _decide(candidates, tasks, rules, weight_of, replications, ranges_of, folder, pool, progress, notes,
                       started)


def _decide(candidates: Sequence[Candidate], tasks: Sequence[tuple[Any, ...]], rules: Sequence[Rule],
            weight_of: dict[str, float], replications: int, ranges_of: Mapping[str, Range], folder: Path,
            run_with: Executor, progress: Callable[[str, int, int], None], notes: list[str],
            started: float) -> Decision:
    from sim.experiment import Comparison, mean_ci
    from sim.runner import point_folder

    names = [c.name for c in candidates]
    sizings: dict[str, Sizing] = {}
    progress("right-sizing", 0, len(tasks))
    for done, (i, outcome) in enumerate(run_with.run(_right_size_task, tasks), start=1):
        if isinstance(outcome, BaseException):
            raise outcome
        sizings[candidates[i].name] = outcome
        progress("right-sizing", done, len(tasks))

    # 2. evaluate over the horizon (price-only inputs re-priced on the same runs)
    sized = {c.name: c.load(sizings[c.name].overrides(c.load())) for c in candidates}
    variant_folder = folder / "sensitivity"
    price_inputs = [n for n in ranges_of if SENSITIVITY_INPUTS[n].prices_only]
    variants = {c.name: {n: {v: _variant(sized[c.name], c, sizings[c.name], n, v, variant_folder)
                             for v in (ranges_of[n].low, ranges_of[n].high)} for n in price_inputs}
                for c in candidates}
    eval_tasks = [(sized[c.name], k, point_folder(folder, c.name, k), variants[c.name] if k == 0 else {})
                  for k in range(replications) for c in candidates]
    runs: dict[str, list[RunDigest]] = {n: [] for n in names}
    repriced: dict[str, dict[str, dict[float, float]]] = {}
    progress("evaluating", 0, len(eval_tasks))
    for done, (_, outcome) in enumerate(run_with.run(_evaluate_task, eval_tasks), start=1):
        if isinstance(outcome, BaseException):
            raise outcome
        runs[outcome.digest.scenario].append(outcome.digest)
        if outcome.digest.replication == 0:
            repriced[outcome.digest.scenario] = outcome.repriced
        progress("evaluating", done, len(eval_tasks))
    for name in runs:
        runs[name].sort(key=lambda run: run.replication)
    comparison = Comparison(list(sized.values()), runs, replications, time.perf_counter() - started,
                            run_with.workers, [c.source for c in candidates])

    # 3. constraints, 4. ranking
    ranking = _rank(candidates, sized, sizings, runs, rules, weight_of, mean_ci)

    # 5. sensitivity
    sens: list[Sensitivity] = []
    if ranges_of and sum(r.feasible for r in ranking) >= 1 and len(candidates) >= 2:
        sens = _sensitivity(candidates, sized, sizings, runs, repriced, rules, weight_of, ranges_of, ranking,
                            variant_folder, run_with, progress, notes)
    elif ranges_of:
        notes.append("sensitivity needs two candidates and a feasible one")
    return Decision(ranking, list(rules), weight_of, comparison, sens, replications, time.perf_counter() - started,
                    notes)


def _field_names(candidate: Candidate) -> set[str]:
    """The fields a rule may name for this candidate, from a two-minute run of it."""
    from sim.runner import run_point

    scenario = candidate.load(["horizon=120.0", "warmup=0.0"])
    return set(rule_fields(run_point(scenario, 0).summary, scenario))


def _variant(scenario: Scenario, candidate: Candidate, sizing: Sizing, name: str, value: float,
             folder: Path) -> Scenario:
    """The right-sized candidate with one input set to value."""
    extra = SENSITIVITY_INPUTS[name].overrides(scenario, value, folder)
    return candidate.load([*sizing.overrides(scenario), *extra])


def _criteria_of(summary: Mapping[str, Any], scenario: Scenario) -> dict[str, float]:
    return {name: c.value(summary, scenario) for name, c in CRITERIA.items()}


def _rank(candidates: Sequence[Candidate], sized: Mapping[str, Scenario], sizings: Mapping[str, Sizing],
          runs: Mapping[str, Sequence[RunDigest]], rules: Sequence[Rule], weights: Mapping[str, float],
          mean_ci: Callable[..., tuple[float, float, float, int]]) -> list[Ranked]:
    per_run = {c.name: [_criteria_of(run.summary, sized[c.name]) for run in runs[c.name]] for c in candidates}
    means = {name: {k: float(np.mean([r[k] for r in rows])) for k in CRITERIA} for name, rows in per_run.items()}
    fields = {c.name: _mean_fields([rule_fields(run.summary, sized[c.name]) for run in runs[c.name]])
              for c in candidates}
    check_rule_fields(rules, set().union(*(set(f) for f in fields.values())))
    out: dict[str, Ranked] = {}
    for c in candidates:
        broken = [] if sizings[c.name].feasible else [f"right-sizing: {sizings[c.name].reason}"]
        missed = [run.replication for run in runs[c.name] if not slo_holds(run.summary)]
        if missed:
            broken.append(f"slo (missed over the whole horizon in replication {', '.join(map(str, missed))})")
        broken += [f"{rule.text} (is {_show(fields[c.name].get(rule.field))})" for rule in rules
                   if not rule.holds(fields[c.name].get(rule.field))]
        out[c.name] = Ranked(c.name, c.source, not broken, broken, None, None, means[c.name], sizings[c.name])
    feasible = [name for name in out if out[name].feasible]
    if feasible:
        criteria = [c for c, w in weights.items() if w > 0]
        front = set(pareto_set({n: means[n] for n in feasible}, criteria))
        result = scores({n: means[n] for n in feasible}, weights, {n: per_run[n] for n in feasible})
        for name in feasible:
            score, by_run = result[name]
            mean, low, high, _ = mean_ci(by_run) if len(by_run) > 1 else (score, math.nan, math.nan, 1)
            out[name].score = score
            out[name].score_ci = None if math.isnan(low) else (low, high)
            out[name].pareto = name in front
    order = [c.name for c in candidates]
    return sorted(out.values(), key=lambda r: (not r.feasible, -(r.score if r.score is not None else 0.0),
                                               order.index(r.scenario)))


def _mean_fields(rows: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    keys = dict.fromkeys(k for row in rows for k in row)
    out: dict[str, float | None] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if any(v is None for v in values):
            out[key] = None
        else:
            out[key] = float(np.mean([float(v) for v in values if v is not None]))
    return out


def _show(value: float | None) -> str:
    if value is None:
        return "not measured"
    if math.isinf(value):
        return "never" if value > 0 else "-inf"
    return f"{value:.4g}"


# ------------------------------------------------------------------------------------------
# Sensitivity
# ------------------------------------------------------------------------------------------


def _margin(points: Mapping[str, tuple[dict[str, float], bool]], weights: Mapping[str, float],
            top: str) -> tuple[float, str | None]:
    """The top choice's score minus the best other feasible one's, and who is first; -inf when
    the top choice breaks a rule there (+inf when no other candidate is feasible)."""
    feasible = {name: values for name, (values, ok) in points.items() if ok}
    if top not in feasible:
        best = ranked(feasible, weights)[0] if feasible else None
        return -math.inf, best
    if len(feasible) == 1:
        return math.inf, top
    result = scores(feasible, weights)
    other = max(result[n][0] for n in feasible if n != top)
    first = ranked(feasible, weights)[0]
    return result[top][0] - other, first


def _point(summary: Mapping[str, Any], scenario: Scenario, rules: Sequence[Rule], cost: float | None = None
           ) -> tuple[dict[str, float], bool]:
    values = _criteria_of(summary, scenario)
    fields = rule_fields(summary, scenario)
    if cost is not None:
        values["cost"] = cost
        fields["cost_per_day"] = cost
        fields["cost_usd"] = cost * scenario.horizon / DAY_S
    ok = slo_holds(summary) and all(rule.holds(fields.get(rule.field)) for rule in rules)
    return values, ok


def _simulate_all(tasks: Sequence[tuple[Scenario, int, Path | None, dict[str, Any]]],
                  pool: Executor) -> list[Evaluated]:
    results: list[Evaluated | None] = [None] * len(tasks)
    for i, outcome in pool.run(_evaluate_task, tasks):
        if isinstance(outcome, BaseException):
            raise outcome
        results[i] = outcome
    return [r for r in results if r is not None]


class _Points:
    """Every candidate's criteria and feasibility with one input set to a value: re-priced from
    replication 0 for a price-only input, else simulated (replication 0, cached by value)."""

    def __init__(self, name: str, candidates: Sequence[Candidate], sized: Mapping[str, Scenario],
                 sizings: Mapping[str, Sizing], runs: Mapping[str, Sequence[RunDigest]],
                 repriced: Mapping[str, Mapping[str, Mapping[float, float]]], rules: Sequence[Rule], folder: Path,
                 pool: Executor) -> None:
        self.name, self.candidates, self.sized, self.sizings = name, candidates, sized, sizings
        self.runs, self.repriced, self.rules, self.folder, self.pool = runs, repriced, rules, folder, pool
        self.cache: dict[float, dict[str, tuple[dict[str, float], bool]]] = {}
        self.simulations = 0

    def at(self, value: float) -> dict[str, tuple[dict[str, float], bool]]:
        if SENSITIVITY_INPUTS[self.name].prices_only:
            return {c.name: _point(self.runs[c.name][0].summary, self.sized[c.name], self.rules,
                                   _interpolate(self.repriced[c.name][self.name], value)) for c in self.candidates}
        if value not in self.cache:
            variants = [_variant(self.sized[c.name], c, self.sizings[c.name], self.name, value, self.folder)
                        for c in self.candidates]
            done = _simulate_all([(v, 0, None, {}) for v in variants], self.pool)
            self.simulations += len(variants)
            self.cache[value] = {c.name: _point(e.digest.summary, v, self.rules)
                                 for c, v, e in zip(self.candidates, variants, done, strict=True)}
        return self.cache[value]

    def holds(self, weights: Mapping[str, float], top: str) -> Callable[[float], bool]:
        """value -> does the top choice stay first there?"""
        return lambda value: _margin(self.at(value), weights, top)[0] >= 0


def _sensitivity(candidates: Sequence[Candidate], sized: Mapping[str, Scenario], sizings: Mapping[str, Sizing],
                 runs: Mapping[str, Sequence[RunDigest]], repriced: Mapping[str, Mapping[str, Mapping[float, float]]],
                 rules: Sequence[Rule], weights: Mapping[str, float], ranges: Mapping[str, Range],
                 ranking: Sequence[Ranked], folder: Path, pool: Executor,
                 progress: Callable[[str, int, int], None], notes: list[str]) -> list[Sensitivity]:
    top = next(r.scenario for r in ranking if r.feasible)
    base_points = {c.name: _point(runs[c.name][0].summary, sized[c.name], rules) for c in candidates}
    base_margin, _ = _margin(base_points, weights, top)
    out = []
    for k, (name, rng) in enumerate(ranges.items()):
        progress("sensitivity", k, len(ranges))
        spec = SENSITIVITY_INPUTS[name]
        bases = {spec.base(sized[c.name]) for c in candidates} - {None}  # None: the input has no value there
        base = bases.pop() if len(bases) == 1 else None
        simulations = 0

        points = _Points(name, candidates, sized, sizings, runs, repriced, rules, folder, pool)
        points_at = points.at
        try:
            low_points, high_points = points_at(rng.low), points_at(rng.high)
        except SpecError as exc:
            notes.append(f"{name}: not varied ({exc.issues[0].message})")
            continue
        margin_low, top_low = _margin(low_points, weights, top)
        margin_high, top_high = _margin(high_points, weights, top)
        entry = Sensitivity(name, spec.label, rng.low, rng.high, base, rng.source, base_margin, margin_low,
                            margin_high, top_low, top_high)
        inside = base if base is not None and rng.low < base < rng.high else None
        for end, margin in ((rng.low, margin_low), (rng.high, margin_high)):
            if margin >= 0:
                continue
            holds_at = inside if inside is not None else (rng.high if end == rng.low else rng.low)
            if _margin(points_at(holds_at), weights, top)[0] < 0:
                continue  # no value on this side where the choice holds to start from
            good, flip = _bisect_flip(points.holds(weights, top), holds_at, end, steps=20 if spec.prices_only else 4)
            found = Flip(flip, "below" if flip < holds_at else "above", _margin(points_at(flip), weights, top)[1])
            if spec.prices_only:
                found.confirmed, found.confirmation, n = _confirm(
                    candidates, sized, sizings, points, name, holds_at, flip, rng.high - rng.low, rules, weights,
                    top, found.to, folder, pool)
                simulations += n
            else:
                found.confirmed = True
                found.confirmation = (f"bisection simulated every candidate: {top} first at {good:.4g}, "
                                      f"{found.to} first at {flip:.4g}")
            entry.flips.append(found)
        entry.simulations = points.simulations + simulations
        out.append(entry)
    progress("sensitivity", len(ranges), len(ranges))
    return out


def _interpolate(costs: Mapping[float, float], value: float) -> float:
    """Cost at value from costs at two values: cost is linear in each price input."""
    (x0, y0), (x1, y1) = sorted(costs.items())
    return y0 + (y1 - y0) * (value - x0) / (x1 - x0)


def _bisect_flip(holds: Callable[[float], bool], good: float, bad: float, steps: int) -> tuple[float, float]:
    """Where the choice flips between good (it holds) and bad (it does not): the last value
    tried where it holds and the first where it does not, (bad - good) / 2^steps apart."""
    for _ in range(steps):
        middle = (good + bad) / 2
        if holds(middle):
            good = middle
        else:
            bad = middle
    return good, bad


def _confirm(candidates: Sequence[Candidate], sized: Mapping[str, Scenario], sizings: Mapping[str, Sizing],
             points: _Points, name: str, holds_at: float, flip: float, span: float, rules: Sequence[Rule],
             weights: Mapping[str, float], top: str, rival: str | None, folder: Path,
             pool: Executor) -> tuple[bool, str, int]:
    """Direct runs of the top choice and its rival with the input set 1% of the range either side
    of the flip (the other candidates re-priced): the top choice must stay first on one side
    and lose on the other. (A simulated input's bisection already ran every candidate at each
    value it tried; this checks a price-only input's re-pricing against the simulator.)"""
    step = 0.01 * span * (1 if flip > holds_at else -1)
    before, after = flip - step, flip + step
    involved = [c for c in candidates if c.name in {top, rival}]
    firsts = []
    for value in (before, after):
        others = points.at(value)
        variants = [_variant(sized[c.name], c, sizings[c.name], name, value, folder) for c in involved]
        done = _simulate_all([(v, 0, None, {}) for v in variants], pool)
        direct = {c.name: _point(e.digest.summary, v, rules) for c, v, e in zip(involved, variants, done, strict=True)}
        firsts.append(_margin({**others, **direct}, weights, top))
    (m_before, first_before), (m_after, first_after) = firsts
    confirmed = m_before >= 0 > m_after
    text = (f"direct runs of {' and '.join(c.name for c in involved)} at {before:.4g}: {first_before} first "
            f"(margin {m_before:+.3f}); at {after:.4g}: {first_after} first (margin {m_after:+.3f})")
    return confirmed, text, 2 * len(involved)
