"""The serving autoscaler: one SimPy process per serving pool that has `autoscale:`.

Every `interval` (the first time at t = interval) the autoscaler advances the cluster, reads
its pool's metric over the interval just past and decides how many replicas it wants:

- `queue_per_replica`: X = requests in the pool now (waiting in its queues or running on its
  replicas) plus the requests whose route reached the pool during the interval while it had
  no active replica (`ClusterKernel.sought`: the demand a pool scaled to zero cannot queue);
  the metric is X per active replica and desired = ceil(X / target);
- `utilisation`: the fraction of the interval its active replicas spent iterating;
  desired = ceil(active x utilisation / target);
- `ttft`: the mean time to first token at the pool of the first tokens of the interval;
  one replica more when it is above the target, one less when below half of it, else as is.

With no active replica, any demand (X > 0) wants at least one. Desired is clipped to
[min_replicas, max_replicas] and compared with the replicas it has (active plus being
provisioned):

- **up**: the missing replicas (the lowest-numbered offline ones) are requested at once: their
  GPUs are held (billed, for a cloud pool) from now, and they start serving, on the newest
  model version, `provisioning_delay` later. During a capacity shortage of the pool
  (`faults.capacity_shortages`) nothing is requested (the decision says `blocked`).
- **down**: to the highest desired count of the evaluations within the last `cooldown` (a
  stabilisation window, as Kubernetes' HPA keeps for scale-down: a burst pool whose load comes
  and goes is not released between two waves), and only when `cooldown` has passed since its
  last scaling action: replicas still being provisioned are given back first (their GPUs are
  released at once), then the surplus active replicas (the highest-numbered first) stop
  taking requests (their queued requests go back to the pool), finish what they run, and
  then release their GPUs. So replicas active or on their way never fall below min_replicas.

Every evaluation is written down (`RunRecord.autoscaling`: pool, t_s, metric, replicas,
desired, action in up / down / hold / blocked).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pandas as pd
import simpy

from sim.kernels.batching import ACTIVE, OFFLINE
from sim.record import AUTOSCALE_COLUMNS

if TYPE_CHECKING:
    from sim.world.serving import ServingPool
    from sim.world.world import World


class WindowMax:
    """The highest value pushed within the last `window` seconds, the newest always included.

    A deque of (t, value) whose values fall from front to back: a value is dropped from the
    back when a newer one is at least as high (it can never be the highest again), from the
    front when it leaves the window. Each push costs O(1) amortised however many evaluations
    the window holds (a 1 ms interval under a 5 min cooldown holds 300,000).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._kept: deque[tuple[float, int]] = deque()

    def push(self, t: float, value: int) -> int:
        """Add the value of time t (times never decrease) and return the window's highest."""
        kept = self._kept
        while kept and kept[-1][1] <= value:
            kept.pop()
        kept.append((t, value))
        while kept[0][0] < t and kept[0][0] <= t - self.window_s:
            kept.popleft()
        return kept[0][1]


class Autoscaler:
    def __init__(self, world: World, pool: ServingPool) -> None:
        spec = pool.setup.pool.autoscale
        assert spec is not None, "only pools with autoscale: get an autoscaler"
        self.world = world
        self.env: simpy.Environment = world.env
        self.pool = pool
        self.spec = spec
        delay = spec.provisioning_delay
        self.provisioning_delay_s = float(pool.setup.pool.provisioning_delay if delay is None else delay)
        self.rows: list[dict[str, Any]] = []
        self._last_action_s = -math.inf
        self._recent = WindowMax(spec.cooldown)  # the desired counts within the last cooldown

    def start(self) -> None:
        self.env.process(self._run())

    # -- the metric ---------------------------------------------------------------------------

    def _demand(self, sought: int) -> int:
        kernel, p = self.pool.kernel, self.pool.index
        return kernel.queued(p) + kernel.running_count(p) + sought

    def _decide(self, active: int, current: int, busy_s: float, ttft: tuple[float, float],
                sought: int) -> tuple[float, int]:
        """(metric, desired replicas before clipping) for the interval just past."""
        spec = self.spec
        demand = self._demand(sought)
        if spec.metric == "queue_per_replica":
            metric = demand / max(active, 1)
            desired = math.ceil(demand / spec.target)
        elif spec.metric == "utilisation":
            metric = busy_s / (active * spec.interval) if active else 0.0
            desired = math.ceil(active * metric / spec.target - 1e-12)
        else:  # ttft
            total, count = ttft
            metric = total / count if count else 0.0
            if count and metric > spec.target:
                desired = current + 1
            elif metric < spec.target / 2:
                desired = current - 1
            else:
                desired = current
        if active == 0 and demand > 0:
            desired = max(desired, 1)
        return metric, desired

    # -- the process ----------------------------------------------------------------------------

    def _run(self) -> Generator[simpy.Event, Any, None]:
        pool, kernel, spec = self.pool, self.pool.kernel, self.spec
        busy_before = float(pool.busy_s().sum())
        ttft_before = kernel.ttft_counters(pool.index)
        sought_before = kernel.sought(pool.index)
        while True:
            yield self.env.timeout(spec.interval)
            pool.sync()
            now = self.env.now
            busy = float(pool.busy_s().sum())
            ttft = kernel.ttft_counters(pool.index)
            sought = kernel.sought(pool.index)
            active = pool.replicas_in(ACTIVE)
            current = len(active) + len(pool.provisioning)
            metric, wanted = self._decide(len(active), current, busy - busy_before,
                                          (ttft[0] - ttft_before[0], ttft[1] - ttft_before[1]),
                                          sought - sought_before)
            busy_before, ttft_before, sought_before = busy, ttft, sought
            desired = min(max(wanted, spec.min_replicas), spec.max_replicas)
            keep = self._recent.push(now, desired)  # the stabilisation window for scaling down
            action = "hold"
            if desired > current:
                action = self._scale_up(desired - current)
            elif keep < current and now - self._last_action_s >= spec.cooldown:
                action = self._scale_down(current - keep)
            self.rows.append({"pool": pool.name, "t_s": now, "metric": float(metric), "replicas": current,
                              "desired": desired, "action": action})

    def _scale_up(self, count: int) -> str:
        pool = self.pool
        site, name = pool.site, pool.setup.pool.name or ""
        if self.world.faults.capacity_blocked_until(site, name, self.env.now) > self.env.now:
            return "blocked"
        spare = [r for r in range(pool.replicas)
                 if pool.state(r) == OFFLINE and r not in pool.provisioning][:count]
        if not spare:
            return "hold"
        for r in spare:
            pool.provision(r)
        self._last_action_s = self.env.now
        self.env.process(self._bring_up(spare))
        return "up"

    def _bring_up(self, replicas: list[int]) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.provisioning_delay_s)
        version = self.world.lifecycle.serving_version().version
        for r in replicas:
            if r in self.pool.provisioning:  # not given back meanwhile
                self.pool.activate(r, version)

    def _scale_down(self, count: int) -> str:
        """Remove `count` replicas: those still being provisioned first (the newest first),
        then active ones (the highest-numbered first)."""
        pool = self.pool
        pending = sorted(pool.provisioning, reverse=True)[:max(count, 0)]
        for r in pending:
            pool.cancel_provision(r)
        surplus = sorted(pool.replicas_in(ACTIVE), reverse=True)[:max(count - len(pending), 0)]
        if not pending and not surplus:
            return "hold"
        for r in surplus:
            pool.drain(r)
            self.env.process(self._retire(r))
        self._last_action_s = self.env.now
        return "down"

    def _retire(self, r: int) -> Generator[simpy.Event, Any, None]:
        yield from self.pool.wait_idle(r)
        self.pool.release(r)

    # -- what it leaves behind ------------------------------------------------------------------

    def decisions_frame(self) -> pd.DataFrame:
        """One row per evaluation (AUTOSCALE_COLUMNS)."""
        return pd.DataFrame(self.rows, columns=list(AUTOSCALE_COLUMNS)).astype(AUTOSCALE_COLUMNS)
