"""Measurements of a finished run, all from its `RunRecord` (`sim.record`), never the world.

One module per concept, each the only definition of what it measures:

- `latency`: TTFT, TPOT and E2E per request, their percentiles, and the SLO verdict
  (unfinished requests count as misses) used by every command.
- `utilisation`: GPU-seconds held and busy, per serving pool, GPU pool and purpose, and over
  time (busy / held, one denominator).
- `ledger`: the privacy ledger (every transfer between sites) and exposure: what third
  parties get to see, how it scores, and how long it rests there.
- `energy`: the energy and carbon of the GPU time held.
- `cost`: cloud GPU-hours, egress, storage, premises capex, ops and energy, in USD.
- `lifecycle`: drift recovery per event; the training application.
- `availability`: served while things failed; lifecycle delay caused by outages.
- `invariants`: conservation laws the runner checks on every record.

`measure(record)` runs the privacy, cost and energy measurements and returns their tables
(`transfers`, `costs`, `gpu_usage`) and summary fields (DESIGN.md §2 names):

    >>> import sim
    >>> from sim.metrics import measure
    >>> from sim.world import World
    >>> scenario = sim.load_scenario("scenarios/s2_cloud_training.yaml", ["horizon=10min", "warmup=1min"])
    >>> record = World(scenario).run()
    >>> tables, summary = measure(record)
    >>> summary["exposed_records_by_class"]["prompt"] == len(record.requests)
    True
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sim.metrics.cost import cost_breakdown, cost_summary
from sim.metrics.energy import energy, gpu_usage
from sim.metrics.ledger import exposure, privacy_ledger
from sim.record import RunRecord


def measure(record: RunRecord) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The privacy, cost and energy tables and summary fields of a run."""
    scenario = record.scenario
    ledger = privacy_ledger(record)
    usage = gpu_usage(record)
    costs = cost_breakdown(record, ledger, usage)
    summary = {
        **exposure(ledger, scenario, scenario.horizon),
        **cost_summary(costs, record),
        **energy(record, usage),
    }
    return {"transfers": ledger, "costs": costs, "gpu_usage": usage}, summary


__all__ = ["cost_breakdown", "cost_summary", "energy", "exposure", "gpu_usage", "measure", "privacy_ledger"]
