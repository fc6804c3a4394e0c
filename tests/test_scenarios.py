"""The shipped scenarios: they validate, and the four seeds differ only in placement and resources.

DESIGN §1: every seed scenario runs the same workload, model, drift history and seed (common
random numbers); what differs is where each stage lives and which GPUs each site holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sim

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"
SEEDS = ("s1", "s2", "s3", "s4")
SHIPPED = sorted(SCENARIOS_DIR.glob("*.yaml"))


def seed_file(prefix: str) -> Path:
    [path] = SCENARIOS_DIR.glob(f"{prefix}_*.yaml")
    return path


@pytest.fixture(scope="module")
def seeds() -> dict[str, sim.Scenario]:
    """The four seed scenarios, loaded once, keyed s1..s4."""
    return {prefix: sim.load_scenario(seed_file(prefix)) for prefix in SEEDS}


def test_scenarios_folder_is_not_empty() -> None:
    """The glob below really finds the shipped files (a wrong folder would pass vacuously)."""
    assert len(SHIPPED) >= 4


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_scenario_validates(path: Path) -> None:
    """Every file in scenarios/ loads, with its extends chain, catalog and cross-field checks."""
    scenario = sim.load_scenario(path)
    assert scenario.source == str(path)


@pytest.mark.parametrize("prefix", SEEDS)
def test_seed_scenario_file_exists_once(scenarios_dir: Path, prefix: str) -> None:
    """Each seed scenario is exactly one file sN_<name>.yaml, and its name is the file's stem."""
    files = list(scenarios_dir.glob(f"{prefix}_*.yaml"))
    assert len(files) == 1, files
    assert sim.load_scenario(files[0]).name == files[0].stem


@pytest.mark.parametrize("prefix", SEEDS)
def test_seed_scenario_opens_with_a_comment(prefix: str) -> None:
    """A seed file's first line is a comment telling the reader which scenario this is."""
    first = seed_file(prefix).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# {prefix.upper()}")


@pytest.mark.parametrize("part", ["workload", "model", "seed", "horizon", "warmup", "replications", "links",
                                  "privacy", "slo"])
def test_seeds_share_everything_but_placement(seeds: dict[str, sim.Scenario], part: str) -> None:
    """Differences between seed results come from placement alone: shared parts are identical."""
    dumps = {prefix: s.model_dump()[part] for prefix, s in seeds.items()}
    for prefix, dump in dumps.items():
        assert dump == dumps["s1"], f"{prefix} differs from s1 in {part}"


def test_seeds_share_the_drift_history(seeds: dict[str, sim.Scenario]) -> None:
    """Same drift events, base error rate, monitor and retraining policy in every seed."""
    for part in ("drift", "base_error_rate", "monitor", "retraining", "deployment"):
        values = [repr(getattr(s.lifecycle, part)) for s in seeds.values()]
        assert len(set(values)) == 1, part
    assert seeds["s1"].lifecycle.drift, "the seeds must include a drift to recover from"


def test_s1_has_no_training(seeds: dict[str, sim.Scenario]) -> None:
    """S1: everything on premises; no fine-tuning, recovery only through vendor updates."""
    p = seeds["s1"].placement
    assert (p.inference, p.model_registry, p.monitoring) == ("premises", "premises", "premises")
    assert p.training == "none"
    assert p.training_data == "none"
    assert seeds["s1"].lifecycle.vendor_updates is not None


def test_s2_serves_and_trains_in_the_cloud(seeds: dict[str, sim.Scenario]) -> None:
    """S2: inference, registry, training and monitoring in the cloud; monitoring sees requests."""
    s = seeds["s2"]
    p = s.placement
    assert (p.inference, p.model_registry, p.training, p.monitoring, p.training_data) == ("cloud",) * 5
    assert p.monitoring_sees == "requests"
    assert s.sites["cloud"].zone == "third_party"
    assert s.workload.origin == "premises"
    assert all(pool.capacity == 0 for pool in s.sites["premises"].pools)


def test_s3_trains_on_the_serving_pool(seeds: dict[str, sim.Scenario]) -> None:
    """S3: training on premises, on a pool that both serves and trains (training takes GPUs)."""
    s = seeds["s3"]
    p = s.placement
    assert (p.inference, p.model_registry, p.training, p.monitoring, p.training_data) == ("premises",) * 5
    shared = [pool for pool in s.sites["premises"].pools if set(pool.roles) == {"serving", "training"}]
    assert shared and shared[0].count > 0
    assert s.sites["premises"].zone == "private"


def test_s4_infers_locally_from_a_cloud_registry(seeds: dict[str, sim.Scenario]) -> None:
    """S4: inference and monitoring on premises; model registry and training in the cloud."""
    s = seeds["s4"]
    p = s.placement
    assert (p.inference, p.monitoring) == ("premises", "premises")
    assert (p.model_registry, p.training) == ("cloud", "cloud")
    assert p.monitoring_sees == "aggregates"
    assert 0 < p.training_sample < 1
    assert s.link_between("premises", "cloud") is not None


def test_seeds_differ_in_placement(seeds: dict[str, sim.Scenario]) -> None:
    """No two seed scenarios place their stages the same way."""
    placements = {repr(s.placement.model_dump()) for s in seeds.values()}
    assert len(placements) == len(SEEDS)
