"""Fitting engine profiles to measurements, and saying honestly how well they fit.

An engine profile (`sim.catalog.Engine`) holds the factors the step-time model cannot know
from datasheets: how close the engine gets to a GPU's peaks per kind of operation, its
per-iteration overheads, its all-reduce cost and its front end (`sim.kernels.roofline`).
`calibrate` finds them from benchmarks the owner already has:

1. Group the benchmarks by engine (serving) and by GPU (training points).
2. For each engine, reproduce every benchmark through the simulator (`predict_measurement`,
   `simulate_run`) and fit the factors by bounded least squares on log(predicted /
   measured): a run contributes its per-stage mean E2E, TTFT and TPOT, a point its number.
   Factors are fitted in log space within physically plausible bounds (`BOUNDS`: bandwidth
   <= 0.95 of the datasheet, FLOP fractions <= 0.85, overheads 0.1-20 ms), starting from the
   engine's sourced priors (`Engine.priors`, from shared/facts/ENGINES.md).
3. Fit only what the data can pin down: the candidate factors are ranked by how much each
   explains that the ones before it do not (QR with column pivoting of the sensitivity
   matrix at the priors); a factor whose effect is below 1% of the first's, or beyond one
   factor per two measured numbers, is held at its prior, and the notes say so. Factors that differ by
   GPU generation (`PER_GPU`: weight and KV-read bandwidth) get per-GPU values for GPUs with
   at least `MIN_PER_GPU` runs under load, except the most-measured GPU, whose values are the
   defaults; other GPUs use the defaults.
4. Leave-one-out: refit without each benchmark in turn (a whole run: all its numbers),
   from the priors, and predict it. That error is the one to quote; the in-sample one
   flatters.

Training points (fine-tuning throughput) fit the GPU's training MFU for their method (full or
LoRA), one factor per (GPU, method).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.calibration.measurements import Measurement, _strip_notes
from sim.calibration.reproduce import TRAINING_FACTORS, predict_measurement, training_factor
from sim.calibration.runs import RUN_METRICS, BenchmarkRun, run_key, simulate_run
from sim.catalog import Catalog, shipped_catalog
from sim.kernels.roofline import PROFILE_FIELDS
from sim.spec.errors import SpecError, SpecIssue, suggest

Benchmark = Measurement | BenchmarkRun

# Physically plausible ranges of the fitted factors (fractions of datasheet peaks; seconds).
BOUNDS: dict[str, tuple[float, float]] = {
    "bandwidth": (0.3, 0.95),
    "kv_bandwidth": (0.05, 0.95),
    "gemm": (0.05, 0.85),
    "gemm_half_m": (1.0, 512.0),
    "attention_prefill": (0.05, 0.85),
    "moe_gemm": (0.02, 0.85),
    "overhead_s": (1e-4, 0.02),
    "overhead_per_seq_s": (1e-8, 2e-4),
    "overhead_per_prefill_token_s": (1e-10, 2e-5),
    "allreduce_latency_s": (1e-6, 2e-4),
    "allreduce_bandwidth": (0.005, 1.0),
    "frontend_s": (1e-5, 0.05),
    "frontend_per_step": (1e-3, 2.0),
    "mfu": (0.01, 0.85),
    "lora_mfu": (0.01, 0.85),
}
# Candidate factors: everything a step depends on; identifiability decides what is fitted.
CANDIDATES: tuple[str, ...] = (
    "bandwidth", "kv_bandwidth", "gemm", "attention_prefill", "moe_gemm", "overhead_s",
    "overhead_per_seq_s",
    "overhead_per_prefill_token_s", "allreduce_latency_s", "allreduce_bandwidth", "frontend_s", "frontend_per_step",
)
PER_GPU: tuple[str, ...] = ("kv_bandwidth",)
MIN_PER_GPU = 2  # benchmarks on a GPU before it gets factors of its own
RUN_FIT_CAP_S = 30.0  # fitting shortens each stage of a run to this (fidelity runs them whole)
LOG_STEP = 0.03  # finite-difference step of the sensitivities, in log space (3%)
IDENTIFIABLE = 0.01  # a factor explaining less than this share of the first one's effect is held
MAX_EVALUATIONS = 40
RESIDUALS_PER_FACTOR = 2  # fit at most one factor per two measured numbers (an exact fit proves nothing)


# ------------------------------------------------------------------------------------------
# Reproducing benchmarks under candidate factors
# ------------------------------------------------------------------------------------------


def benchmark_gpu(b: Benchmark) -> str:
    return b.gpu


def observed(b: Benchmark) -> dict[str, float]:
    """What a fit compares for a benchmark: a point's number; a run's per-stage means."""
    if isinstance(b, Measurement):
        return {"value": b.value}
    stages = [p for p in b.parts if p != "all"]
    parts = stages if all(run_key(p, "e2e") in b.measured for p in stages) and stages else ["all"]
    return {run_key(p, m): b.measured[run_key(p, m)] for p in parts for m in RUN_METRICS
            if run_key(p, m) in b.measured}


def reproduce(b: Benchmark, overrides: Mapping[str, float], catalog: Catalog,
              cap_s: float | None = None, percentiles: bool = True) -> dict[str, float]:
    """The simulator's values for a benchmark under `overrides`, keyed as `observed` (and, with
    `percentiles`, a run's p50/p90/p99 too)."""
    if isinstance(b, Measurement):
        return {"value": predict_measurement(b, overrides, catalog)}
    return simulate_run(b, catalog, overrides, cap_s, percentiles).values


def _log_residuals(b: Benchmark, predicted: Mapping[str, float]) -> list[float]:
    out = []
    for key, value in observed(b).items():
        guess = predicted.get(key, math.nan)
        out.append(math.log(guess / value) if guess > 0 and math.isfinite(guess) else math.log(1e3))
    return out


@dataclass(frozen=True)
class _Problem:
    """One engine's fit: which factors are free (by name, `gpu:factor` for per-GPU ones)."""

    benchmarks: tuple[Benchmark, ...]
    names: tuple[str, ...]
    start: Mapping[str, float]
    catalog: Catalog
    cap_s: float | None

    def overrides(self, values: Mapping[str, float], gpu: str) -> dict[str, float]:
        chosen = {k: v for k, v in self.start.items() if ":" not in k}
        chosen.update({k: v for k, v in values.items() if ":" not in k})
        chosen.update({k.split(":", 1)[1]: v for k, v in values.items() if k.startswith(gpu + ":")})
        return chosen

    def residuals(self, values: Mapping[str, float]) -> np.ndarray:
        out: list[float] = []
        for b in self.benchmarks:
            predicted = reproduce(b, self.overrides(values, benchmark_gpu(b)), self.catalog, self.cap_s, False)
            out += _log_residuals(b, predicted)
        return np.array(out)

    def bounds(self, name: str) -> tuple[float, float]:
        return BOUNDS[name.split(":", 1)[-1]]


def _sensitivities(problem: _Problem, z: np.ndarray) -> np.ndarray:
    """d residual / d log(factor), by central differences of +-LOG_STEP (one-sided at a bound).

    A simulated benchmark is a step function of its factors at fine scales (events reorder),
    so the step is a few percent, wide enough to see the trend through the steps."""
    names = problem.names

    def at(shifted: np.ndarray) -> np.ndarray:
        return problem.residuals(dict(zip(names, np.exp(shifted), strict=True)))

    columns = []
    base: np.ndarray | None = None
    for j, name in enumerate(names):
        low, high = (math.log(b) for b in problem.bounds(name))
        up, down = z.copy(), z.copy()
        up[j] = min(z[j] + LOG_STEP, high)
        down[j] = max(z[j] - LOG_STEP, low)
        if up[j] - down[j] < 1e-12:
            base = at(z) if base is None else base
            columns.append(np.zeros_like(base))
            continue
        columns.append((at(up) - at(down)) / (up[j] - down[j]))
    if not columns:
        return np.zeros((len(problem.residuals(dict(zip(names, np.exp(z), strict=True)))), 0))
    return np.column_stack(columns)


def _identifiable(problem: _Problem) -> tuple[list[str], list[str]]:
    """The factors the benchmarks pin down (most identifiable first) and the ones they do not."""
    from scipy.linalg import qr

    z = np.log([max(problem.start[n], problem.bounds(n)[0]) for n in problem.names])
    jac = _sensitivities(problem, z)
    if jac.size == 0:
        return [], list(problem.names)
    _, r, pivots = qr(jac, pivoting=True, mode="economic")
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > IDENTIFIABLE * diag[0])) if diag.size and diag[0] > 0 else 0
    most = max(1, jac.shape[0] // RESIDUALS_PER_FACTOR)
    chosen = {problem.names[i] for i in pivots[:min(rank, most)]}
    return [n for n in problem.names if n in chosen], [n for n in problem.names if n not in chosen]


def _solve(problem: _Problem) -> dict[str, float]:
    """Bounded least squares in log space, from `problem.start`; returns the fitted values."""
    from scipy.optimize import least_squares

    names = problem.names
    if not names:
        return {}
    lower = np.log([problem.bounds(n)[0] for n in names])
    upper = np.log([problem.bounds(n)[1] for n in names])
    z0 = np.clip(np.log([max(problem.start[n], problem.bounds(n)[0]) for n in names]), lower, upper)

    def residuals(z: np.ndarray) -> np.ndarray:
        return problem.residuals(dict(zip(names, np.exp(z), strict=True)))

    def jacobian(z: np.ndarray) -> np.ndarray:
        return _sensitivities(problem, z)

    solution = least_squares(residuals, z0, jac=jacobian, bounds=(lower, upper), xtol=1e-6, ftol=1e-8,
                             max_nfev=MAX_EVALUATIONS)
    return dict(zip(names, np.exp(solution.x).tolist(), strict=True))


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BenchmarkFit:
    """A benchmark, the fitted model's values for it, and the values of a fit that left it out."""

    benchmark: Benchmark
    predicted: Mapping[str, float]
    loo_predicted: Mapping[str, float] | None

    def measured(self, key: str) -> float | None:
        b = self.benchmark
        return b.value if isinstance(b, Measurement) else b.measured.get(key)

    def error(self, key: str, loo: bool = False) -> float | None:
        """predicted / measured - 1 (None where either is missing)."""
        measured = self.measured(key)
        values = self.loo_predicted if loo else self.predicted
        if measured is None or values is None or key not in values:
            return None
        return values[key] / measured - 1.0


def summary_keys(b: Benchmark) -> list[tuple[str, str]]:
    """(label, key) of the numbers quoted per benchmark: a point's metric, a run's whole-run means."""
    if isinstance(b, Measurement):
        return [(b.metric, "value")]
    return [(metric, run_key("all", metric)) for metric in ("e2e", "ttft", "tpot")]


def _median_abs(errors: Iterable[float | None]) -> float | None:
    values = [abs(e) for e in errors if e is not None]
    return float(np.median(values)) if values else None


def _mean_abs(errors: Iterable[float | None]) -> float | None:
    values = [abs(e) for e in errors if e is not None]
    return float(np.mean(values)) if values else None


@dataclass(frozen=True, eq=False)
class EngineFit:
    """One engine's fitted profile, with its in-sample and leave-one-out errors.

    `defaults` holds every factor (fitted ones and the priors of the rest); `gpus` the
    per-GPU factors. Errors are fractions (0.05 = 5%).
    """

    engine: str
    prior: Mapping[str, float]
    defaults: Mapping[str, float]
    gpus: Mapping[str, Mapping[str, float]]
    fitted: tuple[str, ...]
    held: tuple[str, ...]
    notes: tuple[str, ...]
    items: tuple[BenchmarkFit, ...]

    def errors(self, loo: bool = False, gpu: str | None = None) -> dict[str, float]:
        """Median |error| per quoted metric of runs; mean |error| (MAPE) per metric of points."""
        out: dict[str, float] = {}
        chosen = [i for i in self.items if gpu is None or i.benchmark.gpu == gpu]
        runs = [i for i in chosen if isinstance(i.benchmark, BenchmarkRun)]
        for metric in ("e2e", "ttft", "tpot"):
            value = _median_abs(i.error(run_key("all", metric), loo) for i in runs)
            if value is not None:
                out[metric] = value
        points = [i for i in chosen if isinstance(i.benchmark, Measurement)]
        if points:
            value = _mean_abs(i.error("value", loo) for i in points)
            if value is not None:
                out["points_mape"] = value
        return out

    def fit_error(self) -> str:
        """The catalog's `fit_error` text."""
        parts = []
        for label, loo in (("leave-one-out", True), ("in-sample", False)):
            errors = self.errors(loo)
            shown = [f"{m.upper()} {v:.1%}" for m, v in errors.items() if m != "points_mape"]
            text = ""
            if shown:
                text = "median |error| " + ", ".join(shown)
            if "points_mape" in errors:
                text += ("; " if text else "") + f"points MAPE {errors['points_mape']:.1%}"
            if text:
                parts.append(f"{label} {text}")
        return "; ".join(parts)

    def fitted_to(self, date: dt.date | None = None) -> str:
        date = date or dt.date.today()
        files = sorted({Path(i.benchmark.source).name for i in self.items})
        runs = [i.benchmark.id for i in self.items if isinstance(i.benchmark, BenchmarkRun)]
        points = [i.benchmark.id for i in self.items if isinstance(i.benchmark, Measurement)]
        what = []
        if runs:
            what.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''} {' '.join(runs)}")
        if points:
            engines = sorted({_strip_notes(i.benchmark.engine) for i in self.items
                              if isinstance(i.benchmark, Measurement) and i.benchmark.engine})
            what.append(f"points {' '.join(points)}" + (f" ({'; '.join(engines)})" if engines else ""))
        text = f"{', '.join(files)} ({'; '.join(what)}), {date.isoformat()}"
        if self.fitted:
            text += f"; fitted {', '.join(self.fitted)}"
        if self.held:
            text += f"; priors kept for {', '.join(self.held)}"
        return text

    def table(self) -> pd.DataFrame:
        rows = []
        for item in self.items:
            b = item.benchmark
            for label, key in summary_keys(b):
                rows.append({
                    "engine": self.engine, "id": b.id, "gpu": b.gpu, "model": b.model, "setup": b.describe_setup,
                    "metric": label, "measured": item.measured(key), "predicted": item.predicted.get(key),
                    "relative_error": item.error(key),
                    "loo_predicted": None if item.loo_predicted is None else item.loo_predicted.get(key),
                    "loo_relative_error": item.error(key, loo=True),
                })
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [f"{self.engine}: " + ", ".join(f"{k} {_fmt(k, self.defaults[k])}" for k in self.fitted if ":" not in k)]
        for gpu, values in sorted(self.gpus.items()):
            lines.append(f"  on {gpu}: " + ", ".join(f"{k} {_fmt(k, v)}" for k, v in values.items()))
        lines.append(f"  {self.fit_error()}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class TrainingFit:
    """A GPU's fine-tuning MFU per method, fitted to training points (one factor per method)."""

    gpu: str
    values: Mapping[str, float]
    items: tuple[BenchmarkFit, ...]
    notes: tuple[str, ...]

    def mape(self, loo: bool = False) -> float | None:
        return _mean_abs(i.error("value", loo) for i in self.items)

    def fitted_to(self, date: dt.date | None = None) -> str:
        date = date or dt.date.today()
        files = sorted({Path(i.benchmark.source).name for i in self.items})
        ids = " ".join(i.benchmark.id for i in self.items)
        mape = self.mape()
        text = f"{', '.join(files)} ({ids}), {date.isoformat()}"
        return text + (f": MAPE {mape:.1%}" if mape is not None else "") + "; " + "; ".join(self.notes)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "engine": "training", "id": i.benchmark.id, "gpu": self.gpu, "model": i.benchmark.model,
            "setup": i.benchmark.describe_setup, "metric": "training_throughput", "measured": i.measured("value"),
            "predicted": i.predicted.get("value"), "relative_error": i.error("value"),
            "loo_predicted": None if i.loo_predicted is None else i.loo_predicted.get("value"),
            "loo_relative_error": i.error("value", loo=True),
        } for i in self.items])


@dataclass(frozen=True, eq=False)
class Calibration:
    """Everything `calibrate` fitted: engine profiles and GPU training MFUs."""

    engines: Mapping[str, EngineFit]
    training: Mapping[str, TrainingFit]

    def table(self) -> pd.DataFrame:
        frames = [f.table() for f in self.engines.values()] + [f.table() for f in self.training.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def catalog_override(self, date: dt.date | None = None) -> dict[str, Any]:
        """The catalog document of what was fitted (engines and GPU training factors)."""
        doc: dict[str, Any] = {}
        for name, result in self.engines.items():
            doc.setdefault("engines", {})[name] = {
                "defaults": {k: _round(v) for k, v in result.defaults.items()},
                **({"gpus": {g: {k: _round(v) for k, v in values.items()} for g, values in result.gpus.items()}}
                   if result.gpus else {}),
                "fitted_to": result.fitted_to(date),
                "fit_error": result.fit_error(),
            }
        for gpu, trained in self.training.items():
            doc.setdefault("gpus", {})[gpu] = {"training": {**{k: _round(v) for k, v in trained.values.items()},
                                                            "fitted_to": trained.fitted_to(date)}}
        return doc


def _fmt(name: str, value: float) -> str:
    factor = name.split(":", 1)[-1]
    if factor.endswith("_s"):
        return f"{value * 1e3:.3g} ms" if value >= 1e-4 else f"{value * 1e6:.3g} us"
    return f"{value:.3g}"


def _round(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


# ------------------------------------------------------------------------------------------
# Fitting
# ------------------------------------------------------------------------------------------


def _priors(engine: str, catalog: Catalog, priors: Mapping[str, float] | None) -> dict[str, float]:
    entry = catalog.engines[engine]
    base = (entry.priors or entry.defaults).values()
    merged = {**entry.defaults.values(), **base}
    merged.update(priors or {})
    return {k: merged[k] for k in PROFILE_FIELDS}


def _candidate_names(benchmarks: Sequence[Benchmark], fit: Sequence[str] | None,
                     per_gpu: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(shared factor names, per-GPU factor names as 'gpu:factor') that may be fitted."""
    shared = list(fit) if fit is not None else list(CANDIDATES)
    unknown = [n for n in shared if n not in PROFILE_FIELDS]
    if unknown:
        raise SpecError([SpecIssue("fit", f"unknown factor{suggest(unknown[0], PROFILE_FIELDS)}", unknown[0],
                                   ", ".join(PROFILE_FIELDS))])
    if not any(b.gpus > 1 for b in benchmarks):
        shared = [n for n in shared if not n.startswith("allreduce")]  # nothing measured needs one
    if not any(b.model in _moe_models() for b in benchmarks):
        shared = [n for n in shared if n != "moe_gemm"]
    counts: dict[str, int] = {}
    for b in benchmarks:
        if isinstance(b, BenchmarkRun):  # a single published number cannot tell GPUs apart
            counts[b.gpu] = counts.get(b.gpu, 0) + 1
    if not counts:
        return shared, []
    reference = max(sorted(counts), key=lambda g: counts[g])  # the defaults are its values
    wanted = PER_GPU if per_gpu is None else tuple(per_gpu)
    local = [f"{g}:{n}" for g in sorted(counts) if g != reference and counts[g] >= MIN_PER_GPU for n in wanted]
    return shared, local


def _moe_models() -> set[str]:
    return {name for name, model in shipped_catalog().models.items() if model.is_moe}


def _fit_engine_values(benchmarks: Sequence[Benchmark], names: Sequence[str], start: Mapping[str, float],
                       catalog: Catalog, cap_s: float | None) -> dict[str, float]:
    problem = _Problem(tuple(benchmarks), tuple(names), dict(start), catalog, cap_s)
    return _solve(problem)


def _loo_task(args: tuple) -> dict[str, float]:
    """One leave-one-out fold (a top-level function, so worker processes can run it)."""
    rest, left_out, names, start, catalog, cap_s = args
    values = _fit_engine_values(rest, names, start, catalog, cap_s)
    problem = _Problem((left_out,), tuple(names), dict(start), catalog, None)
    return reproduce(left_out, problem.overrides(values, left_out.gpu), catalog)


def fit_engine(benchmarks: Sequence[Benchmark], engine: str, *, fit: Sequence[str] | None = None,
               per_gpu: Sequence[str] | None = None, catalog: Catalog | None = None,
               priors: Mapping[str, float] | None = None, cap_s: float | None = RUN_FIT_CAP_S,
               loo: bool = True, workers: int = 1,
               progress: Callable[[str], None] | None = None) -> EngineFit:
    """Fit `engine`'s profile to its benchmarks (see the module docstring)."""
    catalog = catalog or shipped_catalog()
    if engine not in catalog.engines:
        raise SpecError([SpecIssue("engine", f"unknown engine{suggest(engine, catalog.engines)}", engine,
                                   ", ".join(sorted(catalog.engines)))])
    mine = [b for b in benchmarks if getattr(b, "engine_id", None) == engine and not _is_training(b)]
    if not mine:
        raise SpecError([SpecIssue("engine", "no serving benchmark of this engine", engine,
                                   ", ".join(sorted({str(getattr(b, 'engine_id', '')) for b in benchmarks})))])
    start = _priors(engine, catalog, priors)
    shared, local = _candidate_names(mine, fit, per_gpu)
    for name in local:
        start[name] = start[name.split(":", 1)[1]]
    say = progress or (lambda _: None)
    say(f"{engine}: which factors can {len(mine)} benchmark(s) pin down")
    probe = _Problem(tuple(mine), tuple(shared + local), start, catalog, cap_s)
    chosen, held = _identifiable(probe)
    notes = []
    if held:
        notes.append(f"{', '.join(held)} held at the prior: the benchmarks cannot tell their effect apart")
    say(f"{engine}: fitting {len(chosen)} factor(s)")
    values = _fit_engine_values(mine, chosen, start, catalog, cap_s)
    at_edge = [n for n, v in values.items() if any(math.isclose(v, edge, rel_tol=1e-3) for edge in
                                                   BOUNDS[n.split(':', 1)[-1]])]
    if at_edge:
        notes.append(f"{', '.join(at_edge)} at the edge of its bounds")
    final = _Problem(tuple(mine), tuple(chosen), start, catalog, None)
    predicted = [reproduce(b, final.overrides(values, b.gpu), catalog) for b in mine]
    loo_values: list[dict[str, float] | None] = [None] * len(mine)
    if loo and len(mine) > 1:
        tasks = [(mine[:i] + mine[i + 1:], mine[i], chosen, start, catalog, cap_s) for i in range(len(mine))]
        say(f"{engine}: leave-one-out ({len(tasks)} refits)")
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                loo_values = list(pool.map(_loo_task, tasks))
        else:
            loo_values = [_loo_task(task) for task in tasks]
    elif loo:
        notes.append("one benchmark: no leave-one-out check")
    defaults = {k: values.get(k, start[k]) for k in PROFILE_FIELDS}
    gpus: dict[str, dict[str, float]] = {}
    for name, value in values.items():
        if ":" in name:
            gpu, factor = name.split(":", 1)
            gpus.setdefault(gpu, {})[factor] = value
    return EngineFit(
        engine=engine, prior={k: start[k] for k in PROFILE_FIELDS}, defaults=defaults, gpus=gpus,
        fitted=tuple(chosen), held=tuple(held), notes=tuple(notes),
        items=tuple(BenchmarkFit(b, p, lv) for b, p, lv in zip(mine, predicted, loo_values, strict=True)),
    )


def _is_training(b: Benchmark) -> bool:
    return isinstance(b, Measurement) and b.setup == "training"


def fit_training(points: Sequence[Measurement], gpu: str, catalog: Catalog | None = None) -> TrainingFit:
    """Training MFU per method on one GPU: each method's factor scales its throughput exactly."""
    catalog = catalog or shipped_catalog()
    mine = [m for m in points if _is_training(m) and m.gpu == gpu]
    prior = {name: getattr(catalog.gpus[gpu].training, name) for name in TRAINING_FACTORS}

    def fitted(group: Sequence[Measurement]) -> dict[str, float]:
        values = dict(prior)
        for name in TRAINING_FACTORS:
            chosen = [m for m in group if training_factor(m.method) == name]
            if chosen:  # throughput is proportional to MFU: the log-mean ratio is the least-squares fit
                ratio = np.exp(np.mean([np.log(m.value / predict_measurement(m, prior, catalog)) for m in chosen]))
                low, high = BOUNDS[name]
                values[name] = float(np.clip(prior[name] * ratio, low, high))
        return values

    values = fitted(mine)
    items = []
    notes = []
    for i, m in enumerate(mine):
        rest = mine[:i] + mine[i + 1:]
        same = [r for r in rest if training_factor(r.method) == training_factor(m.method)]
        loo = {"value": predict_measurement(m, fitted(rest), catalog)} if same else None
        if not same:
            notes.append(f"{m.id}: the only {training_factor(m.method)} point, so no leave-one-out check")
        items.append(BenchmarkFit(m, {"value": predict_measurement(m, values, catalog)}, loo))
    return TrainingFit(gpu, values, tuple(items), tuple(notes))


def calibrate(benchmarks: Sequence[Benchmark], *, fit: Sequence[str] | None = None,
              per_gpu: Sequence[str] | None = None, catalog: Catalog | None = None,
              cap_s: float | None = RUN_FIT_CAP_S, loo: bool = True, workers: int = 1,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Fit every engine that has serving benchmarks and every GPU that has training points."""
    catalog = catalog or shipped_catalog()
    engines = sorted({b.engine_id for b in benchmarks if not _is_training(b) and b.engine_id})
    fits = {e: fit_engine(benchmarks, e, fit=fit, per_gpu=per_gpu, catalog=catalog, cap_s=cap_s, loo=loo,
                          workers=workers, progress=progress) for e in engines}
    training_gpus = sorted({b.gpu for b in benchmarks if _is_training(b)})
    training = {g: fit_training([b for b in benchmarks if isinstance(b, Measurement)], g, catalog)
                for g in training_gpus}
    return Calibration(fits, training)


def write_catalog_override(result: Calibration, path: str | Path, date: dt.date | None = None) -> Path:
    """Write the fitted factors as a catalog file that a scenario names with `catalog: <path>`.

    The loader merges it over the shipped catalog, engine by engine and field by field.
    """
    path = Path(path)
    doc = result.catalog_override(date)
    header = ("# deploysim calibration: engine profiles and training MFU fitted to measurements.\n"
              "# Name this file in a scenario with `catalog: " + path.name + "`; it is merged over the\n"
              "# shipped catalog. Times are in seconds.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return path


def load_catalog_file(path: str | Path | None) -> Catalog:
    """The shipped catalog with a user's catalog file merged over it (None: the shipped one)."""
    from sim.spec.loader import load_catalog_file as load

    return load(path)
