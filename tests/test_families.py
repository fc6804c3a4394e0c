"""Families in one place: every family's registry is what the spec accepts, and a new member
is one registration.

Arrival processes, token lengths, service-time distributions, routers, service models and
detectors each keep their members in one registry (`sim.spec.families.Family`). These tests
check that the spec's unions and name lists are exactly the registries, that each arrival
process's `mean_rate_per_s()` is the rate a long run really has, and that planning sizes for
that mean. Then they register a toy router ("always the highest-index active replica") and
a toy arrival process ("a burst of `size` requests every `every` seconds") from this module
only, and run a scenario that uses both through `sim.simulate`, and the toy router through the
kernel and the oracle: nothing else in the code base knows about them.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from numba import njit
from oracle import run_oracle
from pydantic import Field

import sim
from sim.detectors import DETECTORS
from sim.kernels import batching
from sim.kernels.batching import PoolKernel
from sim.kernels.service_models import SERVICE_MODELS
from sim.planning import HEADROOM, configuration_overrides, max_rate, plan, serving_pool
from sim.routers import ROUTERS, Router
from sim.spec.errors import SpecError
from sim.spec.loader import load_scenario, parse_override_path, set_path
from sim.spec.scenario import ModelSpec, Monitor, Serving, Workload
from sim.spec.units import Seconds
from sim.streams import stream
from sim.workload.arrivals import ARRIVALS, ArrivalProcess
from sim.workload.lengths import LENGTHS
from sim.workload.service_times import SERVICE_TIMES, ServiceTime

# ------------------------------------------------------------------------------------------
# The toy members, known to this module only
# ------------------------------------------------------------------------------------------


@njit
def _highest_active(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    return active[n_active - 1]


HIGHEST_ACTIVE = Router("highest_active", _highest_active,
                        lambda active, outstanding, u, memory, group, cached: max(active))


class EveryK(ArrivalProcess):
    """A burst of `size` requests at 0, every, 2 x every, ... (a cron job's fan-out)."""

    process: Literal["every_k"]
    every: Seconds = Field(gt=0)
    size: int = Field(ge=1)

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        return np.repeat(np.arange(0.0, horizon_s, self.every), self.size)

    def mean_rate_per_s(self, horizon_s: float) -> float:
        return self.size / self.every

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float]:
        return {"every": self.size / mean_rate_per_s}


@contextmanager
def toys() -> Iterator[None]:
    """The toy router and arrival process registered, for the length of a `with` block."""
    ROUTERS.register(HIGHEST_ACTIVE)
    ARRIVALS.register(EveryK)
    try:
        yield
    finally:
        ARRIVALS.unregister("every_k")
        ROUTERS.unregister("highest_active")


def literal_values(annotation: Any) -> set[str]:
    return set(typing.get_args(annotation))


def union_tags(annotation: Any, key: str) -> set[str]:
    return {value for member in typing.get_args(annotation)
            for value in typing.get_args(member.model_fields[key].annotation)}


def accepted_names() -> dict[str, tuple[set[str], set[str]]]:
    """Family -> (registry names, names the spec's models accept), read from the live models."""
    return {
        "arrivals": (set(ARRIVALS), union_tags(Workload.model_fields["arrivals"].annotation, "process")),
        "prompt_tokens": (set(LENGTHS), union_tags(Workload.model_fields["prompt_tokens"].annotation, "dist")),
        "output_tokens": (set(LENGTHS), union_tags(Workload.model_fields["output_tokens"].annotation, "dist")),
        "router": (set(ROUTERS), literal_values(Serving.model_fields["router"].annotation)),
        "service_time": (set(SERVICE_TIMES), literal_values(ServiceTime.model_fields["dist"].annotation)),
        "detector": (set(DETECTORS), literal_values(Monitor.model_fields["detector"].annotation)),
    }


# ------------------------------------------------------------------------------------------
# The registries are the spec
# ------------------------------------------------------------------------------------------


def test_each_registry_is_exactly_what_the_spec_accepts() -> None:
    """Every family's registered names are the values its scenario field accepts, no more."""
    for family, (registered, accepted) in accepted_names().items():
        assert registered == accepted, family
    assert set(ARRIVALS) >= {"poisson", "constant", "bursty", "diurnal", "stages", "concurrency", "trace"}
    assert set(ROUTERS) == {"shared_queue", "round_robin", "least_outstanding", "random", "prefix_affinity"}
    assert set(SERVICE_MODELS) == {"service_time", "dynamic_batching", "roofline"}


def test_an_unknown_member_lists_the_registry(minimal_doc: dict[str, Any]) -> None:
    """A misspelt router names the field, the routers allowed and the value given."""
    minimal_doc["model"]["serving"] = {"router": "least_outstandin"}
    with pytest.raises(SpecError) as caught:
        load_scenario(minimal_doc)
    issue = caught.value.issues[0]
    assert issue.path == "model.serving.router" and issue.value == "least_outstandin"
    assert all(name in issue.allowed for name in ROUTERS)


def test_registering_toys_changes_the_spec_and_unregistering_restores_it(minimal_doc: dict[str, Any]) -> None:
    """Inside `toys()` the spec accepts 'every_k' and 'highest_active'; after it, it refuses
    them again with a "did you mean", and every family still matches the spec."""
    before = accepted_names()
    minimal_doc["workload"]["arrivals"] = {"process": "every_k", "every": "10s", "size": 3}
    minimal_doc["model"]["serving"] = {"router": "highest_active"}
    with toys():
        scenario = load_scenario(minimal_doc)
        assert isinstance(scenario.workload.arrivals, EveryK) and scenario.model.serving.router == "highest_active"
        for family, (registered, accepted) in accepted_names().items():
            assert registered == accepted, family
    assert accepted_names() == before
    with pytest.raises(SpecError, match="unknown process 'every_k'"):
        load_scenario(minimal_doc)


# ------------------------------------------------------------------------------------------
# A toy router and a toy arrival process, end to end
# ------------------------------------------------------------------------------------------


def test_a_scenario_with_a_toy_router_and_a_toy_arrival_process_runs(minimal_doc: dict[str, Any]) -> None:
    """Through `sim.simulate`: bursts of 3 requests every 10 s for an hour (1080 requests, sent
    in threes at multiples of 10 s) are all served by replica 2, the highest of 3; the
    serving kernel was not compiled again for the new router."""
    minimal_doc["sites"]["edge"]["pools"][0]["count"] = 3
    minimal_doc["workload"]["arrivals"] = {"process": "every_k", "every": "10s", "size": 3}
    minimal_doc["model"]["serving"] = {"router": "highest_active"}
    with toys():
        result = sim.simulate(load_scenario(minimal_doc), 0)
    requests = result.requests
    assert len(requests) == 3 * 360
    np.testing.assert_array_equal(requests["arrival_s"].to_numpy(), np.repeat(np.arange(360) * 10.0, 3))
    assert (requests["replica"] == 2).all()
    assert result.summary["requests_completed"] == 3 * 360
    assert len(batching.advance.overloads) == 1  # one signature, whatever the router


def test_the_toy_router_runs_the_same_in_the_kernel_and_the_oracle() -> None:
    """The kernel's numba rule and the oracle's Python reference give identical per-request
    results; with every replica active, everything goes to the last one."""
    rng = np.random.default_rng(5)
    n = 40
    arrival = np.cumsum(rng.exponential(0.05, n))
    prompt, output = rng.integers(1, 200, n), rng.integers(1, 40, n)
    params = batching_params()
    options = dict(replicas=3, max_num_seqs=4, max_num_batched_tokens=256, chunked_prefill=True,
                   kv_capacity_tokens=10**6, max_model_len=10**6, params=params, router="highest_active")
    with toys():
        kernel = PoolKernel(arrival.copy(), prompt, output, **options)
        kernel.advance_to(math.inf)
        oracle = run_oracle(arrival, prompt, output, **options)
    for name in ("dispatch_s", "first_token_s", "done_s"):
        np.testing.assert_allclose(getattr(kernel, name), getattr(oracle, name), rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(kernel.replica, oracle.replica)
    assert (kernel.replica == 2).all()


def test_the_toy_router_follows_the_active_replicas() -> None:
    """With replica 2 drained, the highest active replica is 1: later requests go there."""
    with toys():
        kernel = PoolKernel(np.array([0.0, 0.0, 5.0, 5.0]), np.full(4, 10), np.full(4, 5), replicas=3,
                            max_num_seqs=4, max_num_batched_tokens=256, chunked_prefill=True,
                            kv_capacity_tokens=10**6, max_model_len=10**6, params=batching_params(),
                            router="highest_active")
        kernel.advance_to(1.0)
        kernel.drain(2)
        kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.replica, [2, 2, 1, 1])


@njit
def _always_first(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    return 0


def test_a_router_that_picks_an_inactive_replica_is_an_error() -> None:
    """A router's choice is checked: replica 0 after it was drained is refused with an error
    rather than queued on a replica that takes no requests."""
    ROUTERS.register(Router("always_first", _always_first, lambda active, outstanding, u, memory, group, cached: 0))
    try:
        kernel = PoolKernel(np.array([0.0, 5.0]), np.full(2, 10), np.full(2, 5), replicas=2, max_num_seqs=4,
                            max_num_batched_tokens=256, chunked_prefill=True, kv_capacity_tokens=10**6,
                            max_model_len=10**6, params=batching_params(), router="always_first")
        kernel.advance_to(1.0)
        kernel.drain(0)
        with pytest.raises(ValueError, match="not active"):
            kernel.advance_to(math.inf)
    finally:
        ROUTERS.unregister("always_first")


def batching_params() -> np.ndarray:
    from sim.catalog import shipped_catalog
    from sim.kernels.replica import replica_setup

    return replica_setup(shipped_catalog(), "llama-3.1-8b", "h100-sxm", "bf16", 1).params


# ------------------------------------------------------------------------------------------
# Mean rates
# ------------------------------------------------------------------------------------------


def arrivals_of(spec: dict[str, Any]) -> ArrivalProcess:
    workload = Workload.model_validate({"origin": "edge", "arrivals": spec,
                                        "prompt_tokens": {"dist": "fixed", "value": 1},
                                        "output_tokens": {"dist": "fixed", "value": 1}})
    return workload.arrivals


MEAN_RATE_CASES = [
    # (arrival spec, horizon, hand-computed mean rate, relative tolerance of a long run's count)
    ({"process": "poisson", "rate_per_s": 40}, 50_000.0, 40.0, 0.003),  # ~7 sd
    ({"process": "constant", "rate_per_s": 3.5}, 10_000.0, 3.5, 1e-4),  # exact up to one request
    # (2 x 60 + 20 x 15) / 75 = 5.6; index of dispersion ~220, so 1e6 s gives a 0.6% sd
    ({"process": "bursty", "rate_per_s": 2, "burst_rate_per_s": 20, "mean_quiet": 60, "mean_burst": 15},
     1_000_000.0, 5.6, 0.03),
    ({"process": "diurnal", "rate_per_s": 4, "amplitude": 0.8, "period": 3600}, 36_000.0, 4.0, 0.02),  # 10 periods
    # repeated 100 s at 10/s then 300 s at 2/s: (1000 + 600) / 400 = 4 per s over whole cycles;
    # the horizon ends 50 s into a cycle (at 10/s): (100 x 1600 + 500) / 40050
    ({"process": "stages", "repeat": True, "stages": [{"duration": 100, "rate_per_s": 10},
                                                      {"duration": 300, "rate_per_s": 2}]},
     40_050.0, (100 * 1600 + 500) / 40_050, 0.01),
    # not repeated: 200 s at 5/s, then nothing for the remaining 800 s: 1000 / 1000 = 1
    ({"process": "stages", "stages": [{"duration": 200, "rate_per_s": 5, "process": "constant"}]},
     1000.0, 1.0, 1e-9),
]


@pytest.mark.parametrize(("spec", "horizon_s", "mean", "tolerance"), MEAN_RATE_CASES,
                         ids=[f"{case[0]['process']}-{i}" for i, case in enumerate(MEAN_RATE_CASES)])
def test_mean_rate_is_the_rate_a_long_run_has(spec: dict[str, Any], horizon_s: float, mean: float,
                                             tolerance: float) -> None:
    """mean_rate_per_s() is the hand-computed mean, and the count of a long run over the
    horizon matches it within the tolerance the process's variance allows."""
    arrivals = arrivals_of(spec)
    assert arrivals.mean_rate_per_s(horizon_s) == pytest.approx(mean, rel=1e-12)
    count = len(arrivals.times(horizon_s, stream(1, 0, "arrivals")))
    assert count / horizon_s == pytest.approx(mean, rel=tolerance)


def test_mean_rate_of_a_trace_is_its_requests_over_the_horizon(tmp_path: Path) -> None:
    """A trace's mean rate is the requests it replays inside the horizon over the horizon;
    a closed loop has none (the servers set its pace)."""
    trace = tmp_path / "trace.csv"
    trace.write_text("t,p,o\n" + "".join(f"{t},10,5\n" for t in (0, 1, 2, 7, 30)), encoding="utf-8")
    spec = {"process": "trace", "path": str(trace), "format": "csv", "time_unit": "s",
            "columns": {"time": "t", "prompt_tokens": "p", "output_tokens": "o"}}
    assert arrivals_of(spec).mean_rate_per_s(20.0) == 4 / 20.0
    assert arrivals_of({**spec, "loop": True}).mean_rate_per_s(100.0) == len(
        arrivals_of({**spec, "loop": True}).times(100.0, stream(0, 0, "arrivals"))) / 100.0
    assert arrivals_of({"process": "concurrency", "clients": 4}).mean_rate_per_s(100.0) is None


@pytest.mark.parametrize("spec", [case[0] for case in MEAN_RATE_CASES],
                         ids=[case[0]["process"] for case in MEAN_RATE_CASES])
def test_mean_rate_overrides_give_the_rate_asked_for(spec: dict[str, Any]) -> None:
    """Applying a member's mean_rate_overrides(R) to its own fields gives mean rate R, and a
    bursty process keeps its burst ratio."""
    horizon_s = 40_050.0
    arrivals = arrivals_of(spec)
    document = arrivals.model_dump(mode="json")
    for path, value in arrivals.mean_rate_overrides(13.0, horizon_s).items():
        set_path(document, parse_override_path(path), value)
    scaled = arrivals_of(document)
    assert scaled.mean_rate_per_s(horizon_s) == pytest.approx(13.0, rel=1e-12)
    if spec["process"] == "bursty":
        assert scaled.burst_rate_per_s / scaled.rate_per_s == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------
# Planning at a mean rate
# ------------------------------------------------------------------------------------------

BURSTY = "{process: bursty, rate_per_s: 1, burst_rate_per_s: 9, mean_quiet: 4s, mean_burst: 1s}"
# mean rate: (1 x 4 + 9 x 1) / (4 + 1) = 2.6 req/s


def test_planning_sets_the_mean_rate_of_a_bursty_process(scenarios_dir: Path) -> None:
    """Planning S1 at 13 req/s with a bursty workload of mean 2.6 scales both rates by 5:
    quiet 5, burst 45, mean 13 (before, it set the quiet rate alone to 13: a mean of
    (13 x 4 + 9 x 1) / 5 = 12.2, and a sizing for the wrong load)."""
    base = load_scenario(scenarios_dir / "s1_local.yaml", [f"workload.arrivals={BURSTY}"])
    assert base.workload.arrivals.mean_rate_per_s(base.horizon) == pytest.approx(2.6)
    pool = serving_pool(base)
    probe = load_scenario(scenarios_dir / "s1_local.yaml",
                          [f"workload.arrivals={BURSTY}", *configuration_overrides(pool, "l40s", 4, 1, 13.0)])
    arrivals = probe.workload.arrivals
    assert (arrivals.rate_per_s, arrivals.burst_rate_per_s) == (pytest.approx(5.0), pytest.approx(45.0))
    assert (arrivals.mean_quiet, arrivals.mean_burst) == (4.0, 1.0)
    assert arrivals.mean_rate_per_s(probe.horizon) == pytest.approx(13.0)


def test_plan_bounds_and_simulates_at_the_mean_rate(scenarios_dir: Path) -> None:
    """The queueing bound is ceil(R / (capacity x HEADROOM)) replicas for the mean rate R,
    and every probe simulates that mean: a bursty S1 planned at 13 req/s completes 13 req/s
    within 10% (an hour at 13 req/s with a dispersion index of ~32: a 2.7% sd)."""
    result = plan(scenarios_dir / "s1_local.yaml", 13.0, {"ttft_p99": 5.0, "e2e_p99": 120.0}, gpus=("l40s",),
                  max_gpus=8, horizon="1h", warmup="2min", overrides=[f"workload.arrivals={BURSTY}"])
    option = result.options[0]
    assert option.capacity_rps is not None and option.probes
    assert option.bound_gpus == max(1, math.ceil(13.0 / (option.capacity_rps * HEADROOM))) * option.tp
    for probe in option.probes:
        assert probe.rate_per_s == 13.0
        assert probe.throughput_rps == pytest.approx(13.0, rel=0.10)


def test_max_rate_starts_from_the_mean_rate(scenarios_dir: Path) -> None:
    """Without a capacity estimate (a service-time model), max_rate's first probe is 10 x the
    mean rate: 26 req/s for the bursty workload, not 10 x its quiet rate."""
    result = max_rate(scenarios_dir / "s1_local.yaml", {"e2e_p99": 30.0}, horizon="5min", warmup="1min",
                      tolerance=0.5, overrides=[f"workload.arrivals={BURSTY}",
                                                "model.service_time={dist: deterministic, mean: 0.1}"])
    assert result.probes[0].rate_per_s == pytest.approx(26.0)


def test_a_closed_loop_has_no_rate_to_plan(scenarios_dir: Path) -> None:
    """A closed loop's pace is set by its servers: planning refuses it, naming the processes
    that have a rate (from the registry)."""
    base = load_scenario(scenarios_dir / "s1_local.yaml", ["workload.arrivals={process: concurrency, clients: 4}"])
    with pytest.raises(SpecError, match="arrival process has none") as caught:
        serving_pool(base)
    assert "bursty" in caught.value.issues[0].allowed and "concurrency" not in caught.value.issues[0].allowed


def test_model_spec_service_time_is_the_registry_family() -> None:
    """`model.service_time` validates through the service-time family and samples with it."""
    spec = ModelSpec.model_validate({"id": "x", "service_time": {"dist": "deterministic", "mean": "250ms"}})
    assert spec.service_time is not None
    np.testing.assert_array_equal(spec.service_time.sample(3, stream(0, 0, "service_time")), [0.25] * 3)
