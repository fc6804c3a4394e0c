"""A serving pool in the SimPy world: the control plane's handle on a batching kernel.

A serving pool is a set of model replicas on one GPU pool, behind a router. The requests it
serves live in the numba kernel (`sim.kernels.batching.PoolKernel`), which owns every
per-request array and is advanced lazily. This class owns nothing but the kernel and the
SimPy environment's clock, and it enforces one rule: **before the control plane changes the
pool or reads its outcomes, the kernel is advanced to `env.now`**. Every control call here
does that first, so a drifted model, a training job taking GPUs or a failed replica changes
the pool at the right simulated time, and an iteration already running finishes as on a real
GPU.

Who may change it: the world's control processes (lifecycle, training, faults), only through
these calls: `drain`, `release`, `activate`, `set_version`, `wait_idle`, and for faults
`fail` and `restore`.

A failed replica is DOWN until repaired. Faults and the lifecycle do not coordinate: while a
replica is down, the lifecycle's calls (drain, release, activate) only record the state it
returns to, and overlapping failures of one replica (a GPU failure during a site outage) keep
it down until the last of them is repaired. A down replica still holds its GPUs (owned
hardware, or a cloud instance billed until replaced) unless the lifecycle had released it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from sim.kernels.batching import ACTIVE, DOWN, DRAINING, OFFLINE, PoolKernel


class ServingPool:
    def __init__(self, env: simpy.Environment, name: str, kernel: PoolKernel, gpus_per_replica: int,
                 poll_s: float = 1.0) -> None:
        self.env = env
        self.name = name
        self.kernel = kernel
        self.gpus_per_replica = gpus_per_replica
        self.poll_s = poll_s
        self.version = np.zeros(kernel.replicas, dtype=np.int64)
        # (time, replica, state) whenever a replica changes state: GPU-time for cost and energy
        self.state_log: list[tuple[float, int, int]] = [
            (env.now, r, kernel.state(r)) for r in range(kernel.replicas)
        ]
        self._failures = np.zeros(kernel.replicas, dtype=np.int64)  # overlapping failures per replica

    def _log_state(self, r: int) -> None:
        state = self.kernel.state(r)
        if state == DOWN and self.kernel.wanted_state(r) == OFFLINE:
            state = OFFLINE  # released before or while it was down: it holds no GPUs
        self.state_log.append((self.env.now, r, state))

    # -- reading ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Advance the kernel to the current simulated time."""
        self.kernel.advance_to(self.env.now)

    @property
    def replicas(self) -> int:
        return self.kernel.replicas

    def replicas_in(self, state: int) -> list[int]:
        return [r for r in range(self.kernel.replicas) if self.kernel.state(r) == state]

    def active_replicas(self) -> list[int]:
        self.sync()
        return self.replicas_in(ACTIVE)

    def gpus_in_use(self) -> int:
        """GPUs held by replicas that are active or draining, or down but not released (a
        failed GPU is free for nothing else)."""
        down = sum(1 for r in self.replicas_in(DOWN) if self.kernel.wanted_state(r) != OFFLINE)
        return self.gpus_per_replica * (len(self.replicas_in(ACTIVE)) + len(self.replicas_in(DRAINING)) + down)

    # -- control calls ---------------------------------------------------------------------

    def drain(self, r: int) -> None:
        self.sync()
        self.kernel.drain(r)
        self._log_state(r)

    def wait_idle(self, r: int) -> Generator[simpy.Event, Any, None]:
        """SimPy process body: wait until replica r runs nothing (after a drain)."""
        while True:
            self.sync()
            if self.kernel.is_idle(r):
                return
            yield self.env.timeout(self.poll_s)

    def release(self, r: int) -> None:
        """Take an idle replica offline, freeing its GPUs."""
        self.sync()
        self.kernel.deactivate(r)
        self._log_state(r)

    def activate(self, r: int, version: int | None = None) -> None:
        self.sync()
        if version is not None:
            self.set_version(r, version)
        self.kernel.activate(r)
        self._log_state(r)

    def set_version(self, r: int, version: int) -> None:
        self.sync()
        self.version[r] = version
        self.kernel.set_version(r, version)

    def fail(self, r: int) -> np.ndarray:
        """Replica r fails now (see `PoolKernel.fail`); returns the requests that failed for good."""
        self.sync()
        self._failures[r] += 1
        if self._failures[r] > 1:
            return np.empty(0, dtype=np.int64)  # already down
        failed = self.kernel.fail(r)
        self._log_state(r)
        return failed

    def restore(self, r: int) -> None:
        """One repair of replica r; it serves again when every failure it had is repaired."""
        self.sync()
        if self._failures[r] == 0:
            return
        self._failures[r] -= 1
        if self._failures[r] == 0:
            self.kernel.restore(r)
            self._log_state(r)

    def is_down(self, r: int) -> bool:
        return self.kernel.is_down(r)

    def is_offline(self, r: int) -> bool:
        return self.kernel.state(r) == OFFLINE

    def gpu_seconds_held(self, horizon_s: float) -> float:
        """GPU-seconds the pool's replicas held GPUs (active or draining) over [0, horizon]."""
        total = 0.0
        since: dict[int, float] = {}
        for t, r, state in sorted(self.state_log, key=lambda row: row[0]):
            holding = state != OFFLINE
            if holding and r not in since:
                since[r] = t
            elif not holding and r in since:
                total += min(t, horizon_s) - since.pop(r)
        total += sum(horizon_s - t for t in since.values() if t < horizon_s)
        return total * self.gpus_per_replica
