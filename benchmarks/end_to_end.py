"""A whole `deploysim run` of about 1M requests: wall time and peak RSS, numba cache cold and warm.

Runs the real command in a subprocess (S1, one day, the rate raised so that the day holds
~1M requests), first with an empty numba cache directory (cold: every kernel compiles) and
then again with the same directory (warm: kernels load from the cache). Prints JSON.

    python benchmarks/end_to_end.py [--requests 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(env: dict[str, str], rate: float, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "sim.cli", "run", str(ROOT / "scenarios" / "s1_local.yaml"),
               "--set", f"workload.arrivals.rate_per_s={rate}", "--set", "sites.premises.pools[0].count=8",
               "--out", str(out), "-q"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "peak_rss_mb": max(peak_kib, before) / 1024,
            "requests": summary["requests_total"], "requests_per_wall_s": summary["requests_total"] / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    args = parser.parse_args()
    rate = args.requests / 86400.0
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = run_once(env, rate, Path(out) / "cold")
        warm = run_once(env, rate, Path(out) / "warm")
    print(json.dumps({"benchmark": "end_to_end", "command": "deploysim run scenarios/s1_local.yaml "
                      f"--set workload.arrivals.rate_per_s={rate:.4g} --set sites.premises.pools[0].count=8",
                      "cold_cache": cold, "warm_cache": warm,
                      "note": "peak RSS is the largest of the child processes (ru_maxrss)"}, indent=2))


if __name__ == "__main__":
    main()
