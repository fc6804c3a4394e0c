"""At what daily volume does owning or renting GPUs beat a managed model API? For an 8B and a 70B model.

    python experiments/api_vs_selfhost.py [--models 8b 70b] [--horizon 20min] [--out reports/api_vs_selfhost]

Three ways to serve the shared workload (`scenarios/base.yaml`: ≈800 prompt and ≈200 output
tokens a request, clients on premises, a 20 ms WAN to the cloud region):

- **api**: every request to a managed API (a pool of kind api; catalog `apis`, prices from
  TCO.md §6), paid per token. Its cost per day is linear in the volume: a USD per request.
- **own**: owned GPUs on premises (capex amortised over 3 years, power: `sim.metrics.cost`).
- **rent**: GPUs rented on demand in the cloud region, held around the clock.

Sizing (simple, documented): a pool of n replicas of the model's GPU/TP is sized for the busy
hour, n = ceil(V / 86,400 x peak_to_mean / c), with V the requests a day, `peak_to_mean` the
busy hour's rate over the day's mean (1.8 for the base workload's diurnal rhythm: amplitude
0.8), and c the rate one replica sustains within the SLOs (TTFT p99 < 0.8 s, E2E p99 < 30 s),
measured once per model by `sim.planning.max_rate` on a one-replica pool. Pools of several
replicas are assumed to scale linearly (the planner's own assumption between probes).

Cost per day, every number from the simulator's cost code: for the API, one run gives its
cost per request (tokens x prices, plus the egress of its answers); for own and rent, one run
of a one-replica pool at its full rate c gives g, what a replica-day costs whatever its load
(capex, support, colocation, or the rented GPU-hours), and e, what each request adds (energy
from its work, egress): n replicas serving V requests cost n x g + e V.

Break-even. With a = the API's USD per request less e (what self-hosting pays per request
anyway) and k = peak_to_mean / (86,400 c), the GPU
cost is g x ceil(kV), a staircase, and the API's aV a line. On step n the API is cheaper up to
V = g n / a; if g k < a (a full replica costs less than the API would charge for what it
serves) the steps eventually pass under the line for good: self-hosting *first* wins at
V = g / a (a single replica, when that is within its capacity) and *always* wins above
V* = g n / a for the largest n < a / (a - g k). Otherwise (g k >= a) it never wins. The printed
answer gives V* per model and placement; `brackets` gives two volumes on either side of V*
that tests/test_api_vs_selfhost.py checks by direct runs. Writes reports/api_vs_selfhost/:
report.md (the answer at the top), costs.csv and api_vs_selfhost.png.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sim  # noqa: E402
from sim.planning import max_rate  # noqa: E402
from sim.runner import run_point  # noqa: E402
from sim.spec.loader import load_document  # noqa: E402

BASE = ROOT / "scenarios" / "base.yaml"
DAY_S = 86400.0
SLOS = ["ttft_p99<0.8s", "e2e_p99<30s"]
PEAK_TO_MEAN = 1.8  # the base workload's diurnal rhythm: amplitude 0.8 around the day's mean


@dataclass(frozen=True)
class Model:
    """A model and how it would be served: the GPU and TP of one replica, the API to compare."""

    key: str
    model: str
    gpu: str
    tp: int
    api: str


MODELS = {
    "8b": Model("8b", "llama-3.1-8b", "l40s", 1, "bedrock-llama-3.1-8b"),
    "70b": Model("70b", "llama-3.1-70b", "h100-sxm", 4, "bedrock-llama-3.1-70b"),
}
PLACEMENTS = ("own", "rent")


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------


def scenario_doc(m: Model, placement: str, replicas: int, rate_per_s: float, horizon: str,
                 server_usd_per_gpu: float | None = None) -> dict[str, Any]:
    """The base scenario serving model m at a constant rate: on `replicas` owned GPUs' replicas
    ('own'), rented ones ('rent') or the managed API ('api'); no drift, no training.
    `server_usd_per_gpu` replaces the catalog's server price of an owned GPU."""
    doc = load_document(BASE)
    if server_usd_per_gpu is not None:
        doc["sites"]["premises"]["capex"] = {**doc["sites"]["premises"]["capex"],
                                             "server_usd_per_gpu": server_usd_per_gpu}
    doc.update(name=f"{m.key}_{placement}_{replicas}", horizon=horizon, warmup="0s", replications=1)
    doc["model"] = {**doc["model"], "id": m.model, "tensor_parallel": m.tp}
    doc["workload"]["arrivals"] = {"process": "poisson", "rate_per_s": rate_per_s}
    doc["lifecycle"] = {**doc["lifecycle"], "drift": [], "development": None}
    gpus = [{"name": "gpus", "gpu": m.gpu, "count": replicas * m.tp, "roles": ["serving"]}]
    api = [{"name": "api", "kind": "api", "api": m.api}]
    doc["sites"]["premises"]["pools"] = gpus if placement == "own" else []
    doc["sites"]["cloud"]["pools"] = {"own": [], "rent": gpus, "api": api}[placement]
    doc["placement"] = {**doc["placement"], "inference": "premises" if placement == "own" else "cloud"}
    return doc


def run_cost(doc: dict[str, Any]) -> tuple[float, float]:
    """(USD a day, USD per completed request) of one direct run (`sim.metrics.cost`)."""
    scenario = sim.load_scenario(doc)
    summary = run_point(scenario, 0).summary
    return summary["cost_usd"] * DAY_S / scenario.horizon, summary["cost_usd"] / max(summary["requests_completed"], 1)


def run_cost_parts(doc: dict[str, Any]) -> tuple[float, float]:
    """(USD a day that does not depend on the traffic, USD per completed request that does) of
    one direct run: the cost lines split by `scales_with_traffic` (`sim.metrics.cost`: capex,
    support, colocation and held GPU-hours are paid whatever the load; energy from work, egress
    and tokens follow it)."""
    scenario = sim.load_scenario(doc)
    result = run_point(scenario, 0)
    costs = result.tables["costs"]
    usage = float(costs.loc[costs["scales_with_traffic"], "usd"].sum())
    fixed = float(costs["usd"].sum()) - usage
    return fixed * DAY_S / scenario.horizon, usage / max(result.summary["requests_completed"], 1)


# ------------------------------------------------------------------------------------------
# Measurements and the break-even
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One model's numbers: a replica's capacity c (req/s within the SLOs), the API's USD per
    request a, and the cost of a replica-day g per placement."""

    model: Model
    capacity_rps: float
    api_usd_per_request: float
    replica_usd_per_day: dict[str, float]  # what a replica costs a day whatever its load
    usage_usd_per_request: dict[str, float]  # and what each request it serves adds (energy, egress)

    def margin(self, placement: str) -> float:
        """What the API charges per request beyond what self-hosting pays per request."""
        return self.api_usd_per_request - self.usage_usd_per_request[placement]


def measure(m: Model, horizon: str = "20min", capacity_rps: float | None = None,
            server_usd_per_gpu: float | None = None) -> Measured:
    """Capacity by `max_rate` (unless given), then one run per placement at that rate."""
    if capacity_rps is None:
        capacity_rps = max_rate(scenario_doc(m, "own", 1, 1.0, horizon), SLOS, horizon=horizon, warmup="5min",
                                tolerance=0.05).rate_per_s
    _, api_usd_per_request = run_cost(scenario_doc(m, "api", 0, capacity_rps, horizon))
    parts = {p: run_cost_parts(scenario_doc(m, p, 1, capacity_rps, horizon, server_usd_per_gpu)) for p in PLACEMENTS}
    return Measured(m, capacity_rps, api_usd_per_request, {p: f for p, (f, _) in parts.items()},
                    {p: u for p, (_, u) in parts.items()})


def replicas_for(volume_per_day: float, capacity_rps: float, peak_to_mean: float = PEAK_TO_MEAN) -> int:
    """Replicas that carry the busy hour of `volume_per_day` requests (at least one)."""
    return max(1, math.ceil(volume_per_day / DAY_S * peak_to_mean / capacity_rps - 1e-12))


@dataclass(frozen=True)
class BreakEven:
    """Where self-hosting (one placement) beats the API: `first` (the lowest volume at which it
    is cheaper) and `always` (above it, it always is); both None when it never is."""

    first: float | None
    always: float | None
    last_api_step: int  # replicas on the staircase step where the API is last cheaper (0: never wins)


def break_even(a: float, g: float, capacity_rps: float, peak_to_mean: float = PEAK_TO_MEAN) -> BreakEven:
    """The staircase g x ceil(kV) against the line aV (module doc)."""
    k = peak_to_mean / (DAY_S * capacity_rps)
    if g * k >= a:
        return BreakEven(None, None, 0)
    n_max = math.ceil(a / (a - g * k)) - 1  # the largest n < a / (a - g k): >= 1, as a / (a - g k) > 1
    return BreakEven(g / a, g * n_max / a, n_max)


def brackets(a: float, g: float, capacity_rps: float, peak_to_mean: float = PEAK_TO_MEAN) -> tuple[float, float]:
    """A volume where the API is cheaper (the middle of the last step on which it is) and one
    where self-hosting is (the middle of the rest of that step, past the break-even)."""
    k = peak_to_mean / (DAY_S * capacity_rps)
    found = break_even(a, g, capacity_rps, peak_to_mean)
    if found.always is None:
        raise ValueError("self-hosting never wins: no break-even to bracket")
    n = found.last_api_step
    start, end = (n - 1) / k, n / k
    return (max(start, 0.0) + found.always) / 2, (found.always + end) / 2


def costs_table(measured: list[Measured], volumes: np.ndarray, peak_to_mean: float) -> pd.DataFrame:
    rows = []
    for meas in measured:
        for v in volumes:
            n = replicas_for(v, meas.capacity_rps, peak_to_mean)
            rows.append({"model": meas.model.key, "volume_per_day": v, "replicas": n,
                         "api_usd_per_day": meas.api_usd_per_request * v,
                         **{f"{p}_usd_per_day": n * meas.replica_usd_per_day[p] + v * meas.usage_usd_per_request[p]
                            for p in PLACEMENTS}})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------
# The answer
# ------------------------------------------------------------------------------------------


def _volume(v: float) -> str:
    return f"{v / 1e6:.3g}M" if v >= 1e6 else f"{v / 1e3:.3g}k"


def answer_line(measured: list[Measured], peak_to_mean: float = PEAK_TO_MEAN) -> str:
    """One line: per model and placement, the volume above which self-hosting always wins."""
    parts = []
    for meas in measured:
        m = meas.model
        said = []
        for p in PLACEMENTS:
            g = meas.replica_usd_per_day[p]
            found = break_even(meas.margin(p), g, meas.capacity_rps, peak_to_mean)
            verb = "owning" if p == "own" else "renting"
            if found.always is None:
                full = (g / (meas.capacity_rps * DAY_S / peak_to_mean) + meas.usage_usd_per_request[p]) * 1e6
                said.append(f"{verb} never does (${full:.3g} vs ${meas.api_usd_per_request * 1e6:.3g} per 1M requests "
                            "at full use)")
            else:
                said.append(f"{verb} beats it above {_volume(found.always)} requests/day "
                            f"(first at {_volume(found.first or 0.0)})")
        parts.append(f"{m.key} ({m.tp}x {m.gpu} per replica vs {m.api}): {'; '.join(said)}")
    return " | ".join(parts)


def figure(costs: pd.DataFrame, measured: list[Measured], peak_to_mean: float, path: Path) -> None:
    """Cost per day against volume per model; a dotted line where a placement wins for good."""
    fig, axes = plt.subplots(1, len(measured), figsize=(6 * len(measured), 4.2), squeeze=False)
    for ax, meas in zip(axes[0], measured, strict=True):
        mine = costs[costs["model"] == meas.model.key]
        v = mine["volume_per_day"]
        ax.plot(v, mine["api_usd_per_day"], label=f"API ({meas.model.api})", color="tab:red")
        for p, colour in (("own", "tab:blue"), ("rent", "tab:orange")):
            ax.step(v, mine[f"{p}_usd_per_day"], where="post", label=f"{p} {meas.model.tp}x {meas.model.gpu}",
                    color=colour)
            found = break_even(meas.margin(p), meas.replica_usd_per_day[p], meas.capacity_rps, peak_to_mean)
            if found.always:
                ax.axvline(found.always, color=colour, linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("requests per day")
        ax.set_ylabel("USD per day")
        ax.set_title(f"{meas.model.model}: one replica sustains {meas.capacity_rps:.3g} req/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(answer: str, measured: list[Measured], peak_to_mean: float, out: Path) -> None:
    lines = [f"**Answer.** {answer}", "", "# Managed API or our own GPUs?", "",
             f"Sizing for a busy hour {peak_to_mean:g}x the day's mean rate; SLOs {', '.join(SLOS)}; "
             "costs from direct runs (`experiments/api_vs_selfhost.py`, method in its docstring).", "",
             "| model | replica | capacity (req/s) | API USD / 1M requests | own USD / replica-day | "
             "rent USD / replica-day | own: always cheaper above | rent: always cheaper above |",
             "|---|---|---|---|---|---|---|---|"]
    for meas in measured:
        found = {p: break_even(meas.margin(p), meas.replica_usd_per_day[p], meas.capacity_rps, peak_to_mean)
                 for p in PLACEMENTS}
        shown = {p: "never" if f.always is None else f"{_volume(f.always)}/day" for p, f in found.items()}
        lines.append(f"| {meas.model.model} | {meas.model.tp}x {meas.model.gpu} | {meas.capacity_rps:.3g} | "
                     f"{meas.api_usd_per_request * 1e6:,.0f} | {meas.replica_usd_per_day['own']:,.2f} | "
                     f"{meas.replica_usd_per_day['rent']:,.2f} | {shown['own']} | {shown['rent']} |")
    lines += ["", "![cost per day](api_vs_selfhost.png)", "",
              "Owned GPUs cost the same every day, used or not; an API charges per token. Below the "
              "break-even the replicas a busy hour needs stand idle too much of the day; above it, "
              "the API's per-token margin costs more than the idle hours. Rented GPUs held around the "
              "clock at on-demand prices rarely win: autoscaling them to the daily rhythm, or reserved "
              "prices, would move their line down. The owned line is mostly amortised capex: it moves "
              "with the catalog's server price per GPU (`--server-usd-per-gpu`; TCO.md §7 puts the "
              "non-GPU share of an HGX server at $4-6k per GPU)."]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["8b", "70b"])
    parser.add_argument("--horizon", default="20min", help="of each direct run (capacity probes included)")
    parser.add_argument("--peak-to-mean", type=float, default=PEAK_TO_MEAN)
    parser.add_argument("--capacity", type=float, default=None,
                        help="req/s one replica sustains, for every model given (skips the measurement)")
    parser.add_argument("--server-usd-per-gpu", type=float, default=None,
                        help="server price per owned GPU (default: the catalog's, per GPU type)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "api_vs_selfhost")
    args = parser.parse_args(argv)
    measured = []
    for key in args.models:
        meas = measure(MODELS[key], args.horizon, args.capacity, args.server_usd_per_gpu)
        print(f"{key}: one replica ({MODELS[key].tp}x {MODELS[key].gpu}) sustains {meas.capacity_rps:.3g} req/s; "
              f"API ${meas.api_usd_per_request * 1e6:,.0f} per 1M requests; a replica-day costs "
              + ", ".join(f"${usd:,.2f} ({p})" for p, usd in meas.replica_usd_per_day.items()), flush=True)
        measured.append(meas)
    top = max(1e8, max(m.capacity_rps for m in measured) * DAY_S * 20)
    costs = costs_table(measured, np.geomspace(1e3, top, 400), args.peak_to_mean)
    args.out.mkdir(parents=True, exist_ok=True)
    costs.to_csv(args.out / "costs.csv", index=False)
    figure(costs, measured, args.peak_to_mean, args.out / "api_vs_selfhost.png")
    answer = answer_line(measured, args.peak_to_mean)
    report(answer, measured, args.peak_to_mean, args.out)
    print(answer)
    print(f"wrote {args.out / 'report.md'}, costs.csv, api_vs_selfhost.png")
    return answer


if __name__ == "__main__":
    main()
