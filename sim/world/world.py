"""The simulated world: sites, GPU pools, links and serving pools on one SimPy clock.

`World(scenario, replication)` builds everything a scenario describes. Requests are generated
up front as arrays (`sim.workload`), each of one traffic class. Every serving pool of the
scenario (`sim.spec.routing.serving_pool_names`) is one pool of a single serving cluster
(`sim.kernels.batching.ClusterKernel`): when a client sends a request, the kernel picks its
pool by the class's route (`sim.spec.routing.class_routes`: residency, preference order,
overflow, failover, weighted split), carries it over the path to that pool's site (the
clients' LAN, or the link between the two sites: FIFO at the path's bandwidth, then the
one-way delay and jitter), queues it at the pool's router and serves it. The response comes
back over the same path (`_client_times`). SimPy runs the control plane: a progress clock,
the lifecycle, the autoscalers, training and the fault processes; each advances the cluster
to `env.now` before it touches it.

**Faults on the path.** Every fault is drawn up front (`sim.world.faults.FaultPlan`). A path
is cut while the link it crosses, the clients' site or the pool's site is out: the kernel
skips a pool whose path is cut (failover to the next pool of the route), and when every
candidate's path is cut the client waits and sends again when the first comes back; a
client gives up `faults.retry.timeout` after it first sent (the request fails). A response
sent while its path is cut waits for it. The fallback of `placement.fallback` is the last
pool of the implicit route.

`World.run()` returns a `RunRecord` (`sim.record`): the world writes down, through its
parts' public methods, what happened, and is done. Measuring it is somebody else's job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.kernels.batching import (
    DONE,
    FAILED,
    FAILOVER,
    ClusterKernel,
    PathConfig,
    PoolConfig,
    RouteConfig,
    api_pool,
)
from sim.kernels.links import carry
from sim.kernels.replica import pool_config
from sim.kernels.windows import window_containing
from sim.record import AUTOSCALE_COLUMNS, RequestTable, RunRecord, empty_frame
from sim.spec.routing import class_routes, serving_pool_names
from sim.spec.scenario import Scenario
from sim.streams import stream
from sim.workload import Requests, generate_requests
from sim.world.autoscaler import Autoscaler
from sim.world.faults import FaultPlan, install_faults
from sim.world.lifecycle import Lifecycle
from sim.world.network import Network, Path, request_path
from sim.world.serving import PoolSetup, ServingPool, pool_setup

TIMELINE_STEP_S = 300.0  # resolution of the utilisation timeline


class World:
    def __init__(self, scenario: Scenario, replication: int = 0) -> None:
        self.scenario = scenario
        self.replication = replication
        self.env = simpy.Environment()
        seed = scenario.seed
        workload = scenario.workload
        self.requests: Requests = generate_requests(workload, scenario.horizon, seed, replication)
        self.class_specs = workload.class_specs()
        self.request_bytes = self.requests.payload_bytes(workload.bytes_per_token, workload.request_overhead)
        self.response_bytes = np.asarray(self.requests.output_tokens * workload.bytes_per_token
                                         + workload.request_overhead, dtype=np.float64)
        self.plan = FaultPlan.draw(scenario, replication)
        self.setups = self._setups()
        self.kernel = self._build_cluster()
        self.pools: dict[str, ServingPool] = {
            setup.name: ServingPool(self.env, setup, self.kernel, p) for p, setup in enumerate(self.setups)}
        self.network = Network(self.env)
        for link in scenario.links.values():
            self.network.add_link(link.ends[0], link.ends[1], link.bandwidth, link.rtt / 2)
        self.lifecycle = Lifecycle(self)
        # replica failures, link outages and training interruptions (the request path's
        # outages are in the kernel's paths already)
        self.faults = install_faults(self)
        self.autoscalers = [Autoscaler(self, pool) for pool in self.pools.values()
                            if pool.setup.pool.autoscale is not None]

    # -- building ----------------------------------------------------------------------------

    def _setups(self) -> list[PoolSetup]:
        s = self.scenario
        setups = []
        for name in serving_pool_names(s):
            site, pool_name = name.split("/", 1)
            pool = next(p for p in s.sites[site].pools if p.name == pool_name)
            setups.append(pool_setup(s, site, pool, self.requests.count, s.seed, self.replication))
        return setups

    def _build_cluster(self) -> ClusterKernel:
        s = self.scenario
        req = self.requests
        n = req.count
        origin = s.workload.origin
        # one path per site that has a serving pool
        sites = list(dict.fromkeys(setup.site for setup in self.setups))
        self.paths: dict[str, Path] = {site: request_path(s, site) for site in sites}
        self.path_windows = {site: self.plan.path_down(s, origin, site) for site in sites}
        path_configs = [PathConfig(one_way_s=self.paths[site].one_way_s,
                                   bandwidth_bytes_per_s=self.paths[site].bandwidth_bytes_per_s,
                                   jitter_s=self.paths[site].jitter_s, windows=self.path_windows[site])
                        for site in sites]
        self._up_z, self._down_z = self._jitter(n)
        pools: list[PoolConfig] = []
        cluster: dict[str, Any] = {}
        for setup in self.setups:
            path = self.paths[setup.site]
            if setup.api is not None:
                pools.append(api_pool(setup.api_config(), path=sites.index(setup.site),
                                      loop_delay_s=2 * path.one_way_s + req.think_time_s))
                continue
            config, cluster = pool_config(s.model.serving, setup.kernel_options, replicas=setup.replicas,
                                          active_replicas=setup.active_replicas, path=sites.index(setup.site),
                                          loop_delay_s=2 * path.one_way_s + req.think_time_s)
            pools.append(config)
        names = [setup.name for setup in self.setups]
        routes: list[RouteConfig] = []
        class_route: list[int] = []
        resolved = class_routes(s)
        # the first class's preferred pool (the first pool of placement.inference without rules)
        self.primary_pool = resolved[req.class_names[0]].pools[0]
        for name in req.class_names:
            r = resolved[name]
            route = RouteConfig(pools=[names.index(p) for p in r.pools], policy=r.policy,
                                queue_per_replica=r.queue_per_replica, wait_s=r.wait_s, weights=list(r.weights))
            if route not in routes:
                routes.append(route)
            class_route.append(routes.index(route))
        weighted = any(r.policy == "weighted" for r in routes)
        timeout = s.faults.retry.timeout
        return ClusterKernel(
            pools, np.asarray(req.arrival_s, dtype=np.float64), req.prompt_tokens, req.output_tokens,
            paths=path_configs, routes=routes, request_class=req.traffic_class, class_route=class_route,
            class_priority=[c.priority for c in self.class_specs], request_bytes=self.request_bytes,
            jitter_z=self._up_z, route_u=stream(s.seed, self.replication, "route").random(n) if weighted else None,
            router=s.model.serving.router, router_u=stream(s.seed, self.replication, "router").random(n),
            prefix_group=req.prefix_group, prefix_tokens=req.prefix_tokens, clients=req.clients,
            timeout_s=timeout if timeout is not None else math.inf, max_attempts=s.faults.retry.max_attempts,
            api_z=self._api_draws(n), **cluster,
        )

    def _api_draws(self, n: int) -> np.ndarray | None:
        """Standard normal draws per request for a managed API's TTFT and per-token time (none
        without an API pool)."""
        if not any(setup.api is not None for setup in self.setups):
            return None
        return stream(self.scenario.seed, self.replication, "api_latency").standard_normal((n, 2))

    def _jitter(self, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Standard normal draws per request for the way there and back (none without jitter)."""
        if not any(path.jitter_s > 0 for path in self.paths.values()):
            return None, None
        rng = stream(self.scenario.seed, self.replication, "jitter")
        return rng.standard_normal(n), rng.standard_normal(n)

    # -- the pools, as the control plane sees them -------------------------------------------

    def sync(self) -> None:
        """Advance the serving cluster to the current simulated time."""
        self.kernel.advance_to(self.env.now)

    def outcome(self, name: str, index: np.ndarray | None = None) -> np.ndarray:
        """A per-request kernel array (`status`, `done_s`, `first_token_s`, `version`,
        `arrival_s`, `pool`, ...)."""
        values = getattr(self.kernel, name)
        return values if index is None else values[index]

    # -- running -----------------------------------------------------------------------------

    def _clock(self, slices: int, on_progress: Callable[[float], None] | None) -> Generator[simpy.Event, Any, None]:
        """Advance the cluster in slices: progress for people, a utilisation timeline for reports."""
        horizon = self.scenario.horizon
        for pool in self.pools.values():
            pool.snapshot()
        for k in range(1, slices + 1):
            yield self.env.timeout(horizon * k / slices - self.env.now)
            self.sync()
            for pool in self.pools.values():
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
        for autoscaler in self.autoscalers:
            autoscaler.start()
        self.env.run(until=self.scenario.horizon)
        self.kernel.advance_to(self.scenario.horizon)
        record = self.record()
        record.wall_s = time.perf_counter() - started
        return record

    # -- the record ---------------------------------------------------------------------------

    def record(self) -> RunRecord:
        """What happened, as plain arrays and frames (the world must have reached its horizon)."""
        s = self.scenario
        horizon = s.horizon
        requests = self._request_table()
        autoscaling = [a.decisions_frame() for a in self.autoscalers]
        return RunRecord(
            scenario=s, replication=self.replication, requests=requests,
            pools={name: pool.record(horizon) for name, pool in self.pools.items()},
            primary_pool=self.primary_pool,
            gpu_holds=self.lifecycle.holds_frame(horizon), transfers=self.network.transfers_frame(),
            link_bytes=self.network.link_bytes_frame(),
            link_down={link: self.plan.link_down(s, link) for link in s.links},
            stages=self.lifecycle.stages_frame(), jobs=self.lifecycle.jobs_frame(),
            detections=list(self.lifecycle.detections),
            version_created_s={v: m.created_s for v, m in self.lifecycle.drift.versions.items()},
            version_residual={v: dict(m.residual) for v, m in self.lifecycle.drift.versions.items()},
            drift_onsets=[(e.kind, float(e.at)) for e in self.lifecycle.drift.events],
            base_error_rate=float(self.lifecycle.drift.base),
            faults=self.faults.table(requests, self.pool_sites()), training_runs=self.faults.training_runs_frame(),
            reachability_waits=list(self.faults.reachability_waits), capacity_waits=list(self.faults.capacity_waits),
            retry_limit=self.faults.max_attempts, class_names=list(self.requests.class_names),
            autoscaling=(pd.concat(autoscaling, ignore_index=True) if autoscaling
                         else empty_frame(AUTOSCALE_COLUMNS)),
        )

    def pool_sites(self) -> list[str]:
        """The site of each pool, in pool order."""
        return [setup.site for setup in self.setups]

    def _request_table(self) -> RequestTable:
        req = self.requests
        k = self.kernel
        status = k.status.copy()
        first = k.first_token_s.copy()
        done = k.done_s.copy()
        pool = k.pool.astype(np.int16)
        send = k.send_s.copy()
        link_send = k.link_send_s.copy()
        arrival = k.arrival_s.copy()
        client_first, client_done, downlink_send = self._client_times(pool, status, first, done)
        served = ~np.isnan(first)
        version = k.version.copy()
        error_rate = np.full(req.count, np.nan)
        error_rate[served] = self.lifecycle.drift.error_rate(first[served], version[served])
        stale_error_rate = np.full(req.count, np.nan)
        stale_error_rate[served] = self.lifecycle.drift.stale_error_rate(first[served])
        error = np.zeros(req.count, dtype=bool)
        error[served] = self.lifecycle.outcome_u[served] < error_rate[served]
        with np.errstate(invalid="ignore"):
            delayed = link_send > send  # waited for a path to come back
        crosses = self._crosses_link(pool)
        with np.errstate(invalid="ignore"):
            uplink = np.where(crosses & (link_send < self.scenario.horizon), link_send, np.nan)
        return RequestTable(
            send_s=send, prompt_tokens=req.prompt_tokens, output_tokens=req.output_tokens,
            prefix_group=req.prefix_group, pool=pool, status=status,
            pool_arrival_s=arrival, dispatch_s=k.dispatch_s.copy(),
            first_token_s=first, done_s=done, replica=self._local_replica(pool), version=version,
            preemptions=k.preemptions.copy(), attempts=k.attempts.copy(),
            client_first_s=client_first, client_done_s=client_done, request_bytes=self.request_bytes,
            response_bytes=self.response_bytes, uplink_send_s=uplink, downlink_send_s=downlink_send,
            delayed=delayed, cut_off=(status == FAILED) & np.isnan(arrival), diverted=k.reason == FAILOVER,
            error_rate=error_rate, error=error, labelled=~np.isnan(self.lifecycle.label_times()),
            traffic_class=np.asarray(req.traffic_class, dtype=np.int32),
            reason=np.where(pool >= 0, k.reason, -1).astype(np.int8),
            stale_error_rate=stale_error_rate,
        )

    def _local_replica(self, pool: np.ndarray) -> np.ndarray:
        """Each request's replica numbered within its pool (-1: none)."""
        replica = self.kernel.replica.astype(np.int64)
        first = np.array([self.kernel.pool_replicas(p).start for p in range(len(self.setups))], dtype=np.int64)
        local = replica - first[np.maximum(pool, 0)]
        return np.where((pool >= 0) & (replica >= 0), local, -1)

    def _crosses_link(self, pool: np.ndarray) -> np.ndarray:
        """Requests whose pool is at another site than the clients' (their path is a link)."""
        origin = self.scenario.workload.origin
        remote = np.array([site != origin for site in self.pool_sites()] + [False])
        return remote[np.where(pool >= 0, pool, len(self.setups))]

    def _client_times(self, pool: np.ndarray, status: np.ndarray, first: np.ndarray,
                      done: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First token and whole response back at the client over each pool's path (a FIFO
        per path; a payload sent while its path is cut waits for it), and when responses
        entered an inter-site link."""
        workload = self.scenario.workload
        n = self.requests.count
        first_bytes = np.full(n, workload.bytes_per_token + workload.request_overhead)
        finished = np.where(status == DONE, done, np.nan)
        client_first = np.full(n, np.nan)
        client_done = np.full(n, np.nan)
        downlink_send = np.full(n, np.nan)
        site_of = self.pool_sites()
        for site, path in self.paths.items():
            mine = np.isin(pool, [p for p, s in enumerate(site_of) if s == site])
            if not mine.any():
                continue
            sends = []
            for at in (first, finished):
                send = np.where(mine, at, np.nan)
                back = window_containing(self.path_windows[site], send)
                held = ~np.isnan(back)
                send[held] = back[held]
                sends.append(send)
            jitter = None if self._down_z is None else path.jitter_s * self._down_z
            own_first = carry(sends[0], first_bytes, path.bandwidth_bytes_per_s, path.one_way_s, jitter)
            own_done = carry(sends[1], self.response_bytes, path.bandwidth_bytes_per_s, path.one_way_s, jitter)
            client_first[mine] = own_first[mine]
            client_done[mine] = own_done[mine]
            if site != workload.origin:
                downlink_send[mine] = sends[1][mine]
        return client_first, client_done, downlink_send


__all__ = ["TIMELINE_STEP_S", "World"]
