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

**Streamed runs** (`streamed=True`, for days of tens of millions of requests). The requests
are generated in chunks (`sim.workload.requests.request_chunks`, the same values as in one
go) with every per-request draw made from the same streams chunk by chunk, and fed to a
`sim.kernels.streaming.StreamingCluster`, which holds only the requests in flight. As
requests end, the world carries their responses back over their paths (in time order, as
`_client_times` does for all at once), gives the labelled ones to the monitor's label feed,
and hands them as a `RequestTable` of just those requests to `on_requests`; the record has
no request table. Results equal the exact run's. What needs every request at once (closed
loops, traces, faults, ...) is refused by name: `sim.workload.streaming.streaming_refusals`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.kernels.batching import (
    DONE,
    FAILED,
    FAILOVER,
    RF_ARRIVAL,
    RF_BYTES,
    RF_DISPATCH,
    RF_DONE,
    RF_FIRST_TOKEN,
    RF_LINK_SEND,
    RF_SEND,
    RI_CLASS,
    RI_OUTPUT,
    RI_POOL,
    RI_PREEMPTIONS,
    RI_PROMPT,
    RI_REASON,
    RI_REPLICA,
    RI_RETRIES,
    RI_STATUS,
    RI_VERSION,
    ClusterKernel,
    PathConfig,
    PoolConfig,
    RouteConfig,
    api_pool,
)
from sim.kernels.links import carry, carry_from
from sim.kernels.replica import pool_config
from sim.kernels.streaming import EndedRows, RequestChunk, StreamingCluster, due_back
from sim.kernels.windows import window_containing
from sim.record import AUTOSCALE_COLUMNS, RequestTable, RunRecord, empty_frame
from sim.spec.errors import SpecError
from sim.spec.routing import class_routes, serving_pool_names
from sim.spec.scenario import Scenario
from sim.streams import stream
from sim.workload import Requests, generate_requests
from sim.workload.requests import prefix_tokens_by_group, request_chunks
from sim.workload.streaming import streaming_refusals
from sim.world.autoscaler import Autoscaler
from sim.world.faults import FaultPlan, install_faults
from sim.world.lifecycle import Lifecycle
from sim.world.network import Network, Path, request_path
from sim.world.serving import PoolSetup, ServingPool, pool_setup

TIMELINE_STEP_S = 300.0  # resolution of the utilisation timeline
CHUNK_REQUESTS = 1 << 16
"""A streamed run's chunk: about this many exponential gaps of the arrival process (fewer
requests after thinning). Memory holds about two chunks plus the requests in flight."""


def _no_requests(class_names: list[str]) -> Requests:
    """A streamed run's `World.requests`: none at hand (they pass through in chunks)."""
    empty = np.empty(0)
    return Requests(empty, empty, empty, empty, empty, class_names=tuple(class_names))


@dataclass(frozen=True, eq=False)
class _Rows:
    """What the record's request table is made from: kernel outcomes and request columns."""

    status: np.ndarray
    first: np.ndarray
    done: np.ndarray
    pool: np.ndarray
    send: np.ndarray
    link_send: np.ndarray
    arrival: np.ndarray
    dispatch: np.ndarray
    version: np.ndarray
    preemptions: np.ndarray
    attempts: np.ndarray
    reason: np.ndarray
    replica: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    prefix_group: np.ndarray
    traffic_class: np.ndarray
    request_bytes: np.ndarray
    response_bytes: np.ndarray
    outcome_u: np.ndarray
    labelled: np.ndarray
    down_z: np.ndarray | None = None  # standard normal draws for the way back's jitter
    client: tuple[np.ndarray, np.ndarray] | None = None  # a streamed run's first token and response at the client

    @classmethod
    def empty(cls) -> _Rows:
        f, i = np.empty(0), np.empty(0, dtype=np.int32)
        return cls(status=i, first=f, done=f, pool=i, send=f, link_send=f, arrival=f, dispatch=f, version=i,
                   preemptions=i, attempts=i, reason=i, replica=i, prompt=i, output=i, prefix_group=i,
                   traffic_class=i, request_bytes=f, response_bytes=f, outcome_u=f, labelled=np.empty(0, dtype=bool))


class World:
    """One replication of a scenario. `streamed`: requests are generated and fed to the
    kernel in chunks of about `chunk_requests`, never all at once; each chunk of ended
    requests goes to `on_requests(table, request_numbers)` and the record has no per-request
    table; the scenario must use only what streams (`sim.workload.streaming.streaming_refusals`)."""

    def __init__(self, scenario: Scenario, replication: int = 0, *, streamed: bool = False,
                 chunk_requests: int = CHUNK_REQUESTS,
                 on_requests: Callable[[RequestTable, np.ndarray], None] | None = None) -> None:
        self.scenario = scenario
        self.replication = replication
        self.streamed = streamed
        self.env = simpy.Environment()
        seed = scenario.seed
        workload = scenario.workload
        self.plan = FaultPlan.draw(scenario, replication)
        if streamed:
            refusals = streaming_refusals(scenario)
            if refusals:
                raise SpecError(refusals)
            if on_requests is None:
                raise ValueError("a streamed world hands its ended requests to on_requests: give one")
        self.on_requests = on_requests
        self.class_specs = workload.class_specs()
        self.requests: Requests = (_no_requests(workload.class_names()) if streamed
                                   else generate_requests(workload, scenario.horizon, seed, replication))
        self.request_bytes = self.requests.payload_bytes(workload.bytes_per_token, workload.request_overhead)
        self.response_bytes = self._response_bytes(self.requests)
        self.chunk_requests = chunk_requests
        self._return_free_at: dict[tuple[str, int], float] = {}  # streamed: each return path's FIFO
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
        self._weighted = any(r.policy == "weighted" for r in routes)
        timeout = s.faults.retry.timeout
        shared: dict[str, Any] = dict(
            paths=path_configs, routes=routes, class_route=class_route,
            class_priority=[c.priority for c in self.class_specs], router=s.model.serving.router,
            timeout_s=timeout if timeout is not None else math.inf, max_attempts=s.faults.retry.max_attempts,
            **cluster)
        if self.streamed:
            return StreamingCluster(pools, self._chunks(), prefix_tokens_of_group=prefix_tokens_by_group(s.workload),
                                    on_ended=self._ended, holds=self._carry_back, **shared)
        return ClusterKernel(
            pools, np.asarray(req.arrival_s, dtype=np.float64), req.prompt_tokens, req.output_tokens,
            request_class=req.traffic_class, request_bytes=self.request_bytes, jitter_z=self._up_z,
            route_u=stream(s.seed, self.replication, "route").random(n) if self._weighted else None,
            router_u=stream(s.seed, self.replication, "router").random(n),
            prefix_group=req.prefix_group, prefix_tokens=req.prefix_tokens, clients=req.clients,
            api_z=self._api_draws(n), **shared,
        )

    def _response_bytes(self, requests: Requests) -> np.ndarray:
        workload = self.scenario.workload
        return np.asarray(requests.output_tokens * workload.bytes_per_token + workload.request_overhead,
                          dtype=np.float64)

    def _chunks(self) -> Iterator[RequestChunk]:
        """A streamed run's requests in chunks, with every per-request draw the exact run makes
        up front, drawn chunk by chunk from the same streams (so the same values)."""
        s, rep = self.scenario, self.replication
        workload = s.workload
        draws = {name: stream(s.seed, rep, name) for name in ("router", "route", "api_latency", "outcomes", "labels")}
        api = any(setup.api is not None for setup in self.setups)
        up, down = self._jitter_streams()
        first = 0
        for chunk in request_chunks(workload, s.horizon, s.seed, rep, self.chunk_requests):
            n = chunk.count
            columns = {"prefix_group": chunk.prefix_group, "response_bytes": self._response_bytes(chunk),
                       "outcome_u": draws["outcomes"].random(n), "label_u": draws["labels"].random(n),
                       "client_first": np.full(n, np.nan), "client_done": np.full(n, np.nan),
                       "first_back": np.zeros(n, dtype=bool), "done_back": np.zeros(n, dtype=bool)}
            if down is not None:
                columns["down_z"] = down.standard_normal(n)
            yield RequestChunk(
                first=first, send_s=chunk.arrival_s, prompt_tokens=chunk.prompt_tokens,
                output_tokens=chunk.output_tokens, request_class=chunk.traffic_class,
                prefix_group=chunk.prefix_group, prefix_tokens=chunk.prefix_tokens,
                request_bytes=chunk.payload_bytes(workload.bytes_per_token, workload.request_overhead),
                router_u=draws["router"].random(n), route_u=draws["route"].random(n) if self._weighted else None,
                api_z=draws["api_latency"].standard_normal((n, 2)) if api else None,
                jitter_z=up.standard_normal(n) if up is not None else None, columns=columns)
            first += n

    def _carry_back(self, kernel: StreamingCluster, final: bool) -> np.ndarray:
        """A streamed run's way back: carry every first token and response whose send time is
        known not to precede one still to come over its path's FIFO, in time order as the
        exact run does (`_client_times`), into the rows' `client_first` and `client_done`;
        returns the rows still waiting for theirs. A token of an iteration still to end comes
        at least the front end's least lag after now, so everything sent up to now plus that
        lag is in (at the end of the run, everything)."""
        c = kernel.columns
        pool, first, done = kernel.req_i[:, RI_POOL], kernel.req_f[:, RF_FIRST_TOKEN], kernel.req_f[:, RF_DONE]
        frontier = math.inf if final else kernel.now + kernel.frontend_min_lag_s
        due_first, due_done, held = due_back(kernel.req_i[:, RI_STATUS], first, done, c["first_back"],
                                             c["done_back"], frontier)
        sites = list(self.paths)  # one per site with a pool: every request that has a token has a pool
        site_of_pool = np.array([sites.index(site) for site in self.pool_sites()], dtype=np.int64)
        workload = self.scenario.workload
        for k, (site, path) in enumerate(self.paths.items()):
            for kind, due, send, back, out in ((0, due_first, first, "first_back", "client_first"),
                                               (1, due_done, done, "done_back", "client_done")):
                if len(sites) > 1:
                    due = due[site_of_pool[pool[due]] == k]
                if len(due):
                    size = (np.full(len(due), float(workload.bytes_per_token + workload.request_overhead))
                            if kind == 0 else c["response_bytes"][due])
                    jitter = None if "down_z" not in c else path.jitter_s * c["down_z"][due]
                    c[out][due] = self._carry(site, kind, send[due], size, path, jitter)
                    c[back][due] = True
        return held

    def _jitter_streams(self) -> tuple[np.random.Generator | None, np.random.Generator | None]:
        """A streamed run's jitter draws, the exact run's (`_jitter`: n draws for the way there,
        then n for the way back): the way back's generator is a copy that first draws n and
        drops them (n counted in a first pass over the arrivals). None without jitter."""
        if not any(path.jitter_s > 0 for path in self.paths.values()):
            return None, None
        s = self.scenario
        up = stream(s.seed, self.replication, "jitter")
        down = copy.deepcopy(up)
        n = sum(chunk.count for chunk in request_chunks(s.workload, s.horizon, s.seed, self.replication,
                                                          self.chunk_requests))
        for start in range(0, n, 1 << 20):
            down.standard_normal(min(1 << 20, n - start))
        return up, down

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
        if isinstance(self.kernel, StreamingCluster):
            self.kernel.finish()
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
            streamed=self.streamed, requests_generated=self.requests_generated,
        )

    @property
    def requests_generated(self) -> int:
        """Requests the workload generated (a streamed run's: those fed to the kernel so far)."""
        return self.kernel.fed if isinstance(self.kernel, StreamingCluster) else self.requests.count

    def pool_sites(self) -> list[str]:
        """The site of each pool, in pool order."""
        return [setup.site for setup in self.setups]

    def _request_table(self) -> RequestTable:
        """Every request, exact mode; a streamed run keeps none (its `RequestTally` has them)."""
        req = self.requests
        k = self.kernel
        if self.streamed:
            return self._table(_Rows.empty())
        rows = _Rows(status=k.status.copy(), first=k.first_token_s.copy(), done=k.done_s.copy(),
                     pool=k.pool.copy(), send=k.send_s.copy(), link_send=k.link_send_s.copy(),
                     arrival=k.arrival_s.copy(), dispatch=k.dispatch_s.copy(), version=k.version.copy(),
                     preemptions=k.preemptions.copy(), attempts=k.attempts.copy(), reason=k.reason,
                     replica=k.replica, prompt=req.prompt_tokens, output=req.output_tokens,
                     prefix_group=req.prefix_group, traffic_class=np.asarray(req.traffic_class, dtype=np.int32),
                     request_bytes=self.request_bytes, response_bytes=self.response_bytes,
                     outcome_u=self.lifecycle.outcome_u, labelled=~np.isnan(self.lifecycle.label_times()),
                     down_z=self._down_z)
        return self._table(rows)

    def _ended(self, ended: EndedRows) -> None:
        """A streamed run's requests that left the kernel: as a table of just them to
        `on_requests` (who measures them: `sim.metrics.tally`), and to the label feed."""
        assert self.on_requests is not None
        i, f = ended.req_i, ended.req_f  # column by column: each column below is contiguous, no copy
        status = i[:, RI_STATUS]
        labelled = (ended.columns["label_u"] < self.scenario.lifecycle.monitor.label_fraction) & (status == DONE)
        rows = _Rows(status=status, first=f[:, RF_FIRST_TOKEN], done=f[:, RF_DONE],
                     pool=i[:, RI_POOL], send=f[:, RF_SEND], link_send=f[:, RF_LINK_SEND],
                     arrival=f[:, RF_ARRIVAL], dispatch=f[:, RF_DISPATCH],
                     version=i[:, RI_VERSION], preemptions=i[:, RI_PREEMPTIONS],
                     attempts=i[:, RI_RETRIES] + 1, reason=i[:, RI_REASON], replica=i[:, RI_REPLICA],
                     prompt=i[:, RI_PROMPT], output=i[:, RI_OUTPUT],
                     prefix_group=ended.columns["prefix_group"], traffic_class=i[:, RI_CLASS],
                     request_bytes=f[:, RF_BYTES], response_bytes=ended.columns["response_bytes"],
                     outcome_u=ended.columns["outcome_u"], labelled=labelled,
                     client=(ended.columns["client_first"], ended.columns["client_done"]))
        table = self._table(rows)
        self.on_requests(table, ended.request)
        if self.lifecycle.reads_labels:  # else nothing would ever take them out of the feed
            self.lifecycle.labels.take(ended.request[labelled], table.done_s[labelled],
                                       table.first_token_s[labelled], table.error[labelled])

    def _table(self, rows: _Rows) -> RequestTable:
        """The record's table of these requests (all of them, or a streamed run's chunk)."""
        pool = rows.pool.astype(np.int16)
        status, first, done, send, link_send = rows.status, rows.first, rows.done, rows.send, rows.link_send
        if rows.client is None:
            client_first, client_done, downlink_send = self._client_times(pool, status, first, done,
                                                                          rows.response_bytes, rows.down_z)
        else:  # carried back already (`_carry_back`); a streamed run has no outage to wait out
            client_first, client_done = rows.client
            remote = self._crosses_link(pool) & (status == DONE)
            downlink_send = np.where(remote, done, np.nan)
        served = ~np.isnan(first)
        n = len(status)
        error_rate = np.full(n, np.nan)
        error_rate[served] = self.lifecycle.drift.error_rate(first[served], rows.version[served])
        stale_error_rate = np.full(n, np.nan)
        stale_error_rate[served] = self.lifecycle.drift.stale_error_rate(first[served])
        error = np.zeros(n, dtype=bool)
        error[served] = rows.outcome_u[served] < error_rate[served]
        with np.errstate(invalid="ignore"):
            delayed = link_send > send  # waited for a path to come back
        crosses = self._crosses_link(pool)
        with np.errstate(invalid="ignore"):
            uplink = np.where(crosses & (link_send < self.scenario.horizon), link_send, np.nan)
        return RequestTable(
            send_s=send, prompt_tokens=rows.prompt, output_tokens=rows.output,
            prefix_group=rows.prefix_group, pool=pool, status=status,
            pool_arrival_s=rows.arrival, dispatch_s=rows.dispatch,
            first_token_s=first, done_s=done, replica=self._local_replica(pool, rows.replica), version=rows.version,
            preemptions=rows.preemptions, attempts=rows.attempts,
            client_first_s=client_first, client_done_s=client_done, request_bytes=rows.request_bytes,
            response_bytes=rows.response_bytes, uplink_send_s=uplink, downlink_send_s=downlink_send,
            delayed=delayed, cut_off=(status == FAILED) & np.isnan(rows.arrival), diverted=rows.reason == FAILOVER,
            error_rate=error_rate, error=error, labelled=rows.labelled,
            traffic_class=np.asarray(rows.traffic_class, dtype=np.int32),
            reason=np.where(pool >= 0, rows.reason, -1).astype(np.int8),
            stale_error_rate=stale_error_rate,
        )

    def _local_replica(self, pool: np.ndarray, kernel_replica: np.ndarray) -> np.ndarray:
        """Each request's replica numbered within its pool (-1: none)."""
        replica = kernel_replica.astype(np.int64)
        first = np.array([self.kernel.pool_replicas(p).start for p in range(len(self.setups))], dtype=np.int64)
        local = replica - first[np.maximum(pool, 0)]
        return np.where((pool >= 0) & (replica >= 0), local, -1)

    def _crosses_link(self, pool: np.ndarray) -> np.ndarray:
        """Requests whose pool is at another site than the clients' (their path is a link)."""
        origin = self.scenario.workload.origin
        remote = np.array([site != origin for site in self.pool_sites()] + [False])
        return remote[np.where(pool >= 0, pool, len(self.setups))]

    def _client_times(self, pool: np.ndarray, status: np.ndarray, first: np.ndarray, done: np.ndarray,
                      response_bytes: np.ndarray, down_z: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First token and whole response back at the client over each pool's path (a FIFO
        per path; a payload sent while its path is cut waits for it), and when responses
        entered an inter-site link."""
        workload = self.scenario.workload
        n = len(status)
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
            jitter = None if down_z is None else path.jitter_s * down_z
            own_first = self._carry(site, 0, sends[0], first_bytes, path, jitter)
            own_done = self._carry(site, 1, sends[1], response_bytes, path, jitter)
            client_first[mine] = own_first[mine]
            client_done[mine] = own_done[mine]
            if site != workload.origin:
                downlink_send[mine] = sends[1][mine]
        return client_first, client_done, downlink_send

    def _carry(self, site: str, kind: int, send: np.ndarray, size: np.ndarray, path: Path,
               jitter: np.ndarray | None) -> np.ndarray:
        """`carry` over the return path from `site` (kind 0: first tokens, 1: responses); a
        streamed run carries its payloads in time-ordered batches (`_carry_back`), each
        starting the FIFO where the one before left it."""
        if not self.streamed:
            return carry(send, size, path.bandwidth_bytes_per_s, path.one_way_s, jitter)
        arrive, self._return_free_at[(site, kind)] = carry_from(
            send, size, path.bandwidth_bytes_per_s, path.one_way_s, jitter,
            self._return_free_at.get((site, kind), -math.inf))
        return arrive


__all__ = ["TIMELINE_STEP_S", "World"]
