"""Sweeps: many what-ifs at once, on this machine or a Dask cluster, that survive interruption.

A sweep file names one or more base scenarios and the factors to vary, as override paths
(the `--set` paths) with values. The design says how factor values combine into points:

    name: rate_x_rtt
    base: [../s2_cloud_training.yaml]      # relative to this file; a path or a list
    set: [horizon=1h, warmup=10min]        # fixed overrides applied to every point
    factors:
      workload.arrivals.rate_per_s: [2, 4, 8]
      links.wan.rtt: [20ms, 80ms]
    design: grid                           # grid | zip | random | lhs
    replications: 2
    metrics: [ttft_p99_s, cost_usd_per_1m_requests, gpu_utilisation]

**Conditions and decisions.** A factor is either a *condition* (the world the system meets:
how much traffic, how far the cloud is, what fails) or a *decision* (what we choose: GPUs,
pool sizes, placement, engine knobs). A Pareto front is drawn per condition, over decisions
only: a lower arrival rate is cheaper per request but is not a choice. By default a factor
whose path starts with `workload.`, `links.` or `faults.` (or is `lifecycle.drift` or
`lifecycle.monitor.label_delay`) is a condition (`CONDITION_PREFIXES`), every other one a
decision, and the base scenario is a decision too. A sweep file may list its conditions
explicitly (`conditions: [lifecycle.monitor.label_fraction]`), replacing the default; each
entry must be one of its factors.

`grid` takes every combination, `zip` the i-th value of each factor together. `random` and
`lhs` (Latin hypercube: each factor's range cut into `samples` equal strata, one sample in
each) draw `samples` points, seeded by `seed`, from ranges `{low, high}` (with `log: true` for
a log scale and `integer: true` to round) or from lists. Grid and zip accept a range with
`steps: N` for N evenly spaced values. Every base is crossed with every point, and every
point runs `replications` times: replication k draws from random streams k, exactly as
`sim.compare` does, so rows are bit-identical whether run here or on any cluster.

`sweep(...)` sends each point x replication to a Dask cluster (a `LocalCluster` of worker
processes by default, or an existing cluster given its scheduler address; `sim.runner`'s
executors), where `sim.runner.run_point` runs it and leaves its workspace
(`out/runs/<config hash>/rep-<k>/`: scenario.yaml, summary.json, tables, or error.txt), and
writes each finished one at once, atomically and durably (fsynced before and after the
rename), as one Parquet file under `out/points/`, named by a hash of (base, overrides,
replication). A rerun
skips the files that exist and read back, and recomputes any that do not (a power loss
mid-write), so Ctrl-C or a crash loses only the points still running (the metrics kept are
not part of the hash: to add a metric to finished points, use another `out`). A point that
fails (a bad value, an error in the run) becomes a row with status `failed` and its error;
the sweep goes on. The file's `seed` seeds the random and lhs designs; the scenarios keep
their own seeds (sweep `seed` as a factor to vary them).

A sweep's size is checked before it is expanded (`sim.workload.limits`): a grid of 10^10
points is refused with its memory estimate, not built.

    >>> from sim.sweep import sweep
    >>> frame = sweep("scenarios/sweeps/rate_x_rtt.yaml", workers=2)  # doctest: +SKIP
    >>> frame.groupby("workload.arrivals.rate_per_s")["ttft_p99_s"].mean()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim.outputs import folder_name, prepare_out_dir, write_durably
from sim.runner import ERROR_FILE, clear_workspace, executor, point_folder
from sim.spec.errors import SpecError, SpecIssue, issues_from_validation, suggest
from sim.spec.loader import load_document, parse_override_path, parse_value, read_yaml
from sim.spec.scenario import MAX_REPLICATIONS

Progress = Callable[[int, int], None]

DEFAULT_METRICS: tuple[str, ...] = (
    "requests_total", "requests_completed", "ttft_p50_s", "ttft_p99_s", "tpot_p99_s", "e2e_p50_s",
    "e2e_p99_s", "slo_attainment", "throughput_rps", "gpu_utilisation", "exposure_score", "exposed_bytes",
    "recovery_time_s", "recovered_error_rate", "cost_usd", "cost_usd_per_month", "cost_usd_per_1m_requests", "energy_kwh",
)
META_COLUMNS: tuple[str, ...] = (
    "point", "config", "base", "base_file", "replication", "seed", "spec_hash", "status", "error",
    "wall_s", "cpu_s", "overrides", "factors",
)
CONDITION_PREFIXES: tuple[str, ...] = ("workload.", "links.", "faults.", "lifecycle.drift",
                                       "lifecycle.monitor.label_delay")
"""Factor paths that are workload conditions by default (module doc): not decision variables."""
POINTS_DIR = "points"
MANIFEST = "sweep.json"
DESIGNS = ("grid", "zip", "random", "lhs")


# ------------------------------------------------------------------------------------------
# The sweep file
# ------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # as the scenario's: no NaN, no infinity


class FactorRange(_Model):
    """A numeric range: sampled by random/lhs designs, or cut into `steps` values by grid/zip."""

    low: float
    high: float
    steps: int | None = Field(default=None, ge=2, description="grid/zip: evenly spaced values")
    log: bool = Field(default=False, description="spaced or sampled on a log scale")
    integer: bool = Field(default=False, description="round to whole numbers")


class SweepFile(_Model):
    """What a sweep file may say (see the module doc)."""

    name: str | None = Field(default=None, min_length=1, description="defaults to the file's stem")
    description: str = ""
    base: list[str] = Field(min_length=1, description="scenario file(s), relative to the sweep file")
    set: list[str] = Field(default_factory=list, description="overrides for every point")
    factors: dict[str, Any] = Field(default_factory=dict)
    design: Literal["grid", "zip", "random", "lhs"] = "grid"
    samples: int | None = Field(default=None, ge=1, le=1_000_000, description="random/lhs: number of points")
    seed: int = Field(default=0, ge=0, lt=2**63)
    replications: int = Field(default=1, ge=1, le=MAX_REPLICATIONS)
    metrics: list[str] | None = Field(default=None, min_length=1)
    conditions: list[str] | None = Field(default=None, description="factors that are workload conditions, not "
                                                                    "decisions (default: by path)")
    out: str | None = Field(default=None, description="results folder, under the working folder")

    @field_validator("base", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@dataclass(frozen=True)
class Factor:
    path: str
    values: tuple[Any, ...] = ()  # a list of values, or
    range: FactorRange | None = None  # a numeric range


@dataclass
class SweepSpec:
    """A validated sweep: bases resolved to files, factors checked, ready to expand into points."""

    name: str
    bases: list[Path]
    base_labels: list[str]  # as written in the file (used in point hashes: stable across machines)
    factors: list[Factor]
    design: str = "grid"
    samples: int | None = None
    seed: int = 0
    replications: int = 1
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    overrides: list[str] = field(default_factory=list)
    out: Path | None = None
    description: str = ""
    source: str = ""
    custom_metrics: bool = False
    conditions: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        """`out`, else reports/sweeps/<name> (the name as a safe folder name: a label, not a path)."""
        return self.out or Path("reports") / "sweeps" / folder_name(self.name, "sweep")

    def design_points(self) -> list[dict[str, Any]]:
        """The factor values of each point, in order (before crossing with bases)."""
        return design_points(self.factors, self.design, self.samples, self.seed)

    def tasks(self) -> list[PointTask]:
        """Every base x design point x replication, in a fixed order."""
        tasks = []
        points = self.design_points()
        for label, path in zip(self.base_labels, self.bases, strict=True):
            for values in points:
                overrides = [*self.overrides, *(f"{p}={_yaml_value(v)}" for p, v in values.items())]
                config = _hash([label, overrides])
                for k in range(self.replications):
                    tasks.append(PointTask(_hash([label, overrides, k]), config, label, path, values, overrides, k))
        return tasks


@dataclass(frozen=True)
class PointTask:
    point: str  # hash of (base, overrides, replication): the file name
    config: str  # hash of (base, overrides): the same for every replication
    base_label: str
    base_path: Path
    factors: dict[str, Any]
    overrides: list[str]
    replication: int


def _hash(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (for YAML text, JSON and Parquet)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _yaml_value(value: Any) -> str:
    """A value as override text that reads back as the same value (JSON is YAML)."""
    return json.dumps(_plain(value))


def load_sweep(path_or_spec: str | Path | Mapping[str, Any], out: str | Path | None = None) -> SweepSpec:
    """Read and check a sweep file (or a mapping with the same keys); every problem at once.

    Base paths are relative to the sweep file (to the working folder for a mapping); `out`
    is relative to the working folder, like every report folder, and a file's `out` must stay
    under it (relative, without '..'); `out=` (the --out flag) and a mapping may name any folder.
    """
    if isinstance(path_or_spec, Mapping):
        raw: Any = dict(path_or_spec)
        source, directory = "<sweep>", Path.cwd()
        default_name = "sweep"
    else:
        path = Path(path_or_spec)
        raw = read_yaml(path)
        source, directory = str(path), path.resolve().parent
        default_name = path.stem
    if not isinstance(raw, dict):
        raise SpecError([SpecIssue("", "a sweep file must be a mapping of keys to values", type(raw).__name__,
                                   "keys: " + ", ".join(_file_keys()))], source)
    try:
        parsed = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(issues_from_validation(exc, SweepFile), source) from None
    issues: list[SpecIssue] = []
    bases = []
    for i, label in enumerate(parsed.base):
        file: Path = Path(label) if Path(label).is_absolute() else directory / label
        if not file.is_file():
            issues.append(SpecIssue(f"base[{i}]", f"scenario file not found: {file}", label,
                                    "a scenario file, relative to the sweep file"))
        bases.append(file.resolve())
    for i, text in enumerate(parsed.set):
        _, sep, _ = text.partition("=")
        if not sep:
            issues.append(SpecIssue(f"set[{i}]", "an override needs '=': path=value", text,
                                    "e.g. horizon=1h"))
    factors = []
    for factor_path, value in parsed.factors.items():
        factor, problems = _check_factor(factor_path, value, parsed.design)
        issues += problems
        if factor is not None:
            factors.append(factor)
    issues += _check_conditions(parsed.conditions, [f.path for f in factors])
    issues += _check_design(parsed, factors)
    issues += _check_factor_values(factors)
    if source != "<sweep>" and parsed.out is not None and not _inside_working_folder(parsed.out):
        # a file may come from someone else: it chooses a folder here, not anywhere
        issues.append(SpecIssue("out", "a sweep file may only name a folder under the working folder", parsed.out,
                                "a relative path without '..', e.g. reports/sweeps/mine; use --out for any other"))
    if len(set(bases)) != len(bases):
        issues.append(SpecIssue("base", "the same scenario file is named twice", parsed.base, "distinct files"))
    if issues:
        raise SpecError(issues, source)
    _check_size(len(bases), factors, parsed, source)
    return SweepSpec(
        name=parsed.name or default_name, bases=bases, base_labels=parsed.base, factors=factors,
        design=parsed.design, samples=parsed.samples, seed=parsed.seed, replications=parsed.replications,
        metrics=list(parsed.metrics or DEFAULT_METRICS), overrides=list(parsed.set),
        out=Path(out) if out is not None else (Path(parsed.out) if parsed.out else None),
        description=parsed.description, source=source, custom_metrics=parsed.metrics is not None,
        conditions=(list(parsed.conditions) if parsed.conditions is not None
                    else default_conditions([f.path for f in factors])),
    )


def default_conditions(paths: Sequence[str]) -> list[str]:
    """The factor paths that are workload conditions by default (`CONDITION_PREFIXES`)."""
    return [path for path in paths if path.startswith(CONDITION_PREFIXES)]


def _check_conditions(conditions: Sequence[str] | None, paths: Sequence[str]) -> list[SpecIssue]:
    """Each listed condition must be a factor: a name that varies nothing would be ignored."""
    issues = []
    for i, name in enumerate(conditions or ()):
        if name not in paths:
            issues.append(SpecIssue(f"conditions[{i}]", "not a factor of this sweep, so it cannot be a condition",
                                    name, f"one of: {', '.join(paths) or '(no factors)'}"))
    if conditions is not None and len(set(conditions)) != len(conditions):
        issues.append(SpecIssue("conditions", "a factor is listed twice", list(conditions), "distinct factors"))
    return issues


def _inside_working_folder(out: str) -> bool:
    """Whether a sweep file's `out` stays under the working folder (relative, no '..')."""
    path = Path(out)
    return bool(out.strip()) and not path.is_absolute() and ".." not in path.parts and not out.startswith("~")


def _file_keys() -> list[str]:
    return list(SweepFile.model_fields)


def _check_factor(path: str, value: Any, design: str) -> tuple[Factor | None, list[SpecIssue]]:
    where = f"factors.{path}"
    try:
        parse_override_path(path)
    except ValueError as exc:
        return None, [SpecIssue(where, f"not an override path: {exc}", path,
                                "dotted keys with optional [index], e.g. sites.premises.pools[0].count")]
    sampled = design in ("random", "lhs")
    list_or_range = ("a list of values, e.g. [10, 20, 40], or a range {low: 1, high: 40"
                     + ("}" if sampled else ", steps: 5}"))
    if isinstance(value, list):
        if not value:
            return None, [SpecIssue(where, "a factor needs at least one value", value, list_or_range)]
        return Factor(path, tuple(value)), []
    if not isinstance(value, dict):
        return None, [SpecIssue(where, "a factor is a list of values or a range", value, list_or_range)]
    try:
        rng = FactorRange.model_validate(value)
    except ValidationError as exc:
        return None, issues_from_validation(exc, FactorRange, prefix=("factors", path))
    issues = []
    if not rng.high > rng.low:
        issues.append(SpecIssue(f"{where}.high", "must be greater than low", rng.high, f"a number > {rng.low:g}"))
    if rng.log and rng.low <= 0:
        issues.append(SpecIssue(f"{where}.low", "a log-scale range must be positive", rng.low, "a number > 0"))
    if sampled and rng.steps is not None:
        issues.append(SpecIssue(f"{where}.steps", f"steps is for grid and zip designs, not {design}", rng.steps,
                                "leave it out: random and lhs draw `samples` values"))
    if not sampled and rng.steps is None:
        issues.append(SpecIssue(where, f"a range in a {design} design needs steps", value,
                                "add steps: N (N evenly spaced values), or give a list"))
    return Factor(path, range=rng), issues


def _check_design(parsed: SweepFile, factors: list[Factor]) -> list[SpecIssue]:
    issues = []
    sampled = parsed.design in ("random", "lhs")
    if sampled and parsed.samples is None:
        issues.append(SpecIssue("samples", f"a {parsed.design} design needs samples", has_value=False,
                                allowed="a whole number >= 1, the number of points to draw"))
    if not sampled and parsed.samples is not None:
        issues.append(SpecIssue("samples", f"samples is for random and lhs designs, not {parsed.design}",
                                parsed.samples, "leave it out, or use design: random or lhs"))
    if parsed.design == "zip" and factors:
        lengths = {f.path: len(factor_values(f)) for f in factors if f.range is None or f.range.steps}
        if len(set(lengths.values())) > 1:
            issues.append(SpecIssue("factors", "zip pairs the i-th values, so every factor needs as many values",
                                    lengths, "lists (or steps) of one length"))
    return issues


def _check_factor_values(factors: list[Factor]) -> list[SpecIssue]:
    """No NaN or infinity among a factor's listed values (a range's ends are checked by its model)."""
    issues = []
    for factor in factors:
        for i, value in enumerate(factor.values):
            if isinstance(value, float) and not math.isfinite(value):
                issues.append(SpecIssue(f"factors.{factor.path}[{i}]", "not a finite number", value,
                                        "finite numbers (or other values the field takes)"))
    return issues


def design_size(factors: Sequence[Factor], design: str, samples: int | None = None) -> int:
    """How many points a design has, without making them (a grid's is the product)."""
    if not factors:
        return 1
    if design in ("random", "lhs"):
        return samples or 0
    counts = [len(f.values) if f.range is None else (f.range.steps or 2) for f in factors]
    return math.prod(counts) if design == "grid" else min(counts)


def _check_size(bases: int, factors: list[Factor], parsed: SweepFile, source: str) -> None:
    """Refuse, before expanding it, a sweep whose list of runs would not fit in memory."""
    from sim.workload.limits import BYTES_PER_SWEEP_POINT, check_memory

    points = design_size(factors, parsed.design, parsed.samples)
    runs = points * parsed.replications * bases
    label = f"{bases} base(s) x {points:,} points x {parsed.replications} replication(s) = {runs:,} runs"
    try:
        check_memory([(f"{label} x {BYTES_PER_SWEEP_POINT} B", float(runs) * BYTES_PER_SWEEP_POINT)],
                     "factors", "fewer points (fewer values or steps, fewer samples) or fewer replications")
    except SpecError as exc:
        raise exc.with_source(source) from None


# ------------------------------------------------------------------------------------------
# Designs
# ------------------------------------------------------------------------------------------


def factor_values(factor: Factor) -> list[Any]:
    """The values a grid or zip design uses: the list, or `steps` evenly spaced range values."""
    if factor.range is None:
        return list(factor.values)
    r = factor.range
    steps = r.steps or 2
    raw = np.geomspace(r.low, r.high, steps) if r.log else np.linspace(r.low, r.high, steps)
    return [_rounded(r, float(v)) for v in raw]


def _rounded(r: FactorRange, value: float) -> Any:
    return int(round(value)) if r.integer else value


def _scale(r: FactorRange, u: np.ndarray) -> list[Any]:
    """Uniform [0, 1) numbers -> values in the range (log scale if asked)."""
    if r.log:
        values = np.exp(math.log(r.low) + u * (math.log(r.high) - math.log(r.low)))
    else:
        values = r.low + u * (r.high - r.low)
    return [_rounded(r, float(v)) for v in values]


def _pick(values: Sequence[Any], u: np.ndarray) -> list[Any]:
    """Uniform [0, 1) numbers -> list items, each item owning an equal share of [0, 1)."""
    index = np.minimum((u * len(values)).astype(np.int64), len(values) - 1)
    return [values[i] for i in index]


def design_points(factors: Sequence[Factor], design: str, samples: int | None = None,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Factor values per point: {path: value} for each point of the design, in order.

    grid: every combination, the first factor varying slowest. zip: the i-th values together.
    random: `samples` independent uniform draws per factor. lhs: Latin hypercube: for each
    factor, [0, 1) is cut into `samples` strata and each stratum gets exactly one sample,
    in an independently shuffled order per factor (McKay, Beckman and Conover 1979).
    """
    if not factors:
        return [{}]
    paths = [f.path for f in factors]
    if design == "grid":
        return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*map(factor_values, factors))]
    if design == "zip":
        columns = [factor_values(f) for f in factors]
        return [dict(zip(paths, row, strict=True)) for row in zip(*columns, strict=True)]
    if design not in ("random", "lhs") or samples is None:
        raise ValueError(f"design {design!r} with samples={samples}")
    rng = np.random.default_rng(seed)
    columns = []
    for factor in factors:
        if design == "lhs":
            u = (rng.permutation(samples) + rng.random(samples)) / samples
        else:
            u = rng.random(samples)
        columns.append(_scale(factor.range, u) if factor.range is not None else _pick(factor.values, u))
    return [dict(zip(paths, row, strict=True)) for row in zip(*columns, strict=True)]


def sweep_from_vary(bases: Sequence[str | Path], vary: Sequence[str], overrides: Sequence[str] = (),
                    replications: int | None = None, name: str = "compare", out: str | Path | None = None,
                    metrics: Sequence[str] | None = None) -> SweepSpec:
    """The one-line sweep of `deploysim compare --vary path=v1,v2,v3` (a grid over the --vary's).

    Each value is read as YAML, like a --set value; a value holding a comma cannot be given
    here (write a sweep file). `replications` defaults to the scenarios' own (the most of them).
    """
    factors: dict[str, list[Any]] = {}
    issues = []
    for text in vary:
        path, sep, values = text.partition("=")
        if not sep or not path.strip() or not values.strip():
            issues.append(SpecIssue(f"--vary {text}", "needs path=v1,v2,...", text,
                                    "e.g. --vary workload.arrivals.rate_per_s=10,20,40"))
            continue
        try:
            factors[path.strip()] = [parse_value(item) for item in values.split(",")]
        except ValueError as exc:
            issues.append(SpecIssue(f"--vary {path.strip()}", f"bad value: {exc}", has_value=False))
    if issues:
        raise SpecError(issues, "--vary")
    if replications is None:
        from sim.spec.loader import load_scenario

        replications = max(load_scenario(base, overrides).replications for base in bases)
    spec: dict[str, Any] = {"name": name, "base": [str(Path(b).resolve()) for b in bases], "set": list(overrides),
                            "factors": factors, "design": "grid", "replications": replications}
    if metrics:
        spec["metrics"] = list(metrics)
    if out is not None:
        spec["out"] = str(out)
    return load_sweep(spec)


# ------------------------------------------------------------------------------------------
# One point
# ------------------------------------------------------------------------------------------


def select_metrics(flat: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, float]:
    """Keep the named flat summary fields; a name of a breakdown keeps all its fields."""
    kept: dict[str, float] = {}
    for name in metrics:
        for key, value in flat.items():
            if key == name or key.startswith(name + "."):
                kept[key] = math.nan if value is None else float(value)
    return kept


def sweep_point(task: tuple[dict[str, Any], list[str], int, list[str], Path | None]) -> dict[str, Any]:
    """Load and simulate one point x replication (`sim.runner.run_point`, leaving its
    workspace); never raises for the point's own problems.

    Runs in a worker: it takes (the base document (extends merged, paths absolute), the
    overrides, the replication, the metrics, the workspace) and returns a plain dict, the
    metrics and the status.
    """
    from sim.experiment import flat_summary
    from sim.runner import run_point, write_error
    from sim.spec.loader import load_scenario, spec_hash

    document, overrides, replication, metrics, workspace = task
    started, cpu = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {"status": "ok", "error": "", "metrics": {}}
    scenario = None
    try:
        scenario = load_scenario(document, overrides)
        out.update(base=scenario.name, seed=scenario.seed, spec_hash=spec_hash(scenario))
        result = run_point(scenario, replication, workspace)
        out["metrics"] = select_metrics(flat_summary(result.summary), metrics)
    except SpecError as exc:
        out.update(status="failed", error=exc.with_source("").render())
        if scenario is None and workspace is not None:  # run_point leaves its own error.txt
            write_error(workspace, None, exc)
    except Exception as exc:  # a run that breaks is recorded, not allowed to stop the sweep
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    out["wall_s"] = time.perf_counter() - started
    out["cpu_s"] = time.process_time() - cpu  # wall_s well above cpu_s: the worker waited for a core
    return out


def _row(task: PointTask, outcome: dict[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "point": task.point, "config": task.config,
        "base": outcome.get("base") or Path(task.base_label).stem, "base_file": task.base_label,
        "replication": task.replication, "seed": outcome.get("seed"), "spec_hash": outcome.get("spec_hash", ""),
        "status": outcome["status"], "error": outcome.get("error", ""), "wall_s": float(outcome.get("wall_s", 0.0)),
        "cpu_s": float(outcome.get("cpu_s", 0.0)),
        "overrides": "; ".join(task.overrides), "factors": json.dumps(list(task.factors)),
    }
    for path, value in task.factors.items():  # lists and mappings as JSON text: one type per column
        value = _plain(value)
        row[path] = value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value)
    found = outcome.get("metrics", {})
    for name in metrics:  # every named metric has a column, NaN where the run has none
        if not any(key == name or key.startswith(name + ".") for key in found):
            row[name] = math.nan
    row.update(found)
    return row


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def point_file(out_dir: Path, point: str) -> Path:
    return out_dir / POINTS_DIR / f"{point}.parquet"


def write_row(out_dir: Path, row: dict[str, Any]) -> Path:
    """One point x replication as one Parquet file, written durably (`write_durably`): after a
    crash or a power loss the file is absent or whole, never the zero bytes a bare rename can leave."""
    target = point_file(out_dir, row["point"])
    target.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([row])
    for column in ("seed",):
        frame[column] = frame[column].astype("Int64")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return write_durably(target, buffer.getvalue())


def read_point(file: Path) -> pd.DataFrame | None:
    """A point file's one row, or None when it does not read back (damaged, truncated, empty)."""
    try:
        frame = pd.read_parquet(file)
    except Exception:  # pyarrow raises many kinds for a damaged file; all mean "recompute it"
        return None
    return frame if len(frame) == 1 and {"point", "status"} <= set(frame.columns) else None


def point_is_whole(file: Path) -> bool:
    """Whether a point file's footer reads back with one row: a cheap check for every resume."""
    try:
        return pq.read_metadata(file).num_rows == 1
    except Exception:  # a zero-byte or truncated file has no footer
        return False


def _clean_temporaries(out_dir: Path) -> None:
    """Half-written files of an interrupted run (a rename never happened)."""
    for stale in (out_dir / POINTS_DIR).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _write_manifest(spec: SweepSpec, tasks: Sequence[PointTask]) -> None:
    manifest = {
        "name": spec.name, "description": spec.description, "source": spec.source,
        "bases": [str(b) for b in spec.bases], "base_labels": spec.base_labels,
        "factors": [f.path for f in spec.factors], "conditions": spec.conditions, "design": spec.design, "samples": spec.samples,
        "seed": spec.seed, "replications": spec.replications, "metrics": spec.metrics, "set": spec.overrides,
        "points": [t.point for t in tasks],
    }
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_durably(out / MANIFEST, (json.dumps(manifest, indent=1, default=str) + "\n").encode())


def load_sweep_results(out_dir: str | Path, all_points: bool = False) -> pd.DataFrame:
    """Every row a sweep wrote under `out_dir`, in the sweep's point order.

    With the sweep's manifest (`sweep.json`) present, rows of points that are no longer in the
    sweep (an older design or seed) are left out unless `all_points`. The frame's `attrs`
    carry the manifest's factors, metrics and name, and `damaged`: the point files that did
    not read back (left out; a rerun of the sweep recomputes them).
    """
    out = Path(out_dir)
    files = sorted((out / POINTS_DIR).glob("*.parquet"))
    frames, damaged = [], []
    for file in files:
        frame = read_point(file)
        if frame is None:
            damaged.append(file.name)
        else:
            frames.append(frame)
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(META_COLUMNS))
    manifest = read_manifest(out)
    if manifest and len(results):
        order = {point: i for i, point in enumerate(manifest.get("points", []))}
        if not all_points:
            results = results[results["point"].isin(order)]
        results = results.assign(_order=results["point"].map(order).fillna(len(order)))
        results = results.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    results.attrs["factors"] = list(manifest.get("factors", [])) if manifest else _guess_factors(results)
    results.attrs["conditions"] = (list(manifest["conditions"]) if "conditions" in manifest
                                   else default_conditions(results.attrs["factors"]))
    results.attrs["metrics"] = list(manifest.get("metrics", DEFAULT_METRICS)) if manifest else list(DEFAULT_METRICS)
    results.attrs["name"] = manifest.get("name", out.name) if manifest else out.name
    results.attrs["design"] = manifest.get("design", "") if manifest else ""
    results.attrs["damaged"] = damaged
    return results


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The sweep's manifest, or {} when it is missing or does not read back (rewritten by a rerun);
    a manifest whose fields have the wrong shape (edited by hand) does not read back either."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict):
        return {}
    lists = all(isinstance(manifest.get(key, []), list) and all(isinstance(item, str) for item in manifest.get(key, []))
                for key in ("points", "factors", "metrics"))
    texts = all(isinstance(manifest.get(key, ""), str) for key in ("name", "design"))
    return manifest if lists and texts else {}


def _guess_factors(results: pd.DataFrame) -> list[str]:
    """Without a manifest: the factor paths each row names in its `factors` column (JSON)."""
    names: list[str] = []
    for text in results.get("factors", pd.Series(dtype=object)).dropna().unique():
        names += [name for name in json.loads(text) if name not in names]
    return names


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    pending: list[PointTask]
    done: list[PointTask]
    documents: dict[Path, dict[str, Any]]
    failed_at_load: dict[str, dict[str, Any]]  # config -> outcome
    damaged: list[Path]  # point files that did not read back: recomputed


def _prepare(spec: SweepSpec, tasks: list[PointTask], retry_failed: bool) -> _Prepared:
    from sim.spec.loader import load_scenario

    out = spec.out_dir
    done, pending, damaged = [], [], []
    for task in tasks:
        file = point_file(out, task.point)
        whole = file.is_file() and point_is_whole(file)
        if file.is_file() and not whole:
            damaged.append(file)
        if whole and not (retry_failed and _failed(file)):
            done.append(task)
        else:
            pending.append(task)
    documents: dict[Path, dict[str, Any]] = {}
    for label, base in zip(spec.base_labels, spec.bases, strict=True):
        try:
            documents[base] = load_document(base)
        except SpecError as exc:
            raise exc.with_source(f"{spec.source}: base {label}") from None
    # Check each pending configuration here, where a mistake costs milliseconds: a value the
    # models refuse becomes a failed row without a worker ever seeing it.
    failed: dict[str, dict[str, Any]] = {}
    checked: set[str] = set()
    for task in pending:
        if task.config in checked:
            continue
        checked.add(task.config)
        try:
            load_scenario(documents[task.base_path], task.overrides)
        except SpecError as exc:
            failed[task.config] = {"status": "failed", "error": exc.with_source("").render(), "wall_s": 0.0,
                                   "issues": exc.issues}
    if pending and len(failed) == len(checked) and not done:
        first = next(t for t in pending if t.config in failed)
        raise SpecError(failed[first.config]["issues"],
                        f"{spec.source}: every point fails; the first, base {first.base_label} with "
                        + (", ".join(first.overrides) or "no overrides"))
    return _Prepared(pending, done, documents, failed, damaged)


def _failed(file: Path) -> bool:
    try:
        return bool((pd.read_parquet(file, columns=["status"])["status"] == "failed").any())
    except Exception:  # an unreadable file is as good as none
        return True


def _check_metrics(spec: SweepSpec, prepared: _Prepared) -> None:
    """Named metrics must exist: check them against a one-minute run of the first good point."""
    from sim.experiment import flat_summary, simulate
    from sim.spec.loader import load_scenario

    task = next((t for t in prepared.pending if t.config not in prepared.failed_at_load), None)
    if task is None:
        return
    scenario = load_scenario(prepared.documents[task.base_path], task.overrides)
    probe = scenario.model_copy(update={"horizon": min(60.0, scenario.horizon), "warmup": 0.0})
    keys = list(flat_summary(simulate(probe, 0).summary))
    issues = []
    for i, name in enumerate(spec.metrics):
        if not any(key == name or key.startswith(name + ".") for key in keys):
            stems = sorted({k.split(".")[0] for k in keys} | set(keys))
            issues.append(SpecIssue(f"metrics[{i}]", f"not a summary field{suggest(name, stems)}", name,
                                    "summary field names, e.g. ttft_p99_s, cost_usd_per_1m_requests, "
                                    "cost_usd_by_component.capex, gpu_utilisation"))
    if issues:
        raise SpecError(issues, spec.source)


def sweep(
    path_or_spec: str | Path | Mapping[str, Any] | SweepSpec,
    workers: int | None = None,
    scheduler: str | None = None,
    out: str | Path | None = None,
    on_progress: Progress | None = None,
    retry_failed: bool = False,
    on_damaged: Callable[[list[Path]], None] | None = None,
) -> pd.DataFrame:
    """Run a sweep; returns one row per point x replication (finished earlier or now).

    - `workers`: processes of a local Dask cluster (default: one per CPU; one thread each).
      `workers=0` runs every point here, one after another, without Dask.
    - `scheduler`: the address of an existing Dask scheduler (`tcp://host:8786`); its workers
      need deploysim installed and must be able to read any trace or catalog file the
      scenarios name.
    - `out`: the results folder (default: the file's `out`, else reports/sweeps/<name>).
    - `on_progress(done, total)`: called as points finish (counting this run's points only).
    - `retry_failed`: run again the points that failed last time (they are skipped otherwise).
    - `on_damaged(files)`: told of finished point files that did not read back (a crash or a
      power loss mid-write); they are recomputed.

    Raises SpecError for a bad sweep file, or when every point to run fails validation.
    """
    spec = path_or_spec if isinstance(path_or_spec, SweepSpec) else load_sweep(path_or_spec)
    if out is not None:
        spec.out = Path(out)
    if workers is not None and workers < 0:
        raise SpecError([SpecIssue("--workers", "out of range", workers, "a whole number >= 0 (0: no Dask)")])
    tasks = spec.tasks()
    out_dir = prepare_out_dir(spec.out_dir)
    (out_dir / POINTS_DIR).mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out_dir)
    prepared = _prepare(spec, tasks, retry_failed)
    if spec.custom_metrics:
        _check_metrics(spec, prepared)
    _write_manifest(spec, tasks)
    if on_damaged and prepared.damaged:
        on_damaged(prepared.damaged)

    pending = prepared.pending
    total = len(pending)
    done = 0
    if on_progress:
        on_progress(0, total)

    def finish(task: PointTask, outcome: dict[str, Any]) -> None:
        nonlocal done
        write_row(out_dir, _row(task, outcome, spec.metrics))
        done += 1
        if on_progress:
            on_progress(done, total)

    runnable = []
    for task in pending:
        if task.config in prepared.failed_at_load:
            workspace = task_folder(out_dir, task)
            workspace.mkdir(parents=True, exist_ok=True)
            clear_workspace(workspace)
            (workspace / ERROR_FILE).write_text(prepared.failed_at_load[task.config]["error"].rstrip() + "\n")
            finish(task, prepared.failed_at_load[task.config])
        else:
            runnable.append(task)
    if runnable:
        items = [(prepared.documents[t.base_path], t.overrides, t.replication, spec.metrics, task_folder(out_dir, t))
                 for t in runnable]
        run_with = executor(workers, len(items), "serial" if workers == 0 and scheduler is None else "dask",
                            scheduler)
        for i, outcome in run_with.run(sweep_point, items):
            if isinstance(outcome, BaseException):  # a worker that died (KilledWorker) or a lost task
                outcome = {"status": "failed", "error": f"{type(outcome).__name__}: {outcome}", "wall_s": 0.0}
            finish(runnable[i], outcome)
    return load_sweep_results(out_dir)


def task_folder(out_dir: Path, task: PointTask) -> Path:
    """The workspace of one point x replication: out/runs/<config hash>/rep-<k>."""
    return point_folder(out_dir, task.config, task.replication)


# ------------------------------------------------------------------------------------------
# Summaries of results
# ------------------------------------------------------------------------------------------


def metric_columns(results: pd.DataFrame) -> list[str]:
    """The metric columns of a results frame (everything but bookkeeping and factors)."""
    factors = set(results.attrs.get("factors", []))
    return [c for c in results.columns if c not in META_COLUMNS and c not in factors]


def summarise(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per configuration (base x factor values): mean, 95% CI and n of each metric
    over its successful replications, as `<metric>`, `<metric>_ci_low`, `<metric>_ci_high`."""
    from sim.experiment import mean_ci, metric_domain

    factors = list(results.attrs.get("factors", []))
    metrics = list(metrics or metric_columns(results))
    ok = results[results["status"] == "ok"]
    rows = []
    for config, group in ok.groupby("config", sort=False):
        first = group.iloc[0]
        row: dict[str, Any] = {"config": config, "base": first["base"], "replications": len(group)}
        row.update({f: first[f] for f in factors if f in group})
        for name in metrics:
            if name not in group:
                continue
            values = [None if pd.isna(v) else float(v) for v in group[name]]
            mean, low, high, _ = mean_ci(values, domain=metric_domain(name))
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = mean, low, high
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs = dict(results.attrs)
    return frame


def iter_failures(results: pd.DataFrame) -> Iterator[tuple[str, str]]:
    """(overrides, error) of each failed row, for a person to read."""
    for _, row in results[results["status"] == "failed"].iterrows():
        yield f"{row['base_file']} {row['overrides']} (replication {row['replication']})", str(row["error"])
