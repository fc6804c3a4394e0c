"""The Azure conversation trace through all four placements: which is best under real traffic?

    python experiments/trace_replay.py [--trace ../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv]

Replays the real request trace (arrival times and token counts; about an hour, 19,366
requests; CC-BY 4.0, Patel et al., "Splitwise", ISCA 2024) through S1-S4, looping it over the
day, and writes the comparison report to reports/trace_replay/. The one-line answer names the
best placement on each axis as the report's table marks it (`sim.report.terminal.headline`),
printed and shown first in the report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sim
from sim.report.document import write_report
from sim.report.terminal import headline

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRACE = ROOT.parent / "shared" / "data" / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_conv.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--replications", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=1.0, help="stretch (>1) or compress (<1) the trace")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "trace_replay")
    args = parser.parse_args()
    if not args.trace.is_file():
        sys.exit(f"trace not found: {args.trace} (pass --trace PATH to an Azure LLM trace CSV)")
    started = time.perf_counter()
    files = sorted((ROOT / "scenarios").glob("s[0-9]*_*.yaml"))
    overrides = [f"workload.arrivals={{process: trace, path: '{args.trace.resolve()}', format: azure, "
                 f"loop: true, time_scale: {args.time_scale}}}",
                 "workload.prefixes=null"]
    comparison = sim.compare(files, replications=args.replications, overrides=overrides)
    line = headline(comparison)
    index = write_report(comparison, args.out, title="Azure conversation trace, four placements", answer=line)
    print(line)
    print(f"report: {index} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
