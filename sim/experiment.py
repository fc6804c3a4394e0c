"""Running scenarios: one run, and replications of several compared side by side.

`simulate(scenario, replication)` runs one replication. `compare(scenarios, replications=R)`
runs R replications of each scenario, in parallel processes, and reports every metric as a
mean with a 95% confidence interval across replications (Student t with R - 1 degrees of
freedom). Replication k of every scenario draws from the same random streams (common random
numbers, `sim.streams`), so the differences between scenarios are the placement's, not noise.
Latency percentiles are also computed on the requests of all replications pooled together.

Each replication sends back a `RunDigest` (its summary, its small tables and the latency
samples the report needs), not the whole request table, so a comparison's memory does not
grow with the number of requests times replications.

    >>> import sim
    >>> comparison = sim.compare(["scenarios/s1_local.yaml", "scenarios/s2_cloud_training.yaml"],
    ...                          replications=2, overrides=["horizon=2h", "warmup=10min"])
    >>> comparison.metric("ttft_p99_s").loc["s2_cloud_training", "mean"] > 0
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.metrics.sketch import LatencySketch
from sim.result import Result
from sim.runner import executor, point_folder, run_point
from sim.spec.scenario import Scenario
from sim.workload.streaming import ResultsMode


def simulate(scenario: Scenario, replication: int = 0,
             on_progress: Callable[[float], None] | None = None, mode: ResultsMode = "exact") -> Result:
    """Run one replication of a scenario to its horizon and measure it (`sim.runner.run_point`
    without a workspace). `mode`: keep every request (`exact`), summarise them as they end
    (`streamed`), or choose by size (`auto`; `sim.runner.results_mode`).

    Refuses (SpecError) an exact run whose estimated memory exceeds what this process can use,
    and a streamed run of a scenario that cannot stream yet.
    """
    return run_point(scenario, replication, on_progress=on_progress, mode=mode)


# ------------------------------------------------------------------------------------------
# One replication, digested for comparison
# ------------------------------------------------------------------------------------------

TIMELINE_BIN_S = 300.0


@dataclass
class RunDigest:
    """What a comparison keeps of one replication."""

    scenario: str
    replication: int
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    latency: dict[str, np.ndarray]  # steady-state completed requests: ttft_s, tpot_s, e2e_s
    timeline: pd.DataFrame  # per time bin: requests, latency, error rate
    wall_s: float
    sketches: dict[str, LatencySketch] = field(default_factory=dict)
    """A streamed run's sketches of `latency` (which is then empty): replications pool by merging."""


def digest(result: Result) -> RunDigest:
    if result.tally is not None:  # streamed: sketches and per-bin sums instead of requests
        tally = result.tally
        sketches = {f"{stem}_s": tally.merged_latency(stem) for stem in ("ttft", "tpot", "e2e")}
        return RunDigest(result.scenario.name, result.replication, result.summary, dict(result.tables), {},
                         tally.timeline_frame(), result.wall_s, sketches)
    q = result.requests
    warmup = result.scenario.warmup
    steady = q[(q["arrival_s"] >= warmup) & (q["status"] == "completed")]
    latency = {name: steady[name].to_numpy(dtype=np.float32) for name in ("ttft_s", "tpot_s", "e2e_s")}
    served = q[q["status"] == "completed"]
    bins = np.floor(served["arrival_s"].to_numpy() / TIMELINE_BIN_S).astype(np.int64)
    grouped = served.assign(bin=bins, error=served["error"].astype("float64")).groupby("bin")
    timeline = pd.DataFrame({
        "start_s": grouped.size().index * TIMELINE_BIN_S,
        "requests": grouped.size().to_numpy(),
        "ttft_mean_s": grouped["ttft_s"].mean().to_numpy(),
        "ttft_p99_s": grouped["ttft_s"].quantile(0.99).to_numpy(),
        "e2e_mean_s": grouped["e2e_s"].mean().to_numpy(),
        "e2e_p99_s": grouped["e2e_s"].quantile(0.99).to_numpy(),
        "error_rate": grouped["error_rate"].mean().to_numpy(),
        "observed_error_rate": grouped["error"].mean().to_numpy(),
    })
    return RunDigest(result.scenario.name, result.replication, result.summary, dict(result.tables), latency,
                     timeline, result.wall_s)


def _sketch_of(values: np.ndarray) -> LatencySketch:
    sketch = LatencySketch()
    sketch.add(values)
    return sketch


def _run_digest(task: tuple[Scenario, int, Path | None]) -> RunDigest:
    """One replication of one scenario, left in its workspace and digested (runs in a worker)."""
    from sim.spec.errors import SpecError

    scenario, replication, workspace = task
    try:
        return digest(run_point(scenario, replication, workspace, mode="auto"))
    except SpecError as exc:  # found while running: say which scenario file
        raise exc.with_source(exc.source or scenario.source or scenario.name) from None


# ------------------------------------------------------------------------------------------
# Confidence intervals
# ------------------------------------------------------------------------------------------


FRACTION_WORDS = ("attainment", "availability", "_share", "utilisation")
"""A summary metric whose name holds one of these is a share of something: it lies in [0, 1]."""
FEW_REPLICATIONS = 3
"""Below this many replications compare warns that its intervals say little: with 2, a 95%
Student-t interval spans 12.7 standard errors either side of the mean (4.3 with 3)."""


def metric_domain(name: str) -> tuple[float, float]:
    """Where a summary metric's values lie: [0, 1] for shares (`FRACTION_WORDS`), else
    [0, inf): every metric of a run's summary is a count, a time, a size, an amount of money or
    energy, none of them negative."""
    if any(word in name for word in FRACTION_WORDS) and not name.endswith("_requests"):
        return 0.0, 1.0
    return 0.0, math.inf


def mean_ci(values: Sequence[float | None], confidence: float = 0.95,
            domain: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float, int]:
    """Mean and Student-t confidence interval of replication values; (nan, nan, nan, 0) if none.

    Values that are None (e.g. "not recovered") are left out; the count says how many remain.
    The interval is cut to `domain` (`metric_domain`): a count's interval never goes below
    zero, a share's never above one. Cutting keeps at least the interval's coverage (the true
    mean lies in the domain), and the interval is then not symmetric about the mean.
    """
    from scipy import stats

    data = np.array([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                    dtype=np.float64)
    n = len(data)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(data.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    low, high = domain
    return mean, max(mean - half, low), min(mean + half, high), n


def flat_summary(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested summary -> flat {'cost_usd_by_component.egress': ...} with scalar values only."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_summary(value, f"{name}."))
        elif isinstance(value, bool) or value is None or isinstance(value, int | float | np.integer | np.floating):
            out[name] = None if value is None else float(value)
    return out


# ------------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """R replications of each scenario, with means, confidence intervals and pooled percentiles."""

    scenarios: list[Scenario]
    runs: dict[str, list[RunDigest]]
    replications: int
    wall_s: float = 0.0
    workers: int = 1
    sources: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.scenarios]

    def values(self, name: str) -> dict[str, list[float | None]]:
        """A metric's value in each replication, per scenario (None where it has none)."""
        return {scenario: [flat_summary(run.summary).get(name) for run in self.runs[scenario]]
                for scenario in self.names}

    def clearly_better(self, name: str, a: str, b: str, lower_is_better: bool = True,
                       min_relative: float = 0.005) -> bool:
        """Is scenario a better than b on a metric, beyond noise and by a margin that matters?

        With common random numbers the honest test is paired: the 95% CI of the per-replication
        differences (a_k - b_k) must exclude zero on the better side. With one replication the
        difference itself decides. Either way the mean difference must also exceed
        `min_relative` of b's mean (0.5%), so that a consistent but negligible edge is no "best".
        """
        values = self.values(name)
        pairs = [(x, y) for x, y in zip(values[a], values[b], strict=False) if x is not None and y is not None]
        if not pairs:
            return False
        diffs = [x - y if lower_is_better else y - x for x, y in pairs]
        mean, low, high, n = mean_ci(diffs)
        reference = abs(float(np.mean([y for _, y in pairs])))
        if abs(mean) <= min_relative * reference:
            return False
        if n == 1 or math.isnan(high):
            return mean < 0
        return high < 0

    def overloaded(self, name: str) -> list[int]:
        """The replications of a scenario that ran overloaded (`sim.metrics.latency.overloaded`)."""
        from sim.metrics.latency import overloaded

        return [run.replication for run in self.runs[name] if overloaded(run.summary)]

    def best(self, name: str, lower_is_better: bool = True, min_relative: float = 0.005) -> set[str]:
        """The scenarios best on a metric: the leader and any tied with it, if they beat every
        other scenario beyond noise (`clearly_better`); else none.

        Only a scenario with the value in every replication and no overloaded replication
        (`overloaded`: its latency and cost per request come from the few requests it
        finished) can be best. Scenarios tie when their mean differs from the leader's by no
        more than `min_relative` of it (what `clearly_better` calls negligible): identical
        serving in two placements gives two best marks, not none. A scenario that never has
        the value (never recovered) or ran overloaded counts as beaten.
        """
        values = self.values(name)
        present = {n: [v for v in values[n] if v is not None] for n in self.names}
        candidates = {n: float(np.mean(v)) for n, v in present.items()
                      if len(v) == self.replications and not self.overloaded(n)}
        if len([n for n in self.names if present[n]]) < 2 or not candidates:
            return set()
        pick = min if lower_is_better else max
        leader = pick(candidates, key=lambda n: candidates[n])
        reference = abs(candidates[leader])
        tied = {n for n, mean in candidates.items() if abs(mean - candidates[leader]) <= min_relative * reference}
        beaten = {n for n in self.names if not present[n] or self.overloaded(n)}
        for other in self.names:
            if other in tied or other in beaten:
                continue
            if not all(self.clearly_better(name, n, other, lower_is_better, min_relative) for n in tied):
                return set()
        return tied

    def metric(self, name: str) -> pd.DataFrame:
        """One metric per scenario: mean, ci_low, ci_high, n (replications with a value)."""
        rows = {}
        for scenario in self.names:
            values = [flat_summary(run.summary).get(name) for run in self.runs[scenario]]
            mean, low, high, n = mean_ci(values, domain=metric_domain(name))
            rows[scenario] = {"mean": mean, "ci_low": low, "ci_high": high, "n": n}
        return pd.DataFrame.from_dict(rows, orient="index")

    def pooled_percentile(self, scenario: str, latency: str, q: float) -> float:
        """The q-th percentile of a latency over every replication's steady-state completed
        requests (streamed replications: their sketches merged, within their relative error)."""
        runs = self.runs[scenario]
        if any(run.sketches for run in runs):
            pooled = LatencySketch()
            for run in runs:
                pooled.merge(run.sketches[latency] if run.sketches else _sketch_of(run.latency[latency]))
            value = pooled.quantile(q / 100)
            return math.nan if value is None else value
        samples = np.concatenate([run.latency[latency] for run in runs])
        samples = samples[~np.isnan(samples)]
        return float(np.percentile(samples, q)) if len(samples) else math.nan

    def table(self) -> pd.DataFrame:
        """Every scalar metric x scenario: mean and CI bounds (long format, one row per pair)."""
        names: list[str] = []
        for scenario in self.names:
            for run in self.runs[scenario]:
                for key in flat_summary(run.summary):
                    if key not in names:
                        names.append(key)
        rows = []
        for name in names:
            frame = self.metric(name)
            for scenario, row in frame.iterrows():
                rows.append({"metric": name, "scenario": scenario, **row.to_dict()})
        for scenario in self.names:
            for stem in ("ttft", "tpot", "e2e"):
                for q in (50, 90, 99):
                    rows.append({"metric": f"{stem}_p{q}_s_pooled", "scenario": scenario,
                                 "mean": self.pooled_percentile(scenario, f"{stem}_s", q),
                                 "ci_low": math.nan, "ci_high": math.nan, "n": self.replications})
        return pd.DataFrame(rows)

    def total_requests(self) -> int:
        return int(sum(run.summary["requests_total"] for runs in self.runs.values() for run in runs))


def _load_all(scenarios: Iterable[str | Path | Scenario], overrides: Sequence[str]) -> tuple[list[Scenario], list[str]]:
    from sim.spec import load_scenario

    loaded, sources = [], []
    for item in scenarios:
        if isinstance(item, Scenario):
            loaded.append(item)
            sources.append(item.source or item.name)
        else:
            loaded.append(load_scenario(item, overrides))
            sources.append(str(item))
    names = [s.name for s in loaded]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        from sim.spec.errors import SpecError, SpecIssue

        raise SpecError([SpecIssue("name", f"two scenarios share the name {d!r}", d, "distinct names")
                         for d in duplicates])
    return loaded, sources


def _check_all_fit(scenarios: Sequence[Scenario], workers: int) -> None:
    """Every scenario's run must fit `workers` times over, before any run starts (nothing is lost)."""
    from sim.spec.errors import SpecError
    from sim.workload.limits import check_run_fits
    from sim.workload.streaming import results_mode

    for scenario in scenarios:
        try:
            check_run_fits(scenario, runs_at_once=workers, streamed=results_mode(scenario, "auto") == "streamed")
        except SpecError as exc:
            raise exc.with_source(scenario.source or scenario.name) from None


def compare(
    scenarios: Iterable[str | Path | Scenario],
    replications: int | None = None,
    workers: int | None = None,
    overrides: Sequence[str] = (),
    on_progress: Callable[[int, int], None] | None = None,
    out: str | Path | None = None,
) -> Comparison:
    """Run every scenario `replications` times (default: the scenarios' own setting).

    Replications run in `workers` processes (default: the number of CPUs, at most the number
    of runs). Results do not depend on the number of workers. With `out`, every replication
    leaves its workspace in `out/runs/<scenario>/rep-<k>/` (`sim.runner`), even when another
    fails; the first failure is raised once every replication has ended.
    """
    started = time.perf_counter()
    loaded, sources = _load_all(scenarios, overrides)
    if replications is None:
        replications = max(s.replications for s in loaded)
    if replications < 1:
        raise ValueError("replications must be at least 1")
    tasks = [(s, k, point_folder(out, s.name, k) if out is not None else None)
             for k in range(replications) for s in loaded]
    run_with = executor(workers, len(tasks))
    _check_all_fit(loaded, run_with.workers)
    runs: dict[str, list[RunDigest]] = {s.name: [] for s in loaded}
    failures: list[BaseException] = []
    for done, (_, outcome) in enumerate(run_with.run(_run_digest, tasks), start=1):
        if isinstance(outcome, BaseException):
            failures.append(outcome)
        else:
            runs[outcome.scenario].append(outcome)
        if on_progress:
            on_progress(done, len(tasks))
    if failures:
        raise failures[0]
    for name in runs:
        runs[name].sort(key=lambda run: run.replication)
    return Comparison(loaded, runs, replications, time.perf_counter() - started, run_with.workers, sources)
