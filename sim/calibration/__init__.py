"""Calibration: fit serving-engine profiles to benchmarks their owners already have.

The step-time model (`sim.kernels.roofline`) says how long an engine iteration takes from a
model's FLOPs and bytes and a GPU's datasheet peaks; what it cannot know is how close a real
engine gets to those peaks, what its scheduler and API server add, and what its all-reduce
costs. Those are an engine profile's factors (`sim.catalog.Engine`), and calibration finds
them from measurements, in minutes, without profiling a GPU:

1. **Read** (`read_measurements`): the CSV layout of the published table
   (`tests/data/calibration/measurements.csv`), the JSON that vLLM's serving benchmark saves
   (`vllm bench serve --save-result`), and benchmark runs under load (the layout of
   `shared/data/vllm-v0.15-benchmarks/runs.csv`: `sim.calibration.runs`).
2. **Reproduce** each through the simulator itself (`predict_measurement`, `simulate_run`):
   the same replica and serving kernel as full scenarios, with the benchmark's own setup.
3. **Fit** (`calibrate`, `fit_engine`): bounded least squares per engine, on what the data
   can pin down, with leave-one-out errors (the honest numbers) beside the in-sample ones
   (`sim.calibration.fitting`). Training points fit a GPU's fine-tuning MFU per method.
4. **Write** a catalog override (`write_catalog_override`) that a scenario names with
   `catalog: my_hw.yaml`; the loader merges it over the shipped catalog.

`fidelity` does step 2 alone and measures how far off the simulator is
(`sim.calibration.fidelity`); `sim.report.fidelity` writes that up.
"""

from sim.calibration.fidelity import FidelityPoint, FidelityResult, FidelityRun, fidelity
from sim.calibration.fitting import (
    BOUNDS,
    Benchmark,
    BenchmarkFit,
    Calibration,
    EngineFit,
    TrainingFit,
    calibrate,
    fit_engine,
    fit_training,
    load_catalog_file,
    write_catalog_override,
)
from sim.calibration.measurements import (
    METRICS,
    TIME_METRICS,
    Measurement,
    Supplied,
    read_csv,
    read_vllm_json,
    resolve_engine,
    resolve_gpu,
    resolve_model,
    resolve_precision,
)
from sim.calibration.reading import read_measurements
from sim.calibration.reproduce import RequestTimes, predict_measurement, simulate_requests
from sim.calibration.runs import BenchmarkRun, RunPrediction, read_runs_csv, run_key, simulate_run


def display_value(metric: str, value: float) -> tuple[float, str]:
    """A value in the unit people read it in: milliseconds for latencies, tokens/s otherwise."""
    return (value * 1e3, "ms") if metric in TIME_METRICS or metric in ("e2e",) else (value, "tokens/s")


__all__ = [
    "BOUNDS", "Benchmark", "BenchmarkFit", "BenchmarkRun", "Calibration", "EngineFit", "FidelityPoint",
    "FidelityResult", "FidelityRun", "METRICS", "Measurement", "RequestTimes", "RunPrediction", "Supplied",
    "TIME_METRICS", "TrainingFit", "calibrate", "display_value", "fidelity", "fit_engine", "fit_training",
    "load_catalog_file", "predict_measurement", "read_csv", "read_measurements", "read_runs_csv", "read_vllm_json",
    "resolve_engine", "resolve_gpu", "resolve_model", "resolve_precision", "run_key", "simulate_requests",
    "simulate_run", "write_catalog_override",
]
