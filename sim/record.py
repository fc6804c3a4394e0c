"""The RunRecord: what a finished run hands over, as plain arrays and frames.

A simulated world (`sim.world`) is a web of SimPy processes, kernels and control objects;
its measurements should not be. When a world reaches its horizon it writes down, once, what
happened, through its parts' public methods, into a `RunRecord`, and is done. Everything
downstream (latency, the privacy ledger, cost, energy, availability, the lifecycle summary,
the invariants, reports) reads the record and nothing else: no metric needs to know how a
pool batches or how a fault was injected, and a record can be built by hand in a test.

What a record holds:

- `requests`: one entry per generated request (`RequestTable`, parallel arrays): when it was
  sent, where it went (pool index, replica), how it ended (kernel status codes), its times
  at the pool and back at the client, its payload sizes, its model version and outcome, and
  how outages treated it.
- `pools`: every serving pool (`PoolRecord`): its GPUs, the seconds each replica iterated,
  when each replica held its GPUs, and a timeline of snapshots for utilisation over time.
- `gpu_holds`: GPUs held for training, development and provisioning (site, pool, purpose,
  gpus, start, end).
- `transfers` and `link_bytes`: every bulk transfer between sites, and per link direction the
  bytes handed to it and sent (the ledger is checked against them).
- `stages`, `jobs`, `detections`, `versions`: the lifecycle (drift recovery stages, training
  queue jobs, detector firings, model versions with their creation time).
- `faults`, `training_runs`, `reachability_waits`, `capacity_waits`, `link_down`: the faults
  injected and what they cost.

Times are seconds from the start of the run; NaN where something did not happen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.kernels.batching import DONE

if TYPE_CHECKING:
    from sim.spec.scenario import Scenario

NO_POOL = -1  # a request that reached no pool (cut off on the way, or never sent)
NO_REASON = -1  # the routing reason of a request that was never routed


@dataclass(eq=False)
class RequestTable:
    """Per-request outcomes, row i is request i (parallel arrays of equal length).

    send_s:          when the client sent it (NaN: a closed-loop request never released)
    pool_arrival_s:  when it reached the pool that served it (NaN: it never reached one)
    pool:            index into `RunRecord.pool_names`, or NO_POOL
    status:          sim.kernels.batching status code (DONE, REJECTED, FAILED, or in progress)
    dispatch_s, first_token_s, done_s: at the pool (first token and done after the engine's
                     front end); replica, version, preemptions, attempts as the kernel has them
    client_first_s, client_done_s: the first token and the whole response back at the client
    request_bytes, response_bytes: payload sizes on the wire
    uplink_send_s:   when the request's payload entered an inter-site link (NaN: it crossed
                     none, or was never sent)
    downlink_send_s: when the response entered an inter-site link (NaN: likewise)
    delayed, cut_off, diverted: outages on the request path made it wait, cut it off, or
                     sent it to the fallback pool
    error_rate, error: the served model's error rate at its first token, and the drawn
                     outcome (error is meaningful only where `served`); labelled: it gets a label
    stale_error_rate: the error rate a model adapted to no drift would have had at that
                     time (the drift's full damage; the served version's error_rate where
                     not given)
    traffic_class:   index into `RunRecord.class_names`
    reason:          why the request went to its pool (sim.kernels.batching PREFERRED,
                     OVERFLOW, FAILOVER, WEIGHTED; NO_REASON when it reached none)
    """

    send_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_group: np.ndarray
    pool: np.ndarray
    status: np.ndarray
    pool_arrival_s: np.ndarray
    dispatch_s: np.ndarray
    first_token_s: np.ndarray
    done_s: np.ndarray
    replica: np.ndarray
    version: np.ndarray
    preemptions: np.ndarray
    attempts: np.ndarray
    client_first_s: np.ndarray
    client_done_s: np.ndarray
    request_bytes: np.ndarray
    response_bytes: np.ndarray
    uplink_send_s: np.ndarray
    downlink_send_s: np.ndarray
    delayed: np.ndarray
    cut_off: np.ndarray
    diverted: np.ndarray
    error_rate: np.ndarray
    error: np.ndarray
    labelled: np.ndarray
    traffic_class: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    reason: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    stale_error_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        n = len(self.status)
        if len(self.stale_error_rate) != n:
            self.stale_error_rate = self.error_rate.copy()
        if len(self.traffic_class) != n:  # not given: one class
            self.traffic_class = np.zeros(n, dtype=np.int32)
        if len(self.reason) != n:
            self.reason = np.where(self.pool >= 0, 0, NO_REASON).astype(np.int8)

    def __len__(self) -> int:
        return len(self.status)

    @property
    def completed(self) -> np.ndarray:
        return self.status == DONE

    @property
    def served(self) -> np.ndarray:
        """Requests that got a first token (their model version and outcome are known)."""
        return ~np.isnan(self.first_token_s)


@dataclass(eq=False)
class PoolRecord:
    """One serving pool: what it held and how busy it kept it.

    busy_s: seconds each replica spent iterating (an iteration counts in full when it
    starts); iterations: how many each ran; compute_s and memory_s: the seconds its work took at
    the replica's achievable FLOP rates and bandwidths (`sim.kernels.roofline.work_seconds`;
    None when the service model has no roofline); holding: the intervals each replica held its
    GPUs (replica, start_s, end_s, clipped to the horizon); timeline: snapshots (t_s,
    busy_s per replica, gpus_in_use). GPU-seconds are computed from these in
    `sim.metrics.utilisation`, nowhere else.
    """

    name: str
    site: str
    zone: str
    pool: str
    gpu: str
    gpus_per_replica: int
    replicas: int
    active_replicas: int
    elastic: bool
    busy_s: np.ndarray
    iterations: np.ndarray
    holding: pd.DataFrame
    timeline_s: np.ndarray
    timeline_busy_s: np.ndarray  # (snapshots, replicas)
    timeline_gpus: np.ndarray
    frontend_lag_bound_s: float = 0.0
    requests_ended: int = 0  # requests that ended here (completed, failed or rejected)
    autoscaled: bool = False  # an autoscaler sets how many replicas hold GPUs
    min_replicas: int = 0  # the autoscaler's bounds (replicas, active_replicas without one)
    max_replicas: int = 0
    billing: str = "per_second"  # how the provider bills held GPUs: per_second or per_hour
    api: str = ""  # a managed API pool: its catalog id (no replicas, no GPUs); "" for a pool of GPUs
    compute_s: np.ndarray | None = None  # per replica: its work's seconds at the achievable FLOP rates
    memory_s: np.ndarray | None = None  # ... and at the achievable bandwidths (None: not known, use busy_s)

    def replicas_held(self, times_s: np.ndarray) -> np.ndarray:
        """How many replicas held their GPUs at each of `times_s` (from `holding`)."""
        t = np.asarray(times_s, dtype=np.float64)
        start = self.holding["start_s"].to_numpy()
        end = self.holding["end_s"].to_numpy()
        return ((start[None, :] <= t[:, None]) & (t[:, None] < end[None, :])).sum(axis=1)


def empty_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """An empty DataFrame with these columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


HOLD_COLUMNS = {"site": object, "pool": object, "purpose": object, "gpus": np.int64, "start_s": np.float64,
                "end_s": np.float64}
TRANSFER_COLUMNS = {"start_s": np.float64, "from_site": object, "to_site": object, "data_class": object,
                    "bytes": np.float64, "records": np.float64, "purpose": object, "end_s": np.float64,
                    "dataset": object}
"""`dataset` names the records a transfer carries when the same ones may travel again (a
development job's data set: 'development:<job>'); '' when they are new every time."""
STAGE_COLUMNS = {"stage": object, "start_s": np.float64, "end_s": np.float64, "drift_event": np.int64,
                 "version": np.int64, "detail": object}
JOB_COLUMNS = {"name": object, "purpose": object, "submitted_s": np.float64, "started_s": np.float64,
               "finished_s": np.float64, "wait_s": np.float64, "gpus": np.int64, "detail": object}
LINK_COLUMNS = {"from_site": object, "to_site": object, "accepted_bytes": np.float64, "sent_bytes": np.float64}
FAULT_COLUMNS = {"kind": object, "target": object, "replica": np.int64, "start_s": np.float64, "end_s": np.float64,
                 "restored": bool, "time_to_restore_s": np.float64, "requests_retried": np.int64,
                 "requests_failed": np.int64, "requests_delayed": np.int64, "requests_cut_off": np.int64,
                 "requests_diverted": np.int64}
AUTOSCALE_COLUMNS = {"pool": object, "t_s": np.float64, "metric": np.float64, "replicas": np.int64,
                     "desired": np.int64, "action": object}
TRAINING_RUN_COLUMNS = {"purpose": object, "lost_s": np.float64, "waited_s": np.float64, "interruptions": np.int64}


@dataclass(eq=False)
class RunRecord:
    """Everything a finished run hands to its measurements (see the module docstring)."""

    scenario: Scenario
    replication: int
    requests: RequestTable
    pools: dict[str, PoolRecord]
    primary_pool: str  # the first traffic class's preferred pool (placement.inference's first, without rules)
    gpu_holds: pd.DataFrame = field(default_factory=lambda: empty_frame(HOLD_COLUMNS))
    transfers: pd.DataFrame = field(default_factory=lambda: empty_frame(TRANSFER_COLUMNS))
    link_bytes: pd.DataFrame = field(default_factory=lambda: empty_frame(LINK_COLUMNS))
    link_down: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    stages: pd.DataFrame = field(default_factory=lambda: empty_frame(STAGE_COLUMNS))
    jobs: pd.DataFrame = field(default_factory=lambda: empty_frame(JOB_COLUMNS))
    detections: list[float] = field(default_factory=list)
    version_created_s: dict[int, float] = field(default_factory=dict)
    version_residual: dict[int, dict[int, float]] = field(default_factory=dict)
    """Per model version, the share of each drift event's excess error it keeps (absent: 1)."""
    drift_onsets: list[tuple[str, float]] = field(default_factory=list)  # (kind, onset_s) per drift event
    base_error_rate: float = 0.0
    faults: pd.DataFrame = field(default_factory=lambda: empty_frame(FAULT_COLUMNS))
    training_runs: pd.DataFrame = field(default_factory=lambda: empty_frame(TRAINING_RUN_COLUMNS))
    reachability_waits: list[tuple[str, str, float, float]] = field(default_factory=list)
    capacity_waits: list[tuple[str, float, float]] = field(default_factory=list)
    retry_limit: int | None = None  # attempts per request when faults are installed
    class_names: list[str] = field(default_factory=lambda: ["default"])  # RequestTable.traffic_class
    autoscaling: pd.DataFrame = field(default_factory=lambda: empty_frame(AUTOSCALE_COLUMNS))
    wall_s: float = 0.0
    requests_generated: int = 0  # requests the workload generated (every one ends once or is unfinished)
    streamed: bool = False
    """The world handed its requests on as they ended (`World(on_requests=...)`): `requests`
    is empty, and `tally` holds what the runner kept of them."""
    tally: Any = None
    """A streamed run's `sim.metrics.tally.RequestTally`, attached by whoever ran the world
    (`sim.runner`); None for an exact run."""

    @property
    def horizon_s(self) -> float:
        return float(self.scenario.horizon)

    @property
    def warmup_s(self) -> float:
        return float(self.scenario.warmup)

    @property
    def pool_names(self) -> list[str]:
        return list(self.pools)

    def pool_of(self, name: str) -> PoolRecord:
        return self.pools[name]

    def served_by(self) -> np.ndarray:
        """Each request's pool name ('' when it reached none)."""
        names = np.array([*self.pool_names, ""], dtype=object)
        return names[np.where(self.requests.pool >= 0, self.requests.pool, len(self.pool_names))]
