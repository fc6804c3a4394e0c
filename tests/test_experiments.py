"""The experiment scripts answer their questions, and their answers are right: each script's
answer logic runs on a small case and is checked against direct `sim.simulate` runs at the
reported point and on both sides of it (experiments/ is not a package: the scripts are loaded
from their files). Runs are serial (workers=1): a process pool's start-up costs more than these
short runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import sim

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
SCENARIOS = Path(__file__).parent.parent / "scenarios"
S1, S2, S3, S4 = (SCENARIOS / f for f in ("s1_local.yaml", "s2_cloud_training.yaml", "s3_local_training.yaml",
                                            "s4_cloud_served_local_inference.yaml"))


def script(name: str) -> ModuleType:
    """An experiment script as a module (its main() is not run)."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def slo_met(path: Path, overrides: list[str]) -> bool:
    """Every SLO target met in a direct run (replication 0)."""
    summary = sim.simulate(sim.load_scenario(path, overrides)).summary
    return all(check["met"] for check in summary["slo"].values())


# ------------------------------------------------------------------------------------------
# latency_vs_load: where each placement saturates
# ------------------------------------------------------------------------------------------


def test_saturation_bisection_narrows_the_grid_bracket() -> None:
    """With an SLO that holds below 7.3 req/s, the grid 2, 6, 8, 10 brackets it at 6-8 and
    bisection to 0.5 req/s lands on 7-7.5; a scenario that never misses says so."""
    lvl = script("latency_vs_load")

    def fake(rates: dict[str, float]) -> dict[str, dict[str, float | bool]]:
        return {n: {"met": n == "never" or r < 7.3, "missed": "" if r < 7.3 else "e2e_p99"} for n, r in rates.items()}

    found = lvl.find_saturation(fake, ["a", "never"], [2.0, 6.0, 8.0, 10.0], 0.5)
    assert (found["a"].met_at, found["a"].missed_at) == (7.0, 7.5)
    assert (found["never"].met_at, found["never"].missed_at) == (10.0, None)
    text = lvl.answer(found, 0.5)
    assert "a at 7-7.5 req/s (e2e_p99)" in text and "never never below 10 req/s" in text


def test_reported_saturation_is_where_a_direct_run_breaks_the_slo() -> None:
    """S1 on a grid of 6 and 12 req/s (15 min runs), bisected to 3 req/s: a direct run meets
    the SLO at the reported lower end and misses it at the upper end."""
    lvl = script("latency_vs_load")
    found = lvl.find_saturation(lvl.measurer([S1], 1, "15min", workers=1), ["s1_local"], [6.0, 12.0], 3.0)["s1_local"]
    assert found.met_at is not None and found.missed_at is not None
    assert found.missed_at - found.met_at <= 3.0
    assert slo_met(S1, lvl.overrides(found.met_at, "15min"))
    assert not slo_met(S1, lvl.overrides(found.missed_at, "15min"))
    assert f"s1_local at {found.met_at:g}-{found.missed_at:g} req/s" in lvl.answer({"s1_local": found}, 3.0)


# ------------------------------------------------------------------------------------------
# wan_sensitivity: the RTT at which S2 breaks the SLO
# ------------------------------------------------------------------------------------------


def test_wan_break_is_where_a_direct_run_misses_the_slo() -> None:
    """S2 at its peak rate over RTTs of 50 and 700 ms (15 min runs), bisected to 150 ms: a
    direct run meets the SLO at the reported lower RTT and misses it at the upper."""
    wan = script("wan_sensitivity")
    rate = wan.peak_rate(S2)
    assert rate == pytest.approx(3 * 1.8)  # base.yaml: 3 req/s mean, amplitude 0.8
    found = wan.find_breaks(wan.measurer(S2, rate, 1, "15min", workers=1), ["1Gbps"], [0.05, 0.7], 0.15)["1Gbps"]
    assert found.met_s is not None and found.missed_s is not None and found.missed_s - found.met_s <= 0.15
    assert slo_met(S2, wan.overrides(rate, found.met_s, "1Gbps", "15min"))
    assert not slo_met(S2, wan.overrides(rate, found.missed_s, "1Gbps", "15min"))
    assert f"{found.met_s * 1e3:.0f}-{found.missed_s * 1e3:.0f} ms at 1Gbps" in wan.answer({"1Gbps": found}, rate,
                                                                                          0.15)


def test_wan_answer_says_never_when_no_rtt_breaks_it() -> None:
    wan = script("wan_sensitivity")
    never = wan.Break("1Gbps", 0.1, None)
    assert "never below 100 ms at 1Gbps" in wan.answer({"1Gbps": never}, 5.4, 0.005)


# ------------------------------------------------------------------------------------------
# retraining_policy: recovery, GPU-hours and cost per policy
# ------------------------------------------------------------------------------------------


def test_retraining_answer_matches_direct_runs() -> None:
    """S2 over 9.5 h, triggered against scheduled every 2 h: the answer's recovery, GPU-hours and
    cost for each policy are a direct run's, and the fastest policy is the faster direct run."""
    rp = script("retraining_policy")
    data, window = rp.measure(("triggered", "scheduled"), 1, "9.5h", "2h", files=[S2], workers=1)
    assert window == {"s2_cloud_training": pytest.approx(3.5)}
    line = rp.answer(data, window)
    recovery = {}
    for policy in ("triggered", "scheduled"):
        s = sim.simulate(sim.load_scenario(S2, [f"lifecycle.retraining.policy={policy}",
                                                "lifecycle.retraining.every=2h", "horizon=9.5h"])).summary
        gpu_h = s["gpu_hours_by_purpose"]["retraining"] + s["gpu_hours_by_purpose"]["development"]
        recovery[policy] = s["recovery_time_s"]
        text = ("not recovered within 3.5 h" if s["recovery_time_s"] is None
                else f"recovers in {s['recovery_time_s'] / 3600:.2f} h")
        assert f"{policy} {text}, {gpu_h:.1f} GPU-h, ${s['cost_usd']:,.0f}" in line
    recovered = {p: r for p, r in recovery.items() if r is not None}
    assert recovered, "at least the triggered policy recovers within 3.5 h of the drift"
    assert line.endswith(f"fastest: {min(recovered, key=recovered.__getitem__)}")


# ------------------------------------------------------------------------------------------
# drift_recovery: the sample size trade-off
# ------------------------------------------------------------------------------------------


def test_sample_size_tradeoff_matches_direct_runs() -> None:
    """S4 (cloud training on an uploaded 30% share) with 8,000 and 10,000 samples over 14 h (the
    learning curve needs about 6,000 for S4's LoRA to undo half the drift's damage): the
    answer's exposed records and recovery times are direct runs', and the bigger sample
    exposes more records and takes longer to recover (more labels to wait for)."""
    dr = script("drift_recovery")
    data = dr.measure("samples", [8000.0, 10000.0], 1, "14h", files=[S4], workers=1)
    line = dr.answer(data)
    direct = {n: sim.simulate(sim.load_scenario(S4, [f"lifecycle.retraining.samples={n}", "horizon=14h"])).summary
              for n in (8000, 10000)}
    for n, s in direct.items():
        assert f"{n} samples: {s['exposed_records']:,.0f} records exposed, " \
               f"recovery {s['recovery_time_s'] / 3600:.1f} h" in line
    assert direct[10000]["exposed_records"] > direct[8000]["exposed_records"]
    assert direct[10000]["exposed_records_by_purpose"]["retraining"] == pytest.approx(0.3 * 10000)
    assert direct[10000]["recovery_time_s"] > direct[8000]["recovery_time_s"]
    assert direct[10000]["recovered_error_rate"] < direct[8000]["recovered_error_rate"]  # the learning curve


def test_not_recovered_is_capped_at_the_window_observed(tmp_path: Path) -> None:
    """A 6.5 h horizon sees 0.5 h after the drift at 6 h: S4 has not recovered (direct run), the
    answer says "not recovered within 0.5 h", and the figure draws it at 0.5 h."""
    dr = script("drift_recovery")
    data = dr.measure("samples", [300.0], 1, "6.5h", files=[S4], workers=1)
    assert sim.simulate(sim.load_scenario(S4, ["lifecycle.retraining.samples=300", "horizon=6.5h"])) \
        .summary["recovery_time_s"] is None
    assert "recovery not recovered within 0.5 h" in dr.answer(data)
    assert data["recovered_error_rate"].isna().all()  # not recovered: no error reached to draw
    assert dr.draw_tradeoff(data, tmp_path / "tradeoff.png") is False
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------
# compare_scenarios and trace_replay: the headline
# ------------------------------------------------------------------------------------------


def test_headline_names_the_placement_direct_runs_find_fastest() -> None:
    """S1 (premises) and S2 (cloud, 200 ms away) over 20 min, two replications: in each direct
    replication S1's p99 TTFT is lower, and the headline names S1 fastest."""
    from sim.report.terminal import headline

    overrides = ["horizon=20min", "warmup=5min", "links.wan.rtt=200ms"]
    comparison = sim.compare([S1, S2], replications=2, workers=1, overrides=overrides)
    for k in range(2):
        s1 = sim.simulate(sim.load_scenario(S1, overrides), k).summary["ttft_p99_s"]
        s2 = sim.simulate(sim.load_scenario(S2, overrides), k).summary["ttft_p99_s"]
        assert s1 < s2
    assert "fastest p99 TTFT: s1_local (" in headline(comparison)


# ------------------------------------------------------------------------------------------
# capacity_plan and breakeven: answers through sim.decide, checked by direct runs
# ------------------------------------------------------------------------------------------


def test_capacity_plan_answer_is_the_cheaper_right_sized_option_in_direct_runs(tmp_path: Path) -> None:
    """At 3 req/s on L40S (an L4 cannot hold e2e p99 < 30 s on the 1,500-token answers at any size): the named choice is cheaper than the other placement's right-sized
    pool in direct runs, and one GPU fewer on its pool misses an SLO."""
    cp = script("capacity_plan")
    decision = cp.choose(3.0, ["l40s"], ["ttft_p99<0.8s", "e2e_p99<30s"], tmp_path, workers=1)
    line = cp.answer_line(3.0, decision)
    top = decision.feasible[0]
    assert line.startswith(f"at 3 req/s: {top.scenario} (")
    costs = {}
    for r in decision.ranking:
        placement = r.scenario.split("-")[0]
        path, _ = cp.PLACEMENTS[placement]
        overrides = [*cp.steady_load(3.0), *next(c for c in cp.candidates(["l40s"]) if c.name == r.scenario).overrides,
                     *r.sizing.overrides(sim.load_scenario(path))]
        summary = sim.simulate(sim.load_scenario(path, overrides)).summary
        costs[r.scenario] = summary["cost_usd"] * 24  # one simulated hour
    assert min(costs, key=costs.__getitem__) == top.scenario
    knob = top.sizing.knobs[0]
    if knob.kind == "count" and top.sizing.sizes[knob.pool] > knob.floor:
        path, _ = cp.PLACEMENTS[top.scenario.split("-")[0]]
        fewer = {**top.sizing.sizes, knob.pool: top.sizing.sizes[knob.pool] - 1}
        smaller = [o for k in top.sizing.knobs for o in k.overrides(fewer[k.pool], sim.load_scenario(path))]
        assert not slo_met(path, [*cp.steady_load(3.0), "sites.premises.pools[0].gpu=l40s",
                                  "sites.cloud.pools[0].gpu=l40s", *smaller])


def test_breakeven_answer_by_hand() -> None:
    """The crossover is log-interpolated where S1's cost per request first drops under S2's."""
    be = script("breakeven")
    import pandas as pd

    costs = pd.DataFrame({"utilisation": [0.1, 0.2, 0.4], "s1_cost_usd_per_1m_requests": [400.0, 200.0, 100.0],
                          "s2_cost_usd_per_1m_requests": [300.0, 300.0, 300.0]})
    crossover = be.crossover_utilisation(costs)
    # gap = ln(s1/s2): ln(4/3) at 0.1, ln(2/3) at 0.2: zero at 0.1 x 2^(ln(4/3) / ln 2) = 0.1333
    assert crossover == pytest.approx(0.1 * 2 ** (np.log(4 / 3) / np.log(2)))
    assert be.answer(crossover, 10.0, costs).startswith("owning becomes cheaper than renting at 13% utilisation")
    never = costs.assign(s1_cost_usd_per_1m_requests=[500.0, 400.0, 350.0])
    assert be.answer(be.crossover_utilisation(never), 10.0, never) == (
        "no break-even between 5% and 100% utilisation: renting is cheaper throughout")
