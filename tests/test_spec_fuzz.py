"""Whatever a user writes, loading ends in a Scenario or a SpecError, never another exception.

A traceback is reserved for bugs in deploysim. Hypothesis throws three kinds of garbage at the
loader: random YAML-like documents built from real field names and unit-like strings, random
edits of a valid seed scenario (one path set to a random value), and random text.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim
from sim.spec.loader import load_document, parse_yaml, scenario_from_document

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELD_NAMES = [
    "sites", "pools", "gpu", "count", "zone", "links", "ends", "rtt", "bandwidth", "model", "id",
    "workload", "arrivals", "process", "rate_per_s", "placement", "inference", "model_registry",
    "training", "origin", "prompt_tokens", "output_tokens", "dist", "value", "horizon", "warmup",
    "seed", "lifecycle", "drift", "kind", "at", "error_rate", "roles", "elastic", "max_count",
    "tensor_parallel", "serving", "max_model_len", "privacy", "data_classes", "sensitivity",
    "provider", "premises", "cloud", "catalog", "slo", "ttft_p99", "stages", "duration", "gpus",
]

WORDS = [
    "5ms", "3x", "1Gbps", "16GB", "512MiB", "6h", "-1", "0", "nan", "inf", "-inf", "1e400",
    "premises", "cloud", "none", "private", "third_party", "l40s", "l4", "h100-sxm", "h100-sxx",
    "llama-3.1-8b", "llama-3.1-70b", "poisson", "poison", "fixed", "lognormal", "abrupt", "serving",
    "training", "aws", "prompt", "",
]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)

keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6), st.integers(-3, 3))

documents = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=40,
)

top_level = st.dictionaries(st.sampled_from(FIELD_NAMES), documents, max_size=10)


def loads_or_spec_error(doc: Any) -> None:
    """Load a document; a SpecError is a fine outcome, any other exception fails the test."""
    try:
        scenario = sim.load_scenario(doc)
    except sim.SpecError as exc:
        assert exc.issues, "a SpecError must carry at least one issue"
        str(exc)  # rendering must not fail either
        return
    assert isinstance(scenario, sim.Scenario)


@FUZZ
@given(top_level)
def test_random_documents_load_or_raise_spec_error(doc: dict[Any, Any]) -> None:
    """Random nests of real field names and odd values never escape as a non-SpecError."""
    loads_or_spec_error(doc)


# The seed scenarios with their extends chains merged: valid documents to break.
SEED_DOCUMENTS = [load_document(path) for path in sorted((Path(__file__).parent.parent / "scenarios").glob("s*.yaml"))]
S1 = SEED_DOCUMENTS[0]


def _mutate(data: st.DataObject, doc: dict[str, Any]) -> dict[str, Any]:
    """Walk down a random path of the document and put a random value there."""
    doc = copy.deepcopy(doc)
    node: Any = doc
    while True:
        slots = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not slots:
            break
        slot = data.draw(st.sampled_from(slots), label="slot")
        child = node[slot]
        if isinstance(child, dict | list) and child and data.draw(st.booleans(), label="descend"):
            node = child
            continue
        action = data.draw(st.sampled_from(["set", "delete", "add"]), label="action")
        if action == "set":
            node[slot] = data.draw(documents, label="value")
        elif action == "delete":
            del node[slot]
        elif isinstance(node, dict):
            node[data.draw(keys, label="key")] = data.draw(documents, label="value")
        else:
            node.append(data.draw(documents, label="value"))
        break
    return doc


@FUZZ
@given(st.data())
def test_random_edits_of_a_valid_scenario_load_or_raise_spec_error(data: st.DataObject) -> None:
    """One random edit anywhere in a seed (set, delete or add a key) ends in a Scenario or a SpecError."""
    seed = data.draw(st.sampled_from(SEED_DOCUMENTS), label="seed")
    loads_or_spec_error(_mutate(data, seed))


yaml_fragments = st.sampled_from([
    "sites:", "  premises:", "    zone: private", "    pools:", "      - {gpu: l40s, count: 4}",
    "model: {id: llama-3.1-8b}", "horizon: 6x", "horizon: 24h", "placement: {inference: premises}",
    "workload:", "  arrivals: {process: poisson, rate_per_s: 2}", "- 1", "&a [*a]", "? [a]", ": :",
    "key: !!python/object:os.system {}", "{", "]", "\t", "'", "'''", "extends: base.yaml", "seed: -1",
    "warmup: 2y", "links: {wan: {ends: [premises, cloud], rtt: 5ms, bandwidth: 1Gbps}}", "...", "---",
])

yaml_texts = st.one_of(
    st.text(max_size=200),
    st.lists(yaml_fragments, max_size=12).map("\n".join),
)


@FUZZ
@given(yaml_texts)
def test_random_text_parses_and_loads_or_raises_spec_error(text: str) -> None:
    """Random text read as YAML and validated ends in a Scenario or a SpecError."""
    try:
        scenario = scenario_from_document(parse_yaml(text), "<fuzz>")
    except sim.SpecError as exc:
        assert exc.issues
        str(exc)
        return
    assert isinstance(scenario, sim.Scenario)


@pytest.mark.parametrize("text", ["&a [*a]", "&a {sites: *a}", "sites: &s {premises: {pools: [*s]}}"])
def test_self_referencing_yaml_is_a_spec_error(text: str) -> None:
    """YAML aliases can build a structure that contains itself; that is a SpecError, not a crash."""
    with pytest.raises(sim.SpecError):
        scenario_from_document(parse_yaml(text), "<alias>")


def test_python_tags_are_not_executed() -> None:
    """Safe loading only: a python/object tag is a YAML error, never an object."""
    with pytest.raises(sim.SpecError, match="not valid YAML"):
        parse_yaml("model: !!python/object/apply:os.system ['true']")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**70, -(2**70), 1e308])
@pytest.mark.parametrize(
    "path",
    ["workload.arrivals.rate_per_s", "sites.premises.pools[0].count", "model.tensor_parallel",
     "model.serving.max_model_len", "seed", "horizon", "links.wan.rtt", "lifecycle.retraining.gpus"],
)
def test_extreme_numbers_load_or_raise_spec_error(path: str, value: float) -> None:
    """NaN, infinities and huge numbers in numeric fields are SpecErrors (or valid), never crashes."""
    doc = copy.deepcopy(S1)
    node: Any = doc
    parts = path.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    loads_or_spec_error(doc)
