"""Serving pools in the SimPy world: the control plane's handle on a batching kernel.

A serving pool is a named group of model replicas on one GPU pool at one site (`site/pool`),
behind a router. The requests it serves live in the world's one numba kernel for all pools
(`sim.kernels.batching.ClusterKernel`: pool choice, paths, queues, batches), which owns every
per-request array and is advanced lazily. A `ServingPool` is pool p of that kernel (its
replicas numbered from 0 here), knows its site, GPUs and replica setup, and enforces
one rule: **before the control plane changes the pool or reads its outcomes, the kernel is
advanced to `env.now`**. Every control call here does that first, so a drifted model, a
training job taking GPUs or a failed replica changes the pool at the right simulated time,
and an iteration already running finishes as on a real GPU.

`pool_setup` says what a scenario's serving pool is (its site and GPUs, the replica from
`sim.kernels.replica`, the service model); its kernel is assembled by
`sim.kernels.replica.build_pool`, the one assembly `predict` and calibration use too. A managed
model API (a pool of kind api) is a pool with no replicas: its setup is its catalog entry
(`api_setup`), its kernel pool an `ApiConfig`; the control plane has nothing to change on it.

Who may change a pool: the world's control processes (lifecycle, training, faults, the
autoscaler), only through these calls: `drain`, `release`, `activate`, `set_version`,
`wait_idle`, `provision` (the autoscaler: GPUs requested, held and billed before the replica
serves), and for faults `fail` and `restore`. Waits are exact: `wait_idle` wakes at the iteration end at which
the replica's last sequence finishes, never on a polling step; whoever needs to know when a
pool's replicas change state (the training queue) subscribes with `on_change`.

A failed replica is DOWN until repaired. Faults and the lifecycle do not coordinate: while a
replica is down, the lifecycle's calls (drain, release, activate) only record the state it
returns to, and overlapping failures of one replica (a GPU failure during a site outage) keep
it down until the last of them is repaired. A down replica still holds its GPUs (owned
hardware, or a cloud instance billed until replaced) unless the lifecycle had released it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.catalog import GPU, ManagedApi, Model
from sim.kernels.batching import (
    ACTIVE,
    DOWN,
    DRAINING,
    OFFLINE,
    ApiConfig,
    ClusterKernel,
)
from sim.kernels.replica import replica_setup
from sim.kernels.roofline import work_seconds
from sim.kernels.service_models import UNBOUNDED_TOKENS, kernel_arguments
from sim.record import PoolRecord
from sim.spec.scenario import Pool, Scenario

# ------------------------------------------------------------------------------------------
# Assembling a pool
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSetup:
    """What a serving pool is, before it runs: where, on what, and its kernel's arguments."""

    name: str  # "site/pool"
    site: str
    zone: str
    pool: Pool
    gpu_id: str
    gpu: GPU | None  # None: a managed API
    model: Model
    tp: int
    replicas: int
    active_replicas: int
    kernel_options: Mapping[str, Any]
    api: ManagedApi | None = None  # a managed API: its catalog entry, the pool's rate limit applied

    def api_config(self) -> ApiConfig:
        """A managed API pool's latency profile and rate limit, as the kernel takes them."""
        api = self.api
        assert api is not None, f"{self.name} is not a managed API"
        return ApiConfig(ttft_median_s=api.ttft.median, tpot_median_s=api.time_per_output_token.median,
                         ttft_sigma=api.ttft.sigma, tpot_sigma=api.time_per_output_token.sigma,
                         requests_per_minute=api.requests_per_minute, tokens_per_minute=api.tokens_per_minute)

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.kernel_options["kv_capacity_tokens"])


def serving_pools_of(scenario: Scenario, site: str) -> list[Pool]:
    """The pools of a site that can serve (the `serving` role, some capacity), in file order."""
    return [p for p in scenario.sites[site].pools if "serving" in p.roles and p.capacity > 0]


def api_setup(scenario: Scenario, site: str, pool: Pool) -> PoolSetup:
    """The setup of a managed API pool: no GPUs, no replicas; its catalog entry, with the rate
    limit the pool sets (each field on its own) over the catalog's."""
    catalog = scenario.resolved_catalog
    assert pool.api is not None
    api = catalog.apis[pool.api]
    if pool.rate_limit is not None:
        api = api.model_copy(update=pool.rate_limit.model_dump(exclude_unset=True))
    return PoolSetup(name=f"{site}/{pool.name}", site=site, zone=scenario.sites[site].zone, pool=pool, gpu_id="",
                     gpu=None, model=catalog.models[scenario.model.id], tp=1, replicas=0, active_replicas=0,
                     kernel_options={}, api=api)


def pool_setup(scenario: Scenario, site: str, pool: Pool, count: int, seed: int, replication: int) -> PoolSetup:
    """The setup of one serving pool of the scenario (`count`: requests, for service times)."""
    if pool.is_api:
        return api_setup(scenario, site, pool)
    catalog = scenario.resolved_catalog
    gpu = catalog.gpus[pool.gpu]
    model = catalog.models[scenario.model.id]
    m = scenario.model
    tp = pool.tp(m)
    serving_gpus = pool.count
    sharing = scenario.lifecycle.gpu_sharing
    if sharing.policy == "reserved" and scenario.placement.training == site and "training" in pool.roles:
        serving_gpus = pool.count - sharing.reserved_gpus  # reserved GPUs never serve
    replicas, active = pool.capacity // tp, serving_gpus // tp
    if pool.autoscale is not None:  # the autoscaler starts within its bounds and grows up to the top one
        replicas = pool.autoscale.max_replicas
        active = min(max(active, pool.autoscale.min_replicas), replicas)
    setup = PoolSetup(
        name=f"{site}/{pool.name}", site=site, zone=scenario.sites[site].zone, pool=pool, gpu_id=pool.gpu, gpu=gpu,
        model=model, tp=tp, replicas=replicas, active_replicas=active, kernel_options={},
    )
    options: dict[str, Any]
    if model.kind == "transformer":
        replica = replica_setup(
            catalog, m.id, pool.gpu, m.precision, tp, pool.engine_of(m),
            gpu_memory_utilization=m.serving.gpu_memory_utilization, max_model_len=m.serving.max_model_len,
            max_num_batched_tokens=m.serving.max_num_batched_tokens, kv_precision=m.serving.kv_cache_precision,
            block_size=m.serving.block_size, overrides=m.efficiency.profile_overrides(),
        )
        options = replica.kernel_options()
    else:  # classic models hold no KV cache; their service model is dynamic batching
        options = {"params": np.zeros(1), "kv_capacity_tokens": UNBOUNDED_TOKENS}
    if m.service_time is not None:  # a plain distribution: no engine around it
        options = {k: v for k, v in options.items() if k in ("params", "kv_capacity_tokens")}
    options.update(kernel_arguments(scenario, setup, count, seed, replication))
    return replace(setup, kernel_options=options)


# ------------------------------------------------------------------------------------------
# The pool in the world
# ------------------------------------------------------------------------------------------


PROVISIONING = -1
"""A replica's state in the pool's log while its GPUs are being provisioned: held (and billed),
not yet serving. The kernel sees it OFFLINE until the autoscaler activates it."""


class ServingPool:
    """Pool p of the world's serving cluster: its replicas are numbered 0..replicas-1 here
    and `kernel.pool_replicas(p)` in the kernel."""

    def __init__(self, env: simpy.Environment, setup: PoolSetup, kernel: ClusterKernel, index: int = 0) -> None:
        self.env = env
        self.setup = setup
        self.name = setup.name
        self.site = setup.site
        self.kernel = kernel
        self.index = index
        self._first = kernel.pool_replicas(index).start
        self.replicas = len(kernel.pool_replicas(index))
        self.gpus_per_replica = setup.tp
        self.version = np.zeros(self.replicas, dtype=np.int64)
        # (time, replica, state) whenever a replica changes state: GPU-time for cost and energy
        self.state_log: list[tuple[float, int, int]] = [(env.now, r, self.state(r)) for r in range(self.replicas)]
        self._failures = np.zeros(self.replicas, dtype=np.int64)  # overlapping failures per replica
        self._listeners: list[Callable[[], None]] = []
        self.timeline: list[tuple[float, np.ndarray, int]] = []
        self.provisioning: set[int] = set()  # replicas whose GPUs are being provisioned

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every change of a replica's state (exact, not polled)."""
        self._listeners.append(listener)

    def _log_state(self, r: int) -> None:
        state = self.state(r)
        if r in self.provisioning:
            state = PROVISIONING
        elif state == DOWN and self.kernel.wanted_state(self._first + r) == OFFLINE:
            state = OFFLINE  # released before or while it was down: it holds no GPUs
        self.state_log.append((self.env.now, r, state))
        for listener in self._listeners:
            listener()

    # -- reading ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Advance the cluster's kernel to the current simulated time."""
        self.kernel.advance_to(self.env.now)

    def replicas_in(self, state: int) -> list[int]:
        # one array read, not a call per replica: the control plane asks this at every tick
        return np.flatnonzero(self.kernel.states(self._first, self.replicas) == state).tolist()

    def active_replicas(self) -> list[int]:
        self.sync()
        return self.replicas_in(ACTIVE)

    def gpus_in_use(self) -> int:
        """GPUs held by replicas that are active or draining, or down but not released (a
        failed GPU is free for nothing else)."""
        down = sum(1 for r in self.replicas_in(DOWN) if self.kernel.wanted_state(self._first + r) != OFFLINE)
        held = len(self.replicas_in(ACTIVE)) + len(self.replicas_in(DRAINING)) + down + len(self.provisioning)
        return self.gpus_per_replica * held

    def snapshot(self) -> None:
        """Record (now, seconds each replica iterated, GPUs held) for the utilisation timeline."""
        self.timeline.append((self.env.now, self.busy_s(), self.gpus_in_use()))

    # -- control calls ---------------------------------------------------------------------

    def drain(self, r: int) -> None:
        self.sync()
        self.kernel.drain(self._first + r)
        self._log_state(r)

    def wait_idle(self, r: int) -> Generator[simpy.Event, Any, None]:
        """SimPy process body: wait until replica r runs nothing (after a drain).

        Wakes exactly at the end of each of r's iterations until the last running sequence
        has finished, so the wait ends at that iteration's end, never later."""
        while True:
            self.sync()
            if self.kernel.is_idle(self._first + r):
                return
            ends = self.kernel.busy_until(self._first + r)
            yield self.env.timeout(max(ends - self.env.now, 0.0) if math.isfinite(ends) else 0.0)

    def release(self, r: int) -> None:
        """Take an idle replica offline, freeing its GPUs."""
        self.sync()
        self.kernel.deactivate(self._first + r)
        self._log_state(r)

    def activate(self, r: int, version: int | None = None) -> None:
        self.sync()
        if version is not None:
            self.set_version(r, version)
        self.provisioning.discard(r)
        self.kernel.activate(self._first + r)
        self._log_state(r)

    def set_version(self, r: int, version: int) -> None:
        self.sync()
        self.version[r] = version
        self.kernel.set_version(self._first + r, version)

    def fail(self, r: int) -> np.ndarray:
        """Replica r fails now (see `PoolKernel.fail`); returns the requests that failed for good."""
        self.sync()
        self._failures[r] += 1
        if self._failures[r] > 1:
            return np.empty(0, dtype=np.int64)  # already down
        failed = self.kernel.fail(self._first + r)
        self._log_state(r)
        return failed

    def restore(self, r: int) -> None:
        """One repair of replica r; it serves again when every failure it had is repaired."""
        self.sync()
        if self._failures[r] == 0:
            return
        self._failures[r] -= 1
        if self._failures[r] == 0:
            self.kernel.restore(self._first + r)
            self._log_state(r)

    def state(self, r: int) -> int:
        """Replica r's state (sim.kernels.batching ACTIVE, DRAINING, OFFLINE, DOWN)."""
        return self.kernel.state(self._first + r)

    def is_idle(self, r: int) -> bool:
        """Replica r runs nothing and has no iteration in flight (at the last sync)."""
        return self.kernel.is_idle(self._first + r)

    def has_queued(self, r: int) -> bool:
        """Requests wait in replica r's own queue (at the last sync)."""
        return self.kernel.has_queued(self._first + r)

    def is_down(self, r: int) -> bool:
        return self.kernel.is_down(self._first + r)

    def is_offline(self, r: int) -> bool:
        return self.state(r) == OFFLINE and r not in self.provisioning

    # -- what it leaves behind -------------------------------------------------------------

    def holding_intervals(self, horizon_s: float) -> pd.DataFrame:
        """(replica, start_s, end_s): when each replica held its GPUs (active, draining, or
        down but not released), within [0, horizon]."""
        rows: list[tuple[int, float, float]] = []
        since: dict[int, float] = {}
        for t, r, state in sorted(self.state_log, key=lambda row: row[0]):
            holding = state != OFFLINE  # PROVISIONING holds
            if holding and r not in since:
                since[r] = t
            elif not holding and r in since:
                rows.append((r, since.pop(r), min(t, horizon_s)))
        rows += [(r, t, horizon_s) for r, t in since.items() if t < horizon_s]
        frame = pd.DataFrame(rows, columns=["replica", "start_s", "end_s"])
        return frame.astype({"replica": np.int64, "start_s": np.float64, "end_s": np.float64})

    def busy_s(self) -> np.ndarray:
        """Seconds each replica has spent iterating so far."""
        return self.kernel.busy_s[self._first:self._first + self.replicas].copy()

    def provision(self, r: int) -> None:
        """Replica r's GPUs are requested now (held and billed from now; see `PROVISIONING`);
        `activate` puts it into service when they are ready."""
        self.sync()
        self.provisioning.add(r)
        self._log_state(r)

    def cancel_provision(self, r: int) -> None:
        """Give back the GPUs requested for replica r before it served (it holds nothing from now)."""
        self.sync()
        self.provisioning.discard(r)
        self._log_state(r)

    def record(self, horizon_s: float) -> PoolRecord:
        """This pool as the run's record has it (after the kernel reached the horizon)."""
        s = self.setup
        times = np.array([t for t, _, _ in self.timeline], dtype=np.float64)
        busy = (np.array([b for _, b, _ in self.timeline], dtype=np.float64) if self.timeline
                else np.zeros((0, self.replicas)))
        gpus = np.array([g for _, _, g in self.timeline], dtype=np.int64)
        k = self.kernel
        autoscale = s.pool.autoscale
        return PoolRecord(
            name=self.name, site=s.site, zone=s.zone, pool=s.pool.name or "", gpu=s.gpu_id,
            gpus_per_replica=s.tp, replicas=s.replicas, active_replicas=s.active_replicas, elastic=s.pool.elastic,
            busy_s=self.busy_s(), iterations=k.iterations[self._first:self._first + self.replicas].copy(),
            holding=self.holding_intervals(horizon_s), timeline_s=times, timeline_busy_s=busy, timeline_gpus=gpus,
            frontend_lag_bound_s=k.frontend_lag_bound(self.index),
            requests_ended=k.requests_ended(self.index),
            autoscaled=autoscale is not None,
            min_replicas=autoscale.min_replicas if autoscale is not None else s.active_replicas,
            max_replicas=autoscale.max_replicas if autoscale is not None else s.replicas,
            billing=s.pool.billing, api=s.pool.api or "",
            **self._work_seconds(),
        )

    def _work_seconds(self) -> dict[str, np.ndarray]:
        """compute_s and memory_s of the record: from the kernel's work counters under the
        roofline service model; unknown (absent) under the others."""
        options = self.setup.kernel_options
        if options.get("service_model") != "roofline":
            return {}
        span = slice(self._first, self._first + self.replicas)
        compute_s, memory_s = work_seconds(options["params"], self.kernel.iterations[span].astype(np.float64),
                                           self.kernel.work[span])
        return {"compute_s": compute_s, "memory_s": memory_s}
