"""Errors a person can act on: every bad input names the field to change and what is allowed.

Each case breaks one thing in a valid document and pins down the `SpecIssue` it must produce:
the field path as the user wrote it, and the allowed values (with a "did you mean" where a
close match exists). The rendered `SpecError` must say the same, on one screen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sim
from sim.spec.errors import MAX_ISSUES_SHOWN, SpecError, SpecIssue

Doc = dict[str, Any]

CLOUD_SITE: Doc = {"zone": "third_party", "provider": "aws", "region": "us-east-1", "pools": []}
WAN_LINK: Doc = {"ends": ["edge", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}


def load_error(doc: Any) -> SpecError:
    """The SpecError that loading `doc` (a mapping or a file) raises."""
    with pytest.raises(SpecError) as info:
        sim.load_scenario(doc)
    return info.value


def issue_at(error: SpecError, path: str) -> SpecIssue:
    """The issue reported at `path`; fails with every path found when there is none."""
    for issue in error.issues:
        if issue.path == path:
            return issue
    pytest.fail(f"no issue at {path!r}; issues at {[i.path for i in error.issues]}:\n{error}")


# ------------------------------------------------------------------------------------------
# Mutations of the minimal document, one mistake each
# ------------------------------------------------------------------------------------------


def pool(doc: Doc) -> Doc:
    return doc["sites"]["edge"]["pools"][0]


def with_cloud(doc: Doc, pools: list[Doc] | None = None, link: bool = True) -> None:
    doc["sites"]["cloud"] = {**CLOUD_SITE, "pools": pools or []}
    if link:
        doc["links"] = {"wan": dict(WAN_LINK)}


def misspelled_pool_key(doc: Doc) -> None:
    pool(doc)["gpuu"] = pool(doc).pop("gpu")


def misspelled_top_level_key(doc: Doc) -> None:
    doc["horizn"] = doc.pop("horizon")


def negative_count(doc: Doc) -> None:
    pool(doc)["count"] = -1


def count_in_words(doc: Doc) -> None:
    pool(doc)["count"] = "four"


def unknown_gpu(doc: Doc) -> None:
    pool(doc)["gpu"] = "h100-sxx"


def unknown_model(doc: Doc) -> None:
    doc["model"]["id"] = "lama-3.1-8b"


def registry_on_unknown_site(doc: Doc) -> None:
    doc["placement"]["model_registry"] = "egde"


def inference_on_unknown_site(doc: Doc) -> None:
    doc["placement"]["inference"] = "edg"


def unknown_origin(doc: Doc) -> None:
    doc["workload"]["origin"] = "office"


def link_to_unknown_site(doc: Doc) -> None:
    with_cloud(doc)
    doc["links"]["wan"]["ends"] = ["edge", "clod"]


def unknown_horizon_unit(doc: Doc) -> None:
    doc["horizon"] = "6x"


def model_too_big(doc: Doc) -> None:
    pool(doc).update(gpu="l40s", count=1)
    doc["model"]["id"] = "llama-3.1-70b"


def training_without_training_gpus(doc: Doc) -> None:
    pool(doc)["roles"] = ["serving"]
    doc["placement"]["training"] = "edge"


def retraining_wants_more_gpus(doc: Doc) -> None:
    doc["placement"]["training"] = "edge"
    doc["lifecycle"] = {"retraining": {"gpus": 4}}


def misspelled_arrival_process(doc: Doc) -> None:
    doc["workload"]["arrivals"]["process"] = "poison"


def cloud_inference_without_link(doc: Doc) -> None:
    with_cloud(doc, pools=[{"gpu": "l40s", "count": 1}], link=False)
    doc["placement"]["inference"] = "cloud"


def elastic_without_max_count(doc: Doc) -> None:
    with_cloud(doc, pools=[{"gpu": "h100-sxm", "count": 0, "elastic": True, "roles": ["training"]}])


def max_count_below_count(doc: Doc) -> None:
    with_cloud(doc, pools=[{"gpu": "h100-sxm", "count": 2, "elastic": True, "max_count": 1,
                            "roles": ["training"]}])


def pool_without_roles(doc: Doc) -> None:
    pool(doc)["roles"] = []


def elastic_on_premises(doc: Doc) -> None:
    pool(doc).update(elastic=True, max_count=2)


def warmup_as_long_as_horizon(doc: Doc) -> None:
    doc.update(horizon="1h", warmup="60min")


def unknown_data_class(doc: Doc) -> None:
    doc["workload"]["data_class"] = "promt"


def unknown_response_data_class(doc: Doc) -> None:
    doc["workload"]["response_data_class"] = "answer"


def tensor_parallel_above_pool(doc: Doc) -> None:
    doc["model"]["tensor_parallel"] = 2


@dataclass(frozen=True)
class Case:
    mutate: Callable[[Doc], None]
    path: str
    allowed: tuple[str, ...]
    message: str = ""


CASES = [
    Case(misspelled_pool_key, "sites.edge.pools[0].gpuu", ("gpu", "count", "roles"), "did you mean 'gpu'?"),
    Case(misspelled_top_level_key, "horizn", ("horizon", "warmup", "seed"), "did you mean 'horizon'?"),
    Case(negative_count, "sites.edge.pools[0].count", ("a value >= 0",)),
    Case(count_in_words, "sites.edge.pools[0].count", ("a whole number",)),
    Case(unknown_gpu, "sites.edge.pools[0].gpu", ("l40s", "h100-sxm", "l4"), "did you mean 'h100-sxm'?"),
    Case(unknown_model, "model.id", ("llama-3.1-8b", "llama-3.1-70b", "mistral-7b"),
         "did you mean 'llama-3.1-8b'?"),
    Case(registry_on_unknown_site, "placement.model_registry", ("edge", "none"), "did you mean 'edge'?"),
    Case(inference_on_unknown_site, "placement.inference", ("edge",), "did you mean 'edge'?"),
    Case(unknown_origin, "workload.origin", ("edge",), "no site named 'office'"),
    Case(link_to_unknown_site, "links.wan.ends[1]", ("edge", "cloud"), "did you mean 'cloud'?"),
    Case(unknown_horizon_unit, "horizon", ("ms", "min", "h", "d", "y"), "unknown duration unit 'x'"),
    Case(model_too_big, "sites.edge.pools[0].gpu", ("tensor_parallel >= 4",), "does not fit a l40s"),
    Case(training_without_training_gpus, "placement.training", ("'training'", "'none'"),
         "no GPUs for training"),
    Case(retraining_wants_more_gpus, "lifecycle.retraining.gpus", ("a value <= 1",), "asks for 4 GPUs"),
    Case(misspelled_arrival_process, "workload.arrivals.process", ("poisson", "bursty", "trace"),
         "did you mean 'poisson'?"),
    Case(cloud_inference_without_link, "workload.origin", ("links:", "ends: [edge, cloud]"),
         "no link joins them"),
    Case(elastic_without_max_count, "sites.cloud.pools[0].max_count", ("count",), "max_count"),
    Case(max_count_below_count, "sites.cloud.pools[0].max_count", ("a value >= 2",), "below count"),
    Case(pool_without_roles, "sites.edge.pools[0].roles", ("serving", "training")),
    Case(elastic_on_premises, "sites.edge.pools[0].elastic", ("third_party",), "cannot grow on demand"),
    Case(warmup_as_long_as_horizon, "warmup", ("1h",), "shorter than horizon"),
    Case(unknown_data_class, "workload.data_class", ("prompt", "labelled_sample", "privacy.data_classes"),
         "did you mean 'prompt'?"),
    Case(unknown_response_data_class, "workload.response_data_class", ("response", "prompt"),
         "unknown data class"),
    Case(tensor_parallel_above_pool, "sites.edge.pools[0].count", ("a value >= 2",), "tensor_parallel=2"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.mutate.__name__ for c in CASES])
def test_bad_document_names_the_field_and_what_is_allowed(minimal_doc: Doc, case: Case) -> None:
    """One mistake gives an issue at the field a user must change, listing what they may write."""
    case.mutate(minimal_doc)
    error = load_error(minimal_doc)
    issue = issue_at(error, case.path)
    assert issue.allowed, f"no allowed values for {case.path}:\n{error}"
    for word in case.allowed:
        assert word in issue.allowed, f"{word!r} not in allowed {issue.allowed!r}"
    text = str(error)
    assert f"  - {case.path}: " in text
    assert "allowed: " in text
    assert case.message in issue.message, f"{case.message!r} not in {issue.message!r}"


def test_minimal_document_is_valid(minimal_doc: Doc) -> None:
    """The fixture all cases start from loads cleanly, so each case's error is its own."""
    assert sim.load_scenario(minimal_doc).name == "minimal"


def test_every_mistake_is_reported_at_once(minimal_doc: Doc) -> None:
    """Independent mistakes in one document are all reported, so a user fixes them in one pass."""
    misspelled_pool_key(minimal_doc)
    misspelled_top_level_key(minimal_doc)
    misspelled_arrival_process(minimal_doc)
    error = load_error(minimal_doc)
    paths = {i.path for i in error.issues}
    assert {"sites.edge.pools[0].gpuu", "horizn", "workload.arrivals.process"} <= paths
    assert str(error).startswith("<document>: ")
    assert f"{len(error.issues)} problems found" in str(error)


# ------------------------------------------------------------------------------------------
# Files: extends, YAML syntax, the shape of the document
# ------------------------------------------------------------------------------------------


def test_cyclic_extends_shows_the_chain(write_yaml, minimal_doc: Doc) -> None:
    """a.yaml -> b.yaml -> a.yaml is reported at `extends` with the whole chain spelled out."""
    write_yaml({"extends": "b.yaml", **minimal_doc}, "a.yaml")
    a = write_yaml({"extends": "a.yaml", "name": "b"}, "b.yaml").parent / "a.yaml"
    error = load_error(a)
    issue = issue_at(error, "extends")
    assert "a.yaml -> b.yaml -> a.yaml" in issue.message
    assert "without extends" in issue.allowed


def test_file_that_extends_itself_is_a_cycle(write_yaml, minimal_doc: Doc) -> None:
    """The shortest cycle, a file extending itself, is caught too."""
    path = write_yaml({"extends": "self.yaml", **minimal_doc}, "self.yaml")
    issue = issue_at(load_error(path), "extends")
    assert "self.yaml -> self.yaml" in issue.message


def test_missing_extends_file(write_yaml, minimal_doc: Doc) -> None:
    """Extending a file that does not exist names that file and how to write the reference."""
    path = write_yaml({"extends": "nowhere.yaml", **minimal_doc})
    error = load_error(path)
    issue = issue_at(error, "extends")
    assert "nowhere.yaml" in issue.message
    assert issue.value == "nowhere.yaml"
    assert "relative to this file" in issue.allowed
    assert str(path) in str(error)


def test_missing_scenario_file(tmp_path: Path) -> None:
    """A scenario path that does not exist is a SpecError naming the path, not FileNotFoundError."""
    missing = tmp_path / "missing.yaml"
    error = load_error(missing)
    assert "file not found" in str(error)
    assert str(missing) in str(error)
    assert "an existing YAML file" in str(error)


def test_invalid_yaml_names_the_line(write_yaml) -> None:
    """A YAML syntax error is a SpecError giving the line (and column) where reading stopped."""
    path = write_yaml("name: broken\nsites:\n  edge: {zone: private\nmodel: {id: x}\n")
    error = load_error(path)
    issue = issue_at(error, "")
    assert "not valid YAML at line" in issue.message
    assert "line 3" in issue.message or "line 4" in issue.message
    assert str(path) in str(error)


def test_top_level_list_is_rejected(write_yaml, minimal_doc: Doc) -> None:
    """A file whose top level is a list says that a scenario is a mapping of keys to values."""
    path = write_yaml([minimal_doc])
    issue = issue_at(load_error(path), "")
    assert "mapping of keys to values" in issue.message
    assert issue.value == "list"


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_reports_the_required_fields(write_yaml, text: str) -> None:
    """An empty file is an empty mapping: every required section is reported as missing."""
    error = load_error(write_yaml(text))
    paths = {i.path for i in error.issues}
    assert {"sites", "model", "workload", "placement"} <= paths
    assert all("required field is missing" in issue.message for issue in error.issues)


# ------------------------------------------------------------------------------------------
# One screen
# ------------------------------------------------------------------------------------------


def test_thirty_errors_fit_on_one_screen(minimal_doc: Doc) -> None:
    """With many issues, the text shows the first MAX_ISSUES_SHOWN and says how many more."""
    for i in range(30):
        minimal_doc[f"unknown_key_{i}"] = i
    error = load_error(minimal_doc)
    assert len(error.issues) == 30
    text = str(error)
    assert len(text.splitlines()) <= 40
    assert f"... and {30 - MAX_ISSUES_SHOWN} more" in text
    assert text.splitlines()[0] == "<document>: 30 problems found"


def test_long_values_are_shortened(minimal_doc: Doc) -> None:
    """A huge bad value is cut short in the message, so one issue stays on a line or two."""
    minimal_doc["model"]["id"] = "x" * 5000
    text = str(load_error(minimal_doc))
    assert "x" * 100 not in text
    assert "..." in text
