"""At what utilisation do our own GPUs become cheaper than renting them? S1 against S2.

    python experiments/breakeven.py [--gpu l40s] [--premises-gpus 4] [--points 12]

Premises GPUs (S1) are bought for the peak: their cost per month is fixed (amortised purchase
and energy), so their cost per 1M requests falls as traffic rises. Cloud GPUs (S2) can be
rented to fit the traffic: at each rate, `sim.plan` finds the fewest cloud GPUs that meet the
SLOs, and that configuration's cost per 1M requests (GPU-hours and egress) is the cloud price
of the traffic. Utilisation here is the share of the premises pool's capacity in use: the
rate over the highest rate the pool sustains within the SLOs (`sim.planning.max_rate`).

The S1 leg is a sweep over the rate (`sim.sweep.sweep`, resumable); the crossover is where
the two cost curves meet, interpolated on a log scale between the bracketing rates. Writes
reports/breakeven/: costs.csv, breakeven.png and report.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sim.planning import max_rate, parse_slos, plan  # noqa: E402
from sim.report.sweep_figures import markdown_table  # noqa: E402
from sim.sweep import sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
S1 = ROOT / "scenarios" / "s1_local.yaml"
S2 = ROOT / "scenarios" / "s2_cloud_training.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="l40s")
    parser.add_argument("--premises-gpus", type=int, default=4)
    parser.add_argument("--points", type=int, default=12, help="rates from 5%% to 100%% of the pool's capacity")
    parser.add_argument("--slo", action="append", default=None, help='e.g. "ttft_p99<0.8s" (repeatable)')
    parser.add_argument("--horizon", default="1h")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "breakeven")
    args = parser.parse_args()
    slos = parse_slos(args.slo or ["ttft_p99<0.8s", "e2e_p99<30s"])
    pool = [f"sites.premises.pools[0].gpu={args.gpu}", f"sites.premises.pools[0].count={args.premises_gpus}"]

    ceiling = max_rate(S1, slos, overrides=pool, horizon=args.horizon, tolerance=0.03)
    capacity = ceiling.rate_per_s
    print(f"{args.premises_gpus}x {args.gpu} on premises sustain {capacity:.2f} req/s within the SLOs "
          f"({ceiling.simulations} simulations)", flush=True)
    rates = [round(float(r), 3) for r in np.geomspace(0.05, 1.0, args.points) * capacity]

    premises = sweep({"name": "breakeven_s1", "base": [str(S1)], "set": [*pool, f"horizon={args.horizon}",
                                                                          "warmup=10min"],
                      "factors": {"workload.arrivals.rate_per_s": rates},
                      "metrics": ["cost_usd_per_month", "cost_usd_per_1m_requests", "throughput_rps"],
                      "out": str(args.out / "s1_sweep")}, workers=args.workers)
    premises = premises.set_index("workload.arrivals.rate_per_s")
    rows = []
    for rate in rates:
        cloud = plan(S2, rate, slos, gpus=(args.gpu,), max_gpus=64, horizon=args.horizon, workers=1)
        best = cloud.best
        rows.append({
            "rate_per_s": rate, "utilisation": rate / capacity,
            "s1_cost_usd_per_1m_requests": float(premises.loc[rate, "cost_usd_per_1m_requests"]),
            "s1_cost_usd_per_month": float(premises.loc[rate, "cost_usd_per_month"]),
            "s2_gpus": best.gpus if best else None,
            "s2_cost_usd_per_1m_requests": best.chosen.cost_usd_per_1m_requests if best else math.nan,
            "s2_cost_usd_per_month": best.cost_usd_per_month if best else math.nan,
        })
        print(f"  {rate:7.2f} req/s ({rate / capacity:4.0%}): S1 ${rows[-1]['s1_cost_usd_per_1m_requests']:8.2f}"
              f" vs S2 ${rows[-1]['s2_cost_usd_per_1m_requests']:8.2f} per 1M requests "
              f"({rows[-1]['s2_gpus']} cloud GPUs)", flush=True)
    costs = pd.DataFrame(rows)
    crossover = crossover_utilisation(costs)
    args.out.mkdir(parents=True, exist_ok=True)
    costs.to_csv(args.out / "costs.csv", index=False)
    _figure(costs, crossover, args, args.out / "breakeven.png")
    verdict = (f"premises GPUs become cheaper than renting at {crossover:.0%} utilisation "
               f"({crossover * capacity:.2f} req/s)" if crossover is not None
               else "no crossover in the range: one placement is cheaper at every utilisation")
    print(verdict)
    text = [f"# Break-even utilisation: {args.premises_gpus}x {args.gpu} on premises (S1) vs right-sized cloud (S2)",
            "", f"SLOs: {', '.join(f'{k} < {v:g} s' for k, v in slos.items())}. Capacity of the premises pool "
            f"within the SLOs: {capacity:.2f} req/s.", "", f"**{verdict}.**", "",
            markdown_table(costs), "", "![breakeven](breakeven.png)", ""]
    (args.out / "report.md").write_text("\n".join(text))
    print(f"wrote {args.out}/report.md, costs.csv, breakeven.png")


def crossover_utilisation(costs: pd.DataFrame) -> float | None:
    """The first utilisation at which S1 costs no more per request than S2 (log-interpolated)."""
    gap = np.log(costs["s1_cost_usd_per_1m_requests"].to_numpy()) - np.log(costs["s2_cost_usd_per_1m_requests"].to_numpy())
    u = costs["utilisation"].to_numpy()
    for i in range(len(gap)):
        if np.isnan(gap[i]):
            continue
        if gap[i] <= 0:
            if i == 0 or np.isnan(gap[i - 1]):
                return float(u[i])
            fraction = gap[i - 1] / (gap[i - 1] - gap[i])
            return float(math.exp(math.log(u[i - 1]) + fraction * (math.log(u[i]) - math.log(u[i - 1]))))
    return None


def _figure(costs: pd.DataFrame, crossover: float | None, args: argparse.Namespace, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ax.plot(costs["utilisation"] * 100, costs["s1_cost_usd_per_1m_requests"], marker="o",
            label=f"S1: {args.premises_gpus}x {args.gpu} owned")
    ax.plot(costs["utilisation"] * 100, costs["s2_cost_usd_per_1m_requests"], marker="s",
            label=f"S2: fewest cloud {args.gpu} meeting the SLOs")
    if crossover is not None:
        ax.axvline(crossover * 100, color="#444444", linestyle="--", linewidth=1)
        ax.annotate(f"break-even {crossover:.0%}", (crossover * 100, ax.get_ylim()[1]), ha="left", va="top",
                    fontsize=8, xytext=(4, -4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("utilisation of the premises pool (% of the rate it sustains within the SLOs)")
    ax.set_ylabel("cost (USD per 1M requests)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
