"""Faults and outages: what fails, when, and what each placement loses.

A scenario's `faults:` section names GPU (replica) failures per pool, link outages, whole-site
outages (a cloud region) and capacity shortages (an elastic pool cannot grow), each scheduled
(`at`, `windows`) or random (`mtbf`, `mttr`). **Every fault of a replication is drawn up front**
(`FaultPlan.draw`), from streams named after its target, so that the same WAN outage hits S1
and S2 alike (common random numbers) and the request path can be worked out before the run.

What each fault does:

- *Replica failure* (a GPU): the serving pool's replica goes down at the fault's start
  (`ServingPool.fail`, which advances the kernel first); its admitted requests lose their
  progress and are retried on another replica, or fail after `retry.max_attempts`; it is
  repaired at the end. A failure of a training pool interrupts the training running on it.
- *Link outage*: both directions of the link carry nothing. Bulk transfers pause and resume
  (`sim.world.network`). The request paths that cross the link are cut during its windows
  (the serving kernel's paths, `sim.world.world`): a request sent while its pool's path is
  cut goes to the next pool of its route that can be reached (e.g. the fallback site's pool
  of `placement.fallback`), or else waits for a path to come back and is sent then, failing
  when its client timeout (`retry.timeout`, from when it was sent) passes first. A response
  sent while the path is cut waits for it. A path is judged when a payload is sent; one
  already on its way arrives.
- *Site outage*: every link to the site is cut and every replica serving there fails; training
  at the site is interrupted.
- *Capacity shortage*: an elastic pool cannot grow during the window; whoever provisions it
  asks `capacity_blocked_until` / `wait_for_capacity` first.
- *Spot interruption* (a cloud pool with `pricing: spot`, `sim.spec.faults.spot_terms`): the
  provider reclaims an instance at random, at `interruptions_per_hour` per instance-hour held
  (exponential times between reclaims, per replica, from the stream `faults/spot/<pool>/<r>`).
  The notice is used to request the replacement: the reclaimed replica fails as a replica
  failure does (its in-flight work is lost and retried, `ServingPool.fail`) and serves again
  when the replacement is ready, `provisioning_delay - notice` after the reclaim (at once when
  the notice covers the delay). A replica that holds no instance when its draw comes (scaled
  down, or still provisioning) is not interrupted, so interruptions happen at the rate times
  the instance-hours held. A training pool on spot is interrupted at the rate times the
  instances a retraining job rents, and training there resumes from its last checkpoint; only
  reclaims while a job trains there are counted (the fault table lists what was reclaimed).

Training checkpoints every `faults.checkpoint_interval`; an interruption loses the work since
the last checkpoint, and training resumes from it when the fault is repaired (`train`).
A fault-free scenario changes nothing: no processes, no outages, the same kernel inputs.

`install_faults(world)` wires all of this into a built, not yet run, World (whose `plan` it
uses) and returns the `FaultInjector` whose plan and records the world writes into its
`RunRecord`.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import simpy

from sim.kernels.batching import ACTIVE, DRAINING
from sim.kernels.windows import merge_windows, window_containing
from sim.record import FAULT_COLUMNS, TRAINING_RUN_COLUMNS, RequestTable, empty_frame
from sim.spec.faults import pool_replicas, serving_pool_name, spot_terms
from sim.spec.scenario import OutageWindow, Scenario
from sim.streams import stream
from sim.world.serving import ServingPool

if TYPE_CHECKING:
    from sim.world.world import World

HOUR_S = 3600.0


# ------------------------------------------------------------------------------------------
# The plan: every fault of one replication, drawn before the run
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault: down over [start_s, end_s) (end_s may lie beyond the horizon)."""

    kind: str  # "replica_failure", "link_outage", "site_outage", "capacity_shortage", "spot_interruption"
    target: str  # "site/pool", link name or site name
    replica: int  # the failed replica (replica failures), else -1
    start_s: float
    end_s: float


def _draw(rng: np.random.Generator, mean: float, distribution: str) -> float:
    return float(mean if distribution == "deterministic" else rng.exponential(mean))


def _random_windows(rng: np.random.Generator, mtbf: float, mttr: float, distribution: str,
                    horizon: float) -> list[tuple[float, float]]:
    """Alternating up and repair times from t = 0 until a failure would start after the horizon."""
    out: list[tuple[float, float]] = []
    t = 0.0
    while True:
        start = t + _draw(rng, mtbf, distribution)
        if start >= horizon:
            return out
        end = start + _draw(rng, mttr, distribution)
        out.append((start, end))
        t = end


def _windows(spec_windows: list[OutageWindow]) -> list[tuple[float, float]]:
    return [(w.start, w.start + w.duration) for w in spec_windows]


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)

    @classmethod
    def draw(cls, scenario: Scenario, replication: int) -> FaultPlan:
        spec, seed, horizon = scenario.faults, scenario.seed, scenario.horizon
        faults: list[Fault] = []
        for k, rf in enumerate(spec.replica_failures):
            pool = rf.pool or serving_pool_name(scenario, rf.site)
            assert pool is not None and rf.mttr is not None, "check_faults guarantees them"
            target = f"{rf.site}/{pool}"
            repairs = stream(seed, replication, f"faults/replica/{target}/{k}/repairs")
            for at in rf.at:
                faults.append(Fault("replica_failure", target, rf.replica, at,
                                    at + _draw(repairs, rf.mttr, rf.distribution)))
            if rf.mtbf is not None:
                for r in range(pool_replicas(scenario, rf.site, pool)):
                    rng = stream(seed, replication, f"faults/replica/{target}/{k}/{r}")
                    for start, end in _random_windows(rng, rf.mtbf, rf.mttr, rf.distribution, horizon):
                        faults.append(Fault("replica_failure", target, r, start, end))
        for kind, entries, name_of in (("link_outage", spec.link_outages, lambda e: e.link),
                                       ("site_outage", spec.site_outages, lambda e: e.site)):
            for k, entry in enumerate(entries):
                target = name_of(entry)
                windows = _windows(entry.windows)
                if entry.mtbf is not None and entry.mttr is not None:
                    rng = stream(seed, replication, f"faults/{kind}/{target}/{k}")
                    windows += _random_windows(rng, entry.mtbf, entry.mttr, entry.distribution, horizon)
                faults += [Fault(kind, target, -1, a, b) for a, b in windows]
        faults += _spot_interruptions(scenario, replication)
        for shortage in spec.capacity_shortages:
            faults += [Fault("capacity_shortage", f"{shortage.site}/{shortage.pool}", -1, a, b)
                       for a, b in _windows(shortage.windows)]
        faults = [f for f in faults if f.start_s < horizon]
        faults.sort(key=lambda f: (f.start_s, f.kind, f.target, f.replica))
        return cls(faults)

    def of(self, kind: str, target: str | None = None) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind and (target is None or f.target == target)]

    def link_down(self, scenario: Scenario, link: str) -> list[tuple[float, float]]:
        """When a link carries nothing: its own outages and outages of either end."""
        ends = scenario.links[link].ends
        windows = [(f.start_s, f.end_s) for f in self.of("link_outage", link)]
        for site in ends:
            windows += [(f.start_s, f.end_s) for f in self.of("site_outage", site)]
        return merge_windows(windows)

    def site_down(self, site: str) -> list[tuple[float, float]]:
        return merge_windows((f.start_s, f.end_s) for f in self.of("site_outage", site))

    def path_down(self, scenario: Scenario, a: str, b: str) -> list[tuple[float, float]]:
        """When sites a and b cannot reach each other (a == b: the site's own LAN is down)."""
        if a == b:
            return self.site_down(a)
        found = scenario.link_between(a, b)
        windows = self.link_down(scenario, found[0]) if found is not None else []
        return merge_windows([*windows, *self.site_down(a), *self.site_down(b)])

    def pool_down(self, site: str, pool: str) -> list[tuple[float, float]]:
        """When a pool cannot train: the site is out, one of its GPUs failed, or its spot
        instances were reclaimed."""
        windows = [(f.start_s, f.end_s) for f in self.of("replica_failure", f"{site}/{pool}")]
        windows += [(f.start_s, f.end_s) for f in self.of("spot_interruption", f"{site}/{pool}") if f.replica < 0]
        return merge_windows([*windows, *self.site_down(site)])

    def replica_windows(self, scenario: Scenario, site: str, pool: str) -> list[tuple[int, float, float]]:
        """(replica, start, end) for every failure of a serving pool's replicas, site outages included."""
        out = [(f.replica, f.start_s, f.end_s) for f in self.of("replica_failure", f"{site}/{pool}")]
        for start, end in self.site_down(site):
            out += [(r, start, end) for r in range(pool_replicas(scenario, site, pool))]
        return sorted(out, key=lambda w: (w[1], w[0]))


def _spot_interruptions(scenario: Scenario, replication: int) -> list[Fault]:
    """Reclaims of every spot pool's instances over the horizon (see the module doc): per
    replica slot of a serving pool, or per pool for training (replica -1)."""
    faults: list[Fault] = []
    for site_name, site in scenario.sites.items():
        for pool in site.pools:
            terms = spot_terms(scenario, site_name, pool)
            if terms is None or terms.interruptions_per_hour <= 0 or pool.capacity == 0:
                continue
            target = f"{site_name}/{pool.name}"
            down_s = max(terms.replace_s - terms.notice_s, 0.0)
            if "serving" in pool.roles:
                slots = [(r, terms.interruptions_per_hour) for r in range(pool_replicas(scenario, site_name, pool.name
                                                                                       or ""))]
            else:  # a training job rents whole instances of the pool's instance type (a priced pool: GPUs)
                gpus = scenario.lifecycle.retraining.gpus
                instances = (scenario.cloud_offer(site_name, pool, "spot").instances_for(gpus)
                             if pool.price_usd_per_gpu_hour is None else gpus)
                slots = [(-1, terms.interruptions_per_hour * instances)]
            for r, rate in slots:
                rng = stream(scenario.seed, replication, f"faults/spot/{target}/{r}")
                t = 0.0
                while True:
                    start = t + float(rng.exponential(HOUR_S / rate))
                    if start >= scenario.horizon:
                        break
                    faults.append(Fault("spot_interruption", target, r, start, start + down_s))
                    t = start + down_s
    return faults


# ------------------------------------------------------------------------------------------
# Training with checkpoints
# ------------------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    """What faults did to one training job: seconds lost since checkpoints, and spent waiting."""

    lost_s: float = 0.0
    waited_s: float = 0.0
    interruptions: int = 0
    purpose: str = "retraining"


def train_with_checkpoints(env: simpy.Environment, down: list[tuple[float, float]], interval_s: float,
                           work_s: float) -> Generator[simpy.Event, Any, TrainingRun]:
    """SimPy process body: `work_s` seconds of work that stops while the (merged) `down`
    windows last. A checkpoint is saved after every `interval_s` of work since the job last
    (re)started; an interruption loses the work since the last one, and the job resumes from
    it when the window ends. Without windows this is `env.timeout(work_s)`."""
    run = TrainingRun()
    saved = 0.0
    while saved < work_s:
        now = env.now
        back = window_containing(down, np.array([now]))[0]
        if not np.isnan(back):
            run.waited_s += back - now
            yield env.timeout(back - now)
            continue
        upcoming = [start for start, _ in down if start > now]
        left = work_s - saved
        if not upcoming or now + left <= upcoming[0]:
            yield env.timeout(left)
            break
        worked = upcoming[0] - now
        kept = math.floor(worked / interval_s) * interval_s
        saved += kept
        run.lost_s += worked - kept
        run.interruptions += 1
        yield env.timeout(worked)
    return run


# ------------------------------------------------------------------------------------------
# The injector: processes during the run, outcomes after it
# ------------------------------------------------------------------------------------------


class FaultInjector:
    """The faults of one World: its plan, the request routing, the processes and the records."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.env: simpy.Environment = world.env
        self.scenario = world.scenario
        spec = self.scenario.faults
        self.timeout_s = spec.retry.timeout if spec.retry.timeout is not None else math.inf
        self.max_attempts = spec.retry.max_attempts
        self.plan: FaultPlan = world.plan
        self.replica_records: list[dict[str, Any]] = []
        self.training_runs: list[TrainingRun] = []
        self.reachability_waits: list[tuple[str, str, float, float]] = []  # (a, b, start, end)
        self.capacity_waits: list[tuple[str, float, float]] = []  # ("site/pool", start, end)

    # -- wiring, before the run ---------------------------------------------------------------

    def prepare(self, w: World) -> None:
        """Start the processes: replica failures of every serving pool, link outages."""
        s = self.scenario
        for name, pool in w.pools.items():
            site, pool_name = name.split("/", 1)
            for r, start, end in self.plan.replica_windows(s, site, pool_name):
                self.env.process(self._replica_down(pool, r, start, end))
            for f in self.plan.of("spot_interruption", name):
                self.env.process(self._reclaim(pool, f))
        for link in s.links:
            windows = self.plan.link_down(s, link)
            if windows:
                a, b = s.links[link].ends
                self.env.process(self._link_down(a, b, windows))

    def _replica_down(self, pool: ServingPool, r: int, start: float, end: float,
                      kind: str = "replica_failure") -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(start - self.env.now)
        before = int(pool.kernel.attempts.sum())
        failed = pool.fail(r)
        retried = int(pool.kernel.attempts.sum()) - before
        self.replica_records.append({"kind": kind, "pool": pool.name, "replica": r, "start_s": start, "end_s": end,
                                     "requests_retried": retried, "requests_failed": len(failed)})
        yield self.env.timeout(end - start)
        pool.restore(r)

    def _reclaim(self, pool: ServingPool, f: Fault) -> Generator[simpy.Event, Any, None]:
        """A spot reclaim of replica f.replica: a replica failure until the replacement serves,
        when the replica holds an instance at the time (see the module doc)."""
        yield self.env.timeout(f.start_s - self.env.now)
        pool.sync()
        if pool.state(f.replica) not in (ACTIVE, DRAINING) or f.replica in pool.provisioning:
            return
        yield from self._replica_down(pool, f.replica, f.start_s, f.end_s, kind=f.kind)

    def _link_down(self, a: str, b: str, windows: list[tuple[float, float]]) -> Generator[simpy.Event, Any, None]:
        network = self.world.network
        for start, end in windows:
            yield self.env.timeout(start - self.env.now)
            network.set_down(a, b, True)
            yield self.env.timeout(end - self.env.now)
            network.set_down(a, b, False)

    # -- hooks for the lifecycle and training --------------------------------------------------

    def reachable_at(self, a: str, b: str, t: float) -> float:
        """The first time >= t at which sites a and b can reach each other."""
        end = window_containing(self.plan.path_down(self.scenario, a, b), np.array([t]))[0]
        return t if np.isnan(end) else float(end)

    def wait_until_reachable(self, a: str, b: str) -> Generator[simpy.Event, Any, float]:
        """SimPy process body: wait while the path between a and b is cut; returns the wait."""
        start = self.env.now
        until = self.reachable_at(a, b, start)
        if until > start:
            yield self.env.timeout(until - start)
            self.reachability_waits.append((a, b, start, until))
        return until - start

    def capacity_blocked_until(self, site: str, pool: str, t: float) -> float:
        """The first time >= t at which an elastic pool may grow (t itself when it may)."""
        windows = merge_windows((f.start_s, f.end_s) for f in self.plan.of("capacity_shortage", f"{site}/{pool}"))
        end = window_containing(windows, np.array([t]))[0]
        return t if np.isnan(end) else float(end)

    def wait_for_capacity(self, site: str, pool: str) -> Generator[simpy.Event, Any, float]:
        """SimPy process body: wait out a capacity shortage of an elastic pool; returns the wait."""
        start = self.env.now
        until = self.capacity_blocked_until(site, pool, start)
        if until > start:
            yield self.env.timeout(until - start)
            self.capacity_waits.append((f"{site}/{pool}", start, until))
        return until - start

    def train(self, site: str, pool: str, work_s: float,
              purpose: str = "retraining") -> Generator[simpy.Event, Any, TrainingRun]:
        """SimPy process body: `work_s` seconds of training on a pool, checkpointing as it goes
        (see `train_with_checkpoints`); interrupted when the site is out or, on a dedicated
        training pool, when one of its GPUs fails. Returns what the faults cost it."""
        run = yield from train_with_checkpoints(self.env, self.plan.pool_down(site, pool),
                                                self.scenario.faults.checkpoint_interval, work_s)
        run.purpose = purpose
        self.training_runs.append(run)
        return run

    # -- what it leaves behind ------------------------------------------------------------------

    def training_runs_frame(self) -> pd.DataFrame:
        """One row per training job the faults touched: purpose, lost_s, waited_s, interruptions."""
        rows = [{"purpose": r.purpose, "lost_s": r.lost_s, "waited_s": r.waited_s, "interruptions": r.interruptions}
                for r in self.training_runs]
        return pd.DataFrame(rows, columns=list(TRAINING_RUN_COLUMNS)).astype(TRAINING_RUN_COLUMNS)

    def table(self, requests: RequestTable, pool_sites: list[str]) -> pd.DataFrame:
        """One row per fault: what failed, when, how long until restored, and what it cost
        (for outages on a request path: the requests sent during it that waited for a path,
        were cut off, or went to another pool than their preferred one because of it)."""
        horizon = self.scenario.horizon
        rows: list[dict[str, Any]] = []
        by_replica = {(r["kind"], r["pool"], r["replica"], r["start_s"]): r for r in self.replica_records}
        training = self.world.lifecycle.holds_frame(horizon)
        training = training[training["purpose"].isin(("retraining", "development"))]
        send = requests.send_s
        for f in self.plan.faults:
            row: dict[str, Any] = {"kind": f.kind, "target": f.target, "replica": f.replica, "start_s": f.start_s,
                                   "end_s": f.end_s, "restored": f.end_s <= horizon,
                                   "time_to_restore_s": f.end_s - f.start_s,
                                   "requests_retried": 0, "requests_failed": 0, "requests_delayed": 0,
                                   "requests_cut_off": 0, "requests_diverted": 0}
            if f.kind == "spot_interruption" and not self._reclaimed(f, by_replica, training):
                continue  # nothing held an instance then: nothing was reclaimed
            if f.kind in ("replica_failure", "spot_interruption"):
                hit = by_replica.get((f.kind, f.target, f.replica, f.start_s))
                if hit is not None:
                    row["requests_retried"] = hit["requests_retried"]
                    row["requests_failed"] = hit["requests_failed"]
            elif self._on_request_path(f, pool_sites):
                with np.errstate(invalid="ignore"):
                    inside = (send >= f.start_s) & (send < f.end_s)
                row["requests_delayed"] = int((inside & requests.delayed).sum())
                row["requests_cut_off"] = int((inside & requests.cut_off).sum())
                row["requests_diverted"] = int((inside & requests.diverted).sum())
            rows.append(row)
        if not rows:
            return empty_frame(FAULT_COLUMNS)
        return pd.DataFrame(rows)

    @staticmethod
    def _reclaimed(f: Fault, by_replica: dict[tuple[str, str, int, float], dict[str, Any]],
                   training: pd.DataFrame) -> bool:
        """Did a spot reclaim take an instance: a serving replica's (it was holding one), or
        a training pool's while a job trained on it?"""
        if f.replica >= 0:
            return (f.kind, f.target, f.replica, f.start_s) in by_replica
        site, pool = f.target.split("/", 1)
        mine = training[(training["site"] == site) & (training["pool"] == pool)]
        return bool(((mine["start_s"] <= f.start_s) & (f.start_s < mine["end_s"])).any())

    def _on_request_path(self, f: Fault, pool_sites: list[str]) -> bool:
        """The fault cuts the path from the clients to some serving pool."""
        s = self.scenario
        origin = s.workload.origin
        if f.kind == "site_outage":
            return f.target == origin or f.target in pool_sites
        if f.kind == "link_outage":
            for site in set(pool_sites) - {origin}:
                found = s.link_between(origin, site)
                if found is not None and found[0] == f.target:
                    return True
        return False


def install_faults(world: World) -> FaultInjector:
    """Wire the scenario's faults into a built World, before it runs (see the module doc).

    Without faults it starts no process.
    """
    injector = FaultInjector(world)
    injector.prepare(world)
    return injector


__all__ = ["Fault", "FaultInjector", "FaultPlan", "TrainingRun", "install_faults", "merge_windows",
           "train_with_checkpoints"]
