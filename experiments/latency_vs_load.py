"""Where does each placement saturate? p99 latency against a steady arrival rate, SLO drawn.

    python experiments/latency_vs_load.py [--rates 2,4,6,8,12,16,20,24] [--replications 1] [--resolution 0.5]

The seed scenarios carry a daily rhythm (base.yaml: a diurnal process, 3 req/s on average);
here the load is a steady Poisson stream at each rate instead, so each point is one load held
for the whole run (`--horizon`, default 40 min after a 10 min warm-up) and the rate on the x
axis is the rate the pools face. Each rate runs the four seed scenarios (lifecycle effects are
beside the point: the drift at 6 h is past the horizon).

A placement *saturates* at the lowest rate at which its SLO verdict fails (any target missed,
in any replication; unfinished requests count as misses). The grid brackets that rate; a
bisection between the last grid rate that met the SLO and the first that missed narrows it to
`--resolution` req/s. Writes reports/latency_vs_load/: the figure (p99 TTFT and p99 E2E
against rate, SLO lines, saturation marked), a CSV and report.md with the answer first.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import sim  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("s[0-9]*_*.yaml"))
# marker, line, size, width: the first drawn widest so that a scenario drawn on top of it
# with the same values (s4 serves exactly as s1) leaves it visible
STYLES = [("o", "-", 9, 3.0), ("s", "--", 6, 1.6), ("^", ":", 6, 1.6), ("D", "-.", 4, 1.0)]

# rate -> {scenario: (SLO met in every replication, row of metrics)}
Measure = Callable[[Mapping[str, float]], dict[str, dict[str, float | bool]]]


def overrides(rate: float, horizon: str) -> list[str]:
    """A steady Poisson load at `rate` held for the horizon (the diurnal rhythm replaced)."""
    return [f"workload.arrivals={{process: poisson, rate_per_s: {rate:g}}}", f"horizon={horizon}", "warmup=10min"]


def measurer(files: Sequence[Path], replications: int, horizon: str, workers: int | None = None) -> Measure:
    """A function running each scenario at its own rate (in `workers` processes, default one per
    CPU) and returning per scenario: whether every replication met every SLO target, and the
    mean p99 TTFT and E2E."""
    by_name = {sim.load_scenario(f).name: f for f in files}

    def measure(rates: Mapping[str, float]) -> dict[str, dict[str, float | bool]]:
        scenarios = [sim.load_scenario(by_name[name], overrides(rate, horizon)) for name, rate in rates.items()]
        comparison = sim.compare(scenarios, replications=replications, workers=workers)
        out: dict[str, dict[str, float | bool]] = {}
        for name in rates:
            runs = comparison.runs[name]
            out[name] = {
                "met": all(all(check["met"] for check in run.summary["slo"].values()) for run in runs),
                "missed": ",".join(sorted({t for run in runs for t, c in run.summary["slo"].items() if not c["met"]})),
                "ttft_p99_s": comparison.metric("ttft_p99_s").loc[name, "mean"],
                "e2e_p99_s": comparison.metric("e2e_p99_s").loc[name, "mean"],
                "slo_attainment": comparison.metric("slo_attainment").loc[name, "mean"],
                "requests_unfinished": comparison.metric("requests_unfinished").loc[name, "mean"],
            }
        return out

    return measure


@dataclass
class Saturation:
    """Where one placement's SLO breaks: met at `met_at` req/s, missed at `missed_at` (None:
    never missed up to the highest rate tried; `met_at` None: missed already at the lowest)."""

    scenario: str
    met_at: float | None
    missed_at: float | None
    missed: str = ""

    def text(self) -> str:
        if self.missed_at is None:
            return f"{self.scenario} never below {self.met_at:g} req/s"
        if self.met_at is None:
            return f"{self.scenario} already at {self.missed_at:g} req/s ({self.missed})"
        return f"{self.scenario} at {self.met_at:g}-{self.missed_at:g} req/s ({self.missed})"


def find_saturation(measure: Measure, names: Sequence[str], rates: Sequence[float], resolution: float,
                    rows: list[dict[str, object]] | None = None) -> dict[str, Saturation]:
    """Run the grid `rates` for every scenario, then bisect each one between its last met and
    first missed grid rate until the bracket is at most `resolution` req/s wide. Every run's
    result is appended to `rows` (rate, scenario, kind grid|bisection, metrics)."""
    rows = rows if rows is not None else []
    grid: dict[str, dict[float, dict[str, float | bool]]] = {name: {} for name in names}
    for rate in rates:
        for name, result in measure(dict.fromkeys(names, rate)).items():
            grid[name][rate] = result
            rows.append({"rate_per_s": rate, "scenario": name, "kind": "grid", **result})
        print(f"rate {rate:g}/s done", flush=True)
    brackets: dict[str, Saturation] = {}
    for name in names:
        missed = [r for r in rates if not grid[name][r]["met"]]
        if not missed:
            brackets[name] = Saturation(name, max(rates), None)
            continue
        first = min(missed)
        below = [r for r in rates if r < first]
        brackets[name] = Saturation(name, max(below) if below else None, first, str(grid[name][first]["missed"]))
    while True:
        open_ = {n: b for n, b in brackets.items() if b.met_at is not None and b.missed_at is not None
                 and b.missed_at - b.met_at > resolution * (1 + 1e-9)}
        if not open_:
            return brackets
        middle = {n: round((b.met_at + b.missed_at) / 2, 6) for n, b in open_.items()}  # type: ignore[operator]
        for name, result in measure(middle).items():
            rows.append({"rate_per_s": middle[name], "scenario": name, "kind": "bisection", **result})
            if result["met"]:
                brackets[name].met_at = middle[name]
            else:
                brackets[name].missed_at, brackets[name].missed = middle[name], str(result["missed"])


def answer(saturation: Mapping[str, Saturation], resolution: float) -> str:
    """The one-line answer: where each placement's SLO first breaks under a steady load."""
    parts = "; ".join(s.text() for s in saturation.values())
    return (f"SLO first missed (steady Poisson load, bisection to {resolution:g} req/s; met-missed bracket "
            f"and the target missed): {parts}")


def draw(data: pd.DataFrame, saturation: Mapping[str, Saturation], slo: Mapping[str, float],
         out: Path) -> None:
    """p99 TTFT and p99 E2E against rate, one style per scenario, SLO lines and the saturation
    bracket of each scenario shaded on its line."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (metric, target, title) in zip(axes, (("ttft_p99_s", "ttft_p99", "p99 time to first token"),
                                                  ("e2e_p99_s", "e2e_p99", "p99 end-to-end latency")), strict=True):
        for (name, part), (marker, line, size, width) in zip(
                data.sort_values("rate_per_s").groupby("scenario", sort=False), STYLES * 2, strict=False):
            ax.plot(part["rate_per_s"], part[metric], marker=marker, linestyle=line, markersize=size,
                    linewidth=width, markerfacecolor="none", label=name, alpha=0.85)
            s = saturation[name]
            if s.missed_at is not None:
                ax.axvline(s.missed_at, color=ax.lines[-1].get_color(), linestyle=line, linewidth=0.8, alpha=0.6)
        if target in slo:
            ax.axhline(slo[target], color="red", linewidth=1.2, label="SLO target")
            ax.annotate(f"SLO {target} = {slo[target]:g} s", (0.01, slo[target]), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", color="red", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("arrival rate, steady Poisson (requests/s)")
        ax.set_ylabel(f"{title} (s, log scale)")
        ax.set_title(f"{title}; vertical lines: first rate that misses the SLO", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=min(len(labels), 5), frameon=False)
    fig.suptitle("Latency against load per placement (s1 and s4 serve on the same premises pool)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2,4,6,8,12,16,20,24")
    parser.add_argument("--replications", type=int, default=1)
    parser.add_argument("--horizon", default="40min")
    parser.add_argument("--resolution", type=float, default=0.5, help="bisection stops at this bracket (req/s)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "latency_vs_load")
    args = parser.parse_args()
    started = time.perf_counter()
    names = [sim.load_scenario(f).name for f in SCENARIOS]
    rows: list[dict[str, object]] = []
    saturation = find_saturation(measurer(SCENARIOS, args.replications, args.horizon), names,
                                 [float(r) for r in args.rates.split(",")], args.resolution, rows)
    data = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    data.to_csv(args.out / "latency_vs_load.csv", index=False)
    slo = {k: v for k, v in sim.load_scenario(SCENARIOS[0]).slo.model_dump().items() if v is not None}
    draw(data, saturation, slo, args.out / "latency_vs_load.png")
    line = answer(saturation, args.resolution)
    (args.out / "report.md").write_text(
        f"# Where each placement saturates\n\n**Answer:** {line}\n\n"
        f"Load: a steady Poisson stream at each rate for {args.horizon} after a 10 min warm-up (the seeds' "
        f"diurnal rhythm replaced, so the rate is what the pools face throughout), {args.replications} "
        "replication(s) per point. The SLO is missed when any target is missed in any replication (unfinished "
        "requests count as misses). s1 and s4 serve on the same premises pool and give the same latency.\n\n"
        "![latency vs load](latency_vs_load.png)\n\n```\n" + data.to_string(index=False) + "\n```\n")
    print(line)
    print(f"report: {args.out / 'report.md'} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
