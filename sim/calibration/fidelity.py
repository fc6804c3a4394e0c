"""Fidelity: the simulator's predictions against measurements, without fitting anything.

For a measured point: the predicted value and its relative error; for TTFT points whose
benchmark kept per-request samples, also the Kolmogorov-Smirnov distance between the
measured TTFTs and the simulator's per-request TTFTs for the same setup. For a benchmark run
under load: every measured number (whole run and per stage; mean, p50, p90, p99 of TTFT and
E2E, derived TPOT) against the same number from the whole run reproduced, and the median
absolute error per metric and per GPU. The catalog is the shipped one, or a user's file
merged over it (what `calibrate` writes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.calibration.fitting import load_catalog_file
from sim.calibration.measurements import METRICS, Measurement
from sim.calibration.reproduce import predict_measurement, simulate_requests
from sim.calibration.runs import (
    RUN_METRICS,
    STATS,
    BenchmarkRun,
    RunPrediction,
    run_key,
    simulate_run,
)
from sim.catalog import Catalog, shipped_catalog


@dataclass(frozen=True, eq=False)
class FidelityPoint:
    """A point and the simulator's value; for TTFT with samples, the predicted samples and KS."""

    measurement: Measurement
    predicted: float
    predicted_samples: np.ndarray | None = field(default=None, repr=False)
    ks_distance: float | None = None
    ks_pvalue: float | None = None

    @property
    def relative_error(self) -> float:
        return self.predicted / self.measurement.value - 1.0


@dataclass(frozen=True, eq=False)
class FidelityRun:
    """A benchmark run and the simulator's numbers for it."""

    run: BenchmarkRun
    prediction: RunPrediction

    def error(self, key: str) -> float | None:
        measured = self.run.measured.get(key)
        predicted = self.prediction.values.get(key)
        if measured is None or predicted is None:
            return None
        return predicted / measured - 1.0


def _median_abs(values: Sequence[float | None]) -> float | None:
    kept = [abs(v) for v in values if v is not None]
    return float(np.median(kept)) if kept else None


@dataclass(frozen=True, eq=False)
class FidelityResult:
    """How far the simulator is from measured points and runs, with the catalog it used.

    Errors are fractions (0.05 = 5%). Points: `mape_by_metric` averages |relative error| per
    metric, `mape` over all points. Runs: `run_errors` is the median |relative error| per
    metric over runs, for one part ("all" or a stage) and one statistic.
    """

    points: tuple[FidelityPoint, ...]
    runs: tuple[FidelityRun, ...] = ()
    catalog_label: str = "shipped catalog"

    @property
    def mape(self) -> float | None:
        return float(np.mean([abs(p.relative_error) for p in self.points])) if self.points else None

    @property
    def mape_by_metric(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in METRICS:
            errors = [abs(p.relative_error) for p in self.points if p.measurement.metric == metric]
            if errors:
                out[metric] = float(np.mean(errors))
        return out

    def mape_where(self, keep: Callable[[Measurement], bool]) -> float | None:
        errors = [abs(p.relative_error) for p in self.points if keep(p.measurement)]
        return float(np.mean(errors)) if errors else None

    def run_errors(self, stat: str = "mean", part: str = "all", gpu: str | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        runs = [r for r in self.runs if gpu is None or r.run.gpu == gpu]
        for metric in RUN_METRICS:
            if metric == "tpot" and stat != "mean":
                continue
            value = _median_abs([r.error(run_key(part, metric, stat)) for r in runs])
            if value is not None:
                out[metric] = value
        return out

    @property
    def run_gpus(self) -> list[str]:
        return sorted({r.run.gpu for r in self.runs})

    def table(self) -> pd.DataFrame:
        """One row per point (values in SI: `unit` says s or tokens/s)."""
        return pd.DataFrame([{
            "id": p.measurement.id, "source": Path(p.measurement.source).name, "engine": p.measurement.engine,
            "model": p.measurement.model, "gpu": p.measurement.gpu, "gpus": p.measurement.gpus,
            "precision": p.measurement.precision, "setup": p.measurement.describe_setup,
            "input_tokens": p.measurement.input_tokens, "output_tokens": p.measurement.output_tokens,
            "metric": p.measurement.metric, "unit": p.measurement.unit, "measured": p.measurement.value,
            "predicted": p.predicted, "relative_error": p.relative_error, "ks_distance": p.ks_distance,
            "ks_pvalue": p.ks_pvalue, "samples": 0 if p.measurement.samples is None else len(p.measurement.samples),
        } for p in self.points])

    def runs_table(self) -> pd.DataFrame:
        """One row per run, part, metric and statistic that was measured (seconds)."""
        rows = []
        for r in self.runs:
            for part in r.run.parts:
                for metric in RUN_METRICS:
                    for stat in STATS:
                        key = run_key(part, metric, stat)
                        if key not in r.run.measured:
                            continue
                        rows.append({
                            "id": r.run.id, "source": Path(r.run.source).name, "engine": r.run.engine_id,
                            "model": r.run.model, "gpu": r.run.gpu, "gpus": r.run.gpus, "setup": r.run.describe_setup,
                            "part": part, "metric": metric, "stat": stat, "measured_s": r.run.measured[key],
                            "predicted_s": r.prediction.values.get(key), "relative_error": r.error(key),
                        })
        return pd.DataFrame(rows)


def fidelity(benchmarks: Sequence[Measurement | BenchmarkRun],
             catalog: Catalog | str | Path | None = None) -> FidelityResult:
    """Predicted against measured for every point and run, with the catalog's profiles.

    `catalog` is a Catalog, a catalog file merged over the shipped one (what `calibrate`
    writes), or None for the shipped catalog.
    """
    from scipy.stats import ks_2samp

    label = "shipped catalog"
    if not isinstance(catalog, Catalog):
        if catalog is not None:
            label = f"shipped catalog + {Path(catalog).name}"
        catalog = load_catalog_file(catalog)
    elif catalog is not shipped_catalog():
        label = "given catalog"
    points, runs = [], []
    for b in benchmarks:
        if isinstance(b, BenchmarkRun):
            runs.append(FidelityRun(b, simulate_run(b, catalog)))
            continue
        predicted = predict_measurement(b, None, catalog)
        samples = ks = p_value = None
        if b.metric == "ttft" and b.samples is not None and len(b.samples) and b.setup != "training":
            samples = simulate_requests(b, None, catalog).ttft_s
            test = ks_2samp(b.samples, samples)
            ks, p_value = float(test.statistic), float(test.pvalue)
        points.append(FidelityPoint(b, predicted, samples, ks, p_value))
    return FidelityResult(tuple(points), tuple(runs), label)
