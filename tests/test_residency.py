"""Residency: a traffic class with `residency: [private]` is never served at a third-party site.

The property runs whole worlds: clients at a private site `home` with one or two owned serving
pools, a cloud site `cloud` (third_party) with one or two serving pools (some autoscaled from
zero), a WAN between them, and two traffic classes: `confidential` (`residency: [private]`, its
own data class) and `general` (anywhere). Hypothesis draws the routing rules (one rule for
both classes or one each, in either order, the catch-all or not; pools in any order; overflow
with or without thresholds, or weighted splits with zero weights allowed), the service time,
the class shares and the faults (WAN outages, outages of either site, replica failures, a
client timeout). Whatever it draws, every confidential request is served at `home` or reaches
no pool, the privacy ledger carries none of its bytes to or from the cloud, and its exposure
is zero; general requests do reach the cloud (a targeted case below, and `event`s in the
property's statistics), so the property is not vacuous.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sim
from sim.metrics.ledger import privacy_ledger
from sim.record import NO_POOL, RunRecord
from sim.result import collect
from sim.spec.errors import SpecError
from sim.world.world import World

HORIZON_S = 60.0
HOME_POOLS = ["home/h0", "home/h1"]
CLOUD_POOLS = ["cloud/c0", "cloud/c1"]
ZERO_EXPOSURE = {"exposed_bytes": 0.0, "exposed_records": 0, "exposure_score": 0.0}
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def home_pool(name: str) -> dict[str, Any]:
    return {"name": name, "gpu": "l4", "count": 1, "roles": ["serving"]}


def cloud_pool(name: str, autoscaled: bool) -> dict[str, Any]:
    if not autoscaled:
        return {"name": name, "gpu": "l4", "count": 1, "roles": ["serving"]}
    return {"name": name, "gpu": "l4", "count": 0, "roles": ["serving"], "elastic": True, "max_count": 2,
            "autoscale": {"min_replicas": 0, "max_replicas": 2, "target": 1, "interval": "5s",
                          "provisioning_delay": "5s", "cooldown": "10s"}}


def scenario_doc(n_home: int = 1, n_cloud: int = 1, autoscaled: tuple[bool, ...] = (False, False),
                 routing: list[dict[str, Any]] | None = None, faults: dict[str, Any] | None = None,
                 confidential_share: float = 0.5, service_s: float = 0.5, rate_per_s: float = 3.0) -> dict[str, Any]:
    """The two-site world (see the module doc)."""
    return {
        "name": "residency",
        "horizon": f"{HORIZON_S:g}s",
        "warmup": "0s",
        "sites": {
            "home": {"zone": "private", "pools": [home_pool(f"h{i}") for i in range(n_home)]},
            "cloud": {"zone": "third_party", "provider": "aws",
                      "pools": [cloud_pool(f"c{i}", autoscaled[i]) for i in range(n_cloud)]},
        },
        "links": {"wan": {"ends": ["home", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}},
        "model": {"id": "llama-3.1-8b", "service_time": {"dist": "exponential", "mean": service_s}},
        "workload": {
            "origin": "home",
            "arrivals": {"process": "poisson", "rate_per_s": rate_per_s},
            "prompt_tokens": {"dist": "fixed", "value": 100},
            "output_tokens": {"dist": "fixed", "value": 50},
            "classes": [
                {"name": "confidential", "share": confidential_share, "data_class": "secret",
                 "residency": ["private"]},
                {"name": "general", "share": round(1.0 - confidential_share, 6)},
            ],
        },
        "placement": {"inference": "home", "model_registry": "home"},
        "routing": routing or [],
        "faults": faults or {},
        "privacy": {"data_classes": {"prompt": {"sensitivity": 1.0}, "response": {"sensitivity": 0.5},
                                     "secret": {"sensitivity": 10.0}}},
    }


# ------------------------------------------------------------------------------------------
# The property
# ------------------------------------------------------------------------------------------


def check_residency(record: RunRecord) -> int:
    """Assert that confidential traffic stayed at private sites; return how many general
    requests a third-party site served."""
    req = record.requests
    confidential = req.traffic_class == record.class_names.index("confidential")
    zones = np.array([record.pools[name].zone for name in record.pool_names] + [""])
    zone = zones[np.where(req.pool >= 0, req.pool, len(record.pool_names))]
    assert confidential.any(), "no confidential request drawn: the example checks nothing"
    misplaced = confidential & (req.pool != NO_POOL) & (zone != "private")
    assert not misplaced.any(), f"confidential requests served at {set(zone[misplaced])}"
    ledger = privacy_ledger(record)
    secret = ledger[ledger["traffic_class"] == "confidential"]
    assert not (secret["from_site"].eq("cloud") | secret["to_site"].eq("cloud")).any()
    assert not ledger["data_class"].eq("secret").any()
    result = collect(record)
    assert result.summary["classes"]["confidential"]["exposure"] == ZERO_EXPOSURE
    assert result.summary["exposed_records_by_class"]["secret"] == 0
    general = req.traffic_class == record.class_names.index("general")
    return int((general & (zone == "third_party")).sum())


pool_orders = st.permutations(HOME_POOLS + CLOUD_POOLS)


@st.composite
def policies(draw: st.DrawFn, pools: list[str]) -> dict[str, Any]:
    """overflow (thresholds or none) or weighted (weights >= 0, some home pool > 0)."""
    if draw(st.booleans()):
        rule: dict[str, Any] = {"policy": "overflow"}
        thresholds = {}
        if draw(st.booleans()):
            thresholds["queue_per_replica"] = draw(st.sampled_from([0, 0.5, 1, 3]))
        if draw(st.booleans()):
            thresholds["wait"] = draw(st.sampled_from([0, 0.2, 1.0]))
        if thresholds:
            rule["overflow"] = thresholds
        return rule
    weights = [draw(st.sampled_from([0, 0.5, 1, 3])) for _ in pools]
    home = [i for i, name in enumerate(pools) if name.startswith("home/")]
    if not any(weights[i] > 0 for i in home):
        weights[home[0]] = 1  # confidential keeps a pool of positive weight (else a SpecError)
    return {"policy": "weighted", "weights": weights}


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    n_home, n_cloud = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    every = HOME_POOLS[:n_home] + CLOUD_POOLS[:n_cloud]
    autoscaled = tuple(draw(st.booleans()) for _ in range(2))

    def ordered(names: list[str]) -> list[str]:
        return draw(st.permutations(names))

    if draw(st.booleans()):  # one rule for both classes: every pool, in some order
        pools = ordered(every)
        routing = [{"pools": pools, **draw(policies(pools))}]
    else:  # one each: confidential's names a home pool (cloud pools too, maybe); general's all
        extra = draw(st.lists(st.sampled_from(every), unique=True))
        secret_pools = ordered(list(dict.fromkeys([draw(st.sampled_from(every[:n_home])), *extra])))
        general_pools = ordered(every)
        secret_rule = {"classes": ["confidential"], "pools": secret_pools, **draw(policies(secret_pools))}
        general_rule = {"pools": general_pools, **draw(policies(general_pools))}
        if draw(st.booleans()):
            general_rule["classes"] = ["general"]
        routing = [secret_rule, general_rule] if draw(st.booleans()) else [general_rule, secret_rule]
    windows = st.lists(st.fixed_dictionaries({"start": st.floats(0, HORIZON_S - 1).map(lambda t: round(t, 2)),
                                              "duration": st.sampled_from([1, 5, 20])}), min_size=1, max_size=2)
    faults: dict[str, Any] = {}
    if draw(st.booleans()):
        faults["link_outages"] = [{"link": "wan", "windows": draw(windows)}]
    sites_out = draw(st.lists(st.sampled_from(["home", "cloud"]), unique=True, max_size=2))
    if sites_out:
        faults["site_outages"] = [{"site": site, "windows": draw(windows)} for site in sites_out]
    if draw(st.booleans()):
        faults["replica_failures"] = [{"site": "home", "pool": "h0", "at": [draw(st.floats(0, HORIZON_S))],
                                       "mttr": draw(st.sampled_from([2, 10])), "distribution": "deterministic"}]
    if draw(st.booleans()):
        faults["retry"] = {"timeout": draw(st.sampled_from([1, 5])), "max_attempts": draw(st.integers(1, 3))}
    return scenario_doc(n_home, n_cloud, autoscaled, routing, faults,
                        confidential_share=draw(st.sampled_from([0.2, 0.5, 0.8])),
                        service_s=draw(st.sampled_from([0.2, 0.5, 1.0])),
                        rate_per_s=draw(st.sampled_from([1.0, 3.0])))


@PROPERTY
@given(topologies(), st.integers(0, 2**16))
def test_a_confidential_request_never_reaches_a_third_party_site(doc: dict[str, Any], seed: int) -> None:
    """Whatever the rules and faults: confidential requests are served at `home` or nowhere
    (pool -1), no ledger row carries them to or from the cloud, their exposure is zero."""
    doc["seed"] = seed
    record = World(sim.load_scenario(doc)).run()
    general_at_cloud = check_residency(record)
    event("general requests reached the cloud" if general_at_cloud else "no request reached the cloud")
    if doc["faults"]:
        event("with faults")


def test_general_traffic_does_reach_the_cloud() -> None:
    """The property is not vacuous: with a 1:1 weighted split over home and cloud (and a WAN
    outage in the middle), about half of the general requests are served in the cloud and
    leave ledger rows there, while every confidential one stays at home."""
    doc = scenario_doc(routing=[{"pools": ["home/h0", "cloud/c0"], "policy": "weighted", "weights": [1, 1]}],
                       faults={"link_outages": [{"link": "wan", "windows": [{"start": 20, "duration": 10}]}]})
    record = World(sim.load_scenario(doc)).run()
    general_at_cloud = check_residency(record)
    general = int((record.requests.traffic_class == record.class_names.index("general")).sum())
    assert 0.25 * general < general_at_cloud < 0.75 * general
    ledger = privacy_ledger(record)
    assert set(ledger.loc[ledger["to_site"] == "cloud", "traffic_class"]) == {"general"}


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def issues_of(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(doc)
    return {issue.path: issue.message for issue in caught.value.issues}


@pytest.mark.parametrize("routing", [
    [{"classes": ["confidential"], "pools": ["cloud/c0"]}, {"pools": ["home/h0", "cloud/c0"]}],
    [{"pools": ["cloud/c0"]}, {"classes": ["general"], "pools": ["home/h0"]}],
], ids=["its own rule", "the catch-all"])
def test_a_residency_that_leaves_a_class_no_pool_is_an_error_naming_the_class(routing: list[dict[str, Any]]) -> None:
    """confidential may be served only at home, and its rule names only the cloud pool."""
    message = issues_of(scenario_doc(routing=routing))["workload.classes[0].residency"]
    assert "class 'confidential'" in message and "home" in message and "no serving pool there" in message


def test_a_residency_that_leaves_a_class_only_zero_weights_is_an_error_naming_the_class() -> None:
    """A weighted rule whose only home pool has weight 0 leaves confidential nothing to pick."""
    doc = scenario_doc(routing=[{"pools": ["home/h0", "cloud/c0"], "policy": "weighted", "weights": [0, 1]}])
    message = issues_of(doc)["workload.classes[0].residency"]
    assert "class 'confidential'" in message and "weight 0" in message


def test_a_residency_without_routing_rules_names_the_class_when_inference_is_in_the_cloud() -> None:
    """Without rules, the implicit route is placement.inference: the cloud, where confidential
    may not go; the home pool, on no route then, is reported too."""
    doc = scenario_doc()
    doc["placement"]["inference"] = "cloud"
    issues = issues_of(doc)
    assert "class 'confidential'" in issues["workload.classes[0].residency"]
