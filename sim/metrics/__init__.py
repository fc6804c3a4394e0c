"""Metrics of a finished run: privacy, cost and energy.

Latency and throughput come from the requests table (`sim.result`). The other axes a
placement is judged on are measured here, from a `World` that has run to its horizon:

- `ledger`: the privacy ledger (every transfer between sites) and exposure: what third
  parties get to see, how it scores, and how long it rests there.
- `energy`: GPU time held and busy per pool, and the energy and carbon that took.
- `cost`: cloud GPU-hours, egress, storage, premises capex, ops and energy, in USD.

`measure(world)` runs all three and returns the tables (`transfers`, `costs`, `gpu_usage`)
and the summary fields (DESIGN.md §2 names; breakdowns nested under the same stems):

    >>> import sim
    >>> from sim.metrics import measure
    >>> from sim.world import World
    >>> scenario = sim.load_scenario("scenarios/s2_cloud_training.yaml", ["horizon=10min", "warmup=1min"])
    >>> world = World(scenario)
    >>> _ = world.run()
    >>> tables, summary = measure(world)
    >>> summary["exposed_records_by_class"]["prompt"] == len(world.requests)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sim.metrics.cost import cost_breakdown, cost_summary
from sim.metrics.energy import energy, gpu_usage
from sim.metrics.ledger import exposure, privacy_ledger

if TYPE_CHECKING:
    from sim.world.world import World


def measure(world: World) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The privacy, cost and energy tables and summary fields of a run that reached its horizon."""
    scenario = world.scenario
    ledger = privacy_ledger(world)
    usage = gpu_usage(world)
    costs = cost_breakdown(world, ledger, usage)
    summary = {
        **exposure(ledger, scenario, scenario.horizon),
        **cost_summary(costs, world),
        **energy(world, usage),
    }
    return {"transfers": ledger, "costs": costs, "gpu_usage": usage}, summary


__all__ = ["cost_breakdown", "cost_summary", "energy", "exposure", "gpu_usage", "measure", "privacy_ledger"]
