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

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def fifo_link(send_s, size_bytes, order, bandwidth_bytes_per_s, one_way_s, jitter_s, free_at):
    """Arrival times of payloads sent at `send_s`, taken in `order` (indices, by send time), on
    a link busy until `free_at` (-inf: idle); and when it is free again."""
    n = send_s.shape[0]
    arrive = np.full(n, np.nan)
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
    return arrive, free_at


@njit(cache=True, nogil=True)
def _ties_in_order(order, keys):
    """Within each run of equal keys in `order` (sorted by key), the indices in increasing
    order: an unstable sort made stable. Runs are short (the tokens of one iteration)."""
    n = order.shape[0]
    start = 0
    while start < n:
        end = start + 1
        while end < n and keys[order[end]] == keys[order[start]]:
            end += 1
        for k in range(start + 1, end):  # insertion sort of the run
            value = order[k]
            j = k
            while j > start and order[j - 1] > value:
                order[j] = order[j - 1]
                j -= 1
            order[j] = value
        start = end
    return order


def send_order(send_s: np.ndarray) -> np.ndarray:
    """The payloads that were sent (not NaN), by send time, ties in the order given: what a
    stable sort gives, by quicksort and a pass over the ties (a fourth of the time for the
    tens of thousands of payloads a streamed run carries at a time)."""
    valid = np.flatnonzero(~np.isnan(send_s))
    order = valid[np.argsort(send_s[valid], kind="quicksort")].astype(np.int64)
    return _ties_in_order(order, send_s)


def carry(send_s: np.ndarray, size_bytes: np.ndarray, bandwidth_bytes_per_s: float, one_way_s: float,
          jitter_s: np.ndarray | None = None) -> np.ndarray:
    """Arrival times of payloads over one link direction (NaN sends stay NaN)."""
    return carry_from(send_s, size_bytes, bandwidth_bytes_per_s, one_way_s, jitter_s)[0]


def carry_from(send_s: np.ndarray, size_bytes: np.ndarray, bandwidth_bytes_per_s: float, one_way_s: float,
               jitter_s: np.ndarray | None = None, free_at: float = -math.inf) -> tuple[np.ndarray, float]:
    """`carry` on a link that is busy until `free_at` (the payloads carried before, all sent
    no later than these): the arrivals, and when the link is free again. Carrying payloads in
    time-ordered batches, each from where the last left the link, is carrying them at once."""
    send_s = np.asarray(send_s, dtype=np.float64)
    order = send_order(send_s)
    if not len(order):
        return np.full(len(send_s), np.nan), free_at
    jitter = np.zeros(len(send_s)) if jitter_s is None else np.asarray(jitter_s, dtype=np.float64)
    arrive, free_at = fifo_link(send_s, np.asarray(size_bytes, dtype=np.float64), order, float(bandwidth_bytes_per_s),
                            float(one_way_s), jitter, float(free_at))
    return arrive, float(free_at)
