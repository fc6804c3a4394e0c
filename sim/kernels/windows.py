"""Windows of time: half-open intervals [start, end), merged, and the questions faults ask
of them (is t inside one, until when; how much of a span do they cover). Pure functions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def merge_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint windows covering the same time as the given (overlapping) ones."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def window_containing(windows: list[tuple[float, float]], t: np.ndarray) -> np.ndarray:
    """For each time, the end of the (merged) window containing it, or NaN when none does."""
    t = np.asarray(t, dtype=np.float64)
    if not windows:
        return np.full(t.shape, np.nan)
    starts = np.array([w[0] for w in windows])
    ends = np.array([w[1] for w in windows])
    k = np.searchsorted(starts, t, side="right") - 1
    valid = k >= 0
    out = np.full(t.shape, np.nan)
    inside = valid.copy()
    inside[valid] = t[valid] < ends[k[valid]]
    out[inside] = ends[k[inside]]
    return out


def overlap_s(windows: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end) covered by the (merged) windows."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in windows)
