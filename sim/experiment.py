"""Running scenarios: one run, and (later) replications, comparisons and sweeps.

    >>> import sim
    >>> result = sim.simulate(sim.load_scenario("scenarios/s1_local.yaml",
    ...                       ["horizon=10min", "warmup=1min"]))
    >>> result.summary["ttft_p99_s"] < 1.0
    True
"""

from __future__ import annotations

from collections.abc import Callable

from sim.result import Result
from sim.spec.scenario import Scenario


def simulate(scenario: Scenario, replication: int = 0,
             on_progress: Callable[[float], None] | None = None) -> Result:
    """Run one replication of a scenario to its horizon and collect the results."""
    import time

    from sim.world import World

    started = time.perf_counter()
    world = World(scenario, replication)
    result = world.run(on_progress=on_progress)
    result.wall_s = time.perf_counter() - started
    return result
