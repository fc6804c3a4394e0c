"""deploysim: where should an AI model be trained, hosted and run?

A discrete-event simulator and cost/latency analyzer that compares deployment placements
(local serving, cloud training, local training, cloud-served local inference) by latency,
privacy exposure, drift-recovery time and cost.

    >>> import sim
    >>> scenario = sim.load_scenario("scenarios/s1_local.yaml", ["workload.arrivals.rate_per_s=4"])
    >>> scenario.workload.arrivals.rate_per_s
    4.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sim.version import __version__

if TYPE_CHECKING:
    from sim.decision import Decision, decide
    from sim.experiment import Comparison, compare, simulate
    from sim.planning import plan
    from sim.result import Result
    from sim.spec import Scenario, SpecError, load_scenario

# The public names, imported when first used: `deploysim --help` (and any command that needs
# only the spec) does not pay for pandas, numba, SciPy and SimPy.
_LAZY = {"Comparison": "sim.experiment", "compare": "sim.experiment", "simulate": "sim.experiment",
         "plan": "sim.planning", "decide": "sim.decision", "Decision": "sim.decision", "Result": "sim.result", "Scenario": "sim.spec", "SpecError": "sim.spec",
         "load_scenario": "sim.spec"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


def detect(detector: str, values, **params):  # noqa: ANN001, ANN201
    """Indices where a drift detector fires on a stream of values.

    >>> import numpy as np, sim
    >>> errors = np.r_[np.zeros(2000), np.ones(200)]
    >>> len(sim.detect("adwin", errors, delta=0.002)) > 0
    True

    Detectors: adwin, page_hinkley, kswin (River's `river.drift`), ddm, eddm
    (`river.drift.binary`, 0/1 values) and psi (population stability index). Parameters use
    River's names. See `sim.detectors.detect`.
    """
    from sim.detectors import detect as run_detect  # River takes a second to import

    return run_detect(detector, values, **params)

__all__ = ["Comparison", "Decision", "Result", "Scenario", "SpecError", "__version__", "compare", "decide", "detect",
           "load_scenario", "plan", "simulate", "sweep"]


def sweep(path_or_spec, **options):  # noqa: ANN001, ANN003, ANN201
    """Run a sweep file's points on a Dask cluster (see `sim.sweep.sweep`); returns its rows.

    >>> rows = sim.sweep("scenarios/sweeps/rate_x_rtt.yaml", workers=2)  # doctest: +SKIP
    """
    from sim.sweep import sweep as run_sweep  # Dask takes a moment to import

    return run_sweep(path_or_spec, **options)
