"""The simulated world: sites, GPU pools, links and serving pools on one SimPy clock.

`World(scenario, replication)` builds everything a scenario describes. Requests are generated
up front as arrays (`sim.workload`), carried to the inference site over the LAN or the link
that joins the sites (`sim.kernels.links`, FIFO), served by a serving pool's kernel, and
carried back. SimPy runs the control plane: a progress clock, and the lifecycle, training and
fault processes as they arrive; each advances the pools to `env.now` before it touches them.

**Pools.** `World.pools` holds every serving pool by name (`site/pool`): the first serving
pool at `placement.inference` (the primary), and the first serving pool at
`placement.fallback` when one is named (it serves requests sent while the path to inference
is cut; `sim.world.faults`). Each request goes to exactly one of them (`assigned`), decided
before the run. Every pool is built by `sim.world.serving.pool_setup` and `sim.kernels.replica.build_pool`, gets
the lifecycle's rollouts and is seen by its monitor, and is measured like any other.

Placement decides the path: clients at `workload.origin` send to the site named by
`placement.inference`; if that is the same site, the request pays the site's LAN, otherwise
the WAN link between the two, both ways. No code here looks at a scenario's name.

`World.run()` returns a `RunRecord` (`sim.record`): the world writes down, through its
parts' public methods, what happened, and is done. Measuring it is somebody else's job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from sim.kernels.batching import DONE
from sim.kernels.links import carry
from sim.kernels.replica import build_pool
from sim.kernels.windows import window_containing
from sim.record import RequestTable, RunRecord
from sim.spec.scenario import Scenario
from sim.streams import stream
from sim.workload import Requests, generate_requests
from sim.world.faults import install_faults
from sim.world.lifecycle import Lifecycle
from sim.world.network import Network, Path, request_path
from sim.world.serving import PoolSetup, ServingPool, pool_setup, serving_pools_of

TIMELINE_STEP_S = 300.0  # resolution of the utilisation timeline


class World:
    def __init__(self, scenario: Scenario, replication: int = 0) -> None:
        self.scenario = scenario
        self.replication = replication
        self.env = simpy.Environment()
        seed = scenario.seed
        self.requests: Requests = generate_requests(scenario.workload, scenario.horizon, seed, replication)
        self.path = request_path(scenario)
        self._up_jitter, self._down_jitter = self._jitter(seed, replication)
        self.request_bytes = self.requests.payload_bytes(scenario.workload.bytes_per_token,
                                                         scenario.workload.request_overhead)
        self.response_bytes = (self.requests.output_tokens * scenario.workload.bytes_per_token
                               + scenario.workload.request_overhead)
        self.pool_arrival_s = self._uplink()
        self.pools: dict[str, ServingPool] = {}
        self.paths: dict[str, Path] = {}
        self.assigned = np.zeros(self.requests.count, dtype=np.int16)  # index into pools, per request
        self._primary = self._build_primary()
        self.network = Network(self.env)
        for link in scenario.links.values():
            self.network.add_link(link.ends[0], link.ends[1], link.bandwidth, link.rtt / 2)
        self.lifecycle = Lifecycle(self)
        # client timeouts and retries, outages on the request path (arrivals shifted, cut off or
        # sent to the fallback pool, before the first advance) and the fault processes
        self.faults = install_faults(self)

    # -- building ----------------------------------------------------------------------------

    def _build_primary(self) -> str:
        s = self.scenario
        site = s.placement.inference
        setup = pool_setup(s, site, serving_pools_of(s, site)[0], self.requests.count, s.seed, self.replication)
        loop_delay = 2 * self.path.one_way_s + self.requests.think_time_s
        kernel = build_pool(
            s.model.serving, setup.kernel_options, self.pool_arrival_s, self.requests.prompt_tokens,
            self.requests.output_tokens, replicas=setup.replicas, active_replicas=setup.active_replicas,
            prefix_group=self.requests.prefix_group, prefix_tokens=self.requests.prefix_tokens,
            router_u=stream(s.seed, self.replication, "router").random(self.requests.count),
            clients=self.requests.clients, loop_delay_s=loop_delay,
        )
        return self.add_pool(setup, kernel, self.path).name

    def add_pool(self, setup: PoolSetup, kernel: Any, path: Path, serves: np.ndarray | None = None) -> ServingPool:
        """Add a serving pool reached over `path`; `serves` marks the requests it (not the
        primary) serves."""
        pool = ServingPool(self.env, setup, kernel)
        self.pools[pool.name] = pool
        self.paths[pool.name] = path
        if serves is not None:
            self.assigned[serves] = len(self.pools) - 1
        return pool

    def _jitter(self, seed: int, replication: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.requests.count
        if self.path.jitter_s <= 0:
            return np.zeros(n), np.zeros(n)
        rng = stream(seed, replication, "jitter")
        return rng.normal(0.0, self.path.jitter_s, n), rng.normal(0.0, self.path.jitter_s, n)

    def _uplink(self) -> np.ndarray:
        if self.requests.clients > 0:  # closed loop: the kernel releases requests itself
            return self.requests.arrival_s + self.path.one_way_s
        return carry(self.requests.arrival_s, self.request_bytes, self.path.bandwidth_bytes_per_s,
                     self.path.one_way_s, self._up_jitter)

    # -- the pools, as the control plane sees them -------------------------------------------

    @property
    def pool(self) -> ServingPool:
        """The primary serving pool (the first serving pool at placement.inference)."""
        return self.pools[self._primary]

    @property
    def kernel(self) -> Any:
        """The primary pool's kernel."""
        return self.pool.kernel

    def sync(self) -> None:
        """Advance every serving pool to the current simulated time."""
        for pool in self.pools.values():
            pool.sync()

    def outcome(self, name: str, index: np.ndarray | None = None) -> np.ndarray:
        """A per-request kernel array (`status`, `done_s`, `first_token_s`, `version`,
        `arrival_s`, ...) over all pools, each request from the pool it was sent to."""
        pools = list(self.pools.values())
        if len(pools) == 1:
            values = getattr(pools[0].kernel, name)
            return values if index is None else values[index]
        chosen = self.assigned if index is None else self.assigned[index]
        out = getattr(pools[0].kernel, name).copy() if index is None else getattr(pools[0].kernel, name)[index]
        for k, pool in enumerate(pools[1:], start=1):
            mine = chosen == k
            if mine.any():
                source = getattr(pool.kernel, name)
                out[mine] = source[mine] if index is None else source[index[mine]]
        return out

    # -- running -----------------------------------------------------------------------------

    def _clock(self, slices: int, on_progress: Callable[[float], None] | None) -> Generator[simpy.Event, Any, None]:
        """Advance the pools in slices: progress for people, a utilisation timeline for reports."""
        horizon = self.scenario.horizon
        for pool in self.pools.values():
            pool.snapshot()
        for k in range(1, slices + 1):
            yield self.env.timeout(horizon * k / slices - self.env.now)
            for pool in self.pools.values():
                pool.sync()
                pool.snapshot()
            if on_progress is not None:
                on_progress(self.env.now / horizon)

    def run(self, on_progress: Callable[[float], None] | None = None, slices: int | None = None) -> RunRecord:
        """Run to the horizon and return the record of what happened."""
        started = time.perf_counter()
        if slices is None:  # about one slice per TIMELINE_STEP_S, at least 50
            slices = max(50, min(2000, math.ceil(self.scenario.horizon / TIMELINE_STEP_S)))
        self.env.process(self._clock(slices, on_progress))
        self.lifecycle.start()
        self.env.run(until=self.scenario.horizon)
        for pool in self.pools.values():
            pool.kernel.advance_to(self.scenario.horizon)
        record = self.record()
        record.wall_s = time.perf_counter() - started
        return record

    def downlink(self, send_s: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """Client arrival times of payloads the inference site sends back."""
        return carry(send_s, size_bytes, self.path.bandwidth_bytes_per_s, self.path.one_way_s,
                     self._down_jitter)

    # -- the record ---------------------------------------------------------------------------

    def record(self) -> RunRecord:
        """What happened, as plain arrays and frames (the world must have reached its horizon)."""
        s = self.scenario
        horizon = s.horizon
        faults = self.faults
        return RunRecord(
            scenario=s, replication=self.replication, requests=self._request_table(),
            pools={name: pool.record(horizon) for name, pool in self.pools.items()}, primary_pool=self._primary,
            gpu_holds=self.lifecycle.holds_frame(horizon), transfers=self.network.transfers_frame(),
            link_bytes=self.network.link_bytes_frame(),
            link_down={link: faults.plan.link_down(s, link) for link in s.links},
            stages=self.lifecycle.stages_frame(), jobs=self.lifecycle.jobs_frame(),
            detections=list(self.lifecycle.detections),
            version_created_s={v: m.created_s for v, m in self.lifecycle.drift.versions.items()},
            drift_onsets=[(e.kind, float(e.at)) for e in self.lifecycle.drift.events],
            base_error_rate=float(self.lifecycle.drift.base),
            faults=faults.table(), training_runs=faults.training_runs_frame(),
            reachability_waits=list(faults.reachability_waits), capacity_waits=list(faults.capacity_waits),
            retry_limit=faults.max_attempts,
        )

    def _request_table(self) -> RequestTable:
        req = self.requests
        n = req.count
        status = self.outcome("status").copy()
        first = self.outcome("first_token_s").copy()
        done = self.outcome("done_s").copy()
        kernel_arrival = self.outcome("arrival_s").copy()
        if req.clients == 0:
            send = np.asarray(req.arrival_s, dtype=np.float64)
            # the primary pool's arrivals as the path delivered them (NaN: never arrived); the
            # other pools' from their kernels
            pool_arrival = np.where(self.assigned == 0, self.pool_arrival_s, kernel_arrival)
        else:  # closed loop: the kernel released the request; it left one one-way delay earlier
            send = kernel_arrival - self.path.one_way_s
            pool_arrival = kernel_arrival
        client_first, client_done, downlink_send = self._client_times(status, first, done)
        routing = self.faults.routing
        empty = np.zeros(n, dtype=bool)
        served = ~np.isnan(first)
        version = self.outcome("version").copy()
        error_rate = np.full(n, np.nan)
        error_rate[served] = self.lifecycle.drift.error_rate(first[served], version[served])
        error = np.zeros(n, dtype=bool)
        error[served] = self.lifecycle.outcome_u[served] < error_rate[served]
        return RequestTable(
            send_s=send, prompt_tokens=req.prompt_tokens, output_tokens=req.output_tokens,
            prefix_group=req.prefix_group, pool=self.assigned.astype(np.int16), status=status,
            pool_arrival_s=np.asarray(pool_arrival, dtype=np.float64), dispatch_s=self.outcome("dispatch_s").copy(),
            first_token_s=first, done_s=done, replica=self.outcome("replica").copy(), version=version,
            preemptions=self.outcome("preemptions").copy(), attempts=self.outcome("attempts").copy(),
            client_first_s=client_first, client_done_s=client_done, request_bytes=self.request_bytes,
            response_bytes=np.asarray(self.response_bytes, dtype=np.float64),
            uplink_send_s=self._uplink_send_s(send), downlink_send_s=downlink_send,
            delayed=routing.delayed if routing is not None else empty,
            cut_off=routing.cut_off if routing is not None else empty,
            diverted=routing.diverted if routing is not None else empty,
            error_rate=error_rate, error=error, labelled=~np.isnan(self.lifecycle.label_times()),
        )

    def _client_times(self, status: np.ndarray, first: np.ndarray,
                      done: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First token and whole response back at the client over each pool's path, and when
        responses entered an inter-site link (a response waits while its path is cut)."""
        s = self.scenario
        workload = s.workload
        first_bytes = np.full(self.requests.count, workload.bytes_per_token + workload.request_overhead)
        finished = np.where(status == DONE, done, np.nan)
        primary = self.assigned == 0
        first_send = np.where(primary, first, np.nan)
        done_send = np.where(primary, finished, np.nan)
        windows = self.faults.plan.path_down(s, workload.origin, s.placement.inference)
        for send in (first_send, done_send):
            back = window_containing(windows, send)
            held = ~np.isnan(back)
            send[held] = back[held]
        client_first = self.downlink(first_send, first_bytes)
        client_done = self.downlink(done_send, self.response_bytes)
        for k, (name, path) in enumerate(self.paths.items()):
            if k == 0:
                continue
            mine = self.assigned == k
            own_first = carry(np.where(mine, first, np.nan), first_bytes, path.bandwidth_bytes_per_s, path.one_way_s)
            own_done = carry(np.where(mine, finished, np.nan), self.response_bytes, path.bandwidth_bytes_per_s,
                             path.one_way_s)
            client_first[mine] = own_first[mine]
            client_done[mine] = own_done[mine]
            del name
        crosses = workload.origin != s.placement.inference
        downlink_send = done_send if crosses else np.full(self.requests.count, np.nan)
        return client_first, client_done, downlink_send

    def _uplink_send_s(self, send: np.ndarray) -> np.ndarray:
        """When each request's payload entered the link to the inference site (NaN: no link,
        not sent within the horizon, cut off, or sent to the fallback)."""
        s = self.scenario
        if s.workload.origin == s.placement.inference:
            return np.full(self.requests.count, np.nan)
        routing = self.faults.routing
        entered = routing.link_send_s if routing is not None else send
        with np.errstate(invalid="ignore"):
            return np.where(entered < s.horizon, entered, np.nan)
