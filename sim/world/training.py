"""The training application: a queue for training GPUs, and the development jobs that use it.

Everything that trains or evaluates a model at the training site goes through one
`TrainingQueue`: drift-triggered and scheduled retraining (sim.world.lifecycle) and the
development workload (fine-tuning experiments and evaluations, `lifecycle.development`).
Requests are granted by priority, then in order of arrival (a strict queue: a big job at the
head waits for its GPUs rather than being overtaken), so retraining can be configured to
jump ahead of experiments or not.

Where the GPUs come from depends on the pool and, for a premises pool that also serves, on
`lifecycle.gpu_sharing.policy`:
- a dedicated pool (cloud or premises): up to its capacity; an elastic pool provisions GPUs
  for each grant (its provisioning delay) and gives them back when the job ends;
- `preempt_serving`: whole serving replicas are drained and lent to training (serving keeps
  at least one), which is where S3's latency bump comes from;
- `reserved`: `reserved_gpus` never serve; training has them to itself;
- `only_idle_gpus`: only GPUs no serving replica holds; serving is never slowed, and
  training waits for as long as serving holds the pool.
Every grant is a `GpuHold` with its purpose ("retraining", "development"), so GPU-hours and
cost split by purpose, and every wait is recorded.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from sim.kernels.training import training_mfu, training_time_s
from sim.spec.scenario import NONE_SITE, Pool
from sim.streams import stream

if TYPE_CHECKING:
    from sim.world.lifecycle import Lifecycle
    from sim.world.serving import ServingPool

EVAL_FLOPS_PER_PARAM_TOKEN = 2.0  # an evaluation runs the model forward only


@dataclass
class GpuHold:
    """GPUs held for a purpose over an interval (for utilisation and cost)."""

    site: str
    pool: str
    purpose: str  # "serving", "retraining", "provisioning"
    gpus: int
    start_s: float
    end_s: float = math.nan


@dataclass
class JobRecord:
    name: str
    purpose: str  # "retraining" or "development"
    submitted_s: float
    started_s: float = math.nan
    finished_s: float = math.nan
    gpus: int = 0
    detail: str = ""

    @property
    def wait_s(self) -> float:
        return self.started_s - self.submitted_s


@dataclass(order=True)
class _Request:
    sort_key: tuple[int, int]
    gpus: int = 0
    purpose: str = ""
    granted: Any = None  # simpy.Event


class TrainingQueue:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.env: simpy.Environment = lifecycle.env
        world = lifecycle.world
        scenario = lifecycle.scenario
        self.site = scenario.placement.training
        self.pool: Pool = next(p for p in scenario.sites[self.site].pools
                               if "training" in p.roles and p.capacity > 0)
        # the serving pool this pool is, when training shares GPUs with serving
        self.serving: ServingPool | None = world.pools.get(f"{self.site}/{self.pool.name}")
        self.shared = self.serving is not None
        self.policy = scenario.lifecycle.gpu_sharing.policy if self.shared else "dedicated"
        self.in_use = 0
        self._queue: list[_Request] = []
        self._order = itertools.count()
        if self.serving is not None and self.policy == "only_idle_gpus":
            self.serving.on_change(self._dispatch)  # GPUs free up only when replicas change state

    # -- capacity --------------------------------------------------------------------------

    def capacity(self) -> int:
        """The most GPUs training can ever hold at once under the policy."""
        tp = self.serving.gpus_per_replica if self.serving is not None else 1
        if self.policy == "preempt_serving":
            return max(self.pool.capacity - tp, 0) if self.pool.capacity > tp else self.pool.capacity
        if self.policy == "reserved":
            return self.lifecycle.scenario.lifecycle.gpu_sharing.reserved_gpus
        return self.pool.capacity

    def free(self) -> int:
        """GPUs a new grant could get right now."""
        if self.policy == "only_idle_gpus":
            assert self.serving is not None
            self.serving.sync()
            return max(self.pool.capacity - self.serving.gpus_in_use() - self.in_use, 0)
        return self.capacity() - self.in_use

    # -- granting --------------------------------------------------------------------------

    def request(self, gpus: int, priority: int, purpose: str) -> Generator[simpy.Event, Any, tuple[Callable[[], None], int]]:
        """Wait for up to `gpus` GPUs (never more than the policy allows); returns (release, held)."""
        want = max(1, min(gpus, self.capacity())) if self.capacity() > 0 else gpus
        entry = _Request((-priority, next(self._order)), want, purpose, self.env.event())
        heapq.heappush(self._queue, entry)
        self._dispatch()
        yield entry.granted
        release, held = yield from self._take(want, purpose)
        return release, held

    def _dispatch(self) -> None:
        """Grant the head of the queue while its GPUs are free (it waits otherwise: called
        again when GPUs come back, or, under only_idle_gpus, when a serving replica changes)."""
        while self._queue:
            head = self._queue[0]
            if head.gpus > self.free():
                return
            heapq.heappop(self._queue)
            self.in_use += head.gpus
            head.granted.succeed()

    def _take(self, gpus: int, purpose: str) -> Generator[simpy.Event, Any, tuple[Callable[[], None], int]]:
        """Make the granted GPUs real: drain replicas, or provision an elastic pool."""
        lifecycle = self.lifecycle
        world = lifecycle.world
        taken: list[int] = []
        serving = self.serving
        if self.policy == "preempt_serving":
            assert serving is not None
            tp = serving.gpus_per_replica
            active = serving.active_replicas()
            keep = 1 if len(active) > 1 else 0
            taken = sorted(active, reverse=True)[: min(math.ceil(gpus / tp), len(active) - keep)]
            for r in taken:
                serving.drain(r)
            for r in taken:
                yield from serving.wait_idle(r)
                serving.release(r)
        elif self.policy == "dedicated" and self.pool.elastic and self.pool.count < self.in_use:
            yield from world.faults.wait_for_capacity(self.site, self.pool.name or "")  # a shortage: no GPUs to add
            start = self.env.now
            yield self.env.timeout(self.pool.provisioning_delay)
            lifecycle.holds.append(GpuHold(self.site, self.pool.name or "", "provisioning", gpus, start, self.env.now))
        hold = GpuHold(self.site, self.pool.name or "", purpose, gpus, self.env.now)
        lifecycle.holds.append(hold)

        def release() -> None:
            hold.end_s = self.env.now
            self.in_use -= gpus
            for r in taken:
                assert serving is not None
                serving.activate(r, int(serving.version[r]))
            self._dispatch()

        return release, gpus


class DevelopmentWorkload:
    """Fine-tuning experiments and evaluations submitted to the training queue over time."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.env = lifecycle.env
        self.spec = lifecycle.spec.development
        assert self.spec is not None
        scenario = lifecycle.scenario
        self.rng = stream(scenario.seed, lifecycle.world.replication, "development")

    def submissions(self) -> list[float]:
        spec = self.spec
        assert spec is not None
        horizon = self.lifecycle.scenario.horizon
        if spec.arrivals == "schedule":
            return sorted(t for t in spec.at if t < horizon)
        rate = spec.rate_per_week / (7 * 86400.0)
        gaps = self.rng.exponential(1.0 / rate, size=max(16, int(3 * rate * horizon) + 16))
        times = np.cumsum(gaps)
        return [float(t) for t in times[times < horizon]]

    def start(self) -> None:
        for k, at in enumerate(self.submissions()):
            self.env.process(self._job(k, at))

    def _job(self, k: int, at: float) -> Generator[simpy.Event, Any, None]:
        spec = self.spec
        assert spec is not None
        lifecycle = self.lifecycle
        job = spec.jobs[k % len(spec.jobs)]
        yield self.env.timeout(at - self.env.now)
        record = JobRecord(job.name, "development", self.env.now, detail=job.method)
        lifecycle.jobs.append(record)
        placement = lifecycle.scenario.placement
        origin = lifecycle.scenario.workload.origin  # the data comes from where the users are
        network = lifecycle.world.network
        purpose = f"development: {job.name}"
        store = placement.training_data if placement.training_data != NONE_SITE else origin
        dataset = f"development:{job.name}"  # each run of the job uploads the same data set again
        if job.data > 0 and store != origin:
            yield network.transfer(origin, store, job.data, job.data_class, job.records, purpose, dataset)
        if job.data > 0 and store != placement.training:
            yield network.transfer(store, placement.training, job.data, job.data_class, job.records, purpose,
                                   dataset)
        queue = lifecycle.training
        assert queue is not None
        release, gpus = yield from queue.request(job.gpus, spec.priority, "development")
        record.started_s = self.env.now
        record.gpus = gpus
        yield from lifecycle.world.faults.train(placement.training, queue.pool.name or "",
                                                self.duration_s(job.method, job.tokens, gpus), "development")
        release()
        record.finished_s = self.env.now

    def duration_s(self, method: str, tokens: float, gpus: int) -> float:
        lifecycle = self.lifecycle
        scenario = lifecycle.scenario
        catalog = scenario.resolved_catalog
        model = catalog.models[scenario.model.id]
        queue = lifecycle.training
        assert queue is not None
        gpu = catalog.gpus[queue.pool.gpu]
        over = scenario.model.efficiency
        mfu = training_mfu(gpu, method, over.training_mfu, over.lora_training_mfu)
        scaling = scenario.lifecycle.retraining.scaling_efficiency
        if method == "eval":
            rate = gpus * gpu.peak("bf16") * mfu * (scaling if gpus > 1 else 1.0)
            return EVAL_FLOPS_PER_PARAM_TOKEN * model.params * tokens / rate
        return training_time_s(model, gpu, method, tokens, gpus, mfu, scaling)
