"""Serving pools are first class: every pool a scenario declares either serves or is rejected
with an error that names it and says why (nothing a user writes is silently ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sim
from sim.spec.errors import SpecError

SCENARIOS = Path(__file__).parent.parent / "scenarios"
S1, S2 = SCENARIOS / "s1_local.yaml", SCENARIOS / "s2_cloud_training.yaml"


def issues_of(path: Path, overrides: list[str]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(path, overrides)
    return {issue.path: issue.message for issue in caught.value.issues}


def test_a_serving_pool_at_a_site_nothing_routes_to_is_an_error() -> None:
    """S2 serves in the cloud: a serving pool on premises (without a fallback) gets nothing."""
    issues = issues_of(S2, ["sites.premises.pools=[{name: local, gpu: l4, count: 1, roles: [serving]}]"])
    message = issues["sites.premises.pools[0].roles"]
    assert "'local' may serve, but no request is sent to site 'premises'" in message


def test_an_elastic_serving_pool_that_nothing_grows_is_an_error() -> None:
    """An elastic cloud serving pool without an autoscaler would never scale: only training
    (or an autoscaler) provisions GPUs."""
    issues = issues_of(S2, ["sites.cloud.pools[0].autoscale=null", "sites.cloud.pools[0].max_count=16"])
    message = issues["sites.cloud.pools[0].elastic"]
    assert "would never grow" in message and "placement.training" in message


def test_the_same_pool_as_a_fallback_serves_and_is_measured() -> None:
    """A premises serving pool is valid once placement.fallback routes to it; the world builds
    it and the run measures it like the primary pool."""
    scenario = sim.load_scenario(S2, ["horizon=10min", "warmup=0s", "placement.fallback=premises",
                                      "sites.premises.pools=[{name: local, gpu: l4, count: 1, roles: [serving]}]"])
    result = sim.simulate(scenario)
    assert set(result.summary["gpu_utilisation"]) == {"cloud/serving", "premises/local"}
    assert result.summary["requests_by_pool"] == {"cloud/serving": result.summary["requests_total"],
                                                  "premises/local": 0}
    usage = result.tables["gpu_usage"].set_index(["site", "pool"])
    held = usage.loc[("premises", "local"), "held_gpu_s"]
    assert held == pytest.approx(scenario.horizon)  # one owned L4, powered for the horizon
