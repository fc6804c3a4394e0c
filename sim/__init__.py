"""deploysim: where should an AI model be trained, hosted and run?

A discrete-event simulator and cost/latency analyzer that compares deployment placements
(local serving, cloud training, local training, cloud-served local inference) by latency,
privacy exposure, drift-recovery time and cost.

    >>> import sim
    >>> scenario = sim.load_scenario("scenarios/s1_local.yaml", ["workload.arrivals.rate_per_s=4"])
    >>> scenario.workload.arrivals.rate_per_s
    4.0
"""

__version__ = "0.1.0"

from sim.experiment import simulate  # noqa: E402
from sim.result import Result  # noqa: E402
from sim.spec import Scenario, SpecError, load_scenario  # noqa: E402

__all__ = ["Result", "Scenario", "SpecError", "__version__", "load_scenario", "simulate"]
