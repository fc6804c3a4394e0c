"""Can a run stream, and should it? The choice between keeping every request and
summarising them as they end (issue 19).

A run *streams* (`sim.world.World(streamed=True)`) when it is large: its requests are
generated, simulated and summarised in chunks, in bounded memory, with percentiles from a
sketch. `results_mode` makes the choice that `deploysim run` and `compare` make (`auto`), and
`streaming_refusals` says what keeps a scenario from streaming. Both read the spec alone, so
`validate` asks them without loading the simulator (this module imports no numba, pandas or
SimPy).
"""

from __future__ import annotations

from typing import Any, Literal

from sim.spec.errors import SpecIssue
from sim.spec.faults import spot_terms
from sim.workload.limits import expected_requests
from sim.workload.requests import stream_refusals

STREAM_ABOVE_REQUESTS = 1_000_000
"""`auto` streams a run expected to generate more requests than this: an exact run keeps
about 1.1-1.4 kB per request (a 1M-request day peaked at 1.43 GB RSS, issue 19)."""
ResultsMode = Literal["auto", "exact", "streamed"]


def streaming_refusals(scenario: Any) -> list[SpecIssue]:
    """What keeps a scenario from running streamed (`sim.world.World(streamed=True)`), one
    issue per field (empty: nothing). Each of these needs every request at once today; exact
    mode runs them all. Decided from the spec alone (no replication's draws), and cheaply:
    `validate` asks it without loading the simulator."""
    reasons = stream_refusals(scenario.workload)
    spot = any(spot_terms(scenario, name, pool) is not None for name, site in scenario.sites.items()
               for pool in site.pools)
    if scenario.faults.any or spot:
        reasons.append(("faults", "faults (and spot interruptions) fail requests in flight and count them per fault"))
    if scenario.model.service_time is not None:
        reasons.append(("model.service_time", "service times are drawn for every request up front"))
    monitor, placement = scenario.lifecycle.monitor, scenario.placement
    if placement.monitoring != "none" and monitor.signal == "feature":
        reasons.append(("lifecycle.monitor.signal", "the feature signal reads every request's arrival"))
    sites = {name for name, site in scenario.sites.items()
             if any("serving" in pool.roles and pool.capacity > 0 for pool in site.pools)}
    if (placement.monitoring != "none" and placement.monitoring_sees == "requests"
            and any(site != placement.monitoring for site in sites)):
        reasons.append(("placement.monitoring_sees", "copies of requests to another site are counted per request"))
    return [SpecIssue(path, f"cannot run streamed yet: {why}; run it exact (--keep-requests)", has_value=False)
            for path, why in reasons]


def results_mode(scenario: Any, mode: ResultsMode = "exact") -> Literal["exact", "streamed"]:
    """How a run keeps its requests: `auto` streams a run expected to generate more than
    `STREAM_ABOVE_REQUESTS` (`expected_requests`) when it can (`streaming_refusals`), and
    keeps every request of a smaller one or one that cannot stream (which `check_run_fits`
    may then refuse); `exact` and `streamed` say so."""
    if mode != "auto":
        return mode
    if expected_requests(scenario.workload, scenario.horizon) <= STREAM_ABOVE_REQUESTS:
        return "exact"
    return "exact" if streaming_refusals(scenario) else "streamed"
