"""Service-time distributions: how much service each request needs, when a plain distribution
replaces the serving engine (`model.service_time`).

This is the M/M/c and M/D/1 of queueing theory: each replica serves one request at a time
and request i holds it for a service time drawn up front, so that the serving kernel can be
checked against the formulas (tests/test_queueing_theory.py). The times are drawn from the
"service_time" stream, one per request in request order.

- **exponential**: mean `mean` (the "M" of M/M/c);
- **deterministic**: exactly `mean` (the "D" of M/D/1), no draw;
- **lognormal**: mean `mean`, with `sigma` the standard deviation of the underlying normal
  (mu = ln(mean) - sigma^2 / 2).

Adding a distribution is registering a `ServiceTimeDistribution` here; the spec's
`model.service_time.dist` names are generated from `SERVICE_TIMES`. The spec keeps one model
(`mean`, `sigma`) for all of them rather than one model each, so that resolved scenario files
written before keep loading; a distribution with a parameter of its own adds it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from sim.spec.base import Spec
from sim.spec.families import Family
from sim.spec.units import Seconds


@dataclass(frozen=True)
class ServiceTimeDistribution:
    """One member: its name and `draw(spec, n, rng)`, n service times in seconds."""

    name: str
    draw: Callable[[ServiceTime, int, np.random.Generator], np.ndarray]


SERVICE_TIMES: Family[ServiceTimeDistribution] = Family("service-time distribution")

SERVICE_TIMES.register(ServiceTimeDistribution(
    "exponential", lambda spec, n, rng: rng.exponential(spec.mean, n)))
SERVICE_TIMES.register(ServiceTimeDistribution(
    "deterministic", lambda spec, n, rng: np.full(n, spec.mean)))
SERVICE_TIMES.register(ServiceTimeDistribution(
    "lognormal", lambda spec, n, rng: rng.lognormal(np.log(spec.mean) - spec.sigma**2 / 2, spec.sigma, n)))

if TYPE_CHECKING:
    ServiceTimeName = str
else:
    ServiceTimeName = SERVICE_TIMES.choice()


class ServiceTime(Spec):
    """Plain service-time distributions, batch size 1: the M/M/c and M/D/1 of queueing theory."""

    dist: ServiceTimeName
    mean: Seconds = Field(gt=0)
    sigma: float = Field(default=0.5, gt=0, le=4, description="lognormal: sigma of the underlying normal")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n service times (float64 seconds), one per request in request order."""
        return SERVICE_TIMES[self.dist].draw(self, n, rng)


SERVICE_TIMES.bind(ServiceTime, "dist")
