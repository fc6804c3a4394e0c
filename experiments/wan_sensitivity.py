"""At what WAN round-trip time does serving from the cloud (S2) break the SLO?

    python experiments/wan_sensitivity.py [--rtts 5ms,50ms,100ms,200ms,300ms,400ms]
                                          [--bandwidths 10Mbps,100Mbps,1Gbps] [--resolution 5ms]

S1 serves on premises and does not use the WAN for requests; S2 pays it on every request.
Both run at the seed's daily peak held steady for `--horizon` (base.yaml: 3 req/s mean with
amplitude 0.8, so 5.4 req/s; the diurnal rhythm replaced by a Poisson stream at that rate),
the load at which the SLO is hardest to meet. For each bandwidth the RTT at which S2 first
misses the SLO (any target, any replication) is found by **bisection** between the grid RTT
that last met it and the first that missed, to `--resolution`; if no RTT up to the largest
misses it, the answer is "never below" that RTT. Writes reports/wan_sensitivity/ (figure with
the SLO line and the break points, CSV, report.md with the answer first).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import sim  # noqa: E402
from sim.spec.units import parse_duration  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
S1 = ROOT / "scenarios" / "s1_local.yaml"
S2 = ROOT / "scenarios" / "s2_cloud_training.yaml"

# {label: (bandwidth, rtt_s)} -> {label: result row}; runs the points in parallel
Measure = Callable[[dict[str, tuple[str, float]]], dict[str, dict[str, object]]]


def peak_rate(path: Path) -> float:
    """The scenario's busiest arrival rate: mean x (1 + amplitude) for a diurnal process."""
    arrivals = sim.load_scenario(path).workload.arrivals
    return float(arrivals.rate_per_s * (1.0 + getattr(arrivals, "amplitude", 0.0)))


def overrides(rate: float, rtt_s: float, bandwidth: str, horizon: str) -> list[str]:
    return [f"workload.arrivals={{process: poisson, rate_per_s: {rate:g}}}", f"links.wan.rtt={rtt_s * 1e3:g}ms",
            f"links.wan.bandwidth={bandwidth}", f"horizon={horizon}", "warmup=10min"]


def measurer(path: Path, rate: float, replications: int, horizon: str, workers: int | None = None) -> Measure:
    """Runs one scenario at a set of (bandwidth, RTT) points, in `workers` processes (default
    one per CPU)."""
    base = sim.load_scenario(path)

    def measure(points: dict[str, tuple[str, float]]) -> dict[str, dict[str, object]]:
        scenarios = [sim.load_scenario(path, overrides(rate, rtt, bw, horizon) + [f"name={base.name}@{label}"])
                     for label, (bw, rtt) in points.items()]
        comparison = sim.compare(scenarios, replications=replications, workers=workers)
        out = {}
        for label, (bw, rtt) in points.items():
            name = f"{base.name}@{label}"
            runs = comparison.runs[name]
            out[label] = {"scenario": base.name, "bandwidth": bw, "rtt_s": rtt,
                          "met": all(all(c["met"] for c in run.summary["slo"].values()) for run in runs),
                          "missed": ",".join(sorted({t for run in runs for t, c in run.summary["slo"].items()
                                                     if not c["met"]})),
                          **{m: comparison.metric(m).loc[name, "mean"]
                             for m in ("ttft_p99_s", "e2e_p99_s", "slo_attainment")}}
        return out

    return measure


@dataclass
class Break:
    """Where S2 breaks the SLO at one bandwidth: met at `met_s`, missed at `missed_s` (None:
    never missed up to `met_s`; `met_s` None: missed already at the smallest RTT)."""

    bandwidth: str
    met_s: float | None
    missed_s: float | None
    missed: str = ""

    def text(self) -> str:
        if self.missed_s is None:
            return f"never below {self.met_s * 1e3:.0f} ms at {self.bandwidth}"  # type: ignore[operator]
        if self.met_s is None:
            return f"already at {self.missed_s * 1e3:.0f} ms at {self.bandwidth} ({self.missed})"
        return f"{self.met_s * 1e3:.0f}-{self.missed_s * 1e3:.0f} ms at {self.bandwidth} ({self.missed})"


def find_breaks(measure: Measure, bandwidths: Sequence[str], rtts_s: Sequence[float], resolution_s: float,
                rows: list[dict[str, object]] | None = None) -> dict[str, Break]:
    """The grid of RTTs at every bandwidth, then a bisection per bandwidth until the bracket
    between the last RTT that met the SLO and the first that missed is at most `resolution_s`."""
    rows = rows if rows is not None else []
    grid: dict[str, dict[float, dict[str, object]]] = {bw: {} for bw in bandwidths}
    for rtt in rtts_s:
        for bw, result in measure({bw: (bw, rtt) for bw in bandwidths}).items():
            grid[bw][rtt] = result
            rows.append({**result, "kind": "grid"})
        print(f"rtt {rtt * 1e3:g} ms done", flush=True)
    breaks = {}
    for bw in bandwidths:
        missed = [r for r in rtts_s if not grid[bw][r]["met"]]
        if not missed:
            breaks[bw] = Break(bw, max(rtts_s), None)
            continue
        below = [r for r in rtts_s if r < min(missed)]
        breaks[bw] = Break(bw, max(below) if below else None, min(missed), str(grid[bw][min(missed)]["missed"]))
    while True:
        open_ = {bw: b for bw, b in breaks.items() if b.met_s is not None and b.missed_s is not None
                 and b.missed_s - b.met_s > resolution_s * (1 + 1e-9)}
        if not open_:
            return breaks
        middle = {bw: round((b.met_s + b.missed_s) / 2, 6) for bw, b in open_.items()}  # type: ignore[operator]
        for bw, result in measure({bw: (bw, rtt) for bw, rtt in middle.items()}).items():
            rows.append({**result, "kind": "bisection"})
            if result["met"]:
                breaks[bw].met_s = middle[bw]
            else:
                breaks[bw].missed_s, breaks[bw].missed = middle[bw], str(result["missed"])


def answer(breaks: dict[str, Break], rate: float, resolution_s: float) -> str:
    return (f"S2 (cloud serving) at the peak load of {rate:g} req/s breaks the SLO (met-missed RTT bracket by "
            f"bisection to {resolution_s * 1e3:g} ms): " + "; ".join(b.text() for b in breaks.values()))


def draw(data: pd.DataFrame, s1: pd.DataFrame, breaks: dict[str, Break], slo_s: float | None, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    markers = ["s", "^", "D", "v", "P"]
    for (bw, part), marker in zip(data.sort_values("rtt_s").groupby("bandwidth", sort=False), markers * 3,
                                  strict=False):
        line = ax.plot(part["rtt_s"] * 1e3, part["ttft_p99_s"] * 1e3, marker=marker, markerfacecolor="none",
                       label=f"s2 (cloud serving) @ {bw}")[0]
        b = breaks[bw]
        if b.missed_s is not None:
            ax.axvline(b.missed_s * 1e3, color=line.get_color(), linestyle=":", linewidth=1)
    ax.plot(s1["rtt_s"] * 1e3, s1["ttft_p99_s"] * 1e3, color="black", marker="o", label="s1 (premises, no WAN)")
    if slo_s is not None:
        ax.axhline(slo_s * 1e3, color="red", linestyle="--", label=f"SLO ttft_p99 = {slo_s * 1e3:g} ms")
    ax.set_xlabel("WAN round-trip time (ms)")
    ax.set_ylabel("p99 TTFT (ms)")
    ax.set_title("p99 TTFT against WAN RTT at the daily peak; dotted: first RTT that misses the SLO", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtts", default="5ms,50ms,100ms,200ms,300ms,400ms")
    parser.add_argument("--bandwidths", default="10Mbps,100Mbps,1Gbps")
    parser.add_argument("--replications", type=int, default=1)
    parser.add_argument("--horizon", default="30min")
    parser.add_argument("--resolution", default="5ms")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "wan_sensitivity")
    args = parser.parse_args()
    started = time.perf_counter()
    rate = peak_rate(S2)
    rtts = [parse_duration(r) for r in args.rtts.split(",")]
    bandwidths = args.bandwidths.split(",")
    rows: list[dict[str, object]] = []
    breaks = find_breaks(measurer(S2, rate, args.replications, args.horizon), bandwidths, rtts,
                         parse_duration(args.resolution), rows)
    ends = sorted({min(rtts), max(rtts)})  # S1's line is flat, which is the point: its two ends show it
    s1_points = {f"{rtt * 1e3:g}ms": ("1Gbps", rtt) for rtt in ends}
    s1 = pd.DataFrame([{**r, "kind": "grid"} for r in
                       measurer(S1, rate, args.replications, args.horizon)(s1_points).values()])
    data = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.concat([data, s1]).to_csv(args.out / "wan_sensitivity.csv", index=False)
    slo_s = sim.load_scenario(S2).slo.ttft_p99
    draw(data, s1, breaks, slo_s, args.out / "wan_sensitivity.png")
    line = answer(breaks, rate, parse_duration(args.resolution))
    (args.out / "report.md").write_text(
        f"# WAN sensitivity: where cloud serving breaks the SLO\n\n**Answer:** {line}\n\n"
        f"Load: the seeds' daily peak ({rate:g} req/s) held steady for {args.horizon} after a 10 min warm-up, "
        f"{args.replications} replication(s) per point. The break point is found by bisection between grid RTTs. "
        "S1 serves on premises; the WAN does not touch its requests.\n\n"
        "![WAN sensitivity](wan_sensitivity.png)\n\n```\n" + pd.concat([data, s1]).to_string(index=False) + "\n```\n")
    print(line)
    print(f"report: {args.out / 'report.md'} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
