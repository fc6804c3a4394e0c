"""A busy day on one machine: S1 at 1,000 req/s for 24 h (about 86M requests), streamed.

Issue 19's scale target: a whole `deploysim run` of S1 (`scenarios/s1_local.yaml`: local
serving on L40S, its diurnal rhythm, drift and monitor) scaled to `--rate` req/s mean over
`--hours`, with its daily shape kept (amplitude 0.8: the peak is 1.8x the mean), in bounded
memory. Prints one JSON object:

- `capacity_rps_per_replica`: one replica's capacity at the SLO, measured: the highest
  Poisson rate one replica of S1's pool serves for an hour with both SLO targets met
  (ttft_p99 800 ms, e2e_p99 30 s), by bisection to 2% (each probe an exact `run_point`);
- `replicas`: ceil(peak rate / that capacity), the pool size the busy day runs with;
- `run`: the busy day as a `deploysim run --stream` subprocess: wall seconds, peak RSS of
  the child (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`), requests, requests per wall
  second, and its summary's percentiles and SLO verdict;
- `prefix`: the busy day cut at the horizon by which its arrival process has sent `--prefix`
  requests, run exact and streamed in this process: each percentile of TTFT, TPOT and E2E
  from the sketch against the exact one, and their relative error. (The shorter horizon
  draws its arrivals anew, so these are about, not exactly, the busy day's first requests.)

Targets (issue 19): peak RSS <= 2 GB, wall <= 120 s warm on 2 cores, percentile error <= 1%.

    python benchmarks/busy_day.py [--rate 1000] [--hours 24] [--prefix 1000000]
    python benchmarks/busy_day.py --rate 50 --hours 2 --prefix 100000   # small
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sim  # noqa: E402
from sim.runner import run_point  # noqa: E402
from sim.workload.requests import request_chunks  # noqa: E402

SCENARIO = ROOT / "scenarios" / "s1_local.yaml"
POOL = "sites.premises.pools[0].count"
STEMS = ("ttft", "tpot", "e2e")
QUANTILES = ("p50", "p90", "p99")


def day(rate: float, hours: float, replicas: int) -> list[str]:
    """S1 scaled: its diurnal process at `rate` mean over `hours`, `replicas` L40S."""
    sets = [f"workload.arrivals.rate_per_s={rate}", f"horizon={hours}h", f"{POOL}={replicas}"]
    if hours < 1.0:  # S1's warm-up is 30 min: a shorter day keeps its second half measured
        sets.append(f"warmup={hours * 1800.0}")
    return sets


def slo_met(rate: float) -> bool:
    """Does one replica meet S1's SLO for an hour of Poisson arrivals at `rate`?"""
    scenario = sim.load_scenario(SCENARIO, ["horizon=1h", "warmup=10min", f"{POOL}=1",
                                            f"workload.arrivals={{process: poisson, rate_per_s: {rate:g}}}"])
    summary = run_point(scenario, 0, mode="exact").summary
    return bool(summary["slo"]) and all(check["met"] for check in summary["slo"].values())


def replica_capacity(low: float = 0.5, high: float = 20.0, tolerance: float = 0.02) -> float:
    """The highest rate one replica serves within the SLO, by bisection (see the module doc)."""
    if not slo_met(low):
        raise SystemExit(f"one replica misses the SLO even at {low} req/s")
    while high / low > 1 + tolerance:
        middle = math.sqrt(low * high)
        low, high = (middle, high) if slo_met(middle) else (low, middle)
    return low


def busy_run(sets: list[str], out: Path) -> dict[str, Any]:
    """The busy day as `deploysim run --stream` in a child process: wall time and peak RSS."""
    command = [sys.executable, "-m", "sim.cli", "run", str(SCENARIO), "--stream", "-q", "--out", str(out)]
    for item in sets:
        command += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"deploysim run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024, 1), "requests": summary["requests_total"],
        "requests_per_wall_s": round(summary["requests_total"] / wall), "results_mode": summary["results_mode"],
        "latency_relative_error": summary["latency_relative_error"],
        "percentiles_s": {f"{s}_{q}": summary[f"{s}_{q}_s"] for s in STEMS for q in QUANTILES},
        "slo": {name: check["met"] for name, check in summary["slo"].items()},
        "slo_attainment": summary["slo_attainment"],
    }


def prefix_horizon(scenario: sim.Scenario, count: int) -> float:
    """When the scenario's arrival process has sent `count` requests (its horizon if never)."""
    sent = 0
    for chunk in request_chunks(scenario.workload, scenario.horizon, scenario.seed, 0):
        if sent + chunk.count >= count:
            return float(chunk.arrival_s[count - sent - 1]) + 1e-6
        sent += chunk.count
    return float(scenario.horizon)


def prefix_accuracy(sets: list[str], count: int) -> dict[str, Any]:
    """Sketch percentiles against exact ones on the busy day's first `count` requests."""
    scenario = sim.load_scenario(SCENARIO, sets)
    horizon = prefix_horizon(scenario, count)
    # a short prefix (a small --prefix) would end inside S1's warm-up: keep half of it measured
    warmup = min(float(scenario.warmup), horizon / 2)
    prefix = sim.load_scenario(SCENARIO, [*sets, f"horizon={horizon}", f"warmup={warmup}"])
    exact = run_point(prefix, 0, mode="exact").summary
    streamed = run_point(prefix, 0, mode="streamed").summary
    rows = {}
    for stem in STEMS:
        for q in QUANTILES:
            key = f"{stem}_{q}_s"
            a, b = exact[key], streamed[key]
            rows[f"{stem}_{q}"] = {"exact_s": a, "sketch_s": b, "relative_error": abs(b - a) / a if a else None}
    worst = max(row["relative_error"] or 0.0 for row in rows.values())
    return {"requests": exact["requests_total"], "horizon_s": round(horizon, 1), "percentiles": rows,
            "worst_relative_error": worst, "counts_equal": all(
                exact[k] == streamed[k] for k in ("requests_total", "requests_completed", "requests_unfinished",
                                                  "slo_attainment", "throughput_rps"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="mean req/s over the day (S1: 3)")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--prefix", type=int, default=1_000_000, help="requests compared exact vs sketch")
    parser.add_argument("--replicas", type=int, default=None, help="pool size (default: sized for the peak)")
    args = parser.parse_args()
    base = sim.load_scenario(SCENARIO)
    amplitude = base.workload.arrivals.amplitude  # type: ignore[union-attr]  # S1's is diurnal
    peak = args.rate * (1 + amplitude)
    capacity = None
    replicas = args.replicas
    if replicas is None:
        capacity = replica_capacity()
        replicas = math.ceil(peak / capacity)
    sets = day(args.rate, args.hours, replicas)
    report: dict[str, Any] = {"rate_per_s": args.rate, "hours": args.hours, "peak_rate_per_s": peak,
                              "capacity_rps_per_replica": capacity, "replicas": replicas}
    with tempfile.TemporaryDirectory() as folder:
        report["run"] = busy_run(sets, Path(folder))
    if args.prefix:
        report["prefix"] = prefix_accuracy(sets, args.prefix)
    report["targets"] = {"peak_rss_mb": 2048, "wall_s": 120, "percentile_relative_error": 0.01}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
