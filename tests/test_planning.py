"""Capacity planning: SLO strings, the search for the fewest GPUs, monotonicity, the inverse question."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from sim.planning import (
    evaluate,
    fewest_passing,
    max_rate,
    parse_slo,
    parse_slos,
    plan,
)
from sim.spec.errors import SpecError

# S1 at 6 req/s over 20 simulated minutes: small enough to simulate every size by brute force.
RATE = 6.0
SHORT = {"horizon": "20min", "warmup": "2min"}
LOOSE = {"ttft_p99": 2.0, "e2e_p99": 90.0}
TIGHT = {"ttft_p99": 1.2, "e2e_p99": 65.0}
TIGHTEST = {"ttft_p99": 0.5, "e2e_p99": 30.0}
GPUS = ("l4", "l40s")
MAX_GPUS = 12


@pytest.fixture(scope="module")
def s1(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.rootpath) / "scenarios" / "s1_local.yaml"


def test_slo_strings_parse_to_seconds() -> None:
    """'ttft_p99<0.8s', 'tpot_p99<50ms', 'e2e_p90<=20' (bare numbers are seconds)."""
    assert parse_slo("ttft_p99<0.8s") == ("ttft_p99", 0.8)
    assert parse_slo("tpot_p99 < 50ms") == ("tpot_p99", pytest.approx(0.05))
    assert parse_slos(["e2e_p90<=20", "ttft_p50<300ms"]) == {"e2e_p90": 20.0, "ttft_p50": pytest.approx(0.3)}
    assert parse_slos({"ttft_p99": "800ms", "e2e_p99": 20}) == {"ttft_p99": pytest.approx(0.8), "e2e_p99": 20.0}


@pytest.mark.parametrize(("text", "words"), [
    ("ttft_p98<1s", "did you mean 'ttft_p99'"),
    ("latency_p99<1s", "unknown latency metric"),
    ("ttft_p99<fast", "cannot read 'fast'"),
    ("ttft_p99>1s", "an SLO is an upper bound"),
    ("ttft_p99<-1s", "must be positive"),
    ("ttft_p99<1parsec", "unknown duration unit"),
    ("ttft_p99", "cannot read the SLO"),
])
def test_bad_slo_strings_are_spec_errors_naming_the_option(text: str, words: str) -> None:
    """Each bad SLO is a SpecError on --slo with the bad value and what is allowed."""
    with pytest.raises(SpecError) as caught:
        parse_slos([text])
    issue = caught.value.issues[0]
    assert issue.path == "--slo" and issue.value == text and issue.allowed
    assert words in caught.value.render()


def test_bad_plan_inputs_are_spec_errors(s1: Path) -> None:
    """Unknown GPU ids, a bad rate and an arrival process without a rate are the user's mistakes."""
    with pytest.raises(SpecError, match="did you mean 'l40s'"):
        plan(s1, RATE, LOOSE, gpus=("l40", "l4"), **SHORT)
    with pytest.raises(SpecError, match="--rate"):
        plan(s1, -1, LOOSE, gpus=GPUS, **SHORT)
    with pytest.raises(SpecError, match="arrival process has none"):
        plan(s1, RATE, LOOSE, overrides=["workload.arrivals={process: concurrency, clients: 4}"], **SHORT)


@pytest.mark.parametrize(("least", "most"), [(1, 12), (3, 12), (5, 7), (1, 1)])
def test_the_search_finds_the_fewest_passing_count_for_every_threshold(least: int, most: int) -> None:
    """For any monotone pass/fail and any bound at or below the threshold (or above it by one,
    since the bound is an estimate), the search returns the threshold, or None past `most`,
    with fewer probes than sizes."""
    for threshold in range(1, most + 3):
        calls: list[int] = []

        def passes(n: int, t: int = threshold, seen: list[int] = calls) -> bool:
            seen.append(n)
            return n >= t

        expected = threshold if threshold <= most else None
        start = min(least, most)
        if threshold < start - 1:
            continue  # a bound more than one too high is outside the contract
        assert fewest_passing(passes, start, most) == expected, (threshold, start, most)
        assert len(set(calls)) <= max(most, 1) and len(calls) == len(set(calls))
    # the numbers of the module doc: 32 sizes, answer 23, bound 10
    calls = []
    fewest_passing(lambda n: calls.append(n) or n >= 23, 10, 32)
    assert len(calls) <= 6


@pytest.fixture(scope="module")
def brute_force(s1: Path) -> dict[str, list[bool]]:
    """Whether every size 1..MAX_GPUS of each GPU meets LOOSE, TIGHT and TIGHTEST (one run each)."""
    table: dict[tuple[str, int], dict[str, float]] = {}
    for gpu, n in itertools.product(GPUS, range(1, MAX_GPUS + 1)):
        table[(gpu, n)] = evaluate(s1, RATE, LOOSE, gpu=gpu, gpus=n, tp=1, **SHORT).measured
    out = {}
    for name, slos in (("loose", LOOSE), ("tight", TIGHT), ("tightest", TIGHTEST)):
        for gpu in GPUS:
            out[f"{name}/{gpu}"] = [all(table[(gpu, n)][k] <= v for k, v in slos.items())
                                    for n in range(1, MAX_GPUS + 1)]
    return out


def _first(passes: list[bool]) -> int | None:
    return next((n for n, ok in enumerate(passes, start=1) if ok), None)


@pytest.mark.parametrize("name", ["loose", "tight"])
def test_plan_returns_the_minimal_count_found_by_brute_force(s1: Path, brute_force: dict[str, list[bool]],
                                                             name: str) -> None:
    """For L4 and L40S at 6 req/s, the plan's count equals the smallest size that passes when every
    size is simulated, with fewer simulations; options come cheapest first."""
    slos = {"loose": LOOSE, "tight": TIGHT}[name]
    result = plan(s1, RATE, slos, gpus=GPUS, max_gpus=MAX_GPUS, tp_options=[1], workers=1, **SHORT)
    for option in result.options:
        expected = _first(brute_force[f"{name}/{option.gpu}"])
        assert option.gpus == expected, (option.gpu, option.probes)
        assert option.feasible == (expected is not None)
    assert result.simulations < result.brute_force_simulations == len(GPUS) * MAX_GPUS
    feasible = [o.cost_usd_per_month for o in result.options if o.feasible]
    assert feasible == sorted(feasible) and result.best is result.options[0]
    table = result.table()
    assert list(table["rank"][: len(feasible)]) == list(range(1, len(feasible) + 1))
    assert {"ttft_p99_s", "e2e_p99_s", "cost_usd_per_month", "exposure_score", "simulations"} <= set(table.columns)


def test_a_looser_slo_never_needs_more_gpus(s1: Path) -> None:
    """Tightening the SLOs step by step never lowers the GPUs any option needs (None = more than
    the maximum)."""
    counts = []
    for slos in (LOOSE, TIGHT, TIGHTEST):
        result = plan(s1, RATE, slos, gpus=GPUS, max_gpus=MAX_GPUS, tp_options=[1], workers=1, **SHORT)
        counts.append({o.gpu: o.gpus if o.gpus is not None else math.inf for o in result.options})
    for looser, tighter in itertools.pairwise(counts):
        for gpu in GPUS:
            assert looser[gpu] <= tighter[gpu], counts
    assert counts[0]["l4"] < counts[1]["l4"]  # the case is not trivial
    assert counts[2]["l4"] == math.inf and counts[2]["l40s"] < math.inf


def test_options_that_cannot_fit_or_cannot_reach_the_slo_say_why(s1: Path) -> None:
    """A TP degree too small for the model, or an SLO no size reaches, gives a reason, not a count."""
    result = plan(s1, RATE, TIGHTEST, gpus=("l4",), max_gpus=8, tp_options=[1], workers=1, **SHORT)
    (option,) = result.options
    assert not option.feasible and option.gpus is None and "at 8 GPUs" in option.reason
    assert result.best is None


def test_max_rate_finds_the_rate_where_the_slo_breaks(s1: Path) -> None:
    """The configuration meets the SLOs at the rate found and misses them just above it."""
    answer = max_rate(s1, LOOSE, overrides=["sites.premises.pools[0].count=2"], tolerance=0.1, **SHORT)
    assert answer.gpus == 2 and answer.gpu == "l40s"
    assert 0 < answer.rate_per_s < answer.upper_rate_per_s <= answer.rate_per_s / 0.9 + 1e-9
    assert answer.chosen is not None and answer.chosen.feasible
    above = evaluate(s1, answer.upper_rate_per_s, LOOSE, overrides=["sites.premises.pools[0].count=2"], **SHORT)
    assert not above.feasible
    assert answer.simulations == len(answer.probes) < 12


# ------------------------------------------------------------------------------------------
# Which pool a plan sizes, and the rate it sets
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hetero(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.rootpath) / "scenarios" / "examples" / "hetero_h100_l4.yaml"


def test_plan_sizes_the_named_pool_with_its_own_tensor_parallelism(hetero: Path) -> None:
    """hetero_h100_l4 has an H100 pool (TP from the model: 1) and an L4 pool with its own TP 2.
    Sizing premises/l4 as 6 x l40s at TP 1 changes that pool alone: its GPU, count and TP (set
    on the pool, not on model.tensor_parallel, which the L4 pool would not read and the H100
    pool would); the H100 pool keeps its GPU, count and TP."""
    from sim.planning import configuration_overrides, serving_pool
    from sim.spec.loader import load_scenario

    base = load_scenario(hetero)
    default, l4 = serving_pool(base), serving_pool(base, "premises/l4")
    assert (default.name, default.tp) == ("premises/h100", 1)
    assert (l4.name, l4.path, l4.gpu, l4.count, l4.tp) == ("premises/l4", "sites.premises.pools[1]", "l4", 4, 2)
    assert (default.engine, l4.engine) == ("vllm", "lmdeploy")  # its capacity bound uses its own engine
    assert serving_pool(base, "l4").name == "premises/l4"  # a unique pool name is enough
    probe = load_scenario(hetero, configuration_overrides(l4, "l40s", 6, 1, 4.0))
    h100, sized = probe.sites["premises"].pools
    assert (sized.gpu, sized.count, sized.tp(probe.model)) == ("l40s", 6, 1)
    assert (h100.gpu, h100.count, h100.tp(probe.model)) == ("h100-sxm", 1, 1)
    assert probe.model.tensor_parallel == base.model.tensor_parallel


def test_an_unknown_pool_is_a_spec_error_listing_the_pools(hetero: Path) -> None:
    from sim.planning import serving_pool
    from sim.spec.loader import load_scenario

    with pytest.raises(SpecError) as caught:
        serving_pool(load_scenario(hetero), "premises/a100")
    issue = caught.value.issues[0]
    assert issue.path == "--pool" and issue.value == "premises/a100"
    assert issue.allowed == "premises/h100, premises/l4"


def test_plan_scales_every_arrival_stream_to_the_planned_total(s1: Path) -> None:
    """A class with its own arrival process (constant 1 req/s) beside the workload's Poisson
    3 req/s: planning at 8 req/s scales both by 8 / 4, keeping each stream's share (before,
    only workload.arrivals was set, to 8, and the total became 9)."""
    from sim.planning import configuration_overrides, serving_pool
    from sim.spec.loader import load_scenario

    classes = ("workload.classes=[{name: main, share: 1.0}, "
               "{name: own, arrivals: {process: constant, rate_per_s: 1}}]")
    overrides = ["workload.arrivals={process: poisson, rate_per_s: 3}", classes]
    base = load_scenario(s1, overrides)
    probe = load_scenario(s1, [*overrides, *configuration_overrides(serving_pool(base), "l40s", 4, 1, 8.0)])
    rates = [process.mean_rate_per_s(probe.horizon) for _, process in probe.arrival_streams()]
    assert rates == [pytest.approx(6.0), pytest.approx(2.0)]
