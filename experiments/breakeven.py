"""At what utilisation do our own GPUs become cheaper than renting them? S1 against S2.

    python experiments/breakeven.py [--gpu l40s] [--premises-gpus 4] [--points 8]

Premises GPUs (S1) are bought for the peak: their cost per day is fixed (amortised purchase,
energy), so their cost per 1M requests falls as traffic rises. Cloud GPUs (S2) are rented to
fit the traffic. At each rate (a steady Poisson load, one simulated hour after a 10-minute
warm-up), `sim.decide` ranks the two by cost with the premises pool pinned at its size and
the cloud pool right-sized for that rate (the fewest replicas meeting every SLO).
Utilisation is the rate over the highest rate the premises pool sustains within the SLOs
(`sim.planning.max_rate`). The break-even is where the two costs meet, interpolated on a log
scale between the bracketing rates. Prints the answer; writes reports/breakeven/: costs.csv,
breakeven.png and report.md (the answer first).
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

from sim.decision import Variant, decide  # noqa: E402
from sim.planning import max_rate, parse_slos  # noqa: E402
from sim.report.sweep_figures import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
S1 = ROOT / "scenarios" / "s1_local.yaml"
S2 = ROOT / "scenarios" / "s2_cloud_training.yaml"


def steady_load(rate: float, horizon: str) -> list[str]:
    return [f"workload.arrivals={{process: poisson, rate_per_s: {rate!r}}}", f"horizon={horizon}", "warmup=10min"]


def costs_at(rate: float, gpu: str, premises_gpus: int, slos: dict[str, float], horizon: str,
             workers: int | None) -> dict[str, float | int | None]:
    """Cost per day and per 1M requests of the pinned premises pool and the right-sized cloud one."""
    slo_overrides = [f"slo.{name}={target!r}" for name, target in slos.items()]
    decision = decide([Variant(S1, (f"sites.premises.pools[0].gpu={gpu}",), "s1"),
                       Variant(S2, (f"sites.cloud.pools[0].gpu={gpu}",), "s2")],
                      weights={"cost": 1.0}, replications=1, pins=[f"s1:premises/gpus={premises_gpus}"],
                      sensitivity=False, overrides=[*steady_load(rate, horizon), *slo_overrides], workers=workers)
    by_name = {r.scenario: r for r in decision.ranking}
    per_million = 1e6 / (rate * 86400.0)
    s2 = by_name["s2"]
    return {"rate_per_s": rate,
            "s1_cost_usd_per_day": by_name["s1"].criteria["cost"] if by_name["s1"].feasible else math.nan,
            "s2_cost_usd_per_day": s2.criteria["cost"] if s2.feasible else math.nan,
            "s1_cost_usd_per_1m_requests": (by_name["s1"].criteria["cost"] * per_million
                                            if by_name["s1"].feasible else math.nan),
            "s2_cost_usd_per_1m_requests": s2.criteria["cost"] * per_million if s2.feasible else math.nan,
            "s2_max_replicas": s2.sizing.sizes.get("cloud/serving")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="l40s")
    parser.add_argument("--premises-gpus", type=int, default=4)
    parser.add_argument("--points", type=int, default=8, help="rates from 5%% to 100%% of the pool's capacity")
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
    rows = []
    for rate in (round(float(r), 3) for r in np.geomspace(0.05, 1.0, args.points) * capacity):
        rows.append({**costs_at(rate, args.gpu, args.premises_gpus, slos, args.horizon, args.workers),
                     "utilisation": rate / capacity})
        print(f"  {rate:7.2f} req/s ({rate / capacity:4.0%}): S1 ${rows[-1]['s1_cost_usd_per_1m_requests']:8.2f}"
              f" vs S2 ${rows[-1]['s2_cost_usd_per_1m_requests']:8.2f} per 1M requests "
              f"(S2 right-sized to at most {rows[-1]['s2_max_replicas']} cloud replicas)", flush=True)
    costs = pd.DataFrame(rows)
    crossover = crossover_utilisation(costs)
    args.out.mkdir(parents=True, exist_ok=True)
    costs.to_csv(args.out / "costs.csv", index=False)
    _figure(costs, crossover, args, args.out / "breakeven.png")
    verdict = answer(crossover, capacity, costs)
    print(verdict)
    text = [f"# Break-even utilisation: {args.premises_gpus}x {args.gpu} on premises (S1) vs right-sized cloud (S2)",
            "", f"**{verdict}.**", "",
            f"SLOs: {', '.join(f'{k} < {v:g} s' for k, v in slos.items())}. Capacity of the premises pool "
            f"within the SLOs: {capacity:.2f} req/s. Each rate decided by `sim.decide` (cost only; S1 pinned, "
            "S2 right-sized).", "", markdown_table(costs), "", "![breakeven](breakeven.png)", ""]
    (args.out / "report.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'report.md'}, costs.csv, breakeven.png")


def answer(crossover: float | None, capacity: float, costs: pd.DataFrame) -> str:
    """The one-line answer to the script's question."""
    if crossover is not None:
        return (f"owning becomes cheaper than renting at {crossover:.0%} utilisation of the premises pool "
                f"({crossover * capacity:.2f} req/s)")
    cheaper = ("owning" if np.nanmean(costs["s1_cost_usd_per_1m_requests"]) <
               np.nanmean(costs["s2_cost_usd_per_1m_requests"]) else "renting")
    return f"no break-even between 5% and 100% utilisation: {cheaper} is cheaper throughout"


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
            label=f"S2: cloud {args.gpu}, right-sized")
    if crossover is not None:
        ax.axvline(crossover * 100, color="#444444", linestyle="--", linewidth=1)
        ax.annotate(f"break-even {crossover:.0%}", (crossover * 100, ax.get_ylim()[1]), ha="left", va="top",
                    fontsize=8, xytext=(4, -4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("utilisation of the premises pool (% of the rate it sustains within the SLOs)")
    ax.set_ylabel("cost (USD per 1M requests)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
