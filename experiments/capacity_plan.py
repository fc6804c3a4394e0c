"""Which GPU, how many, owned or rented: the cheapest right-sized choice at three request rates.

    python experiments/capacity_plan.py [--rates 10,20,40] [--gpus l4,l40s,a100-80gb,h100-sxm]

The candidates are S1 (owned GPUs on premises) and S2 (rented, autoscaled cloud GPUs), each on
every GPU type. At each rate (a steady Poisson load, one simulated hour after a 10-minute
warm-up) `sim.decide` right-sizes every candidate's serving pool at that rate (the fewest
replicas meeting every SLO), ranks them by cost alone, and varies the price inputs (server
and GPU prices, cloud discount, energy price, PUE) to say which of them would change the
cheapest choice. Prints the answer per rate; writes reports/capacity_plan/: choices.csv
(every candidate at every rate), cost.png and report.md, and one decision page per rate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sim.decision import Decision, Variant, decide  # noqa: E402
from sim.planning import DEFAULT_GPUS  # noqa: E402
from sim.report.decision_page import write_decision_report  # noqa: E402
from sim.report.sweep_figures import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLACEMENTS = {"s1": (ROOT / "scenarios" / "s1_local.yaml", "sites.premises.pools[0].gpu"),
              "s2": (ROOT / "scenarios" / "s2_cloud_training.yaml", "sites.cloud.pools[0].gpu")}
PRICE_INPUTS = ["server_price", "gpu_price", "cloud_discount", "energy_price", "pue"]


def candidates(gpus: list[str]) -> list[Variant]:
    """Every placement on every GPU type, named '<placement>-<gpu>'."""
    return [Variant(path, (f"{field}={gpu}",), f"{placement}-{gpu}")
            for placement, (path, field) in PLACEMENTS.items() for gpu in gpus]


def steady_load(rate: float) -> list[str]:
    return [f"workload.arrivals={{process: poisson, rate_per_s: {rate!r}}}", "horizon=1h", "warmup=10min"]


def choose(rate: float, gpus: list[str], slos: list[str], out: Path, workers: int | None) -> Decision:
    """The right-sized candidates at one rate, ranked by cost, with the price inputs varied."""
    slo_overrides = [f"slo.{name.strip()}={value.strip()}" for name, _, value in (s.partition("<") for s in slos)]
    return decide(candidates(gpus), weights={"cost": 1.0}, replications=1, inputs=PRICE_INPUTS,
                  overrides=[*steady_load(rate), *slo_overrides], workers=workers, out=out)


def answer_line(rate: float, decision: Decision) -> str:
    if decision.top is None:
        return f"at {rate:g} req/s no candidate meets the SLOs"
    top = decision.feasible[0]
    line = f"at {rate:g} req/s: {top.scenario} ({'; '.join(top.sizing.describe())}), ${top.criteria['cost']:,.0f}/day"
    if len(decision.feasible) > 1:
        second = decision.feasible[1]
        line += f"; next {second.scenario} at ${second.criteria['cost']:,.0f}/day"
    flips = [s for s in decision.sensitivity if s.flips_at is not None]
    line += "; " + ("; ".join(f"{s.input} {s.flips_when} {s.flips_at:.3g} makes {s.flips_to} cheapest" for s in flips)
                    if flips else "no price input in its range changes it")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,20,40")
    parser.add_argument("--slo", action="append", default=None, help='e.g. "ttft_p99<0.8s" (repeatable)')
    parser.add_argument("--gpus", default=",".join(DEFAULT_GPUS))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "capacity_plan")
    args = parser.parse_args()
    slos = args.slo or ["ttft_p99<0.8s", "e2e_p99<30s"]
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    rows, answers = [], []
    for rate in (float(r) for r in args.rates.split(",")):
        folder = args.out / f"rate-{rate:g}"
        decision = choose(rate, gpus, slos, folder, args.workers)
        write_decision_report(decision, folder)
        answers.append(answer_line(rate, decision))
        print(answers[-1], flush=True)
        for r in decision.ranking:
            rows.append({"rate_per_s": rate, "candidate": r.scenario, "feasible": r.feasible,
                         "pools": "; ".join(r.sizing.describe()), "cost_usd_per_day": r.criteria["cost"],
                         "ttft_p99_s": r.criteria["ttft_p99"], "exposure_score": r.criteria["exposure"],
                         "broken": "; ".join(r.broken)})
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "choices.csv", index=False)
    _figure(table, args.out / "cost.png")
    text = ["# The cheapest right-sized choice per rate", "", *[f"**{a}.**" for a in answers], "",
            f"SLOs: {', '.join(slos)}. Each candidate right-sized by `sim.decide` at a steady load "
            "(one simulated hour after a 10-minute warm-up); ranked by cost per day.", "",
            markdown_table(table), "", "![cost](cost.png)", "",
            "Decision pages: " + ", ".join(f"[{p.name}]({p.name}/index.html)" for p in sorted(args.out.glob("rate-*")))
            + ".", ""]
    (args.out / "report.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'report.md'}, choices.csv, cost.png and a decision page per rate")


def _figure(table: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(PLACEMENTS), figsize=(10, 4), sharey=True)
    for ax, placement in zip(axes, PLACEMENTS, strict=True):
        mine = table[table["candidate"].str.startswith(f"{placement}-") & table["feasible"]]
        for name, group in mine.groupby("candidate"):
            ax.plot(group["rate_per_s"], group["cost_usd_per_day"], marker="o", label=str(name))
        ax.set_title({"s1": "S1: owned GPUs", "s2": "S2: rented, autoscaled"}[placement])
        ax.set_xlabel("request rate (req/s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("cost per day, right-sized (USD)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
