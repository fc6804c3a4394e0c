"""GPU time and utilisation: the one definition of GPU-seconds held and busy.

A GPU is **held** while it is powered (premises) or paid for (cloud); some of that time it is
**busy**. Utilisation is always busy / held, over whatever scope is asked for: a serving
pool's replicas, a site's GPU pool, a slice of the timeline, a purpose.

**Serving pools** (`serving_gpu_seconds`): a pool's replicas hold their GPUs while active,
draining, or down but not released (`PoolRecord.holding`, one interval per replica instance);
they are busy while iterating (`PoolRecord.busy_s`, an iteration counting in full when it
starts, capped at the horizon), x GPUs per replica. Over the horizon, a cloud pool billed
`per_hour` holds (pays for) each instance's interval rounded up to whole hours
(`billed_seconds`): an instance released after 10 minutes is paid for an hour. An instance
still held at the horizon is charged up to the horizon only: the hour it is in is billed
within the next period. Premises pools, and pools billed `per_second`, hold exactly their
intervals. `pool_held_gpu_seconds` is this definition; `serving_utilisation` is busy / held,
per serving pool: the `gpu_utilisation` of the summary.

**Replicas** (`replicas_mean`, `replicas_max`): the time-average over the horizon of the
replicas holding GPUs, and the most at once, from the same intervals (unrounded: replicas that
exist, not hours billed).

**GPU pools of the sites** (`gpu_time`, one row per pool of every site; `sim.metrics.energy`
prices it in watts, `sim.metrics.cost` in dollars):

- Premises GPUs are owned and always on: held = capacity x horizon, used or not.
- A non-elastic cloud pool is rented for the whole horizon: held = count x horizon, unless an
  autoscaled serving pool lives on it.
- An elastic cloud pool, or one an autoscaled serving pool lives on, holds what it uses: the
  replicas of every serving pool on it as they hold GPUs (`pool_held_gpu_seconds`, billing
  rounding included), plus the training and provisioning holds (`RunRecord.gpu_holds`)
  beyond its baseline `count` when no serving pool lives on it (it holds the baseline
  throughout), or all of them when one does. Provisioning is held from the moment the GPU is
  requested. A pool scaled to zero holds nothing while it is empty.
- Busy GPU-seconds: the serving pools' busy GPU-seconds plus training holds at utilisation
  1 for their duration; never more than held. Provisioning GPUs are held but idle.

**By purpose** (`gpu_hours_by_purpose`): serving (busy and held by the replicas), retraining
and development (their holds, busy = held), provisioning (held only).

**Timeline** (`utilisation_timeline`): per slice of the pools' snapshots and per serving
pool, the GPUs its replicas held on average, how many were busy, their ratio, and the GPUs
held for retraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.record import PoolRecord, RunRecord
from sim.spec.scenario import Pool

BILLINGS = ("per_second", "per_hour")

TRAINING_PURPOSES = ("retraining", "development")  # holds that run jobs on their GPUs
HOLD_PURPOSES = (*TRAINING_PURPOSES, "provisioning")  # holds that are billed
PURPOSES = ("serving", *TRAINING_PURPOSES)
HOUR_S = 3600.0

GPU_TIME_COLUMNS = ["site", "zone", "pool", "gpu", "gpus", "elastic", "held_gpu_s", "serving_busy_gpu_s",
                    "training_gpu_s", "provisioning_gpu_s", "busy_gpu_s", "utilisation"]
TIMELINE_COLUMNS = ["start_s", "end_s", "pool", "serving_gpus", "serving_busy_gpus", "serving_utilisation",
                    "training_gpus"]


def ratio(busy: float, held: float) -> float:
    """busy / held, 0 when nothing was held."""
    return busy / held if held > 0 else 0.0


# ------------------------------------------------------------------------------------------
# Serving pools
# ------------------------------------------------------------------------------------------


def held_gpu_seconds(pool: PoolRecord, start_s: float = 0.0, end_s: float = np.inf) -> float:
    """GPU-seconds the pool's replicas held GPUs within [start, end]."""
    held = pool.holding
    overlap = (held["end_s"].clip(upper=end_s) - held["start_s"].clip(lower=start_s)).clip(lower=0.0)
    return float(overlap.sum()) * pool.gpus_per_replica


def billed_seconds(pool: PoolRecord, horizon_s: float) -> np.ndarray:
    """Seconds each holding interval (replica instance) is paid for within the horizon: its
    length, rounded up to whole hours for a cloud pool billed per hour when the instance was
    released before the horizon (see the module doc)."""
    start = pool.holding["start_s"].to_numpy(dtype=np.float64).clip(min=0.0)
    end = pool.holding["end_s"].to_numpy(dtype=np.float64).clip(max=horizon_s)
    seconds = (end - start).clip(min=0.0)
    if pool.billing == "per_hour" and pool.zone == "third_party":
        released = end < horizon_s
        seconds = np.where(released & (seconds > 0), np.ceil(seconds / HOUR_S) * HOUR_S, seconds)
    return seconds


def pool_held_gpu_seconds(pool: PoolRecord, horizon_s: float) -> float:
    """GPU-seconds the pool's replicas held (paid for, in the cloud) over the horizon: the one
    definition behind GPU-hours, utilisation and cloud GPU cost of serving pools."""
    return float(billed_seconds(pool, horizon_s).sum()) * pool.gpus_per_replica


def replicas_mean(pool: PoolRecord, horizon_s: float) -> float:
    """Time-average over [0, horizon] of the replicas holding GPUs."""
    if horizon_s <= 0:
        return 0.0
    return held_gpu_seconds(pool, 0.0, horizon_s) / pool.gpus_per_replica / horizon_s


def replicas_max(pool: PoolRecord) -> int:
    """The most replicas holding GPUs at once (intervals are [start, end): one released at t
    and one acquired at t are not both counted)."""
    start = pool.holding["start_s"].to_numpy(dtype=np.float64)
    end = pool.holding["end_s"].to_numpy(dtype=np.float64)
    keep = end > start
    if not keep.any():
        return 0
    times = np.concatenate([start[keep], end[keep]])
    steps = np.concatenate([np.ones(keep.sum()), -np.ones(keep.sum())])
    order = np.lexsort((steps, times))  # at equal times, releases (-1) before acquisitions
    return int(np.cumsum(steps[order]).max())


def busy_gpu_seconds(pool: PoolRecord, horizon_s: float) -> float:
    """GPU-seconds the pool's replicas spent iterating within the horizon."""
    return float(np.minimum(pool.busy_s, horizon_s).sum()) * pool.gpus_per_replica


def serving_gpu_seconds(record: RunRecord) -> dict[str, tuple[float, float]]:
    """(held, busy) GPU-seconds of every serving pool, by pool name."""
    horizon = record.horizon_s
    return {name: (pool_held_gpu_seconds(pool, horizon), busy_gpu_seconds(pool, horizon))
            for name, pool in record.pools.items()}


def serving_utilisation(record: RunRecord) -> dict[str, float]:
    """Busy / held GPU-seconds of every serving pool's replicas over the horizon (a managed API
    holds no GPUs of ours: it has none)."""
    return {name: ratio(busy, held) for name, (held, busy) in serving_gpu_seconds(record).items()
            if not record.pools[name].api}


# ------------------------------------------------------------------------------------------
# GPU pools of the sites
# ------------------------------------------------------------------------------------------


def hold_seconds(record: RunRecord, site: str, pool: str, purposes: tuple[str, ...], beyond: int = 0) -> float:
    """GPU-seconds of the lifecycle's holds on one pool for these purposes, counting GPUs
    above `beyond` only."""
    holds = record.gpu_holds
    mine = holds[(holds["site"] == site) & (holds["pool"] == pool) & holds["purpose"].isin(purposes)]
    gpus = (mine["gpus"] - beyond).clip(lower=0)
    return float((gpus * (mine["end_s"] - mine["start_s"]).clip(lower=0.0)).sum())


def serving_pools_on(record: RunRecord, site: str, pool: str) -> list[str]:
    """The serving pools whose replicas live on a site's GPU pool, by name."""
    return [name for name, p in record.pools.items() if p.site == site and p.pool == pool]


def holds_what_it_uses(record: RunRecord, site_name: str, pool: Pool) -> bool:
    """Does a cloud GPU pool pay for what it holds (elastic, or an autoscaled serving pool
    lives on it), rather than for its count over the horizon?"""
    if record.scenario.sites[site_name].zone != "third_party":
        return False
    on_it = serving_pools_on(record, site_name, pool.name or "")
    return pool.elastic or any(record.pools[name].autoscaled for name in on_it)


def gpu_time(record: RunRecord) -> pd.DataFrame:
    """One row per GPU pool of every site: GPU-seconds held and busy (see the module doc)."""
    scenario = record.scenario
    horizon = record.horizon_s
    serving = serving_gpu_seconds(record)
    rows: list[dict[str, Any]] = []
    for site_name, site in scenario.sites.items():
        for pool in site.pools:
            assert pool.name is not None
            if pool.is_api:
                continue  # a managed API holds no GPUs of ours
            mine = [serving[name] for name in serving_pools_on(record, site_name, pool.name)]
            serving_held = sum(held for held, _ in mine)
            serving_busy = sum(busy for _, busy in mine)
            if site.zone == "private":
                held = pool.capacity * horizon
            elif not holds_what_it_uses(record, site_name, pool):
                held = pool.count * horizon
            elif mine:  # the replicas' own record, plus GPUs taken for training and provisioning
                held = serving_held + hold_seconds(record, site_name, pool.name, HOLD_PURPOSES)
            else:
                held = pool.count * horizon + hold_seconds(record, site_name, pool.name, HOLD_PURPOSES,
                                                           beyond=pool.count)
            training = hold_seconds(record, site_name, pool.name, TRAINING_PURPOSES)
            busy = min(serving_busy + training, held)
            rows.append({
                "site": site_name, "zone": site.zone, "pool": pool.name, "gpu": pool.gpu, "gpus": pool.capacity,
                "elastic": pool.elastic, "held_gpu_s": held, "serving_busy_gpu_s": serving_busy,
                "training_gpu_s": training,
                "provisioning_gpu_s": hold_seconds(record, site_name, pool.name, ("provisioning",)),
                "busy_gpu_s": busy, "utilisation": ratio(busy, held),
            })
    return pd.DataFrame(rows, columns=GPU_TIME_COLUMNS)


def gpu_hours_by_purpose(record: RunRecord) -> tuple[dict[str, float], dict[str, float]]:
    """(busy, held) GPU-hours by purpose: serving over every serving pool's replicas,
    retraining and development from their holds, provisioning held only."""
    serving = serving_gpu_seconds(record)
    busy = {"serving": sum(b for _, b in serving.values()) / HOUR_S}
    held = {"serving": sum(h for h, _ in serving.values()) / HOUR_S}
    holds = record.gpu_holds
    for purpose in HOLD_PURPOSES:
        mine = holds[holds["purpose"] == purpose]
        hours = float((mine["gpus"] * (mine["end_s"] - mine["start_s"]).clip(lower=0.0)).sum()) / HOUR_S
        held[purpose] = hours
        if purpose != "provisioning":
            busy[purpose] = hours
    return busy, held


# ------------------------------------------------------------------------------------------
# Over time
# ------------------------------------------------------------------------------------------


def _overlap_seconds(t0: np.ndarray, t1: np.ndarray, start: np.ndarray, end: np.ndarray,
                     weight: np.ndarray) -> np.ndarray:
    """Per slice [t0[k], t1[k]]: the sum over intervals [start, end] of weight x their overlap."""
    if len(start) == 0:
        return np.zeros(len(t0))
    overlap = np.minimum(end[None, :], t1[:, None]) - np.maximum(start[None, :], t0[:, None])
    return (np.clip(overlap, 0.0, None) * weight[None, :]).sum(axis=1)


def utilisation_timeline(record: RunRecord) -> pd.DataFrame:
    """Per serving pool and slice of its snapshots: GPUs held, busy, their ratio, and the
    GPUs held for retraining (at the pool's site)."""
    holds = record.gpu_holds
    training = holds[holds["purpose"] == "retraining"]
    frames = []
    for name, pool in record.pools.items():
        times, busy = np.asarray(pool.timeline_s, dtype=np.float64), pool.timeline_busy_s
        if len(times) < 2:
            continue
        t0, t1 = times[:-1], times[1:]
        keep = t1 - t0 > 0
        ends = np.minimum(busy[1:], t1[:, None]) - np.minimum(busy[:-1], t1[:, None])
        serving_busy = ends.sum(axis=1) * pool.gpus_per_replica
        held_start = pool.holding["start_s"].to_numpy(dtype=np.float64)
        held_end = pool.holding["end_s"].to_numpy(dtype=np.float64)
        held = _overlap_seconds(t0, t1, held_start, held_end, np.ones(len(held_start))) * pool.gpus_per_replica
        here = training[training["site"] == pool.site]
        trained = _overlap_seconds(t0, t1, here["start_s"].to_numpy(dtype=np.float64),
                                   here["end_s"].to_numpy(dtype=np.float64), here["gpus"].to_numpy(dtype=np.float64))
        span = (t1 - t0)[keep]
        frames.append(pd.DataFrame({
            "start_s": t0[keep], "end_s": t1[keep], "pool": name, "serving_gpus": held[keep] / span,
            "serving_busy_gpus": serving_busy[keep] / span,
            "serving_utilisation": np.divide(serving_busy[keep], held[keep], out=np.zeros(int(keep.sum())),
                                             where=held[keep] > 0),
            "training_gpus": trained[keep] / span}))
    if not frames:
        return pd.DataFrame(columns=TIMELINE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TIMELINE_COLUMNS]
