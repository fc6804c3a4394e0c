"""Traffic classes (`workload.classes`): which request belongs to which kind of traffic.

A class is a share of the main stream (`workload.arrivals`) or an open-loop arrival process of
its own, merged with the main stream by send time; it may have its own lengths, prefixes, data
classes, SLO, priority and residency. These tests pin down how requests are generated for
classes (shares, merging, per-class lengths and prefixes, common random numbers), that a
workload without classes generates exactly what it did before classes existed, and that every
mistake in a class is a SpecError at the field to change.

Statistical tests use fixed seeds and tolerances of 4 standard deviations of the estimate, as
tests/test_workload.py does.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import SCENARIOS_DIR, make_minimal_doc

import sim
from sim.spec import SpecError, dump_scenario, spec_hash
from sim.spec.scenario import TrafficClass, Workload
from sim.streams import stream
from sim.workload import Requests, generate_requests
from sim.workload.limits import check_run_fits, expected_requests, mean_rate_per_s

# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------

COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens")


def digest(requests: Requests) -> str:
    """A hash of every array of the record (name, dtype and bytes) and the closed-loop fields."""
    h = hashlib.sha256()
    for name in COLUMNS:
        array = getattr(requests, name)
        h.update(name.encode())
        h.update(str(array.dtype).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(f"{requests.clients}|{requests.think_time_s!r}".encode())
    return h.hexdigest()[:16]


def workload(classes: list[dict[str, Any]] | None = None, arrivals: dict[str, Any] | None = None,
             **extra: Any) -> Workload:
    """A workload with lognormal prompts (mean 400), uniform outputs (1..300), prefixes in half
    of the requests, and the given classes."""
    return Workload.model_validate({
        "origin": "edge",
        "arrivals": arrivals or {"process": "poisson", "rate_per_s": 20},
        "prompt_tokens": {"dist": "lognormal", "mean": 400, "sigma": 1.0},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 300},
        "prefixes": {"groups": 5, "prefix_tokens": 64, "share": 0.5},
        "classes": classes or [],
        **extra,
    })


def of_class(requests: Requests, name: str) -> np.ndarray:
    return requests.traffic_class == requests.class_index(name)


def four_sd_binomial(n: int, p: float) -> float:
    """4 standard deviations of a Binomial(n, p) count: 4 sqrt(n p (1 - p))."""
    return 4.0 * math.sqrt(n * p * (1.0 - p))


# ------------------------------------------------------------------------------------------
# Without classes: exactly as before classes existed
# ------------------------------------------------------------------------------------------

# sha256 (first 16 hex digits) of generate_requests' arrays, computed on the code before
# traffic classes were added (commit fb2c4b5): (digest, request count).
SCENARIO_HASHES = {  # the four seed scenarios share base.yaml's workload and seed
    ("s1_local", 0): ("60f13ad9ad385b3a", 258813),
    ("s1_local", 1): ("5a4e0def1ba96757", 259437),
    ("s2_cloud_training", 0): ("60f13ad9ad385b3a", 258813),
    ("s3_local_training", 1): ("5a4e0def1ba96757", 259437),
    ("s4_cloud_served_local_inference", 0): ("60f13ad9ad385b3a", 258813),
}

PROCESS_HASHES = {
    "poisson": ({"process": "poisson", "rate_per_s": 20}, "f9bb81ec5efe74f8", 19999),
    "constant": ({"process": "constant", "rate_per_s": 7.5}, "acc761cd05cceff9", 7500),
    "bursty": ({"process": "bursty", "rate_per_s": 2, "burst_rate_per_s": 50, "mean_quiet": 30,
                "mean_burst": 5}, "ea0ab9746cfa38a8", 8336),
    "diurnal": ({"process": "diurnal", "rate_per_s": 10, "period": 600}, "4e9b1e6e99a2fbd7", 9617),
    "stages": ({"process": "stages", "repeat": True,
                "stages": [{"duration": 50, "rate_per_s": 10},
                           {"duration": 50, "rate_per_s": 5, "process": "constant"}]}, "194ecaba4fad05e4", 7496),
    "concurrency": ({"process": "concurrency", "clients": 4, "think_time": 0.5, "requests": 300},
                    "7f92cb7e6b350e3a", 300),
}


def trace_text() -> str:
    """200 requests 0.37 s apart with varied token counts, as a generic CSV."""
    lines = ["time,p,o"] + [f"{k * 0.37:.3f},{(k * 37) % 500 + 1},{(k * 11) % 90 + 1}" for k in range(200)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("name", "replication"), list(SCENARIO_HASHES))
def test_seed_scenarios_generate_the_same_requests_as_before_classes(name: str, replication: int) -> None:
    """A seed scenario (no classes) generates bit-identical arrays to the code before classes,
    every request of class 0, 'default'. (With the seed workload of that time: Poisson at
    3 req/s; the hashes were taken before classes existed.)"""
    scenario = sim.load_scenario(SCENARIOS_DIR / f"{name}.yaml",
                                 ["workload.arrivals={process: poisson, rate_per_s: 3}"])
    requests = generate_requests(scenario.workload, scenario.horizon, scenario.seed, replication)
    assert (digest(requests), requests.count) == SCENARIO_HASHES[(name, replication)]
    assert requests.class_names == ("default",)
    assert requests.traffic_class.dtype == np.int32
    assert not requests.traffic_class.any()


@pytest.mark.parametrize("name", list(PROCESS_HASHES))
def test_each_arrival_process_generates_the_same_requests_as_before_classes(name: str) -> None:
    """Every arrival process, with lognormal/uniform lengths and prefixes: bit-identical arrays."""
    arrivals, expected, count = PROCESS_HASHES[name]
    requests = generate_requests(workload(arrivals=arrivals), 1000.0, 42, 0)
    assert (digest(requests), requests.count) == (expected, count)
    assert requests.class_names == ("default",) and not requests.traffic_class.any()


def test_a_trace_with_prefixes_generates_the_same_requests_as_before_classes(tmp_path: Path) -> None:
    """A looped trace with its token counts and prefixes (prefixes clipped into the traced
    prompts): bit-identical arrays."""
    path = tmp_path / "t.csv"
    path.write_text(trace_text())
    arrivals = {"process": "trace", "path": str(path), "format": "csv", "time_unit": "s",
                "columns": {"time": "time", "prompt_tokens": "p", "output_tokens": "o"}, "loop": True}
    requests = generate_requests(workload(arrivals=arrivals), 200.0, 42, 0)
    assert (digest(requests), requests.count) == ("90ab9c441cf4fd73", 541)


def test_one_share_class_changes_nothing_but_the_class_names() -> None:
    """A single class with share 1 is the default class renamed: the same arrays."""
    plain = generate_requests(workload(), 500.0, 5, 0)
    named = generate_requests(workload([{"name": "everyone", "share": 1.0}]), 500.0, 5, 0)
    assert digest(named) == digest(plain)
    assert named.class_names == ("everyone",) and not named.traffic_class.any()


# ------------------------------------------------------------------------------------------
# Share classes
# ------------------------------------------------------------------------------------------


def test_shares_split_the_main_stream_within_binomial_tolerance() -> None:
    """Each main-stream request is in class k with probability share_k, independently, so the
    count of class k is Binomial(n, share_k): within 4 sqrt(n p (1 - p)) of n p."""
    shares = {"chat": 0.6, "batch": 0.3, "rare": 0.1}
    requests = generate_requests(workload([{"name": k, "share": v} for k, v in shares.items()]), 2000.0, 11, 0)
    n = requests.count
    assert n > 30_000
    assert requests.class_names == tuple(shares)
    for name, share in shares.items():
        count = int(of_class(requests, name).sum())
        assert abs(count - n * share) <= four_sd_binomial(n, share), (name, count, n * share)


def test_the_class_draw_is_the_documented_one() -> None:
    """Main-stream request j is in the share class whose interval of [0, 1) (the shares, in
    declaration order) holds the j-th uniform of the "classes" stream."""
    classes = [{"name": "a", "share": 0.25}, {"name": "own", "arrivals": {"process": "constant", "rate_per_s": 1}},
               {"name": "b", "share": 0.75}]
    requests = generate_requests(workload(classes), 200.0, 6, 2)
    main = requests.traffic_class != requests.class_index("own")
    uniforms = stream(6, 2, "classes").random(int(main.sum()))
    expected = np.where(uniforms < 0.25, 0, 2)
    np.testing.assert_array_equal(requests.traffic_class[main], expected)


def test_the_class_of_request_i_survives_a_change_of_rate() -> None:
    """Classes are drawn by request index from their own stream: at twice the rate, the first
    requests keep their classes (and lengths); only the send times move."""
    classes = [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "prompt_tokens": {"dist": "fixed", "value": 9}}]
    slow = generate_requests(workload(classes, {"process": "poisson", "rate_per_s": 10}), 300.0, 3, 0)
    fast = generate_requests(workload(classes, {"process": "poisson", "rate_per_s": 20}), 300.0, 3, 0)
    k = slow.count
    assert fast.count > k
    for name in ("traffic_class", "prompt_tokens", "output_tokens", "prefix_group"):
        np.testing.assert_array_equal(getattr(fast, name)[:k], getattr(slow, name))
    assert not np.array_equal(fast.arrival_s[:k], slow.arrival_s)


def test_changing_shares_changes_only_the_classes() -> None:
    """The class draw does not touch the other streams: other shares, same times and
    (without per-class lengths) same lengths."""
    first = generate_requests(workload([{"name": "a", "share": 0.2}, {"name": "b", "share": 0.8}]), 300.0, 3, 0)
    second = generate_requests(workload([{"name": "a", "share": 0.7}, {"name": "b", "share": 0.3}]), 300.0, 3, 0)
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert of_class(second, "a").sum() > 2 * of_class(first, "a").sum()


def test_a_closed_loop_takes_share_classes() -> None:
    """concurrency with share classes: the closed loop as before, each request with a class."""
    arrivals = {"process": "concurrency", "clients": 4, "think_time": 0.5, "requests": 2000}
    plain = generate_requests(workload(arrivals=arrivals), 100.0, 1, 0)
    split = generate_requests(workload([{"name": "a", "share": 0.25}, {"name": "b", "share": 0.75}], arrivals),
                              100.0, 1, 0)
    assert digest(split) == digest(plain)
    assert (split.clients, split.think_time_s) == (4, 0.5)
    count = int(of_class(split, "a").sum())
    assert abs(count - 2000 * 0.25) <= four_sd_binomial(2000, 0.25)


# ------------------------------------------------------------------------------------------
# Classes with arrivals of their own
# ------------------------------------------------------------------------------------------


def test_an_own_arrival_class_is_merged_in_send_order_at_its_rate() -> None:
    """Its requests are added to the main stream, sorted by send time, and their count is
    Poisson(rate x horizon): within 4 sqrt(rate x horizon)."""
    rate, horizon = 5.0, 2000.0
    classes = [{"name": "main", "share": 1.0}, {"name": "extra", "arrivals": {"process": "poisson", "rate_per_s": rate}}]
    requests = generate_requests(workload(classes), horizon, 7, 0)
    assert np.all(np.diff(requests.arrival_s) >= 0)
    extra = int(of_class(requests, "extra").sum())
    assert abs(extra - rate * horizon) <= 4.0 * math.sqrt(rate * horizon)
    main = int(of_class(requests, "main").sum())
    assert abs(main - 20.0 * horizon) <= 4.0 * math.sqrt(20.0 * horizon)
    # the two streams really interleave
    assert of_class(requests, "extra")[: requests.count // 2].any()
    assert of_class(requests, "extra")[requests.count // 2:].any()


def test_an_own_arrival_class_leaves_the_main_streams_requests_alone() -> None:
    """Sources draw from their own streams by their own request numbers: adding a class with
    its own arrivals (or changing its rate) leaves every main-stream request as it was."""
    alone = generate_requests(workload([{"name": "main", "share": 1.0}]), 500.0, 9, 0)
    for rate in (1.0, 4.0):
        classes = [{"name": "main", "share": 1.0},
                   {"name": "extra", "arrivals": {"process": "poisson", "rate_per_s": rate}}]
        merged = generate_requests(workload(classes), 500.0, 9, 0)
        main = of_class(merged, "main")
        for name in COLUMNS:
            np.testing.assert_array_equal(getattr(merged, name)[main], getattr(alone, name))


def test_ties_put_the_main_stream_first_then_classes_in_declaration_order() -> None:
    """Three constant streams at 1 req/s send at the same instants: main, then b, then c."""
    constant = {"process": "constant", "rate_per_s": 1}
    classes = [{"name": "a", "share": 1.0}, {"name": "c_late", "arrivals": constant},
               {"name": "b_early", "arrivals": constant}]
    requests = generate_requests(workload(classes, constant), 5.0, 0, 0)
    assert requests.arrival_s.tolist() == [float(t) for t in range(5) for _ in range(3)]
    assert requests.traffic_class.tolist() == [0, 1, 2] * 5


def test_an_own_arrival_class_uses_the_workloads_lengths_unless_it_has_its_own() -> None:
    """Without lengths of its own, a class's requests follow the workload's distributions
    (uniform 1..300 outputs: mean 150.5, sd 86.6); with them, the class's."""
    classes = [{"name": "main", "share": 1.0},
               {"name": "plain", "arrivals": {"process": "poisson", "rate_per_s": 10}},
               {"name": "short", "arrivals": {"process": "poisson", "rate_per_s": 10},
                "output_tokens": {"dist": "uniform", "low": 1, "high": 4}}]
    requests = generate_requests(workload(classes), 1000.0, 2, 0)
    plain = requests.output_tokens[of_class(requests, "plain")]
    assert plain.min() >= 1 and plain.max() <= 300
    assert abs(plain.mean() - 150.5) <= 4 * 86.6 / math.sqrt(len(plain))
    assert set(requests.output_tokens[of_class(requests, "short")].tolist()) == {1, 2, 3, 4}
    # its own streams ("output_tokens:plain"), not the main stream's: not a copy of its lengths
    main = requests.output_tokens[of_class(requests, "main")]
    assert not np.array_equal(plain[:200], main[:200])
    np.testing.assert_array_equal(plain, stream(2, 0, "output_tokens:plain").integers(
        1, 300, size=len(plain), endpoint=True, dtype=np.int64))


# ------------------------------------------------------------------------------------------
# Per-class lengths and prefixes
# ------------------------------------------------------------------------------------------

LONG_PROMPTS = {"dist": "uniform", "low": 2000, "high": 4000}  # mean 3000, sd 577.6


def test_a_class_with_its_own_lengths_follows_them_and_the_others_keep_the_workloads() -> None:
    """Class 'docs' has uniform 2000..4000 prompts (mean 3000, sd 577.6); the others keep the
    workload's lognormal (mean 400 before the 64-token prefix of half of them: 432)."""
    classes = [{"name": "chat", "share": 0.8}, {"name": "docs", "share": 0.2, "prompt_tokens": LONG_PROMPTS,
                                                "prefixes": None}]
    requests = generate_requests(workload(classes), 2000.0, 4, 0)
    docs, chat = of_class(requests, "docs"), of_class(requests, "chat")
    own = requests.prompt_tokens[docs] - requests.prefix_tokens[docs]
    assert own.min() >= 2000 and own.max() <= 4000
    assert abs(own.mean() - 3000) <= 4 * 577.6 / math.sqrt(len(own))
    chat_own = requests.prompt_tokens[chat] - requests.prefix_tokens[chat]
    # lognormal sigma 1: sd = mean x sqrt(e - 1) = 524.1; rounding and clipping move it little
    assert abs(chat_own.mean() - 400) <= 4 * 524.1 / math.sqrt(len(chat_own))
    assert chat_own.max() > 4000  # a long tail the uniform cannot have


def test_a_class_override_does_not_change_the_other_requests_lengths() -> None:
    """Common random numbers: with or without class 'docs' having its own prompt lengths, every
    request outside 'docs' has the same prompt, output and prefix, and 'docs' keeps its outputs."""
    base = [{"name": "chat", "share": 0.8}, {"name": "docs", "share": 0.2}]
    override = [{"name": "chat", "share": 0.8}, {"name": "docs", "share": 0.2, "prompt_tokens": LONG_PROMPTS}]
    plain = generate_requests(workload(base), 500.0, 8, 0)
    changed = generate_requests(workload(override), 500.0, 8, 0)
    np.testing.assert_array_equal(plain.traffic_class, changed.traffic_class)
    others = ~of_class(plain, "docs")
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(plain, name)[others], getattr(changed, name)[others])
    docs = of_class(plain, "docs")
    np.testing.assert_array_equal(plain.output_tokens[docs], changed.output_tokens[docs])
    assert (changed.prompt_tokens[docs] > plain.prompt_tokens[docs]).mean() > 0.95


def test_a_class_override_is_drawn_by_main_stream_index() -> None:
    """A share class's own lengths are drawn for every main-stream request, so request j's
    value does not depend on which other requests are in the class: with a larger share, the
    requests that were in 'docs' keep their prompts."""
    def docs(share: float) -> Requests:
        classes = [{"name": "chat", "share": 1 - share}, {"name": "docs", "share": share, "prompt_tokens": LONG_PROMPTS}]
        return generate_requests(workload(classes), 300.0, 8, 0)

    small, large = docs(0.2), docs(0.5)
    both = of_class(small, "docs") & of_class(large, "docs")
    assert both.sum() > 0.15 * small.count
    np.testing.assert_array_equal(small.prompt_tokens[both], large.prompt_tokens[both])


def test_class_prefix_groups_never_collide() -> None:
    """The workload's groups are 0..4; class 'a' (3 groups of its own) gets 5..7, class 'b'
    (2 groups) 8..9; a class without prefixes of its own shares the workload's."""
    classes = [{"name": "a", "share": 0.3, "prefixes": {"groups": 3, "prefix_tokens": 10}},
               {"name": "shared", "share": 0.7},
               {"name": "b", "arrivals": {"process": "poisson", "rate_per_s": 5},
                "prefixes": {"groups": 2, "prefix_tokens": 20}}]
    requests = generate_requests(workload(classes), 500.0, 1, 0)

    def groups(name: str) -> set[int]:
        return set(requests.prefix_group[of_class(requests, name)].tolist()) - {-1}

    assert groups("a") == {5, 6, 7}
    assert groups("shared") == {0, 1, 2, 3, 4}
    assert groups("b") == {8, 9}
    assert set(requests.prefix_tokens[of_class(requests, "a")].tolist()) == {10}  # share 1: all grouped


def test_a_class_override_replaces_a_traces_token_counts(tmp_path: Path) -> None:
    """A main stream replayed with its token counts: a share class's own lengths win for its
    requests (its prefix then added to its prompt), the other requests keep the trace's."""
    path = tmp_path / "t.csv"
    path.write_text(trace_text())
    arrivals = {"process": "trace", "path": str(path), "format": "csv", "time_unit": "s",
                "columns": {"time": "time", "prompt_tokens": "p", "output_tokens": "o"}}
    classes = [{"name": "traced", "share": 0.5},
               {"name": "fixed", "share": 0.5, "prompt_tokens": {"dist": "fixed", "value": 7}}]
    plain = generate_requests(workload(arrivals=arrivals), 100.0, 0, 0)
    requests = generate_requests(workload(classes, arrivals), 100.0, 0, 0)
    fixed, traced = of_class(requests, "fixed"), of_class(requests, "traced")
    assert fixed.any() and traced.any()
    assert set((requests.prompt_tokens - requests.prefix_tokens)[fixed].tolist()) == {7}
    np.testing.assert_array_equal(requests.prompt_tokens[traced], plain.prompt_tokens[traced])
    np.testing.assert_array_equal(requests.output_tokens, plain.output_tokens)


# ------------------------------------------------------------------------------------------
# The Requests record and the spec helpers
# ------------------------------------------------------------------------------------------


def test_the_requests_record_checks_its_classes() -> None:
    """traffic_class defaults to 0 for all; it must index class_names; names are distinct."""
    arrays = {"arrival_s": [0.0, 1.0], "prompt_tokens": [1, 2], "output_tokens": [1, 1],
              "prefix_group": [-1, -1], "prefix_tokens": [0, 0]}
    plain = Requests(**arrays)
    assert plain.traffic_class.tolist() == [0, 0] and plain.class_names == ("default",)
    two = Requests(**arrays, traffic_class=[1, 0], class_names=("a", "b"))
    assert two.traffic_class.dtype == np.int32 and not two.traffic_class.flags.writeable
    assert two.class_index("b") == 1
    with pytest.raises(KeyError, match="no traffic class 'c'"):
        two.class_index("c")
    with pytest.raises(ValueError, match="must index class_names"):
        Requests(**arrays, traffic_class=[0, 2], class_names=("a", "b"))
    with pytest.raises(ValueError, match="differ in length"):
        Requests(**arrays, traffic_class=[0], class_names=("a",))
    with pytest.raises(ValueError, match="distinct"):
        Requests(**arrays, class_names=("a", "a"))


def test_class_names_and_specs() -> None:
    """Without classes: one class, 'default', all of the main stream; with them, theirs."""
    assert workload().class_names() == ["default"]
    (default,) = workload().class_specs()
    assert (default.name, default.share, default.priority, default.residency) == ("default", 1.0, 0, None)
    named = workload([{"name": "b", "share": 0.5}, {"name": "a", "share": 0.5, "priority": 3}])
    assert named.class_names() == ["b", "a"]
    assert [c.priority for c in named.class_specs()] == [0, 3]


def scenario_with(classes: list[dict[str, Any]], **edits: Any) -> sim.Scenario:
    doc = make_minimal_doc()
    doc["sites"]["cloud"] = {"zone": "third_party", "provider": "aws", "region": "us-east-1", "pools": []}
    doc["sites"]["lab"] = {"zone": "private", "pools": []}
    doc["links"] = {"wan": {"ends": ["edge", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}}
    doc["workload"]["classes"] = classes
    doc["workload"].update(edits)
    return sim.load_scenario(doc)


def test_allowed_sites_are_the_named_zones_sites_and_the_named_sites() -> None:
    """A residency of zones and sites allows the union of their sites; none allows all."""
    doc = make_minimal_doc()
    doc["sites"]["cloud"] = {"zone": "third_party", "provider": "aws", "region": "us-east-1", "pools": []}
    doc["sites"]["lab"] = {"zone": "private", "pools": []}
    doc["workload"]["classes"] = [
        {"name": "anywhere", "share": 0.4},
        {"name": "confidential", "share": 0.3, "residency": ["private"]},
        {"name": "mixed", "share": 0.3, "residency": ["cloud", "lab"]},
    ]
    # the spec alone (no pool serves at cloud or lab, which the checks would refuse for 'mixed')
    scenario = sim.Scenario.model_validate(doc)
    anywhere, confidential, mixed = scenario.workload.classes
    assert anywhere.allowed_sites(scenario) == {"edge", "cloud", "lab"}
    assert confidential.allowed_sites(scenario) == {"edge", "lab"}
    assert mixed.allowed_sites(scenario) == {"cloud", "lab"}


def test_a_scenario_with_classes_round_trips() -> None:
    """The resolved scenario (every default written out) loads back to the same spec."""
    scenario = scenario_with([
        {"name": "chat", "share": 0.9, "slo": {"ttft_p99": "500ms"}, "priority": 2},
        {"name": "batch", "share": 0.1, "output_tokens": {"dist": "fixed", "value": 400}, "data_class": "prompt"},
        {"name": "probe", "arrivals": {"process": "constant", "rate_per_s": 0.1}, "residency": ["private"]},
    ])
    again = sim.load_scenario(yaml.safe_load(dump_scenario(scenario)))
    assert spec_hash(again) == spec_hash(scenario)
    assert again.workload.classes[0].slo is not None and again.workload.classes[0].slo.ttft_p99 == 0.5
    overridden = sim.load_scenario(yaml.safe_load(dump_scenario(scenario)), ["workload.classes[2].priority=5"])
    assert overridden.workload.classes[2].priority == 5


def test_expected_requests_and_mean_rate_include_own_arrival_classes() -> None:
    """The memory guard and the mean rate count the classes' own arrivals; share classes add
    nothing; a closed loop has no mean rate."""
    classes = [{"name": "main", "share": 1.0},
               {"name": "probe", "arrivals": {"process": "constant", "rate_per_s": 2}},
               {"name": "burst", "arrivals": {"process": "bursty", "rate_per_s": 1, "burst_rate_per_s": 11,
                                              "mean_quiet": 9, "mean_burst": 1}}]
    spec = workload(classes)
    assert mean_rate_per_s(spec, 100.0) == pytest.approx(20 + 2 + 2)
    assert spec.mean_rate_per_s(100.0) == pytest.approx(24)
    assert expected_requests(spec, 100.0) == pytest.approx(2400)
    assert spec.expected_requests(100.0) == pytest.approx(2400)
    shared = workload([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}])
    assert mean_rate_per_s(shared, 100.0) == 20
    closed = workload([{"name": "a", "share": 1.0}], {"process": "concurrency", "clients": 2})
    assert mean_rate_per_s(closed, 100.0) is None


def test_the_memory_guard_names_the_class_that_would_not_fit() -> None:
    """A class whose own arrivals would need more memory than the machine has is refused
    before the run, at its arrivals."""
    scenario = scenario_with([{"name": "main", "share": 1.0},
                              {"name": "flood", "arrivals": {"process": "poisson", "rate_per_s": 1e12}}])
    with pytest.raises(SpecError) as info:
        check_run_fits(scenario)
    assert info.value.issues[0].path == "workload.classes[1].arrivals"


def test_a_class_process_error_names_the_class_field(tmp_path: Path) -> None:
    """An error only visible while generating (an empirical length from a CSV without
    `column`) is reported at the class's field, not the workload's."""
    path = tmp_path / "lengths.csv"
    path.write_text("n\n5\n6\n")
    classes = [{"name": "a", "share": 1.0, "prompt_tokens": {"dist": "empirical", "path": str(path), "format": "csv"}}]
    with pytest.raises(SpecError) as info:
        generate_requests(workload(classes), 10.0, 0, 0)
    assert info.value.issues[0].path == "workload.classes[0].prompt_tokens.column"


def test_a_toy_arrival_process_works_in_a_class() -> None:
    """A class's `arrivals` is the arrivals family: a member registered later validates and
    generates there too."""
    from test_families import toys

    with toys():
        spec = workload([{"name": "main", "share": 1.0},
                         {"name": "cron", "arrivals": {"process": "every_k", "every": 10, "size": 3}}])
        requests = generate_requests(spec, 100.0, 0, 0)
    assert int(of_class(requests, "cron").sum()) == 30
    assert isinstance(spec.classes[1], TrafficClass)


# ------------------------------------------------------------------------------------------
# Mistakes: each a SpecError at the field to change
# ------------------------------------------------------------------------------------------

POISSON = {"process": "poisson", "rate_per_s": 1}

MISTAKES: dict[str, tuple[dict[str, Any], str, str]] = {
    # case: (workload edits, path of the issue, a word the message or allowed text must hold)
    "name with a space": ({"classes": [{"name": "a b", "share": 1}]}, "workload.classes[0].name", "letters"),
    "empty name": ({"classes": [{"name": "", "share": 1}]}, "workload.classes[0].name", "at least 1"),
    "duplicate name": ({"classes": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]},
                       "workload.classes[1].name", "unique"),
    "shares below 1": ({"classes": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]},
                       "workload.classes", "sum to 1"),
    "shares above 1": ({"classes": [{"name": "a", "share": 0.7}, {"name": "b", "share": 0.4}]},
                       "workload.classes", "sum to 1"),
    "share of 0": ({"classes": [{"name": "a", "share": 0}]}, "workload.classes[0].share", "> 0"),
    "share above 1": ({"classes": [{"name": "a", "share": 1.5}]}, "workload.classes[0].share", "<= 1"),
    "neither share nor arrivals": ({"classes": [{"name": "a"}]}, "workload.classes[0].arrivals", "share"),
    "both share and arrivals": ({"classes": [{"name": "a", "share": 1, "arrivals": POISSON}]},
                                "workload.classes[0].arrivals", "share"),
    "no share class": ({"classes": [{"name": "a", "arrivals": POISSON}]}, "workload.classes", "belong to no class"),
    "closed-loop class arrivals": ({"classes": [{"name": "a", "share": 1},
                                                {"name": "b", "arrivals": {"process": "concurrency", "clients": 2}}]},
                                   "workload.classes[1].arrivals", "open-loop"),
    "own arrivals beside a closed loop": ({"arrivals": {"process": "concurrency", "clients": 2},
                                           "classes": [{"name": "a", "share": 1}, {"name": "b", "arrivals": POISSON}]},
                                          "workload.classes[1].arrivals", "closed loop"),
    "unknown data class": ({"classes": [{"name": "a", "share": 1, "data_class": "secrets"}]},
                           "workload.classes[0].data_class", "privacy.data_classes"),
    "unknown response data class": ({"classes": [{"name": "a", "share": 1, "response_data_class": "respons"}]},
                                    "workload.classes[0].response_data_class", "did you mean 'response'"),
    "unknown residency": ({"classes": [{"name": "a", "share": 1, "residency": ["privat"]}]},
                         "workload.classes[0].residency[0]", "did you mean 'private'"),
    "residency zone without sites": ({"classes": [{"name": "a", "share": 1, "residency": ["edge", "third_party"]}]},
                                     "workload.classes[0].residency[1]", "no site is in zone"),
    "empty residency": ({"classes": [{"name": "a", "share": 1, "residency": []}]},
                        "workload.classes[0].residency", "at least 1"),
    "priority past int32": ({"classes": [{"name": "a", "share": 1, "priority": 2**31}]},
                            "workload.classes[0].priority", "<="),
    "unknown class key": ({"classes": [{"name": "a", "share": 1, "priorty": 1}]},
                          "workload.classes[0].priorty", "priority"),
    "missing relative trace file": ({"classes": [{"name": "a", "share": 1},
                                                 {"name": "b", "arrivals": {"process": "trace", "path": "t.csv"}}]},
                                    "workload.classes[1].arrivals.path", "relative to the scenario file"),
    "missing trace file": ({"classes": [{"name": "a", "share": 1},
                                        {"name": "b", "arrivals": {"process": "trace", "path": "/nonexistent/t.csv"}}]},
                           "workload.classes[1].arrivals.path", "not found"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_class_mistake_is_a_spec_error_at_its_field(case: str) -> None:
    """Loading a scenario with the mistake raises a SpecError with an issue at the field's path
    whose message or allowed text says what is wrong or allowed."""
    edits, path, word = MISTAKES[case]
    doc = make_minimal_doc()
    doc["workload"].update(edits)
    with pytest.raises(SpecError) as info:
        sim.load_scenario(doc)
    at = [issue for issue in info.value.issues if issue.path == path]
    assert at, f"no issue at {path!r}: {info.value}"
    assert any(word in f"{issue.message} {issue.allowed}" for issue in at), str(info.value)


def test_a_site_named_like_a_zone_makes_a_residency_ambiguous() -> None:
    """A residency entry that is both a zone and a site name is refused: say which you mean."""
    doc = make_minimal_doc()
    doc["sites"]["private"] = {"zone": "third_party", "provider": "aws", "pools": []}
    doc["workload"]["classes"] = [{"name": "a", "share": 1, "residency": ["private"]}]
    with pytest.raises(SpecError) as info:
        sim.load_scenario(doc)
    (issue,) = [i for i in info.value.issues if i.path == "workload.classes[0].residency[0]"]
    assert "both a zone and a site" in issue.message


def test_generation_refuses_an_unchecked_workload_whose_shares_do_not_add_up() -> None:
    """A Workload built without the scenario checks still cannot leave requests without a class."""
    with pytest.raises(SpecError, match="sum to 1"):
        generate_requests(workload([{"name": "a", "share": 0.5}]), 10.0, 0, 0)


def test_each_request_is_judged_against_its_own_classes_slo() -> None:
    """The heterogeneous example's classes have SLOs of their own (interactive: e2e p99 20 s;
    batch: 120 s; the scenario's 30 s judges neither): SLO attainment and availability within
    the SLO count each request against its class's targets, agree with each other, and agree
    with the request-weighted attainment of the classes; the scenario's verdict judges no class."""
    path = Path(__file__).parent.parent / "scenarios" / "examples" / "hetero_h100_l4.yaml"
    result = sim.simulate(sim.load_scenario(path, ["replications=1", "horizon=3h", "warmup=10min"]))
    s = result.summary
    assert s["slo"] == {}
    assert s["availability_slo"] == pytest.approx(s["slo_attainment"])
    frame = result.requests
    batch = frame[frame["traffic_class"] == "batch"]
    assert (batch["e2e_s"] > 30).any()  # what the scenario's SLO would have missed, the class's does not
    assert s["classes"]["batch"]["slo_attainment"] > 0.99
