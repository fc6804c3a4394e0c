"""The four seed placements side by side: which is best on latency, privacy, recovery and cost?

    python experiments/compare_scenarios.py [--replications 3] [--out reports/compare_scenarios]

Runs S1-S4 with common random numbers and writes the full comparison report (index.html,
report.md, summary.csv, figures), the same as `deploysim compare`. The one-line answer names
the best placement on each axis as the report's table marks it (beyond noise, ties shared,
never an overloaded run; `sim.report.terminal.headline`), printed and shown first in the report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sim
from sim.report.document import write_report
from sim.report.terminal import headline

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "compare_scenarios")
    args = parser.parse_args()
    started = time.perf_counter()
    files = sorted((ROOT / "scenarios").glob("s[0-9]*_*.yaml"))
    comparison = sim.compare(files, replications=args.replications, workers=args.workers)
    line = headline(comparison)
    index = write_report(comparison, args.out, answer=line)
    print(line)
    print(f"report: {index} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
