"""p99 TTFT against the arrival rate, per placement: where does each one saturate?

    python experiments/latency_vs_load.py [--rates 1,2,4,8,12,16] [--replications 2]

Each rate is a comparison of the four seed scenarios over a shortened horizon (lifecycle
effects are beside the point here). Writes reports/latency_vs_load/ with the figure, a CSV
of means and 95% confidence intervals, and report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import sim  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,2,4,8,12,16")
    parser.add_argument("--replications", type=int, default=2)
    parser.add_argument("--horizon", default="2h")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "latency_vs_load")
    args = parser.parse_args()
    files = sorted((ROOT / "scenarios").glob("s[0-9]*_*.yaml"))
    rows = []
    for rate in [float(r) for r in args.rates.split(",")]:
        comparison = sim.compare(files, replications=args.replications,
                                 overrides=[f"workload.arrivals.rate_per_s={rate}", f"horizon={args.horizon}",
                                            "warmup=10min"])
        frame = comparison.metric("ttft_p99_s")
        for name, row in frame.iterrows():
            rows.append({"rate_per_s": rate, "scenario": name, **row.to_dict()})
        print(f"rate {rate:g}/s done")
    data = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    data.to_csv(args.out / "ttft_p99_vs_rate.csv", index=False)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, part in data.groupby("scenario", sort=False):
        ax.errorbar(part["rate_per_s"], part["mean"] * 1e3, yerr=(part["ci_high"] - part["mean"]).fillna(0) * 1e3,
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_ylabel("p99 TTFT (ms)")
    ax.set_yscale("log")
    ax.set_title("p99 time to first token vs load (mean and 95% CI over replications)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "ttft_p99_vs_rate.png", dpi=110)
    (args.out / "report.md").write_text(
        "# p99 TTFT vs arrival rate\n\n![p99 TTFT vs rate](ttft_p99_vs_rate.png)\n\n"
        + "```\n" + data.to_string(index=False) + "\n```\n")
    print("report:", args.out / "report.md")


if __name__ == "__main__":
    main()
