"""The simulated world: sites, GPU pools, links and serving pools on one SimPy clock.

`World(scenario, replication)` builds everything a scenario describes. Requests are generated
up front as arrays (`sim.workload`), carried to the inference site over the LAN or the link
that joins the sites (`sim.kernels.links`, FIFO), served by the serving pool's kernel, and
carried back. SimPy runs the control plane: a progress clock now, and the lifecycle, training
and fault processes as they arrive; each advances the pool to `env.now` before it touches it.

Placement decides the path: clients at `workload.origin` send to the site named by
`placement.inference`; if that is the same site, the request pays the site's LAN, otherwise
the WAN link between the two, both ways. No code here looks at a scenario's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from sim.catalog import GPU, Model
from sim.kernels.batching import PoolKernel
from sim.kernels.links import carry
from sim.kernels.replica import replica_setup
from sim.kernels.service_models import kernel_arguments
from sim.spec.scenario import Pool, Scenario
from sim.streams import stream
from sim.workload import Requests, generate_requests
from sim.world.faults import install_faults
from sim.world.lifecycle import Lifecycle
from sim.world.network import Network
from sim.world.serving import ServingPool

TIMELINE_STEP_S = 300.0  # resolution of the utilisation timeline
UNBOUNDED_TOKENS = 2**40  # "no limit" for service models without a KV cache


def service_model(scenario: Scenario, setup: ServingSetup, count: int, seed: int, replication: int) -> dict:
    """Kernel arguments for the scenario's service model: roofline, distribution or batching."""
    return kernel_arguments(scenario, setup, count, seed, replication)


@dataclass(frozen=True)
class Path:
    """One direction of the network between clients and the serving site."""

    name: str
    one_way_s: float
    bandwidth_bytes_per_s: float
    jitter_s: float


@dataclass(frozen=True)
class ServingSetup:
    site: str
    pool: Pool
    gpu_id: str
    gpu: GPU
    model: Model
    replicas: int
    active_replicas: int
    tp: int
    kv_capacity_tokens: int
    params: np.ndarray
    kernel_options: dict


def serving_setup(scenario: Scenario) -> ServingSetup:
    catalog = scenario.resolved_catalog
    site_name = scenario.placement.inference
    pools = [p for p in scenario.sites[site_name].pools if "serving" in p.roles and p.capacity > 0]
    pool = pools[0]  # checks guarantee one exists; further serving pools are not used yet
    gpu = catalog.gpus[pool.gpu]
    model = catalog.models[scenario.model.id]
    m = scenario.model
    tp = m.tensor_parallel
    if model.kind == "transformer":
        replica = replica_setup(
            catalog, m.id, pool.gpu, m.precision, tp, m.engine,
            gpu_memory_utilization=m.serving.gpu_memory_utilization, max_model_len=m.serving.max_model_len,
            max_num_batched_tokens=m.serving.max_num_batched_tokens, kv_precision=m.serving.kv_cache_precision,
            block_size=m.serving.block_size, overrides=m.efficiency.profile_overrides(),
        )
        kv_tokens = replica.kv_tokens
        params = replica.params
        options = replica.kernel_options()
    else:  # classic models hold no KV cache; their service model is dynamic batching
        kv_tokens = UNBOUNDED_TOKENS
        params = np.zeros(1)
        options = {"params": params, "kv_capacity_tokens": kv_tokens}
    if m.service_time is not None:  # a plain distribution: no engine around it
        options = {k: v for k, v in options.items() if k in ("params", "kv_capacity_tokens")}
    serving_gpus = pool.count
    sharing = scenario.lifecycle.gpu_sharing
    if sharing.policy == "reserved" and scenario.placement.training == site_name and "training" in pool.roles:
        serving_gpus = pool.count - sharing.reserved_gpus  # reserved GPUs never serve
    return ServingSetup(
        site=site_name, pool=pool, gpu_id=pool.gpu, gpu=gpu, model=model, replicas=pool.capacity // tp,
        active_replicas=serving_gpus // tp, tp=tp, kv_capacity_tokens=kv_tokens, params=params,
        kernel_options=options,
    )


def request_path(scenario: Scenario) -> Path:
    origin, site = scenario.workload.origin, scenario.placement.inference
    if origin == site:
        lan = scenario.sites[site].lan
        return Path(f"{site} LAN", lan.rtt / 2, lan.bandwidth, 0.0)
    found = scenario.link_between(origin, site)
    assert found is not None, "checks guarantee a link"
    name, link = found
    return Path(name, link.rtt / 2, link.bandwidth, link.jitter)


class World:
    def __init__(self, scenario: Scenario, replication: int = 0) -> None:
        self.scenario = scenario
        self.replication = replication
        self.env = simpy.Environment()
        seed = scenario.seed
        self.requests: Requests = generate_requests(scenario.workload, scenario.horizon, seed, replication)
        self.serving = serving_setup(scenario)
        self.path = request_path(scenario)
        self._up_jitter, self._down_jitter = self._jitter(seed, replication)
        self.request_bytes = self.requests.payload_bytes(scenario.workload.bytes_per_token,
                                                         scenario.workload.request_overhead)
        self.response_bytes = (self.requests.output_tokens * scenario.workload.bytes_per_token
                               + scenario.workload.request_overhead)
        self.pool_arrival_s = self._uplink()
        setup = self.serving
        serving = scenario.model.serving
        loop_delay = 2 * self.path.one_way_s + self.requests.think_time_s
        settings = {
            "replicas": setup.replicas, "active_replicas": setup.active_replicas,
            "max_num_seqs": serving.max_num_seqs, "max_num_batched_tokens": serving.max_num_batched_tokens,
            "chunked_prefill": serving.chunked_prefill,
            "max_model_len": serving.max_model_len, "router": serving.router,
            "prefix_group": self.requests.prefix_group, "prefix_tokens": self.requests.prefix_tokens,
            "prefix_caching": serving.prefix_caching,
            "router_u": stream(seed, replication, "router").random(self.requests.count),
            "clients": self.requests.clients, "loop_delay_s": loop_delay,
        }
        settings.update(setup.kernel_options)
        settings.update(service_model(scenario, setup, self.requests.count, seed, replication))
        self.kernel = PoolKernel(self.pool_arrival_s, self.requests.prompt_tokens, self.requests.output_tokens,
                                 **settings)
        self.pool = ServingPool(self.env, f"{setup.site}/{setup.pool.name}", self.kernel, setup.tp)
        self.network = Network(self.env)
        for link in scenario.links.values():
            self.network.add_link(link.ends[0], link.ends[1], link.bandwidth, link.rtt / 2)
        self.lifecycle = Lifecycle(self)
        self.busy_timeline: list[tuple[float, np.ndarray, int]] = []
        # client timeouts and retries, outages on the request path (arrivals shifted, cut off or
        # sent to the fallback pool, before the first advance) and the fault processes
        self.faults = install_faults(self)

    def _jitter(self, seed: int, replication: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.requests.count
        if self.path.jitter_s <= 0:
            return np.zeros(n), np.zeros(n)
        rng = stream(seed, replication, "jitter")
        return rng.normal(0.0, self.path.jitter_s, n), rng.normal(0.0, self.path.jitter_s, n)

    def _uplink(self) -> np.ndarray:
        if self.requests.clients > 0:  # closed loop: the kernel releases requests itself
            arrive = self.requests.arrival_s + self.path.one_way_s
            return arrive
        return carry(self.requests.arrival_s, self.request_bytes, self.path.bandwidth_bytes_per_s,
                     self.path.one_way_s, self._up_jitter)

    # -- running ---------------------------------------------------------------------------

    def _clock(self, slices: int, on_progress: Callable[[float], None] | None):
        """Advance the pool in slices: progress for people, a utilisation timeline for reports."""
        horizon = self.scenario.horizon
        self.busy_timeline.append((0.0, self.kernel.busy_s.copy(), self.pool.gpus_in_use()))
        for k in range(1, slices + 1):
            yield self.env.timeout(horizon * k / slices - self.env.now)
            self.pool.sync()
            self.busy_timeline.append((self.env.now, self.kernel.busy_s.copy(), self.pool.gpus_in_use()))
            if on_progress is not None:
                on_progress(self.env.now / horizon)

    def run(self, on_progress: Callable[[float], None] | None = None, slices: int | None = None):
        """Run to the horizon, collect the results and check that they balance."""
        from sim.metrics.availability import check_invariants
        from sim.result import collect

        if slices is None:  # about one slice per TIMELINE_STEP_S, at least 50
            slices = max(50, min(2000, math.ceil(self.scenario.horizon / TIMELINE_STEP_S)))
        self.env.process(self._clock(slices, on_progress))
        self.lifecycle.start()
        self.env.run(until=self.scenario.horizon)
        self.pool.kernel.advance_to(self.scenario.horizon)
        result = collect(self)
        check_invariants(self, result)  # every request ends once, the ledger matches the links
        return result

    def downlink(self, send_s: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """Client arrival times of payloads the serving site sends back."""
        return carry(send_s, size_bytes, self.path.bandwidth_bytes_per_s, self.path.one_way_s,
                     self._down_jitter)
