"""Start-up time of the command line: `deploysim --help`, `validate` and `catalog` against `python -c pass`.

Runs each command `--runs` times, interleaved (so a burst of load on the shared cores hits
every command alike), in fresh processes, and prints one JSON object: mean, median and min
wall seconds and median CPU seconds per command, and `--help` minus the bare interpreter. The target (issue 19):
`deploysim --help` under 0.5 s on this machine. The load average is included: a busy machine
slows every process start.

    python benchmarks/startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands() -> dict[str, list[str]]:
    """Each command as the installed script beside this Python (under pyenv, the `deploysim` a
    shell finds first is a shim that starts pyenv before Python, and adds its time to both)."""
    beside = Path(sys.executable).parent / "deploysim"
    cli = [str(beside)] if beside.is_file() else [sys.executable, "-m", "sim.cli"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "deploysim --help": [*cli, "--help"],
        "deploysim validate s1": [*cli, "validate", str(ROOT / "scenarios" / "s1_local.yaml")],
        "deploysim catalog gpus": [*cli, "catalog", "gpus"],
    }


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes: less sensitive than wall time
    to other work on the same cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {name: [] for name in commands()}
    cpus: dict[str, list[float]] = {name: [] for name in commands()}
    for _ in range(args.runs):
        for name, command in commands().items():
            cpu = _children_cpu_s()
            started = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            walls[name].append(time.perf_counter() - started)
            cpus[name].append(_children_cpu_s() - cpu)
    stats = {name: {"mean_s": round(statistics.fmean(w), 3), "median_s": round(statistics.median(w), 3),
                    "min_s": round(min(w), 3), "cpu_median_s": round(statistics.median(cpus[name]), 3)}
             for name, w in walls.items()}
    over_python = round(statistics.median(walls["deploysim --help"]) - statistics.median(walls["python -c pass"]), 3)
    print(json.dumps({"benchmark": "startup", "runs": args.runs, "cpus": os.cpu_count(),
                      "load_average_before": [round(x, 2) for x in load_before], "commands": stats,
                      "help_minus_python_median_s": over_python,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
