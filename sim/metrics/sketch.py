"""Latency percentiles without keeping the latencies: a mergeable quantile sketch.

A streamed run (86M requests in a busy day) cannot keep every request's latency to sort them.
It keeps a `LatencySketch` per metric instead: a DDSketch (Masson, Rim and Lee, "DDSketch: a
fast and fully-mergeable quantile sketch with relative-error guarantees", VLDB 2019). Values
fall into logarithmic buckets of ratio gamma = (1 + a) / (1 - a); a quantile is answered with
its bucket's representative, which is within a relative error `a` of the true order
statistic, whatever the distribution and however many values. Sketches of two runs merge into
the sketch of the union exactly (the bucket counts add), which is how replications pool their
percentiles.

Why DDSketch rather than a KLL or REQ sketch (Apache `datasketches`): latency SLOs are read in
relative terms (a p99 within 1% of its value), and DDSketch's guarantee is exactly that, for
any rank, with a merge that is exact and deterministic; KLL's error is in rank (a p99 could be
any value between the p98.9 and p99.1, which in a heavy tail may be far apart) and REQ's
relative rank error still says nothing about the value.

The buckets and their representatives are the `ddsketch` package's (DataDog's reference
implementation): its `LogarithmicMapping`, the memory-optimal one. The bucket counts are kept
here, in a numpy array, rather than in the package's store, whose `add` is one Python call
per value (or per bucket, weighted): a chunk's values are bucketed and counted with numpy in
one pass (`numpy.bincount`), and a quantile is read off the cumulative counts by the
package's rule (the first bucket whose cumulative count exceeds rank q x (count - 1)). Adding
a chunk's TTFT, TPOT and E2E to the package's store bucket by bucket cost about a
millisecond per sketch (a latency spans hundreds of 0.25% buckets).

Counts, sums, minimum and maximum are kept exactly beside the buckets (means are exact).
`RELATIVE_ACCURACY` is the `a` every run uses and the summary states.
"""

from __future__ import annotations

import math

import numpy as np
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.0025
"""Every quantile from a sketch is within 0.25% of the true order statistic it stands for."""


class LatencySketch:
    """The distribution of a non-negative metric (seconds), summarised: exact count, sum,
    min and max, and quantiles within `RELATIVE_ACCURACY` (see the module docstring)."""

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.relative_accuracy = relative_accuracy
        self.mapping = LogarithmicMapping(relative_accuracy)
        # LogarithmicMapping's: key = ceil(log2(value) x multiplier), multiplier = ln 2 / ln gamma
        self._multiplier = math.log(2) / math.log1p(2 * relative_accuracy / (1 - relative_accuracy))
        self.lowest_key = 0  # the key of counts[0]
        self.counts = np.zeros(0, dtype=np.int64)  # values per bucket, keys lowest_key, lowest_key + 1, ...
        self.zeros = 0  # values too small for any bucket (latencies of zero)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def keys(self, values: np.ndarray) -> np.ndarray:
        """The bucket of each (positive) value, as `LogarithmicMapping.key` computes it (numpy's
        log2 may differ from Python's in the last bit: a value within a rounding error of a
        bucket boundary may land in the next bucket, whose representative is as close)."""
        return np.ceil(np.log2(values) * self._multiplier).astype(np.int64)

    def add(self, values: np.ndarray) -> None:
        """Add every finite value of `values` (NaN: no value, skipped)."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            return
        self.count += len(values)
        self.sum += float(values.sum())
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        positive = values > self.mapping.min_possible
        self.zeros += int(len(values) - positive.sum())  # latencies are never negative; zero delays occur
        keys = self.keys(values[positive])
        if len(keys):
            lowest = int(keys.min())
            self._add_counts(lowest, np.bincount(keys - lowest))

    def _add_counts(self, lowest: int, counts: np.ndarray) -> None:
        """Add bucket counts for keys lowest, lowest + 1, ... (growing the array as needed)."""
        if not len(self.counts):
            self.lowest_key, self.counts = lowest, counts.astype(np.int64)
            return
        start = min(self.lowest_key, lowest)
        end = max(self.lowest_key + len(self.counts), lowest + len(counts))
        if (start, end) != (self.lowest_key, self.lowest_key + len(self.counts)):
            grown = np.zeros(end - start, dtype=np.int64)
            grown[self.lowest_key - start:self.lowest_key - start + len(self.counts)] = self.counts
            self.lowest_key, self.counts = start, grown
        self.counts[lowest - start:lowest - start + len(counts)] += counts

    def merge(self, other: LatencySketch) -> None:
        """Take in another sketch's values (same relative accuracy): the sketch of the union."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("sketches of different relative accuracies do not merge")
        if other.count == 0:
            return
        if len(other.counts):
            self._add_counts(other.lowest_key, other.counts)
        self.zeros += other.zeros
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1): the representative of the first bucket whose
        cumulative count exceeds rank q x (count - 1) (DDSketch's rule), so within the
        relative accuracy of the order statistics either side of that rank; the exact
        minimum and maximum at 0 and 1. None when empty."""
        if self.count == 0:
            return None
        if q <= 0.0:
            return self.min
        if q >= 1.0:
            return self.max
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return 0.0
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank - self.zeros, side="right"))
        value = self.mapping.value(self.lowest_key + min(bucket, len(self.counts) - 1))
        return float(min(max(value, self.min), self.max))

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None
