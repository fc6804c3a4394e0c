"""The four seed placements side by side: the main job, as a script.

    python experiments/compare_scenarios.py [--replications 3] [--out reports/compare_scenarios]

Runs S1-S4 with common random numbers and writes the full comparison report (index.html,
report.md, summary.csv, figures). The same as `deploysim compare`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sim
from sim.report.document import write_report

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "compare_scenarios")
    args = parser.parse_args()
    files = sorted((ROOT / "scenarios").glob("s[0-9]*_*.yaml"))
    comparison = sim.compare(files, replications=args.replications, workers=args.workers)
    for name in comparison.names:
        recovery = comparison.metric("recovery_time_s").loc[name]
        ttft = comparison.metric("ttft_p99_s").loc[name, "mean"]
        recovered = "not recovered" if recovery["n"] == 0 else f"{recovery['mean'] / 3600:.2f} h"
        print(f"{name}: p99 TTFT {ttft * 1e3:.0f} ms, recovery {recovered}")
    print("report:", write_report(comparison, args.out) / "index.html")


if __name__ == "__main__":
    main()
