"""Routing rules, serving autoscalers and billing in the spec: what they resolve to, and every
way they can be written wrong.

`sim.spec.routing.class_routes` turns the rules (or, without `routing:`, the implicit rule:
the serving pools at placement.inference, then at placement.fallback) into one route per
traffic class, after the class's residency. The checks refuse a rule that names a pool or
class that does not exist, a class with no pool left, a serving pool no class can reach and an
autoscaler with no room to grow, each at the field to change and naming the pool or class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from conftest import SCENARIOS_DIR, WriteYaml, make_minimal_doc

import sim
from sim.spec import SpecError, SpecIssue, dump_scenario, spec_hash
from sim.spec.routing import ResolvedRoute, class_routes, serving_pool_names

Doc = dict[str, Any]
S1, S2 = SCENARIOS_DIR / "s1_local.yaml", SCENARIOS_DIR / "s2_cloud_training.yaml"


def burst_doc() -> Doc:
    """Cloud burst: clients and two L40S ('edge/gpus') on premises; a cloud pool 'cloud/burst'
    of up to 4 L40S, scaled from zero by queue length; classes 'chat' and 'confidential' (private
    only). Confidential traffic stays on premises; the rest overflows to the cloud past 4 queued
    requests per replica or a 2 s wait."""
    doc = make_minimal_doc()
    doc["sites"]["edge"]["pools"] = [{"name": "gpus", "gpu": "l40s", "count": 2, "roles": ["serving"]}]
    doc["sites"]["cloud"] = {"zone": "third_party", "provider": "aws", "region": "us-east-1", "pools": [
        {"name": "burst", "gpu": "l40s", "count": 0, "elastic": True, "max_count": 4, "provisioning_delay": "2min",
         "roles": ["serving"], "autoscale": {"max_replicas": 4, "target": 4}},
        {"name": "training", "gpu": "l40s", "count": 2, "roles": ["training"]},
    ]}
    doc["links"] = {"wan": {"ends": ["edge", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}}
    doc["workload"]["classes"] = [{"name": "chat", "share": 0.7},
                                  {"name": "confidential", "share": 0.3, "residency": ["private"]}]
    doc["routing"] = [
        {"classes": ["confidential"], "pools": ["edge/gpus"]},
        {"pools": ["edge/gpus", "cloud/burst"], "overflow": {"queue_per_replica": 4, "wait": "2s"}},
    ]
    return doc


def load(doc: Doc, overrides: list[str] | None = None) -> sim.Scenario:
    return sim.load_scenario(doc, overrides or [])


def issue_at(doc: Doc, overrides: list[str], path: str) -> SpecIssue:
    """The issue that loading `doc` with `overrides` reports at `path`."""
    with pytest.raises(SpecError) as caught:
        load(doc, overrides)
    for issue in caught.value.issues:
        if issue.path == path:
            return issue
    pytest.fail(f"no issue at {path!r}:\n{caught.value}")


# ------------------------------------------------------------------------------------------
# Resolving routes by hand
# ------------------------------------------------------------------------------------------


def test_the_burst_document_is_valid_and_resolves_by_hand() -> None:
    """confidential takes the rule that names it; chat, named by none, takes the catch-all,
    with its thresholds in seconds and requests per replica."""
    routes = class_routes(load(burst_doc()))
    assert list(routes) == ["chat", "confidential"]
    assert routes["chat"] == ResolvedRoute(pools=("edge/gpus", "cloud/burst"), policy="overflow",
                                           queue_per_replica=4.0, wait_s=2.0, weights=(), rule=1)
    assert routes["confidential"] == ResolvedRoute(pools=("edge/gpus",), policy="overflow",
                                                   queue_per_replica=math.inf, wait_s=math.inf, weights=(), rule=0)


def test_a_class_takes_the_first_rule_that_names_it_even_after_the_catch_all() -> None:
    """Rule order decides between rules that name a class; the catch-all only takes the rest."""
    doc = burst_doc()
    doc["routing"] = [
        {"pools": ["edge/gpus", "cloud/burst"], "overflow": {"wait": "500ms"}},
        {"classes": ["confidential"], "pools": ["edge/gpus"]},
    ]
    routes = class_routes(load(doc))
    assert routes["chat"].rule == 0 and routes["chat"].wait_s == 0.5
    assert routes["chat"].queue_per_replica == math.inf
    assert routes["confidential"].rule == 1


def test_residency_filters_pools_and_their_weights_follow() -> None:
    """A weighted rule shared by a private-only class: the cloud pool and its weight go, the
    rest keep their order and weights."""
    doc = burst_doc()
    doc["sites"]["edge"]["pools"].append({"name": "small", "gpu": "l4", "count": 1, "roles": ["serving"]})
    doc["routing"] = [{"pools": ["cloud/burst", "edge/gpus", "edge/small"], "policy": "weighted",
                       "weights": [2, 3, 1]}]
    routes = class_routes(load(doc))
    assert routes["chat"] == ResolvedRoute(pools=("cloud/burst", "edge/gpus", "edge/small"), policy="weighted",
                                           queue_per_replica=math.inf, wait_s=math.inf, weights=(2.0, 3.0, 1.0),
                                           rule=0)
    assert routes["confidential"].pools == ("edge/gpus", "edge/small")
    assert routes["confidential"].weights == (3.0, 1.0)


def test_the_implicit_rule_is_inference_then_fallback_in_file_order() -> None:
    """S2 with a local fallback: the cloud pool, then the premises pools in file order (both
    only on failover); a private-only class keeps the premises pools alone."""
    scenario = sim.load_scenario(S2, [
        "placement.fallback=premises",
        "sites.premises.pools=[{name: a, gpu: l4, count: 1, roles: [serving]}, "
        "{name: b, gpu: l4, count: 1, roles: [serving]}]",
        "workload.classes=[{name: open, share: 0.5}, {name: confidential, share: 0.5, residency: [private]}]",
    ])
    routes = class_routes(scenario)
    assert routes["open"] == ResolvedRoute(pools=("cloud/serving", "premises/a", "premises/b"), policy="overflow",
                                           queue_per_replica=math.inf, wait_s=math.inf, weights=(), rule=None)
    assert routes["confidential"].pools == ("premises/a", "premises/b")
    assert routes["confidential"].rule is None


def test_without_classes_the_default_class_takes_the_implicit_rule() -> None:
    routes = class_routes(sim.load_scenario(S1))
    assert routes == {"default": ResolvedRoute(pools=("premises/gpus",), policy="overflow",
                                               queue_per_replica=math.inf, wait_s=math.inf, weights=(), rule=None)}


def test_a_second_serving_pool_at_the_inference_site_takes_requests_on_failover() -> None:
    """No longer an error: without rules it comes after the first pool, for failover."""
    scenario = sim.load_scenario(S1, ["sites.premises.pools=[{name: gpus, gpu: l40s, count: 4}, "
                                      "{name: spare, gpu: l4, count: 2, roles: [serving]}]"])
    assert class_routes(scenario)["default"].pools == ("premises/gpus", "premises/spare")


def test_serving_pool_names_are_in_file_order_with_default_names() -> None:
    """Sites in file order, pools in file order; unnamed pools get '<gpu>' or '<gpu>-<i>';
    training-only and empty pools do not serve."""
    doc = burst_doc()
    doc["sites"]["edge"]["pools"] = [{"gpu": "l40s", "count": 1}, {"gpu": "l40s", "count": 1},
                                     {"gpu": "l4", "count": 1}]
    doc["sites"]["cloud"]["pools"].append({"name": "empty", "gpu": "l40s", "count": 0, "roles": ["serving"]})
    doc["routing"] = [{"pools": ["edge/l40s-0", "edge/l40s-1", "edge/l4", "cloud/burst"]}]
    scenario = load(doc)
    assert serving_pool_names(scenario) == ["edge/l40s-0", "edge/l40s-1", "edge/l4", "cloud/burst"]


# ------------------------------------------------------------------------------------------
# Autoscale and billing fields
# ------------------------------------------------------------------------------------------


def test_autoscale_defaults_and_units() -> None:
    """Scale to zero, queue length, every 30 s, the pool's delay, 5 min cooldown; a ttft target
    reads units."""
    scenario = load(burst_doc(), ["sites.cloud.pools[0].autoscale={max_replicas: 4, metric: ttft, target: 500ms, "
                                  "interval: 1min, provisioning_delay: 90s, cooldown: 0s}"])
    scale = scenario.sites["cloud"].pools[0].autoscale
    assert scale is not None
    assert (scale.metric, scale.target, scale.interval, scale.provisioning_delay, scale.cooldown) == \
        ("ttft", 0.5, 60.0, 90.0, 0.0)
    default = load(burst_doc()).sites["cloud"].pools[0]
    assert default.billing == "per_second"
    assert default.autoscale is not None
    assert (default.autoscale.min_replicas, default.autoscale.metric, default.autoscale.interval,
            default.autoscale.provisioning_delay, default.autoscale.cooldown) == \
        (0, "queue_per_replica", 30.0, None, 300.0)


def test_routing_autoscale_and_billing_round_trip(write_yaml: WriteYaml) -> None:
    """The resolved scenario, written out (SI units, defaults spelled out), loads back the same."""
    doc = burst_doc()
    doc["sites"]["cloud"]["pools"][0]["billing"] = "per_hour"
    doc["sites"]["cloud"]["pools"][0]["autoscale"] = {"min_replicas": 1, "max_replicas": 4, "metric": "ttft",
                                                      "target": "800ms", "provisioning_delay": "3min"}
    doc["routing"].append({"classes": ["chat"], "pools": ["cloud/burst", "edge/gpus"], "policy": "weighted",
                           "weights": [1, 3]})
    del doc["routing"][1]  # chat is named now, so the catch-all would take nothing
    scenario = sim.load_scenario(write_yaml(doc))
    dumped = dump_scenario(scenario)
    again = sim.load_scenario(write_yaml(yaml.safe_load(dumped), "again.yaml"))
    assert spec_hash(again) == spec_hash(scenario)
    assert dump_scenario(again) == dumped
    assert class_routes(again) == class_routes(scenario)
    pool = again.sites["cloud"].pools[0]
    assert pool.billing == "per_hour" and pool.autoscale is not None and pool.autoscale.target == 0.8


# ------------------------------------------------------------------------------------------
# Every mistake, at the field to change
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    overrides: tuple[str, ...]
    path: str
    message: str
    allowed: str = ""


CASES: dict[str, Case] = {
    # rules: pools
    "unknown pool": Case(("routing[1].pools[1]=cloud/brust",), "routing[1].pools[1]",
                         "did you mean 'cloud/burst'?", "edge/gpus, cloud/burst"),
    "pool without its site": Case(("routing[0].pools[0]=gpus",), "routing[0].pools[0]",
                                  "pools are named 'site/pool'", "edge/gpus"),
    "pool that does not serve": Case(("routing[1].pools[1]=cloud/training",), "routing[1].pools[1]",
                                     "'cloud/training' does not serve", "add 'serving' to its roles"),
    "pool without GPUs": Case(("sites.cloud.pools[1].roles=[serving]", "sites.cloud.pools[1].count=0",
                               "routing[1].pools[1]=cloud/training"), "routing[1].pools[1]",
                              "'cloud/training' has no GPUs", "a count >= 1"),
    "pool twice in a rule": Case(("routing[1].pools[1]=edge/gpus",), "routing[1].pools[1]",
                                 "already routing[1].pools[0]", "each pool once"),
    # rules: classes
    "unknown class": Case(("routing[0].classes=[confidental]",), "routing[0].classes[0]",
                          "did you mean 'confidential'?", "chat, confidential"),
    "class named twice": Case(("routing[1].classes=[chat, confidential]",), "routing[1].classes[1]",
                              "'confidential' already takes routing[0]", "each class in one rule"),
    "an empty class list": Case(("routing[0].classes=[]",), "routing[0].classes",
                               "at least 1"),
    "no rule takes a class": Case(("routing=[{classes: [chat], pools: [edge/gpus, cloud/burst]}]",), "routing",
                                  "no rule takes class 'confidential'", "a rule without classes"),
    "two catch-alls": Case(("routing[0].classes=null",), "routing[1].classes",
                           "routing[0] already takes every class that no rule names", "chat, confidential"),
    "a catch-all that takes no class": Case(
        ("routing=[{classes: [confidential], pools: [edge/gpus]}, {pools: [edge/gpus]}, "
         "{classes: [chat], pools: [edge/gpus, cloud/burst]}]",), "routing[1]",
                                            "every class is named by a rule", "remove the rule"),
    # rules: policy
    "weights under overflow": Case(("routing[1].weights=[1, 1]",), "routing[1].weights",
                                   "only under policy weighted", "policy: weighted"),
    "overflow under weighted": Case(("routing[1].policy=weighted", "routing[1].weights=[1, 1]"),
                                    "routing[1].overflow", "only under policy overflow", "policy: overflow"),
    "weighted without weights": Case(("routing[0].policy=weighted",), "routing[0].weights",
                                     "needs a weight per pool", "one weight >= 0 per pool (1)"),
    "too few weights": Case(("routing[1].policy=weighted", "routing[1].overflow=null", "routing[1].weights=[1]"),
                            "routing[1].weights", "1 weights for 2 pools", "2 weights"),
    "a negative weight": Case(("routing[1].policy=weighted", "routing[1].overflow=null", "routing[1].weights=[1, -1]"),
                              "routing[1].weights[1]", "", ">= 0"),
    "weights summing to 0": Case(("routing[1].policy=weighted", "routing[1].overflow=null",
                                  "routing[1].weights=[0, 0]"), "routing[1].weights", "sum to 0", "at least one > 0"),
    "a negative threshold": Case(("routing[1].overflow.queue_per_replica=-1",),
                                 "routing[1].overflow.queue_per_replica", "", ">= 0"),
    # what the rules resolve to
    "residency leaves a class no pool": Case(("routing[0].pools=[cloud/burst]",), "workload.classes[1].residency",
                                             "class 'confidential' may be served only at edge (residency [private]), "
                                             "and routing[0] has no serving pool there", "a wider residency"),
    "residency leaves a class weight 0": Case(
        ("routing=[{pools: [cloud/burst, edge/gpus], policy: weighted, weights: [1, 0]}]",),
        "workload.classes[1].residency", "where routing[0] gives its pools (edge/gpus) weight 0", "a weight > 0"),
    "a pool no rule names": Case(("routing[1].pools=[edge/gpus]", "routing[1].overflow=null"),
                                 "sites.cloud.pools[0].roles", "no routing rule names 'cloud/burst'",
                                 "a routing rule that names 'cloud/burst'"),
    "a pool only residency-barred classes reach": Case(
        ("routing[0].pools=[edge/gpus, cloud/burst]", "routing[1].pools=[edge/gpus]", "routing[1].overflow=null"),
        "sites.cloud.pools[0].roles", "no class that takes a rule naming 'cloud/burst' may be served at site 'cloud'",
        "roles [training]"),
    "a routed site without a link": Case(("links={}", "workload.origin=edge"), "routing[1].pools[1]",
                                         "sites 'edge' and 'cloud' exchange requests and responses but no link",
                                         "ends: [edge, cloud]"),
    # autoscale
    "premises autoscaler beyond the GPUs it owns": Case(
        ("sites.edge.pools[0].autoscale={max_replicas: 3, target: 4}",), "sites.edge.pools[0].autoscale.max_replicas",
        "premises pool 'gpus' can grow only up to the 2 GPUs it owns", "a value <= 2"),
    "cloud autoscaler on a pool that is not elastic": Case(
        ("sites.cloud.pools[0].elastic=false", "sites.cloud.pools[0].max_count=null"), "sites.cloud.pools[0].elastic",
        "cloud pool 'burst' has an autoscaler but cannot grow", "elastic: true with max_count >= 4"),
    "cloud autoscaler beyond max_count": Case(("sites.cloud.pools[0].max_count=3",), "sites.cloud.pools[0].max_count",
                                              "fewer than its autoscaler's max_replicas 4", "a value >= 4"),
    "cloud pool holding more than the autoscaler runs": Case(
        ("sites.cloud.pools[0].count=4", "sites.cloud.pools[0].autoscale.max_replicas=2"), "sites.cloud.pools[0].count",
        "more GPUs from the start than its autoscaler may run", "a value <= 2"),
    "min_replicas above max_replicas": Case(("sites.cloud.pools[0].autoscale.min_replicas=5",),
                                            "sites.cloud.pools[0].autoscale.min_replicas",
                                            "'burst': min_replicas is above max_replicas (4)", "a value <= 4"),
    "min_replicas equal to max_replicas": Case(("sites.cloud.pools[0].autoscale.min_replicas=4",),
                                               "sites.cloud.pools[0].autoscale.max_replicas",
                                               "pool 'burst' can never scale", "a value > min_replicas (4)"),
    "autoscaler on a pool that does not serve": Case(
        ("sites.cloud.pools[1].autoscale={max_replicas: 2, target: 4}",), "sites.cloud.pools[1].autoscale",
        "pool 'training' does not serve", "roles that include 'serving'"),
    "max_replicas 0": Case(("sites.cloud.pools[0].autoscale.max_replicas=0",),
                           "sites.cloud.pools[0].autoscale.max_replicas", "", ">= 1"),
    "utilisation above 1": Case(("sites.cloud.pools[0].autoscale.metric=utilisation",
                                 "sites.cloud.pools[0].autoscale.target=1.5"), "sites.cloud.pools[0].autoscale.target",
                                "a busy fraction in (0, 1]", ""),
    "a duration as a queue target": Case(("sites.cloud.pools[0].autoscale.target=500ms",),
                                         "sites.cloud.pools[0].autoscale.target", "is a plain number", ""),
    "a number without unit is seconds for ttft, but not a bad unit": Case(
        ("sites.cloud.pools[0].autoscale.metric=ttft", "sites.cloud.pools[0].autoscale.target=5parsecs"),
        "sites.cloud.pools[0].autoscale.target", "unknown duration unit", ""),
    "an elastic serving pool nothing grows": Case(("sites.cloud.pools[0].autoscale=null",),
                                                  "sites.cloud.pools[0].elastic", "would never grow",
                                                  "autoscale: {...} on a serving pool"),
    # billing
    "hourly billing on premises": Case(("sites.edge.pools[0].billing=per_hour",), "sites.edge.pools[0].billing",
                                       "pool 'gpus' is on premises", "per_second (the default)"),
    "unknown billing": Case(("sites.cloud.pools[0].billing=per_minute",), "sites.cloud.pools[0].billing",
                            "", "per_second"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_mistake_is_reported_at_the_field_to_change(case: Case) -> None:
    """One mistake in the valid burst document: an issue at the field to change, saying what
    is wrong (naming the pool or class) and what is allowed."""
    issue = issue_at(burst_doc(), list(case.overrides), case.path)
    assert case.message in issue.message, f"{case.message!r} not in {issue.message!r}"
    assert case.allowed in issue.allowed, f"{case.allowed!r} not in {issue.allowed!r}"


def test_the_implicit_rule_leaving_a_class_no_pool_names_the_class() -> None:
    """S2 serves in the cloud; a private-only class has nowhere to go without a fallback."""
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(S2, ["workload.classes=[{name: open, share: 0.5}, "
                               "{name: secret, share: 0.5, residency: [private]}]"])
    (issue,) = caught.value.issues
    assert issue.path == "workload.classes[1].residency"
    assert "class 'secret' may be served only at premises" in issue.message
    assert "the implicit rule" in issue.message


def test_a_serving_pool_at_a_site_nothing_routes_to_names_the_pool() -> None:
    """Without rules, a premises serving pool in S2 (no fallback) receives nothing."""
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(S2, ["sites.premises.pools=[{name: local, gpu: l4, count: 1, roles: [serving]}]"])
    (issue,) = caught.value.issues
    assert issue.path == "sites.premises.pools[0].roles"
    assert "'local' may serve, but no request is sent to site 'premises'" in issue.message
    assert "a routing rule that names 'premises/local'" in issue.allowed


def test_a_rule_reaching_a_pool_only_on_failover_makes_it_routable() -> None:
    """A pool that takes requests only when the earlier pools fail is still on a route."""
    scenario = load(burst_doc(), ["routing[1].overflow=null"])
    assert class_routes(scenario)["chat"].pools == ("edge/gpus", "cloud/burst")
