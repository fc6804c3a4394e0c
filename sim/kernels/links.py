"""Network links on the request path, as FIFO queues.

A link carries payloads one after another at its bandwidth, then each payload travels for
the one-way delay (half the RTT) plus its own jitter:

    start_i  = max(send_i, finish_{i-1})          (payloads are sent in the order given)
    finish_i = start_i + bytes_i / bandwidth
    arrive_i = finish_i + one_way + jitter_i      (jitter_i >= -one_way: no time travel)

Requests and responses are small, so on a healthy link the queueing term is tiny and the
one-way delay dominates; on a thin or busy link it is not. Bulk transfers (datasets, model
weights) are not FIFO payloads: they are SimPy processes sharing the link (sim.world).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def fifo_link(send_s, size_bytes, order, bandwidth_bytes_per_s, one_way_s, jitter_s):
    """Arrival times of payloads sent at `send_s`, taken in `order` (indices, by send time)."""
    n = send_s.shape[0]
    arrive = np.full(n, np.nan)
    free_at = -np.inf
    for k in range(order.shape[0]):
        i = order[k]
        if np.isnan(send_s[i]):
            arrive[i] = np.nan
            continue
        start = send_s[i] if send_s[i] > free_at else free_at
        free_at = start + size_bytes[i] / bandwidth_bytes_per_s
        delay = one_way_s + jitter_s[i]
        if delay < 0.0:
            delay = 0.0
        arrive[i] = free_at + delay
    return arrive


def carry(send_s: np.ndarray, size_bytes: np.ndarray, bandwidth_bytes_per_s: float, one_way_s: float,
          jitter_s: np.ndarray | None = None) -> np.ndarray:
    """Arrival times of payloads over one link direction (NaN sends stay NaN)."""
    send_s = np.asarray(send_s, dtype=np.float64)
    valid = ~np.isnan(send_s)
    order = np.flatnonzero(valid)[np.argsort(send_s[valid], kind="stable")].astype(np.int64)
    jitter = np.zeros(len(send_s)) if jitter_s is None else np.asarray(jitter_s, dtype=np.float64)
    arrive = np.full(len(send_s), np.nan)
    if len(order):
        arrive = fifo_link(send_s, np.asarray(size_bytes, dtype=np.float64), order,
                           float(bandwidth_bytes_per_s), float(one_way_s), jitter)
        arrive[~valid] = np.nan
    return arrive
