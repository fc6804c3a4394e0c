"""The model lifecycle: drift, monitoring, retraining and rollout, as SimPy processes.

**Drift.** The scenario's drift events raise the error rate of any model version that has not
been adapted to them: abrupt (a step at `at`), gradual (a linear ramp over `duration`) or
recurring (a window of `duration` every `period`). A version keeps a share r_v,e of each event's
excess error (1: not adapted; 0: back at the base rate). The error rate of version v at time t is

    p(t, v) = base + max over events e of r_v,e x (e.error_rate - base) x ramp_e(t)

**What a retraining buys** (`LearningCurve` in the spec, ENGINES.md §6.1 [E]): fine-tuned on n
fresh labelled samples (served while the event was in effect; older samples teach the old
distribution), a version keeps r = (1 + n / n0)^(-beta) of the excess (full fine-tuning; the
floor is the base rate) or 1 - lora_share x (1 - that) (LoRA). Only the uploaded share of the
collected samples is trained on, so a smaller training sample buys a worse model. A fine-tune
of an adapted version adds its fresh samples to those the serving version learnt from. A
vendor release that fixes the drift brings r to 0.

Each request's outcome is drawn once, in bulk, from its own stream: error_i = u_i < p(t_i, v_i)
with t_i the time its first token was produced and v_i the version that served it, so every
scenario sees the same u_i (common random numbers). A label-free monitor watches an input
feature instead: x_i = z_i + shift(arrival_i), z_i ~ N(0, 1), shift = sum of the active
events' `feature_shift` (inputs drift whatever model serves them).

**Monitoring.** Every `interval` the monitor advances the serving pool, takes the outcomes
whose labels have arrived (a `label_fraction` of requests, `label_delay` after completion) or
the features of the requests that arrived, in order, and feeds them to the detector
(`sim.world.detectors`). Where monitoring sits decides what travels to it: a monitor at
another site receives telemetry aggregates, or copies of every request and response.

**Recovery** (one pipeline at a time, each stage logged with its start and end):
detected -> collect N labelled samples after detection -> upload them to where training
data is kept and on to the training site -> acquire training GPUs (taken from serving on a
shared pool: replicas drain first; an elastic cloud pool provisions them) -> train
(`sim.kernels.training`) -> release GPUs -> validate (a candidate that is not better than the
serving version on any drift so far is `rejected` and goes no further: the serving version
stays) -> distribute the artifact to the registry and the serving site -> roll it out
(rolling: drain, reload and restart one replica at a time; blue-green: start new replicas on
spare GPUs, then retire the old ones). A drift event is `recovered` when a version within
`lifecycle.recovery_tolerance` of the pre-drift rate on it has rolled out (it keeps at most
that share of the excess); a rollout that lands above is an improvement, not a recovery.
Recovery time = that rollout's end - onset of the drift event.

**Vendor updates** (no in-house training): a release every `cadence`, rolled out after the
`import_lead_time`; it fixes the drift (r = 0) only if the scenario says so.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import simpy

from sim.kernels.batching import DONE
from sim.kernels.training import adapter_bytes, training_mfu, training_time_s, training_tokens
from sim.record import HOLD_COLUMNS, JOB_COLUMNS, STAGE_COLUMNS
from sim.spec.scenario import (
    NONE_SITE,
    AbruptDrift,
    GradualDrift,
    LearningCurve,
    RecurringDrift,
    Scenario,
)
from sim.streams import stream
from sim.world.training import DevelopmentWorkload, GpuHold, JobRecord, TrainingQueue

if TYPE_CHECKING:
    from sim.world.serving import ServingPool
    from sim.world.world import World

TELEMETRY_AGGREGATE_BYTES = 4096.0  # one summary record per monitoring interval


# ------------------------------------------------------------------------------------------
# Drift and model versions
# ------------------------------------------------------------------------------------------


def ramp(event: AbruptDrift | GradualDrift | RecurringDrift, t: np.ndarray) -> np.ndarray:
    """How far drift event `event` has developed at times t (0 before onset, 1 in full)."""
    if isinstance(event, AbruptDrift):
        return (t >= event.at).astype(np.float64)
    if isinstance(event, GradualDrift):
        return np.clip((t - event.at) / event.duration, 0.0, 1.0)
    phase = np.mod(t - event.at, event.period)
    return ((t >= event.at) & (phase < event.duration)).astype(np.float64)


def remaining_share(samples: float, curve: LearningCurve, method: str) -> float:
    """The share of a drift's excess error a version fine-tuned on `samples` fresh labelled
    samples keeps (1: no better than the stale model, 0: back at the base rate).

    Full fine-tuning: (1 + n / n0)^(-beta), the learning curve of `LearningCurve` with its
    floor at the base rate; LoRA wins `lora_share` of full fine-tuning's gain.
    """
    full = (1.0 + samples / curve.n0) ** -curve.beta if math.isfinite(samples) else 0.0
    return full if method == "full" else 1.0 - curve.lora_share * (1.0 - full)


@dataclass(frozen=True)
class ModelVersion:
    """A model version and how far it is adapted to each drift event.

    `residual[e]`: the share of event e's excess error (its error_rate - base) this version
    keeps; an event not listed is not adapted to (1). `samples[e]`: the fresh labelled samples
    it learnt e from (infinite: fixed by a vendor release), which a later fine-tune adds to.
    """

    version: int
    created_s: float
    origin: str  # "initial", "retrained" or "vendor"
    residual: Mapping[int, float] = field(default_factory=dict)
    samples: Mapping[int, float] = field(default_factory=dict)

    def keeps(self, event: int) -> float:
        return self.residual.get(event, 1.0)


@dataclass
class DriftModel:
    """Error rates of model versions over time, from the scenario's drift schedule."""

    scenario: Scenario
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = self.scenario.lifecycle.base_error_rate
        self.tolerance = self.scenario.lifecycle.recovery_tolerance
        self.events = list(self.scenario.lifecycle.drift)
        self.versions[0] = ModelVersion(0, 0.0, "initial")

    def add_version(self, created_s: float, origin: str, residual: Mapping[int, float],
                    samples: Mapping[int, float] | None = None) -> ModelVersion:
        version = ModelVersion(len(self.versions), created_s, origin, dict(residual), dict(samples or {}))
        self.versions[version.version] = version
        return version

    def onsets_before(self, t: float) -> frozenset[int]:
        return frozenset(i for i, e in enumerate(self.events) if e.at <= t)

    def recovered(self, version: ModelVersion, event: int) -> bool:
        """Is `version` within the recovery tolerance on `event` (see `Lifecycle` in the spec)?"""
        return version.keeps(event) <= self.tolerance

    def event_error_rate(self, version: ModelVersion, event: int) -> float:
        """The error rate `version` has while drift event `event` is in full."""
        return self.base + version.keeps(event) * (self.events[event].error_rate - self.base)

    def rates(self, t: np.ndarray, residual: Mapping[int, float]) -> np.ndarray:
        """p(t) of a version that keeps `residual[e]` of each event's excess (absent: all of it)."""
        t = np.asarray(t, dtype=np.float64)
        excess = np.zeros(t.shape)
        for i, event in enumerate(self.events):
            keeps = residual.get(i, 1.0)
            if keeps > 0.0:
                excess = np.maximum(excess, keeps * (event.error_rate - self.base) * ramp(event, t))
        return self.base + excess

    def error_rate(self, t: np.ndarray, version: np.ndarray) -> np.ndarray:
        """p(t_i, v_i) for arrays of times and versions (vectorised per version and event)."""
        t = np.asarray(t, dtype=np.float64)
        version = np.asarray(version)
        p = np.full(t.shape, self.base)
        for v in np.unique(version):
            if v < 0:
                continue
            mask = version == v
            known = self.versions.get(int(v))
            residual = known.residual if known is not None else {}  # set by hand: adapted to nothing
            p[mask] = self.rates(t[mask], residual)
        return p

    def stale_error_rate(self, t: np.ndarray) -> np.ndarray:
        """p(t) of a model adapted to nothing: the drift's full damage at each time."""
        return self.rates(t, {})

    def fresh_samples(self, served_s: np.ndarray) -> dict[int, int]:
        """Per drift event, how many of the samples served at `served_s` were served while it
        was in effect (only those teach it; older ones teach the old distribution)."""
        return {i: int((ramp(event, served_s) > 0).sum()) for i, event in enumerate(self.events)}

    def feature_shift(self, t: np.ndarray) -> np.ndarray:
        shift = np.zeros(np.shape(t))
        for event in self.events:
            shift += event.feature_shift * ramp(event, np.asarray(t, dtype=np.float64))
        return shift


# ------------------------------------------------------------------------------------------
# The lifecycle processes
# ------------------------------------------------------------------------------------------


@dataclass
class StageRecord:
    stage: str
    start_s: float
    end_s: float
    drift_event: int
    version: int
    detail: str = ""


ERROR_EPSILON = 1e-12  # error rates closer than this are equal (floating-point noise)
MAX_SAME_INSTANT_YIELDS = 100  # a process that keeps acting at one instant is not waited for longer


class LabelFeed:
    """Labels as they arrive, kept incrementally.

    A labelled request's outcome becomes known `label_delay` after it completes. Rather than
    scanning every request at every monitor tick, the feed looks only at labelled requests
    already sent and not yet labelled (open loop: requests are numbered in send order), and
    keeps the labels that arrived, in arrival order, with when each request was served and its
    outcome, so a day of millions of requests costs little per tick. The answers are the same
    as computing label times from scratch.

    A streamed run has no request to look at: the world hands over (`take`) the labelled
    requests as they complete, and the feed forgets labels no one can ask for any more
    (`forget_until`), so it holds about a label delay's worth.
    """

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.world = lifecycle.world
        requests = lifecycle.world.requests
        spec = lifecycle.spec.monitor
        self.delay = spec.label_delay
        self.streamed = lifecycle.world.streamed
        self.candidates = np.flatnonzero(lifecycle.label_u < spec.label_fraction)
        self.open_loop = requests.clients == 0
        self.send_s = requests.arrival_s[self.candidates] if self.open_loop else None
        self.next = 0 if self.open_loop else len(self.candidates)
        self.pending = np.empty(0, dtype=np.int64) if self.open_loop else self.candidates.copy()
        self.index = np.empty(0, dtype=np.int64)
        self.times = np.empty(0, dtype=np.float64)
        self.served_s = np.empty(0, dtype=np.float64)
        self.error = np.empty(0, dtype=bool)
        self.updated_to = -math.inf
        # streamed: labelled requests completed, their labels not yet in (index, time, served, error)
        self._taken: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def take(self, index: np.ndarray, done_s: np.ndarray, served_s: np.ndarray, error: np.ndarray) -> None:
        """Streamed: labelled requests that completed (at the engine, `done_s`), with when they
        were served and their outcome."""
        if len(index):
            self._taken.append((index, done_s + self.delay, served_s, error))

    def update(self, now: float, until: float | None = None) -> None:
        """Take in every label that arrives by `until` (default `now`), which must be known
        at `now`, the time the pools are advanced to (see `Lifecycle._collect`)."""
        until = now if until is None else until
        if until <= self.updated_to:
            return
        if self.streamed:
            self._update_streamed(until)
            return
        if self.send_s is not None:
            sent = int(np.searchsorted(self.send_s, now, side="right"))
            self.pending = np.concatenate([self.pending, self.candidates[self.next:sent]])
            self.next = sent
        times = self.world.outcome("done_s", self.pending) + self.delay
        ready = (self.world.outcome("status", self.pending) == DONE) & (times <= until)
        order = np.argsort(times[ready], kind="stable")
        index = self.pending[ready][order]
        self._append(index, times[ready][order], self.world.outcome("first_token_s", index),
                     self.lifecycle.outcomes(index))
        self.pending = self.pending[~ready]
        self.updated_to = until

    def _update_streamed(self, until: float) -> None:
        self.world.kernel.collect_ended()  # type: ignore[attr-defined]  # a StreamingCluster
        if self._taken:
            index, times, served, error = (np.concatenate(parts) for parts in zip(*self._taken, strict=True))
            self._taken = []
        else:
            return
        ready = times <= until
        # by label time, ties by request (as the exact feed: pending requests are in request order)
        order = np.lexsort((index[ready], times[ready]))
        self._append(index[ready][order], times[ready][order], served[ready][order], error[ready][order])
        rest = ~ready
        if rest.any():
            self._taken.append((index[rest], times[rest], served[rest], error[rest]))
        self.updated_to = until

    def _append(self, index: np.ndarray, times: np.ndarray, served: np.ndarray, error: np.ndarray) -> None:
        self.index = np.concatenate([self.index, index])
        self.times = np.concatenate([self.times, times])
        self.served_s = np.concatenate([self.served_s, served])
        self.error = np.concatenate([self.error, error])

    def forget_until(self, t: float) -> None:
        """Drop the labels that arrived at or before t (no one will ask for them again)."""
        cut = int(np.searchsorted(self.times, t, side="right"))
        if cut:
            self.index, self.times = self.index[cut:], self.times[cut:]
            self.served_s, self.error = self.served_s[cut:], self.error[cut:]

    def between(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        index, times, _, _ = self.labels_between(start, end)
        return index, times

    def labels_between(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The labels that arrived in (start, end]: request, label time, when it was served, outcome."""
        lo = int(np.searchsorted(self.times, start, side="right"))
        hi = int(np.searchsorted(self.times, end, side="right"))
        return self.index[lo:hi], self.times[lo:hi], self.served_s[lo:hi], self.error[lo:hi]


class Lifecycle:
    def __init__(self, world: World) -> None:
        self.world = world
        self.env: simpy.Environment = world.env
        self.scenario = world.scenario
        self.spec = self.scenario.lifecycle
        self.drift = DriftModel(self.scenario)
        n = world.requests.count  # none in a streamed run: the world draws these chunk by chunk
        seed, rep = self.scenario.seed, world.replication
        self.outcome_u = stream(seed, rep, "outcomes").random(n)
        self.label_u = stream(seed, rep, "labels").random(n)
        self.feature_z = stream(seed, rep, "features").standard_normal(n)
        self._collecting: list[float] = []  # `since` of each retraining collecting labels now
        self.stages: list[StageRecord] = []
        self.holds: list[GpuHold] = []
        self.detections: list[float] = []
        self.busy = False  # a retraining pipeline is running
        self.jobs: list[JobRecord] = []  # training-queue jobs: retraining and development
        self._last_retrain_s = -math.inf  # start of the last retraining (for min_gap)
        self._data_since_s = 0.0  # labels before this went into the last retraining
        self.labels = LabelFeed(self)
        self.training: TrainingQueue | None = None
        if self.scenario.placement.training != NONE_SITE:
            self.training = TrainingQueue(self)
        self._fed_until = 0.0
        self._epoch_s = 0.0  # the monitor judges only requests served since the last rollout
        self._detector_seed = int(stream(seed, rep, "detector").integers(2**31))
        self.detector = None
        self.pending_event: int | None = None
        if self.scenario.placement.monitoring != NONE_SITE:
            self.detector = self._new_detector()

    def _new_detector(self):  # noqa: ANN202
        from sim.detectors import make_detector

        monitor = self.spec.monitor
        return make_detector(monitor.detector, dict(monitor.params), seed=self._detector_seed)

    def new_epoch(self) -> None:
        """A new model version serves: start a fresh detector on requests it serves."""
        if self.detector is not None:
            self.detector = self._new_detector()
        self._epoch_s = self.env.now

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.detector is not None:
            self.env.process(self._monitor())
        if self.spec.vendor_updates is not None:
            self.env.process(self._vendor_updates())
        if self.training is not None and self.spec.retraining.policy in ("scheduled", "both"):
            self.env.process(self._scheduled_retraining())
        if self.training is not None and self.spec.development is not None:
            DevelopmentWorkload(self).start()

    def _may_retrain(self) -> bool:
        return not self.busy and self.env.now - self._last_retrain_s >= self.spec.retraining.min_gap

    def log(self, stage: str, start: float, end: float, event: int, version: int, detail: str = "") -> None:
        self.stages.append(StageRecord(stage, start, end, event, version, detail))

    # -- outcomes ---------------------------------------------------------------------------

    def outcomes(self, index: np.ndarray) -> np.ndarray:
        """Error (True) or correct for requests already served, drawn from their own stream."""
        p = self.drift.error_rate(self.world.outcome("first_token_s", index), self.world.outcome("version", index))
        return self.outcome_u[index] < p

    def label_times(self) -> np.ndarray:
        """When each request's label arrives (NaN: not labelled, or not completed yet)."""
        labelled = (self.label_u < self.spec.monitor.label_fraction) & (self.world.outcome("status") == DONE)
        return np.where(labelled, self.world.outcome("done_s") + self.spec.monitor.label_delay, np.nan)

    # -- what it leaves behind ----------------------------------------------------------------

    def stages_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame([vars(r) for r in self.stages], columns=list(STAGE_COLUMNS))
        return frame.astype(STAGE_COLUMNS)

    def holds_frame(self, horizon_s: float) -> pd.DataFrame:
        """GPU holds for training, development and provisioning, clipped to [0, horizon]
        (a hold still open at the horizon ends there)."""
        frame = pd.DataFrame([vars(h) for h in self.holds], columns=list(HOLD_COLUMNS)).astype(HOLD_COLUMNS)
        frame["end_s"] = frame["end_s"].fillna(horizon_s).clip(upper=horizon_s)
        return frame

    def jobs_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(
            [{"name": j.name, "purpose": j.purpose, "submitted_s": j.submitted_s, "started_s": j.started_s,
              "finished_s": j.finished_s, "wait_s": j.wait_s, "gpus": j.gpus, "detail": j.detail} for j in self.jobs],
            columns=list(JOB_COLUMNS))
        return frame.astype(JOB_COLUMNS)

    # -- monitor ----------------------------------------------------------------------------

    def _signal_since(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """The monitored values that became available in (start, end], in order."""
        if self.spec.monitor.signal == "feature":
            arrival = self.world.outcome("arrival_s")
            index = np.flatnonzero((arrival > start) & (arrival <= end))
            index = index[np.argsort(arrival[index], kind="stable")]
            values = self.feature_z[index] + self.drift.feature_shift(arrival[index])
            return index, values
        self.world.sync()
        self.labels.update(self.env.now)
        index, _, served, error = self.labels.labels_between(start, end)
        fresh = served >= self._epoch_s
        return index[fresh], error[fresh].astype(np.float64)

    def _monitor(self) -> Generator[simpy.Event, Any, None]:
        from sim.detectors import feed

        interval = self.spec.monitor.interval
        placement = self.scenario.placement
        while True:
            yield self.env.timeout(interval)
            self.world.sync()
            now = self.env.now
            _, values = self._signal_since(self._fed_until, now)
            self._send_monitoring_data(self._fed_until, now)
            self._fed_until = now
            if self.world.streamed:
                self.labels.forget_until(self._oldest_label_needed())
            assert self.detector is not None
            fired = feed(self.detector, values)
            if not fired:
                continue
            self.detections.append(now)
            event = self._drift_event_for(now)
            self.log("detected", now, now, event, -1, f"{self.spec.monitor.detector} on {len(values)} values")
            if (placement.training != NONE_SITE and self.spec.retraining.policy in ("triggered", "both")
                    and self._may_retrain()):
                self.busy = True
                self.env.process(self._retrain("triggered", now, event))

    @property
    def reads_labels(self) -> bool:
        """Does anything read the label feed: a monitor (of errors), or retraining?"""
        return self.detector is not None or self.training is not None

    def _oldest_label_needed(self) -> float:
        """Labels that arrived at or before this are asked for no more: the monitor has had
        them, a collecting retraining asks from its `since`, a scheduled one from the last."""
        oldest = min([self._fed_until, *self._collecting])
        if self.training is not None and self.spec.retraining.policy in ("scheduled", "both"):
            oldest = min(oldest, self._data_since_s)
        return oldest

    def serving_version(self) -> ModelVersion:
        """The newest version any replica serves (a version set by hand counts as the initial)."""
        newest = max((int(max(pool.version)) for pool in self.world.pools.values() if pool.replicas), default=0)
        return self.drift.versions.get(newest, self.drift.versions[0])

    def _drift_event_for(self, t: float) -> int:
        """The latest drift event with onset before t that the serving model does not cover, or -1."""
        serving = self.serving_version()
        candidates = [i for i, e in enumerate(self.drift.events)
                      if e.at <= t and not self.drift.recovered(serving, i)]
        return max(candidates, key=lambda i: self.drift.events[i].at) if candidates else -1

    def _send_monitoring_data(self, start: float, end: float) -> None:
        """What monitoring needs to travel, for the requests completed in (start, end].

        A monitor at another site than a request's serving pool receives telemetry
        aggregates, or copies of every request and response it sees (from that pool's site,
        with the request's traffic class's data classes). A monitor that sends aggregates also
        reports them to the model registry's site when that is elsewhere (the party that
        maintains the model: the cloud in S4). Aggregates go from the inference site.
        """
        placement = self.scenario.placement
        inference, monitoring = placement.inference, placement.monitoring
        network = self.world.network
        if placement.monitoring_sees == "aggregates":
            for target in dict.fromkeys((monitoring, placement.model_registry)):
                if target not in (inference, NONE_SITE):
                    network.transfer(inference, target, TELEMETRY_AGGREGATE_BYTES, "telemetry_aggregate", 1,
                                     "monitoring")
            return
        if monitoring == NONE_SITE or self.world.streamed:  # streamed: every pool is at the monitor's site
            return
        w = self.world
        done = w.outcome("done_s")
        index = np.flatnonzero((w.outcome("status") == DONE) & (done > start) & (done <= end))
        if not len(index):
            return
        pool = w.outcome("pool", index)
        traffic_class = np.asarray(w.requests.traffic_class)[index]
        workload = self.scenario.workload
        for p, site in enumerate(w.pool_sites()):
            if site == monitoring:
                continue
            for k, spec in enumerate(w.class_specs):
                mine = index[(pool == p) & (traffic_class == k)]
                if not len(mine):
                    continue
                network.transfer(site, monitoring, float(w.request_bytes[mine].sum()),
                                 spec.data_class or workload.data_class, len(mine), "monitoring")
                network.transfer(site, monitoring, float(w.response_bytes[mine].sum()),
                                 spec.response_data_class or workload.response_data_class, len(mine), "monitoring")

    # -- recovery ---------------------------------------------------------------------------

    def _collect(self, since: float, samples: int) -> Generator[simpy.Event, Any, float]:
        """Wait until `samples` labels have arrived after `since`; returns exactly when that
        happened (no polling step).

        A label arrives `label_delay` after its request's response leaves the engine, at
        least `frontend` after the iteration that produced it. With the pools at time t,
        every label up to t + frontend + label_delay is known (requests not done by t finish
        later). If the last label needed is among them, that is the answer. Otherwise the
        answer lies beyond, so the pools may run ahead: to that bound, or at least to their
        next event, but never past the next event of the other processes (`env.peek()`, once
        all of them have had their turn at this instant), who may change them."""
        horizon = self.scenario.horizon
        delay = self.spec.monitor.label_delay
        pools = list(self.world.pools.values())
        lag = min(pool.kernel.frontend_min_lag_s for pool in pools)
        while True:
            for _ in range(MAX_SAME_INSTANT_YIELDS):  # let the others at this instant go first
                if self.env.peek() > self.env.now:
                    break
                yield self.env.timeout(0.0)
            ahead = min(self.env.peek(), horizon)
            self.world.sync()
            t = self.env.now
            while True:
                known = t + lag + delay
                self.labels.update(t, known)
                _, arrived = self.labels.between(since, known)
                if len(arrived) >= samples:
                    at = float(arrived[samples - 1])
                    if at > self.env.now:
                        yield self.env.timeout(at - self.env.now)
                    return at
                step = max(known, min(pool.kernel.next_event_time() for pool in pools))
                if step >= ahead or not math.isfinite(step):
                    break
                for pool in pools:  # the answer is no earlier than `step`: safe to run to it
                    pool.kernel.advance_to(step)
                t = step
            if ahead >= horizon:
                yield self.env.timeout(max(horizon - self.env.now, 0.0))
                continue
            for pool in pools:
                pool.kernel.advance_to(max(ahead, pool.kernel.now))
            yield self.env.timeout(ahead - self.env.now)

    def _scheduled_retraining(self) -> Generator[simpy.Event, Any, None]:
        """Every `every`, retrain on the labels collected since the last retraining."""
        r = self.spec.retraining
        at = r.first_at if r.first_at is not None else r.every
        while True:
            if at > self.env.now:
                yield self.env.timeout(at - self.env.now)
            if self._may_retrain():
                self.busy = True
                yield from self._retrain("scheduled", self.env.now, -1)
            else:
                self.log("scheduled_skipped", self.env.now, self.env.now, -1, -1,
                         "a retraining is running or the last one is within min_gap")
            at += r.every

    def _retrain(self, trigger: str, since: float, event: int) -> Generator[simpy.Event, Any, None]:
        """Collect labelled data, upload it, train, validate, distribute and roll out.

        `triggered`: wait for `samples` labels after the detection at `since`. `scheduled`:
        take every label that arrived since the last retraining (no wait). The candidate's
        error on each drift event follows the learning curve (`candidate`); validation rejects
        a candidate that beats the serving version on no drift begun so far, and then nothing
        is distributed or rolled out.
        """
        s = self.scenario
        p = s.placement
        r = self.spec.retraining
        w = self.world
        catalog = s.resolved_catalog
        model = catalog.models[s.model.id]
        self._last_retrain_s = self.env.now
        start = self.env.now
        if trigger == "triggered":
            self._collecting.append(since)
            collected = yield from self._collect(since, r.samples)
            index, _, served, _ = self.labels.labels_between(since, collected)
            index, served = index[:r.samples], served[:r.samples]
            self._collecting.remove(since)
            detail = f"{len(index)} labelled samples after detection (last at {collected:.0f} s)"
        else:
            self.world.sync()
            self.labels.update(self.env.now)
            index, _, served, _ = self.labels.labels_between(self._data_since_s, self.env.now)
            detail = f"{len(index)} labelled samples since {self._data_since_s:.0f} s"
        samples = len(index)
        self.log("collect", start, self.env.now, event, -1, f"{trigger}: {detail}")
        self._data_since_s = self.env.now
        if samples == 0:
            self.log("retrain_skipped", self.env.now, self.env.now, event, -1, "no labelled data")
            self.busy = False
            return
        # upload
        start = self.env.now
        uploaded = max(1, round(samples * p.training_sample))
        nbytes = uploaded * self.record_bytes()
        origin = s.workload.origin
        if p.training_data not in (NONE_SITE, origin):
            yield w.network.transfer(origin, p.training_data, nbytes, "labelled_sample", uploaded, "training data")
        source = p.training_data if p.training_data != NONE_SITE else origin
        if source != p.training:
            yield w.network.transfer(source, p.training, nbytes, "labelled_sample", uploaded, "training data")
        self.log("upload", start, self.env.now, event, -1, f"{uploaded} samples, {nbytes:.0f} bytes")
        # the job is started from the clients' site: not while it cannot reach the training site
        start = self.env.now
        waited = yield from w.faults.wait_until_reachable(origin, p.training)
        if waited > 0:
            self.log("outage_wait", start, self.env.now, event, -1, f"{origin} cannot reach {p.training}")
        # GPUs, through the training queue
        start = self.env.now
        record = JobRecord(f"retraining ({trigger})", "retraining", start, detail=r.method)
        self.jobs.append(record)
        assert self.training is not None
        release, gpus = yield from self.training.request(r.gpus, r.priority, "retraining")
        record.started_s, record.gpus = self.env.now, gpus
        self.log("acquire_gpus", start, self.env.now, event, -1, f"{gpus} GPUs at {p.training}")
        # train
        start = self.env.now
        train_pool = self.training.pool
        gpu = catalog.gpus[train_pool.gpu]
        mfu = training_mfu(gpu, r.method, s.model.efficiency.training_mfu, s.model.efficiency.lora_training_mfu)
        tokens = training_tokens(uploaded, r.tokens_per_sample, r.epochs)
        work_s = training_time_s(model, gpu, r.method, tokens, gpus, mfu, r.scaling_efficiency)
        faults = yield from w.faults.train(p.training, train_pool.name or "", work_s)  # checkpoints
        lost = f", {faults.lost_s:.0f} s lost and {faults.waited_s:.0f} s waited on faults" if faults.interruptions else ""
        self.log("train", start, self.env.now, event, -1,
                 f"{r.method}, {tokens:.3g} tokens on {gpus}x {train_pool.gpu}{lost}")
        release()
        record.finished_s = self.env.now
        residual, learnt = self.candidate(served, uploaded / samples)
        start = self.env.now
        yield self.env.timeout(r.validation)
        serving = self.serving_version()
        begun = sorted(self.drift.onsets_before(self.env.now))
        better = [e for e in begun if residual.get(e, 1.0) < serving.keeps(e) - ERROR_EPSILON]
        errors = self._validation_detail(residual, serving, begun, learnt)
        self.log("validate", start, self.env.now, event, -1, errors)
        if not better:
            self.log("rejected", self.env.now, self.env.now, event, -1,
                     f"rejected at validation: the candidate does not beat the serving version "
                     f"v{serving.version} on any drift so far ({errors}); the serving version stays")
            self.busy = False
            return
        version = self.drift.add_version(self.env.now, "retrained", residual, learnt)
        # distribute
        start = self.env.now
        artifact = self._artifact_bytes(model)
        if p.training != p.model_registry:
            yield w.network.transfer(p.training, p.model_registry, artifact, "model_weights", 1, "artifact")
        if p.model_registry != p.inference:
            yield w.network.transfer(p.model_registry, p.inference, artifact, "model_weights", 1, "artifact")
        self.log("distribute", start, self.env.now, event, version.version, f"{artifact:.3g} bytes")
        start = self.env.now
        before = self.serving_version()
        yield from self._rollout(version.version, artifact)
        self.log("rollout", start, self.env.now, event, version.version,
                 f"{self.spec.deployment.rollout}; {self._errors_detail(version)}")
        self._log_recoveries(before, version, trigger)
        self.new_epoch()
        self.busy = False

    def candidate(self, served_s: np.ndarray, uploaded_share: float) -> tuple[dict[int, float], dict[int, float]]:
        """The candidate version's residual and learnt samples per drift event, from the
        collected samples served at `served_s` of which `uploaded_share` went to training.

        Only fresh samples (served while the event was in effect) count; the uploaded ones
        are taken as an even share of the collected. The candidate is fine-tuned from the
        serving version, so its samples add to those it learnt from, and it is never worse
        on an event than the serving version (`remaining_share` of the sum, or the serving
        version's residual if lower).
        """
        serving = self.serving_version()
        curve = self.spec.retraining.learning_curve
        method = self.spec.retraining.method
        residual, learnt = dict(serving.residual), dict(serving.samples)
        for e, fresh in self.drift.fresh_samples(served_s).items():
            if fresh == 0:
                continue
            learnt[e] = learnt.get(e, 0.0) + fresh * uploaded_share
            residual[e] = min(serving.keeps(e), remaining_share(learnt[e], curve, method))
        return residual, learnt

    def _validation_detail(self, residual: Mapping[int, float], serving: ModelVersion, begun: list[int],
                           learnt: Mapping[int, float]) -> str:
        """The candidate's and the serving version's error on each drift so far, in words."""
        if not begun:
            return "no drift so far: candidate and serving version both at the base rate"
        candidate = ModelVersion(-1, self.env.now, "candidate", residual)
        return "; ".join(
            f"drift {e}: candidate error {self.drift.event_error_rate(candidate, e):.4f} from "
            f"{learnt.get(e, 0.0):.0f} fresh samples, serving {self.drift.event_error_rate(serving, e):.4f}"
            for e in begun)

    def _errors_detail(self, version: ModelVersion) -> str:
        onsets = sorted(self.drift.onsets_before(self.env.now))
        return ", ".join(f"error on drift {e}: {self.drift.event_error_rate(version, e):.4f}" for e in onsets)

    def _log_recoveries(self, before: ModelVersion, version: ModelVersion, how: str) -> None:
        """Log `recovered` for each drift event `version` brings within the tolerance that
        the version serving before it was not."""
        for e in sorted(self.drift.onsets_before(self.env.now)):
            if self.drift.recovered(version, e) and not self.drift.recovered(before, e):
                error = self.drift.event_error_rate(version, e)
                self.log("recovered", self.env.now, self.env.now, e, version.version,
                         f"{how}: error {error:.4f}, within tolerance")

    def record_bytes(self) -> float:
        """Bytes of one labelled record: `monitor.record_bytes`, else the sample it trains on
        (`retraining.tokens_per_sample` x `workload.bytes_per_token`)."""
        given = self.spec.monitor.record_bytes
        if given is not None:
            return float(given)
        return float(self.spec.retraining.tokens_per_sample * self.scenario.workload.bytes_per_token)

    def _artifact_bytes(self, model) -> float:  # noqa: ANN001
        if self.spec.deployment.artifact == "adapter" and self.spec.retraining.method == "lora":
            return adapter_bytes(model, self.spec.retraining.lora_rank)
        return model.weight_bytes(self.scenario.model.precision)

    def _rollout(self, version: int, artifact: float) -> Generator[simpy.Event, Any, None]:
        """Roll the new version out to every serving pool, one pool after the other."""
        for pool in self.world.pools.values():
            yield from self._rollout_pool(pool, version, artifact)

    def _rollout_pool(self, pool: ServingPool, version: int, artifact: float) -> Generator[simpy.Event, Any, None]:
        reload_s = artifact / self.spec.deployment.load_bandwidth  # an adapter loads in a blink
        active = pool.active_replicas()
        spare = [r for r in range(pool.replicas) if pool.is_offline(r) and r not in active]
        if self.spec.deployment.rollout == "blue_green" and len(spare) >= len(active):
            new = spare[: len(active)]
            yield self.env.timeout(reload_s)
            for r in new:
                pool.activate(r, version)
            for r in active:
                pool.drain(r)
            for r in active:
                yield from pool.wait_idle(r)
                pool.release(r)
            return
        for r in active:
            pool.drain(r)
            yield from pool.wait_idle(r)
            pool.release(r)
            yield self.env.timeout(reload_s)
            pool.activate(r, version)
        # replicas taken offline meanwhile (e.g. by training) restart on the new version
        for r in range(pool.replicas):
            if pool.version[r] != version:
                pool.set_version(r, version)

    # -- vendor updates ---------------------------------------------------------------------

    def _vendor_updates(self) -> Generator[simpy.Event, Any, None]:
        vendor = self.spec.vendor_updates
        assert vendor is not None
        release = vendor.first_at
        while True:
            if release > self.env.now:
                yield self.env.timeout(release - self.env.now)
            start = self.env.now
            yield self.env.timeout(vendor.import_lead_time)
            fixed = self.drift.onsets_before(start) if vendor.fixes_drift else frozenset()
            serving = self.serving_version()
            newly = sorted(e for e in fixed if not self.drift.recovered(serving, e))
            residual = {**serving.residual, **dict.fromkeys(fixed, 0.0)}
            samples = {**serving.samples, **dict.fromkeys(fixed, math.inf)}
            version = self.drift.add_version(self.env.now, "vendor", residual, samples)
            tag = newly[0] if newly else -1
            self.log("vendor_import", start, self.env.now, tag, version.version)
            begin = self.env.now
            model = self.scenario.resolved_catalog.models[self.scenario.model.id]
            before = self.serving_version()
            yield from self._rollout(version.version, model.weight_bytes(self.scenario.model.precision))
            self.log("vendor_rollout", begin, self.env.now, tag, version.version)
            self._log_recoveries(before, version, "vendor release")  # a release that fixes the drift
            self.new_epoch()
            release += vendor.cadence
