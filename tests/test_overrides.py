"""`--set path=value` overrides and `extends:` merging, and the resolved scenario's round trip.

An override is read as YAML and validated like anything written in the file. A resolved
scenario dumped with `dump_scenario` (SI units, every default spelled out) loads back to the
same scenario, so a run's `scenario.yaml` reproduces it exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sim
from sim.spec import SpecError, apply_overrides, dump_scenario, spec_hash
from sim.spec.loader import deep_merge, load_document, parse_override_path, parse_yaml


@pytest.fixture
def s3(scenarios_dir: Path) -> Path:
    """The scenario with the most moving parts: shared pool, local training, drift."""
    return scenarios_dir / "s3_local_training.yaml"


def reloaded(scenario: sim.Scenario) -> sim.Scenario:
    """Dump a resolved scenario to YAML text and load that text back as a document."""
    return sim.load_scenario(parse_yaml(dump_scenario(scenario)))


OVERRIDES = [
    ("workload.arrivals.rate_per_s=40", lambda s: s.workload.arrivals.rate_per_s, 40.0),
    ("sites.premises.pools[0].count=8", lambda s: s.sites["premises"].pools[0].count, 8),
    ("links.wan.rtt=80ms", lambda s: s.links["wan"].rtt, 0.08),
    ("links.wan.bandwidth=10Gbps", lambda s: s.links["wan"].bandwidth, 1.25e9),
    ("model.serving.chunked_prefill=false", lambda s: s.model.serving.chunked_prefill, False),
    ("lifecycle.drift[0].error_rate=0.3", lambda s: s.lifecycle.drift[0].error_rate, 0.3),
    ("horizon=6h", lambda s: s.horizon, 21600.0),
    ("placement.monitoring=none", lambda s: s.placement.monitoring, "none"),
    ("lifecycle.drift=[]", lambda s: s.lifecycle.drift, []),
    ("sites.premises.pools[0].roles=[training, serving]", lambda s: s.sites["premises"].pools[0].roles,
     ["training", "serving"]),
]


@pytest.mark.parametrize(("override", "read", "expected"), OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_override_sets_the_value(s3: Path, override: str, read, expected: Any) -> None:
    """An override reaches the field it names, with units converted to SI."""
    scenario = sim.load_scenario(s3, [override])
    if isinstance(expected, float):
        assert read(scenario) == pytest.approx(expected)
    else:
        assert read(scenario) == expected


@pytest.mark.parametrize(("override", "read", "expected"), OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_resolved_scenario_round_trips(s3: Path, override: str, read, expected: Any) -> None:
    """Dumping an overridden scenario and loading the YAML back gives the same scenario."""
    scenario = sim.load_scenario(s3, [override])
    again = reloaded(scenario)
    assert again.model_dump() == scenario.model_dump()
    assert spec_hash(again) == spec_hash(scenario)


def test_every_shipped_scenario_round_trips(scenarios_dir: Path) -> None:
    """The dump of each shipped scenario reloads to an equal scenario (same hash)."""
    for path in sorted(scenarios_dir.glob("*.yaml")):
        scenario = sim.load_scenario(path)
        assert spec_hash(reloaded(scenario)) == spec_hash(scenario), path.name


def test_dump_is_in_si_units(s3: Path) -> None:
    """The dumped document holds plain numbers in seconds, bytes and bytes/s, not unit strings."""
    dumped = parse_yaml(dump_scenario(sim.load_scenario(s3, ["links.wan.rtt=80ms"])))
    assert dumped["links"]["wan"]["rtt"] == pytest.approx(0.08)
    assert dumped["links"]["wan"]["bandwidth"] == pytest.approx(125e6)
    assert dumped["horizon"] == pytest.approx(86400.0)


def test_override_without_equals_names_the_override(s3: Path) -> None:
    """`--set path` without `=value` is reported under the override itself, with an example."""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(s3, ["workload.arrivals.rate_per_s"])
    [issue] = info.value.issues
    assert issue.path == "--set workload.arrivals.rate_per_s"
    assert "needs '='" in issue.message
    assert "rate_per_s=40" in issue.allowed


def test_override_past_the_end_of_a_list(s3: Path) -> None:
    """An index beyond a list's end names the override and the list's real length."""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(s3, ["sites.premises.pools[9].count=2"])
    [issue] = info.value.issues
    assert issue.path == "--set sites.premises.pools[9].count=2"
    assert "past the end of a list of 1" in issue.message
    assert str(s3) in str(info.value)


@pytest.mark.parametrize("override", ["sites..premises=1", "pools[x].count=1", "sites.premises.pools[0]]=1", "=3"])
def test_override_with_unreadable_path(s3: Path, override: str) -> None:
    """A path that is not dotted keys with [index] is reported with the expected form."""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(s3, [override])
    [issue] = info.value.issues
    assert issue.path == f"--set {override}"
    assert "sites.premises.pools[0].count" in issue.allowed


def test_override_into_a_value_is_rejected(s3: Path) -> None:
    """Descending below a plain value (`seed.x=1`) is an error, not a silent replacement."""
    with pytest.raises(SpecError, match="holds a value, not a mapping"):
        sim.load_scenario(s3, ["seed.x=1"])


def test_override_of_unknown_key_suggests_the_real_one(s3: Path) -> None:
    """An override that misspells a key is validated like the file: did you mean the real key?"""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(s3, ["workload.arrivals.rat_per_s=3"])
    [issue] = info.value.issues
    assert issue.path == "workload.arrivals.rat_per_s"
    assert "did you mean 'rate_per_s'?" in issue.message
    assert "rate_per_s" in issue.allowed


def test_override_with_bad_value_is_validated(s3: Path) -> None:
    """An override's value is checked like the file's: a bad unit names the field and the units."""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(s3, ["horizon=6x"])
    [issue] = info.value.issues
    assert issue.path == "horizon"
    assert "h" in issue.allowed.split(", ")


def test_all_bad_overrides_are_reported_together(s3: Path) -> None:
    """Several malformed overrides are collected into one error."""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(s3, ["seed", "sites.premises.pools[3].count=1"])
    assert len(info.value.issues) == 2


def test_override_does_not_change_the_document(s3: Path) -> None:
    """apply_overrides works on a copy: the caller's document is untouched."""
    doc = load_document(s3)
    before = repr(doc)
    changed = apply_overrides(doc, ["workload.arrivals.rate_per_s=40", "sites.premises.pools[0].count=8"])
    assert repr(doc) == before
    assert changed["workload"]["arrivals"]["rate_per_s"] == 40


def test_override_creates_missing_mappings(minimal_doc: dict[str, Any]) -> None:
    """Setting a path under a section the document leaves out creates that section."""
    scenario = sim.load_scenario(minimal_doc, ["slo.ttft_p99=500ms"])
    assert scenario.slo.ttft_p99 == pytest.approx(0.5)


def test_later_override_wins(s3: Path) -> None:
    """Overrides apply left to right, so the last one for a path decides."""
    scenario = sim.load_scenario(s3, ["seed=1", "seed=2"])
    assert scenario.seed == 2


def test_parse_override_path() -> None:
    """Dotted keys with [index] become keys and integer indexes; digits alone are keys too."""
    assert parse_override_path("sites.premises.pools[0].count") == ["sites", "premises", "pools", 0, "count"]
    assert parse_override_path("a.b[1][2]") == ["a", "b", 1, 2]


def test_spec_hash_follows_the_values(s3: Path) -> None:
    """The hash changes when a value does, and not when the same override is applied twice."""
    base = spec_hash(sim.load_scenario(s3))
    once = spec_hash(sim.load_scenario(s3, ["workload.arrivals.rate_per_s=40"]))
    twice = spec_hash(sim.load_scenario(s3, ["workload.arrivals.rate_per_s=40"] * 2))
    again = spec_hash(sim.load_scenario(s3, ["workload.arrivals.rate_per_s=40"]))
    assert once != base
    assert once == twice == again


def test_spec_hash_ignores_how_a_value_is_written(s3: Path) -> None:
    """`80ms` and `0.08` are the same duration, so they give the same hash."""
    with_unit = spec_hash(sim.load_scenario(s3, ["links.wan.rtt=80ms"]))
    in_seconds = spec_hash(sim.load_scenario(s3, ["links.wan.rtt=0.08"]))
    assert with_unit == in_seconds


# ------------------------------------------------------------------------------------------
# extends
# ------------------------------------------------------------------------------------------


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    """Mappings merge key by key, recursively; lists and plain values replace the base's."""
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "pools": [1, 2, 3], "keep": True}
    top = {"a": {"y": {"q": 20, "r": 30}, "z": 3}, "pools": [9]}
    assert deep_merge(base, top) == {
        "a": {"x": 1, "y": {"p": 1, "q": 20, "r": 30}, "z": 3},
        "pools": [9],
        "keep": True,
    }


def test_deep_merge_does_not_alias_its_inputs() -> None:
    """The merged result shares no mutable values with the top document."""
    top = {"pools": [{"count": 1}]}
    merged = deep_merge({}, top)
    merged["pools"][0]["count"] = 99
    assert top["pools"][0]["count"] == 1


def test_mapping_replaces_a_plain_value_and_back() -> None:
    """A mapping over a value, or a value over a mapping, replaces it rather than merging."""
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert deep_merge({"a": {"b": 2}}, {"a": None}) == {"a": None}


def test_extends_merges_two_files(write_yaml, minimal_doc: dict[str, Any]) -> None:
    """A child file changes one nested value and replaces a list; the rest comes from its base."""
    write_yaml(minimal_doc, "base.yaml")
    child = write_yaml(
        {
            "extends": "base.yaml",
            "name": "child",
            "model": {"serving": {"max_model_len": 4096}},
            "sites": {"edge": {"pools": [{"gpu": "l40s", "count": 2}]}},
        },
        "child.yaml",
    )
    scenario = sim.load_scenario(child)
    assert scenario.name == "child"
    assert scenario.model.id == "llama-3.1-8b"  # kept from base
    assert scenario.model.serving.max_model_len == 4096  # merged into base's model mapping
    assert [(p.gpu, p.count) for p in scenario.sites["edge"].pools] == [("l40s", 2)]  # list replaced
    assert scenario.sites["edge"].zone == "private"  # kept next to the replaced list


def test_extends_list_merges_left_to_right(write_yaml, minimal_doc: dict[str, Any]) -> None:
    """`extends: [a, b]` merges a, then b, then the file itself; later wins."""
    write_yaml(minimal_doc, "a.yaml")
    write_yaml({"seed": 7, "horizon": "2h"}, "b.yaml")
    top = write_yaml({"extends": ["a.yaml", "b.yaml"], "seed": 9}, "top.yaml")
    scenario = sim.load_scenario(top)
    assert (scenario.seed, scenario.horizon) == (9, 7200.0)


def test_extends_is_relative_to_the_file(tmp_path: Path, write_yaml, minimal_doc: dict[str, Any]) -> None:
    """A parent path is found next to the file that names it, not the working directory."""
    write_yaml(minimal_doc, "presets/base.yaml")
    child = write_yaml({"extends": "../presets/base.yaml", "name": "deep"}, "runs/child.yaml")
    assert sim.load_scenario(child).name == "deep"


def test_extends_must_name_files(write_yaml) -> None:
    """`extends` holding something other than a path or list of paths is reported at `extends`."""
    path = write_yaml({"extends": {"file": "base.yaml"}})
    with pytest.raises(SpecError) as info:
        sim.load_scenario(path)
    [issue] = info.value.issues
    assert issue.path == "extends"
    assert "base.yaml" in issue.allowed


def test_overrides_apply_after_extends(scenarios_dir: Path) -> None:
    """An override beats both the child file and its base."""
    scenario = sim.load_scenario(scenarios_dir / "s1_local.yaml", ["name=mine", "horizon=2h"])
    assert (scenario.name, scenario.horizon) == ("mine", 7200.0)


def test_extends_can_switch_an_arrival_process_or_length_distribution(write_yaml, scenarios_dir) -> None:
    """A child that names another process/dist replaces the base's mapping instead of merging
    into it, so no field of the old family is left behind as an unknown key."""
    from sim import load_scenario

    child = write_yaml({
        "extends": str(scenarios_dir / "s1_local.yaml"),
        "workload": {"arrivals": {"process": "constant", "rate_per_s": 3},
                     "prompt_tokens": {"dist": "fixed", "value": 100}},
    })
    scenario = load_scenario(child)
    assert scenario.workload.arrivals.process == "constant"
    assert scenario.workload.prompt_tokens.dist == "fixed"
    assert scenario.workload.output_tokens.dist == "lognormal"  # untouched parts still merge
