"""`sim.decision` / `deploysim decide`: right-sizing is minimal, rules exclude what they should,
the ranking ignores units and dominated candidates, and every flip point holds up in direct runs.

The small cases: an owned L4 ("own", private, no exposure) against a rented one ("rent", an AWS
L4 reached over a 20 ms link, every prompt exposed), serving llama-3.1-8b with fixed 100-token
prompts and 50-token answers for 5 minutes after a 1-minute warm-up, SLO e2e p99 < 5 s. At
30 req/s one L4 misses it (e2e p99 ~5.5 s at 20 req/s already) and two meet it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_minimal_doc
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim import decision as d
from sim.runner import run_point
from sim.spec.errors import SpecError
from sim.spec.loader import load_scenario

RATE = 30.0


def own_doc(count: int = 1, rate: float = RATE) -> dict[str, Any]:
    doc = make_minimal_doc()
    doc.update(name="own", horizon="6min", warmup="1min", slo={"e2e_p99": "5s"})
    doc["workload"]["arrivals"]["rate_per_s"] = rate
    doc["sites"]["edge"]["pools"][0].update(count=count, roles=["serving"])
    return doc


def rent_doc(count: int = 1, rate: float = RATE) -> dict[str, Any]:
    doc = own_doc(count, rate)
    doc["name"] = "rent"
    doc["sites"] = {"edge": {"zone": "private"},
                    "cloud": {"zone": "third_party", "provider": "aws",
                              "pools": [{"gpu": "l4", "count": count, "roles": ["serving"]}]}}
    doc["links"] = {"wan": {"ends": ["edge", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}}
    doc["placement"] = {"inference": "cloud", "model_registry": "cloud"}
    return doc


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def passes(doc: dict[str, Any]) -> bool:
    return d.slo_holds(run_point(load_scenario(doc), 0).summary)


# ------------------------------------------------------------------------------------------
# Right-sizing
# ------------------------------------------------------------------------------------------


def test_right_sizing_is_the_fewest_gpus_that_pass_by_brute_force(tmp_path: Path) -> None:
    """Written with 4 GPUs; every count 1..4 simulated at the peak by hand: the answer is the
    smallest passing one (and the counts above it pass too: the monotone assumption holds)."""
    doc = own_doc(count=4)
    candidate = d.Candidate("own", "own.yaml", doc, ())
    sizing = d.right_size(candidate, sizing_horizon=360.0, sizing_warmup=60.0)
    verdicts = {n: passes({**own_doc(count=n), "horizon": "6min", "warmup": "1min"}) for n in range(1, 5)}
    fewest = min(n for n, ok in verdicts.items() if ok)
    assert sizing.feasible
    assert sizing.sizes == {"edge/l4": fewest}
    assert fewest == 2 and all(verdicts[n] for n in range(fewest, 5))
    assert sizing.simulations <= 4  # bisection, not every size


def test_right_sizing_grows_an_undersized_pool_and_adds_headroom() -> None:
    candidate = d.Candidate("own", "own.yaml", own_doc(count=1), ())
    sizing = d.right_size(candidate, headroom=1, sizing_horizon=360.0, sizing_warmup=60.0)
    assert sizing.feasible and sizing.sizes == {"edge/l4": 3}  # 2 needed, + 1 spare (N+1)
    assert sizing.describe() == ["edge/l4: 3 GPUs"]


def test_two_pools_right_sized_to_a_minimal_point() -> None:
    """An overflow pair (two L4 pools, the second taking what the first cannot hold): no pool can
    lose a GPU from the answer and still meet the SLO."""
    doc = own_doc(count=3)
    doc["sites"]["edge"]["pools"] = [{"name": "a", "gpu": "l4", "count": 3, "roles": ["serving"]},
                                     {"name": "b", "gpu": "l4", "count": 3, "roles": ["serving"]}]
    doc["routing"] = [{"pools": ["edge/a", "edge/b"], "policy": "overflow", "overflow": {"queue_per_replica": 8}}]
    sizing = d.right_size(d.Candidate("own", "own.yaml", doc, ()), sizing_horizon=360.0, sizing_warmup=60.0)
    assert sizing.feasible

    def with_sizes(a: int, b: int) -> dict[str, Any]:
        trial = copy.deepcopy(doc)
        trial["sites"]["edge"]["pools"][0]["count"] = a
        trial["sites"]["edge"]["pools"][1]["count"] = b
        return trial

    a, b = sizing.sizes["edge/a"], sizing.sizes["edge/b"]
    assert passes(with_sizes(a, b))
    assert a == 1 or not passes(with_sizes(a - 1, b))
    assert b == 1 or not passes(with_sizes(a, b - 1))
    assert a + b >= 2  # one L4 cannot carry 30 req/s within 5 s


def test_a_pin_keeps_its_size_and_a_pin_on_no_pool_is_an_error() -> None:
    candidate = d.Candidate("own", "own.yaml", own_doc(count=1), ())
    sizing = d.right_size(candidate, pins={"edge/l4": 4})
    assert sizing.sizes == {"edge/l4": 4} and sizing.simulations == 0
    assert sizing.describe() == ["edge/l4: 4 GPUs (pinned)"]
    with pytest.raises(SpecError, match="no serving pool 'edge/l5'"):
        d.right_size(candidate, pins={"edge/l5": 4})


def test_peak_sizing_uses_each_arrival_process_peak() -> None:
    doc = own_doc()
    doc["workload"]["arrivals"] = {"process": "diurnal", "rate_per_s": 3, "amplitude": 0.8}
    assert d.peak_overrides(load_scenario(doc)) == ["workload.arrivals={process: poisson, rate_per_s: 5.4}"]
    doc["workload"]["arrivals"] = {"process": "bursty", "rate_per_s": 1, "burst_rate_per_s": 9,
                                   "mean_quiet": "10min", "mean_burst": "1min"}
    assert d.peak_overrides(load_scenario(doc)) == ["workload.arrivals={process: poisson, rate_per_s: 9.0}"]


# ------------------------------------------------------------------------------------------
# Ranking
# ------------------------------------------------------------------------------------------

CRITERIA = ("cost", "ttft_p99", "exposure")
WEIGHTS = {"cost": 0.5, "ttft_p99": 0.3, "exposure": 0.2}
values_strategy = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.fixed_dictionaries({c: st.one_of(st.just(0.0), st.floats(1e-3, 1e4)) for c in CRITERIA}),
    min_size=2, max_size=5)


@settings(max_examples=200, deadline=None)
@given(values_strategy, st.sampled_from(CRITERIA), st.floats(1e-3, 1e3))
def test_ranking_does_not_depend_on_units(values: dict[str, dict[str, float]], criterion: str,
                                          factor: float) -> None:
    """Dollars or cents, seconds or milliseconds: the scores are the same."""
    scaled = {n: {**v, criterion: v[criterion] * factor} for n, v in values.items()}
    before, after = d.scores(values, WEIGHTS), d.scores(scaled, WEIGHTS)
    for name in values:
        assert after[name][0] == pytest.approx(before[name][0], rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(values_strategy, st.data())
def test_adding_a_dominated_candidate_reorders_nothing(values: dict[str, dict[str, float]], data: Any) -> None:
    victim = data.draw(st.sampled_from(sorted(values)))
    worse = {c: values[victim][c] + data.draw(st.floats(0, 1e3)) for c in CRITERIA}
    worse["cost"] = values[victim]["cost"] + 1.0  # strictly worse somewhere: dominated
    grown = {**values, "z": worse}
    before, after = d.scores(values, WEIGHTS), d.scores(grown, WEIGHTS)
    for name in values:
        assert after[name][0] == pytest.approx(before[name][0], rel=1e-9, abs=1e-9)
    assert [n for n in d.ranked(grown, WEIGHTS) if n != "z"] == d.ranked(values, WEIGHTS)


def test_scores_by_hand() -> None:
    """Pareto set {a, b} (c is dominated by b), whose maxima are cost 100, ttft 0.5, exposure 10:
    a = 1 - (0.5 x 50/100 + 0.3 x 0.5/0.5 + 0.2 x 0/10) = 0.45,
    b = 1 - (0.5 x 100/100 + 0.3 x 0.2/0.5 + 0.2 x 10/10) = 0.18,
    c = 1 - (0.5 x 120/100 + 0.3 x 0.2/0.5 + 0.2 x 20/10) = -0.12."""
    values = {"a": {"cost": 50.0, "ttft_p99": 0.5, "exposure": 0.0},
              "b": {"cost": 100.0, "ttft_p99": 0.2, "exposure": 10.0},
              "c": {"cost": 120.0, "ttft_p99": 0.2, "exposure": 20.0}}
    result = d.scores(values, WEIGHTS)
    assert d.pareto_set(values, CRITERIA) == ["a", "b"]
    assert result["a"][0] == pytest.approx(1 - (0.5 * 0.5 + 0.3 * 1.0 + 0.0))
    assert result["b"][0] == pytest.approx(1 - (0.5 * 1.0 + 0.3 * 0.4 + 0.2 * 1.0))
    assert result["c"][0] == pytest.approx(1 - (0.5 * 1.2 + 0.3 * 0.4 + 0.2 * 2.0))
    assert d.ranked(values, WEIGHTS) == ["a", "b", "c"]


def test_rules_parse_units_and_hold_or_break() -> None:
    rules = d.parse_rules(["exposure_score==0", "recovery_time_s<6h", "ttft_p99_s<=800ms", "slo_attainment>=99%"])
    assert [(r.field, r.op, r.value) for r in rules] == [
        ("exposure_score", "==", 0.0), ("recovery_time_s", "<", 21600.0), ("ttft_p99_s", "<=", 0.8),
        ("slo_attainment", ">=", 0.99)]
    assert rules[0].holds(0.0) and not rules[0].holds(3.0)
    assert not rules[1].holds(math.inf) and not rules[1].holds(None)  # never recovered / not measured
    for bad in ("exposure_score", "cost_per_day<lots", "recovery_time_s<6 parsecs"):
        with pytest.raises(SpecError):
            d.parse_rules([bad])
    with pytest.raises(SpecError, match="unknown criterion 'costs'"):
        d.parse_weights(["costs=1"])
    with pytest.raises(SpecError, match="at least one weight"):
        d.parse_weights(["cost=0"])


# ------------------------------------------------------------------------------------------
# End to end: constraints, flips, re-pricing
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("candidates")
    return write(folder, own_doc()), write(folder, rent_doc())


@pytest.fixture(scope="module")
def cost_only(pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> d.Decision:
    """Cost alone decides; the cloud discount (0 to 95% here) is the one uncertain input."""
    folder = tmp_path_factory.mktemp("decide")
    ranges = folder / "ranges.yaml"
    ranges.write_text("cloud_discount: {low: 0.0, high: 0.95}\n")
    return d.decide(list(pair), weights=["cost=1"], replications=2, inputs=["cloud_discount"], ranges=ranges,
                    sizing_horizon="6min", sizing_warmup="1min", workers=1, out=folder)


def test_cost_only_ranks_the_cheaper_and_right_sizes_both(cost_only: d.Decision) -> None:
    own, rent = (next(r for r in cost_only.ranking if r.scenario == n) for n in ("own", "rent"))
    assert own.sizing.sizes == {"edge/l4": 2} and rent.sizing.sizes == {"cloud/l4": 2}
    assert own.feasible and rent.feasible
    assert own.criteria["cost"] < rent.criteria["cost"]  # at list prices, owning two L4s costs less
    assert cost_only.top == "own" and cost_only.pareto == ["own"]  # one criterion: one Pareto point
    # each cost divided by the Pareto set's largest, the owned pair's: score 1 - cost / own cost
    assert own.score == pytest.approx(0.0)
    assert rent.score == pytest.approx(1 - rent.criteria["cost"] / own.criteria["cost"])


def test_the_flip_point_holds_in_direct_runs_on_both_sides(cost_only: d.Decision, tmp_path: Path) -> None:
    """Cloud discount: where the rented L4s become cheaper than the owned ones, checked here by
    simulating both candidates with the discount set just below and just above it."""
    (entry,) = cost_only.sensitivity
    assert entry.input == "cloud_discount" and entry.flips_at is not None and entry.confirmed
    flip = entry.flips_at
    costs = {}
    for side, value in (("below", flip * 0.97), ("above", min(flip * 1.03, 0.999))):
        for name, doc in (("own", own_doc(2)), ("rent", rent_doc(2))):
            scenario = load_scenario(doc)
            extra = d.SENSITIVITY_INPUTS["cloud_discount"].overrides(scenario, value, tmp_path)
            costs[side, name] = d.cost_per_day(run_point(load_scenario(doc, extra), 0).summary, scenario)
    top = cost_only.top
    other = "rent" if top == "own" else "own"
    assert costs["below" if entry.flips_when == "above" else "above", top] < \
        costs["below" if entry.flips_when == "above" else "above", other]
    assert costs[entry.flips_when, top] > costs[entry.flips_when, other]


def test_repricing_equals_a_direct_run(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Price-only inputs re-price the simulated run: the cost equals simulating with the price set."""
    candidate = d.Candidate("rent", str(pair[1]), rent_doc(2), ())
    scenario = candidate.load()
    variants = {"cloud_discount": {v: d._variant(scenario, candidate, d.Sizing("rent", [], {}, True), "cloud_discount",
                                                 v, tmp_path) for v in (0.0, 0.5)}}
    evaluated = d._evaluate_task((scenario, 0, None, variants))
    line = evaluated.repriced["cloud_discount"]
    direct = d.cost_per_day(run_point(variants["cloud_discount"][0.5], 0).summary, scenario)
    assert line[0.5] == pytest.approx(direct, rel=1e-12)
    assert d._interpolate(line, 0.25) == pytest.approx((line[0.0] + line[0.5]) / 2)


def test_rules_exclude_and_say_why(pair: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    from sim.cli import app

    result = runner.invoke(app, ["decide", *map(str, pair), "--require", "exposure_score==0", "-r", "1",
                                 "--no-sensitivity", "--sizing-horizon", "6min", "--pin", "rent:cloud/l4=2",
                                 "--pin", "own:edge/l4=2", "--workers", "1", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    by_name = {r["scenario"]: r for r in answer["ranking"]}
    assert answer["top"] == "own" and by_name["own"]["feasible"]
    assert not by_name["rent"]["feasible"]
    assert by_name["rent"]["broken_rules"][0].startswith("exposure_score==0 (is ")
    assert by_name["own"]["right_sized_pools"]["edge/l4"] == {
        "kind": "count", "replicas": 2, "gpus_per_replica": 1, "pinned": True, "written_replicas": 1}
    assert answer["pareto"] == ["own"] and answer["sensitivity"] == []
    page = (tmp_path / "index.html").read_text()
    assert "Choose own" in page and "exposure_score==0" in page
    assert (tmp_path / "compare" / "index.html").exists() and (tmp_path / "figures" / "pareto.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--weight", "speed=1"], "unknown criterion 'speed'"),
    (["--require", "exposure_scor==0"], "no summary field 'exposure_scor'"),
    (["--pin", "nobody:edge/l4=2"], "no candidate named 'nobody'"),
    (["--input", "moon_phase"], "unknown input 'moon_phase'"),
])
def test_user_mistakes_exit_2_with_a_clear_message(pair: tuple[Path, Path], tmp_path: Path, args: list[str],
                                                   message: str) -> None:
    from sim.cli import app

    result = CliRunner().invoke(app, ["decide", *map(str, pair), "-r", "1", "--sizing-horizon", "6min",
                                      "--pin", "edge/l4=2", "--pin", "cloud/l4=2", "--workers", "1",
                                      "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
