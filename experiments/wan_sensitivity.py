"""When does serving from the cloud break the SLO? S2 against S1 over WAN RTT and bandwidth.

    python experiments/wan_sensitivity.py [--rtts 5ms,20ms,50ms,100ms,150ms,250ms] [--bandwidths 10Mbps,100Mbps,1Gbps]

S1 serves on premises and does not use the WAN for requests; S2 pays it twice per request.
For each RTT x bandwidth point both run with common random numbers; the figure shows S2's
p99 TTFT against the SLO, and the CSV the full grid. Writes reports/wan_sensitivity/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import sim  # noqa: E402
from sim.spec.units import parse_duration  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtts", default="5ms,20ms,50ms,100ms,150ms,250ms")
    parser.add_argument("--bandwidths", default="10Mbps,100Mbps,1Gbps")
    parser.add_argument("--replications", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "wan_sensitivity")
    args = parser.parse_args()
    files = [ROOT / "scenarios" / "s1_local.yaml", ROOT / "scenarios" / "s2_cloud_training.yaml"]
    rows = []
    for bandwidth in args.bandwidths.split(","):
        for rtt in args.rtts.split(","):
            comparison = sim.compare(files, replications=args.replications, overrides=[
                f"links.wan.rtt={rtt}", f"links.wan.bandwidth={bandwidth}", "horizon=2h", "warmup=10min"])
            for metric in ("ttft_p99_s", "e2e_p99_s", "slo_attainment"):
                for name, row in comparison.metric(metric).iterrows():
                    rows.append({"rtt_s": parse_duration(rtt), "bandwidth": bandwidth, "scenario": name,
                                 "metric": metric, **row.to_dict()})
            print(f"rtt {rtt}, bandwidth {bandwidth} done")
    data = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    data.to_csv(args.out / "wan_sensitivity.csv", index=False)
    slo = sim.load_scenario(files[1]).slo.ttft_p99
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ttft = data[data["metric"] == "ttft_p99_s"]
    for (scenario, bandwidth), part in ttft.groupby(["scenario", "bandwidth"], sort=False):
        if scenario.startswith("s1") and bandwidth != args.bandwidths.split(",")[-1]:
            continue  # S1 does not use the WAN: one line is enough
        ax.plot(part["rtt_s"] * 1e3, part["mean"] * 1e3, marker="o",
                label=f"{scenario}" + ("" if scenario.startswith("s1") else f" @ {bandwidth}"))
    if slo is not None:
        ax.axhline(slo * 1e3, color="red", linestyle="--", label="TTFT p99 SLO")
    ax.set_xlabel("WAN round-trip time (ms)")
    ax.set_ylabel("p99 TTFT (ms)")
    ax.set_title("Cloud serving (S2) vs local (S1) as the WAN gets longer and thinner")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "wan_sensitivity.png", dpi=110)
    (args.out / "report.md").write_text("# WAN sensitivity\n\n![WAN sensitivity](wan_sensitivity.png)\n\n"
                                        "```\n" + data.to_string(index=False) + "\n```\n")
    print("report:", args.out / "report.md")


if __name__ == "__main__":
    main()
