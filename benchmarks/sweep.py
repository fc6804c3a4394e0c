"""Sweeps and planning: points per minute at 1 and 2 Dask workers, resume, and plan vs brute force.

1. A 200-point sweep (S2, 20 arrival rates x 10 WAN RTTs, 10 simulated minutes each) on a
   LocalCluster of 1 and then 2 worker processes: points per minute, wall time including the
   cluster's start, and the scaling ratio. Both runs must give identical rows.
2. The same sweep interrupted after 80 points and run again: no point lost or duplicated.
3. `plan` against brute force on a small case (S1 at 6 req/s, L4 and L40S, up to 12 GPUs,
   20 simulated minutes): simulations each needed, and whether the answers agree; and the
   number of simulations `plan` needs for the 40 req/s question (S1, four GPU types, up to
   32 GPUs) against what simulating every size would take.

Prints one JSON object. The machine's load average is included, and each point's wall and
CPU seconds in its worker: other work on the same cores slows the 2-worker run more than the
1-worker one, and a wall time well above the CPU time says the worker was waiting for a core.
`outside_points_s` is the wall time not spent running points (wall - points' wall / workers):
the fixed cost that bounds the scaling ratio, (F + T) / (F + T/2) for T seconds of points.

    python benchmarks/sweep.py [--points 200] [--skip-plan] [--skip-resume]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.planning import evaluate, plan  # noqa: E402
from sim.sweep import sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def sweep_spec(points: int, out: Path) -> dict:
    rates = 20
    rtts = max(1, points // rates)
    return {
        "name": "benchmark", "base": [str(ROOT / "scenarios" / "s2_cloud_training.yaml")],
        "set": ["horizon=10min", "warmup=1min"],
        "factors": {"workload.arrivals.rate_per_s": [round(float(r), 2) for r in np.linspace(1, 12, rates)],
                    "links.wan.rtt": [f"{int(ms)}ms" for ms in np.linspace(10, 200, rtts)]},
        "metrics": ["ttft_p99_s", "e2e_p99_s", "cost_usd_per_1m_requests", "exposure_score"],
        "out": str(out),
    }


def timed_sweep(points: int, workers: int, out: Path) -> tuple[dict, pd.DataFrame]:
    started = time.perf_counter()
    frame = sweep(sweep_spec(points, out), workers=workers)
    wall = time.perf_counter() - started
    return {"workers": workers, "points": len(frame), "wall_s": round(wall, 2),
            "points_per_minute": round(len(frame) / wall * 60, 1),
            "wall_s_per_point_in_worker": round(float(frame["wall_s"].mean()), 3),
            "cpu_s_per_point_in_worker": round(float(frame["cpu_s"].mean()), 3),
            # what more workers cannot shorten: the cluster's start and close, each worker's
            # imports, the client's own work, and workers idle at the end
            "outside_points_s": round(wall - float(frame["wall_s"].sum()) / workers, 2),
            "failed": int((frame["status"] == "failed").sum())}, frame


class Stop(Exception):
    pass


def resume(points: int, out: Path) -> dict:
    def stop(done: int, total: int) -> None:
        if done == 80:
            raise Stop

    with contextlib.suppress(Stop):  # stands in for Ctrl-C
        sweep(sweep_spec(points, out), workers=2, on_progress=stop)
    written = len(list((out / "points").glob("*.parquet")))
    ran: list[int] = []
    frame = sweep(sweep_spec(points, out), workers=2, on_progress=lambda done, total: ran.append(total))
    return {"interrupted_after": written, "rerun_ran": ran[-1] if ran else 0, "rows": len(frame),
            "unique_points": int(frame["point"].nunique()), "missing": points - int(frame["point"].nunique())}


def plan_vs_brute_force() -> dict:
    s1 = ROOT / "scenarios" / "s1_local.yaml"
    slos = {"ttft_p99": 2.0, "e2e_p99": 90.0}
    short = {"horizon": "20min", "warmup": "2min"}
    started = time.perf_counter()
    result = plan(s1, 6.0, slos, gpus=("l4", "l40s"), max_gpus=12, tp_options=[1], workers=1, **short)
    plan_wall = time.perf_counter() - started
    started = time.perf_counter()
    brute: dict[str, int | None] = {}
    for gpu in ("l4", "l40s"):
        brute[gpu] = None
        for n in range(1, 13):
            if evaluate(s1, 6.0, slos, gpu=gpu, gpus=n, tp=1, **short).feasible and brute[gpu] is None:
                brute[gpu] = n
    brute_wall = time.perf_counter() - started
    small = {
        "case": "S1 at 6 req/s, l4 and l40s, TP 1, up to 12 GPUs, ttft_p99<2s, e2e_p99<90s, 20 min",
        "plan_simulations": result.simulations, "brute_force_simulations": 24,
        "plan_wall_s": round(plan_wall, 2), "brute_force_wall_s": round(brute_wall, 2),
        "plan_answer": {o.gpu: o.gpus for o in result.options}, "brute_force_answer": brute,
        "agree": all(brute[o.gpu] == o.gpus for o in result.options),
    }
    started = time.perf_counter()
    big = plan(s1, 40.0, ["ttft_p99<0.8s", "e2e_p99<20s"], workers=None)
    best = big.best
    return {"small": small, "forty_rps": {
        "case": "S1 at 40 req/s, l4/l40s/a100-80gb/h100-sxm, TP smallest and next, up to 32 GPUs, 1 h",
        "plan_simulations": big.simulations, "brute_force_simulations": big.brute_force_simulations,
        "wall_s": round(time.perf_counter() - started, 1),
        "cheapest": f"{best.gpus}x {best.gpu} TP{best.tp}, ${best.cost_usd_per_month:,.0f}/month" if best else None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--skip-plan", action="store_true")
    parser.add_argument("--skip-resume", action="store_true", help="only the 1- and 2-worker timings")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # warm numba's cache so neither timed run pays compilation
        sweep(sweep_spec(20, root / "warm") | {"factors": {"workload.arrivals.rate_per_s": [1]}}, workers=0)
        one, frame_one = timed_sweep(args.points, 1, root / "one")
        two, frame_two = timed_sweep(args.points, 2, root / "two")
        columns = [c for c in frame_one.columns if c not in ("wall_s", "cpu_s")]
        identical = frame_one[columns].equals(frame_two[columns])
        resumed = None if args.skip_resume else resume(args.points, root / "resume")
    output = {
        "benchmark": "sweep", "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "sweep": {"one_worker": one, "two_workers": two,
                  "scaling_ratio": round(two["points_per_minute"] / one["points_per_minute"], 2),
                  "identical_rows": bool(identical)},
    }
    if resumed is not None:
        output["resume"] = resumed
    if not args.skip_plan:
        output["plan"] = plan_vs_brute_force()
    output["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
