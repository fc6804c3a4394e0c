"""The cheapest GPU choice for S1 (premises) and S2 (cloud) at three arrival rates.

    python experiments/capacity_plan.py [--rates 10,20,40] [--slo "ttft_p99<0.8s" --slo "e2e_p99<20s"]

For each scenario and rate, `sim.plan` finds the fewest GPUs of each type (L4, L40S,
A100-80GB, H100-SXM; the smallest tensor-parallel degree that fits and the next) that meet
every SLO, and ranks them by cost per month. Premises GPUs cost their amortised purchase
price and energy; cloud GPUs their hourly price and the egress of every response. Writes
reports/capacity_plan/: plans.csv (every option), cheapest.csv, cost.png and report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sim.planning import DEFAULT_GPUS, plan  # noqa: E402
from sim.report.sweep_figures import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("s1_local", "s2_cloud_training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,20,40")
    parser.add_argument("--slo", action="append", default=None, help='e.g. "ttft_p99<0.8s" (repeatable)')
    parser.add_argument("--gpus", default=",".join(DEFAULT_GPUS))
    parser.add_argument("--max-gpus", type=int, default=32)
    parser.add_argument("--horizon", default="1h")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "capacity_plan")
    args = parser.parse_args()
    slos = args.slo or ["ttft_p99<0.8s", "e2e_p99<20s"]
    rates = [float(r) for r in args.rates.split(",")]
    frames, simulations, brute = [], 0, 0
    for name in SCENARIOS:
        for rate in rates:
            result = plan(ROOT / "scenarios" / f"{name}.yaml", rate, slos, gpus=args.gpus.split(","),
                          max_gpus=args.max_gpus, horizon=args.horizon, workers=args.workers)
            table = result.table()
            table.insert(0, "rate_per_s", rate)
            table.insert(0, "scenario", name)
            frames.append(table)
            simulations += result.simulations
            brute += result.brute_force_simulations
            best = result.best
            print(f"{name} at {rate:g} req/s: "
                  + (f"{best.gpus}x {best.gpu} (TP {best.tp}), ${best.cost_usd_per_month:,.0f}/month"
                     if best else "no option meets the SLOs")
                  + f"  [{result.simulations} simulations, {result.wall_s:.0f} s]", flush=True)
    plans = pd.concat(frames, ignore_index=True)
    cheapest = plans[plans["rank"] == 1].reset_index(drop=True)
    args.out.mkdir(parents=True, exist_ok=True)
    plans.to_csv(args.out / "plans.csv", index=False)
    cheapest.to_csv(args.out / "cheapest.csv", index=False)
    _figure(plans, args.out / "cost.png")
    columns = ["scenario", "rate_per_s", "gpu", "tp", "gpus", "cost_usd_per_month", "cost_usd_per_1m_requests",
               "exposure_score", "ttft_p99_s", "e2e_p99_s"]
    text = ["# Cheapest GPU choice per scenario and rate", "",
            f"SLOs: {', '.join(slos)}; horizon {args.horizon} per simulation; {simulations} simulations "
            f"(simulating every size would take {brute}).", "",
            markdown_table(cheapest[columns]), "", "![cost](cost.png)", "",
            "Every option: plans.csv.", ""]
    (args.out / "report.md").write_text("\n".join(text))
    print(cheapest[columns].to_string(index=False))
    print(f"wrote {args.out}/report.md, plans.csv, cheapest.csv, cost.png")


def _figure(plans: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(9, 3.6), sharey=True, layout="constrained")
    for ax, name in zip(axes, SCENARIOS, strict=True):
        mine = plans[(plans["scenario"] == name) & plans["feasible"]]
        for (gpu, tp), group in mine.groupby(["gpu", "tp"]):
            ax.plot(group["rate_per_s"], group["cost_usd_per_month"], marker="o", label=f"{gpu} TP{tp}")
        ax.set_title(name)
        ax.set_xlabel("arrival rate (req/s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost of the fewest GPUs meeting the SLOs (USD / month)")
    axes[-1].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
