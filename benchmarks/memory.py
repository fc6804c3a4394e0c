"""Memory per request, per serving replica and per sweep point: the constants the guards use.

`sim.workload.limits` refuses a run, a prediction or a sweep whose estimated memory exceeds
what the machine has. Its constants are measured here, not guessed:

1. **bytes per request**: `deploysim run` of a seed scenario (S2 by default: cloud serving,
   monitoring that sees every request, training) at two sizes (the day's rate raised so it
   holds about 1/4 and all of `--requests`). The difference of the peaks over the difference
   of the requests is the marginal cost of a request (the interpreter, numba, pandas and the
   world are paid once, at both sizes). It includes generating the workload, the kernels'
   arrays, the request table, the metrics and writing the Parquet files.
2. **bytes per replica-sequence**: the same command with a 10-second horizon and a serving
   pool of 2,000 and then 8,000 GPUs; the marginal cost of a replica, divided by the
   scenario's max_num_seqs (the kernel holds per-replica arrays of max_num_seqs).
3. **bytes per sweep point**: `SweepSpec.tasks()` for 20,000 and 80,000 points (tracemalloc
   peak in this process), over the difference of tasks: what expanding a design costs before
   any run.
4. **bytes per predicted request**: `deploysim predict` of a static batch at two sizes, as in 1.

Every size runs twice in a fresh process: once for peak RSS, once under tracemalloc (what
Python and numpy allocated: numpy's zeros are not resident until written, yet a large one
still fails to allocate). The larger of the two marginal costs is the constant.

Prints one JSON object; `bytes_per_request` etc. go into sim/workload/limits.py with this
benchmark's name and the date.

    python benchmarks/memory.py [--requests 1000000] [--scenario scenarios/s2_cloud_training.yaml]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.spec import load_scenario  # noqa: E402
from sim.sweep import load_sweep  # noqa: E402

# Runs the CLI in the child and writes its peak memory to the file in argv[1]: peak RSS (ru_maxrss,
# KiB on Linux), or with argv[2] == "traced" the tracemalloc peak (what Python and numpy
# allocated, touched or not: numpy's zeros are not in RSS until written, but still count
# against the address space).
CHILD = """
import resource, sys, tracemalloc
from pathlib import Path
peak_file, mode = sys.argv[1], sys.argv[2]
if mode == "traced":
    tracemalloc.start()
from sim.cli import main
sys.argv = ["deploysim", *sys.argv[3:]]
try:
    main()
except SystemExit as exit:
    if exit.code not in (0, None):
        raise
peak = tracemalloc.get_traced_memory()[1] if mode == "traced" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
Path(peak_file).write_text(str(peak))
"""


def peak_bytes(args: list[str], traced: bool = False) -> int:
    """Peak RSS (or with `traced`, peak traced allocations) of a fresh `deploysim ARGS` process."""
    with tempfile.TemporaryDirectory() as folder:
        peak = Path(folder) / "peak"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-c", CHILD, str(peak), "traced" if traced else "rss", *args], check=True,
                       env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        return int(peak.read_text())


def marginal(args_of_size: list[list[str]], sizes: list[int]) -> dict[str, float]:
    """Bytes per unit between two sizes, by peak RSS and by traced allocations; the larger counts."""
    rss = [peak_bytes(args) for args in args_of_size]
    traced = [peak_bytes(args, traced=True) for args in args_of_size]
    by_rss = (rss[1] - rss[0]) / (sizes[1] - sizes[0])
    by_allocations = (traced[1] - traced[0]) / (sizes[1] - sizes[0])
    return {"sizes": sizes, "peak_rss_bytes": rss, "peak_traced_bytes": traced, "by_rss": by_rss,
            "by_allocations": by_allocations, "bytes_per_unit": max(by_rss, by_allocations)}


def run_args(scenario: str, rate: float, horizon: str, extra: list[str], out: Path) -> list[str]:
    return ["run", scenario, "-q", "--out", str(out), "--set", f"workload.arrivals.rate_per_s={rate}",
            "--set", f"horizon={horizon}", "--set", "warmup=0s", *extra]


def per_request(scenario: str, requests: int, out: Path) -> dict[str, float]:
    pool = ["--set", "sites.cloud.pools[0].count=16"] if "s2_" in scenario else []
    runs = [run_args(scenario, n / 86400.0, "24h", pool, out / f"requests_{n}") for n in (requests // 4, requests)]
    result = marginal(runs, [0, 1])  # the real sizes are what the runs generated, read below
    counts = [json.loads((out / f"requests_{n}" / "summary.json").read_text())["requests_total"]
              for n in (requests // 4, requests)]
    for key, peaks in (("by_rss", result["peak_rss_bytes"]), ("by_allocations", result["peak_traced_bytes"])):
        result[key] = (peaks[1] - peaks[0]) / (counts[1] - counts[0])
    result.update(sizes=counts, bytes_per_unit=max(result["by_rss"], result["by_allocations"]))
    return result


def per_replica_seq(scenario: str, out: Path) -> dict[str, float]:
    target = "sites.cloud.pools[0].count" if "s2_" in scenario else "sites.premises.pools[0].count"
    counts = [2000, 8000]
    result = marginal([run_args(scenario, 1.0, "10s", ["--set", f"{target}={n}"], out / f"replicas_{n}")
                       for n in counts], counts)
    seqs = load_scenario(scenario).model.serving.max_num_seqs
    result.update(max_num_seqs=seqs, bytes_per_replica=result["bytes_per_unit"],
                  bytes_per_unit=result["bytes_per_unit"] / seqs)
    return result


def per_sweep_point(scenario: str) -> dict[str, float]:
    sizes = [20_000, 80_000]
    peaks = []
    for points in sizes:
        spec = load_sweep({"base": [scenario], "factors": {"workload.arrivals.rate_per_s":
                                                           {"low": 1, "high": 2, "steps": points}}})
        tracemalloc.start()
        tasks = spec.tasks()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        del tasks
    return {"sizes": sizes, "peak_traced_bytes": peaks, "bytes_per_unit": (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])}


def per_predicted_request() -> dict[str, float]:
    sizes = [50_000, 400_000]
    return marginal([["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-tokens", "128",
                      "--output-tokens", "16", "--batch", str(n), "--json"] for n in sizes], sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--scenario", default=str(ROOT / "scenarios" / "s2_cloud_training.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        requests = per_request(args.scenario, args.requests, Path(folder))
        replicas = per_replica_seq(args.scenario, Path(folder))
    sweep_points = per_sweep_point(args.scenario)
    predicted = per_predicted_request()
    scenario = Path(args.scenario).resolve()
    print(json.dumps({
        "benchmark": "benchmarks/memory.py", "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "scenario": str(scenario.relative_to(ROOT)) if scenario.is_relative_to(ROOT) else str(scenario),
        "bytes_per_request": round(requests["bytes_per_unit"]),
        "bytes_per_replica_seq": round(replicas["bytes_per_unit"]),
        "bytes_per_sweep_point": round(sweep_points["bytes_per_unit"]),
        "bytes_per_predicted_request": round(predicted["bytes_per_unit"]),
        "detail": {"requests": requests, "replica_seqs": replicas, "sweep_points": sweep_points,
                   "predicted_requests": predicted},
    }, indent=1))


if __name__ == "__main__":
    main()
