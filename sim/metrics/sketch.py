"""Latency percentiles without keeping the latencies: a mergeable quantile sketch.

A streamed run (86M requests in a busy day) cannot keep every request's latency to sort them.
It keeps a `LatencySketch` per metric instead: a DDSketch (Masson, Rim and Lee, "DDSketch: a
fast and fully-mergeable quantile sketch with relative-error guarantees", VLDB 2019; the
`ddsketch` package, DataDog's reference implementation). Values fall into logarithmic buckets
of ratio gamma = (1 + a) / (1 - a); a quantile is answered with its bucket's representative,
which is within a relative error `a` of the true order statistic, whatever the distribution
and however many values. Sketches of two runs merge into the sketch of the union exactly (the
bucket counts add), which is how replications pool their percentiles.

Why DDSketch rather than a KLL or REQ sketch (Apache `datasketches`): latency SLOs are read in
relative terms (a p99 within 1% of its value), and DDSketch's guarantee is exactly that, for
any rank, with a merge that is exact and deterministic; KLL's error is in rank (a p99 could be
any value between the p98.9 and p99.1, which in a heavy tail may be far apart) and REQ's
relative rank error still says nothing about the value. DDSketch's buckets are also a
function of the value alone, so values can be bucketed with numpy: `add` takes an array,
counts its values per bucket and hands the sketch one weighted value per
bucket, a few hundred calls per chunk instead of one per request (`numpy.bincount`).

Counts, sums, minimum and maximum are kept exactly beside the sketch (means are exact).
`RELATIVE_ACCURACY` is the `a` every run uses and the summary states.
"""

from __future__ import annotations

import math

import numpy as np
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.0025
"""Every quantile from a sketch is within 0.25% of the true order statistic it stands for."""


class LatencySketch:
    """The distribution of a non-negative metric (seconds), summarised: exact count, sum,
    min and max, and quantiles within `RELATIVE_ACCURACY` (see the module docstring)."""

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.relative_accuracy = relative_accuracy
        self.sketch = DDSketch(relative_accuracy)
        self._mapping = LogarithmicMapping(relative_accuracy)
        # LogarithmicMapping's: key = ceil(log2(value) x multiplier), multiplier = ln 2 / ln gamma
        self._multiplier = math.log(2) / math.log1p(2 * relative_accuracy / (1 - relative_accuracy))
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

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
        positive = values > self._mapping.min_possible
        zeros = int((~positive).sum())  # latencies are never negative; zero delays do occur
        if zeros:
            self.sketch.add(0.0, float(zeros))
        keys = self._keys(values[positive])
        if not len(keys):
            return
        lowest = int(keys.min())
        counts = np.bincount(keys - lowest)
        filled = np.flatnonzero(counts)
        for key, weight in zip((filled + lowest).tolist(), counts[filled].tolist(), strict=True):
            # the bucket's representative value falls in the bucket: the sketch files it there
            self.sketch.add(self._mapping.value(key), float(weight))

    def _keys(self, values: np.ndarray) -> np.ndarray:
        """The DDSketch bucket of each value, as `LogarithmicMapping.key` computes it (numpy's
        log2 may differ from Python's in the last bit: a value within a rounding error of a
        bucket boundary may land in the next bucket, whose representative is as close)."""
        return np.ceil(np.log2(values) * self._multiplier).astype(np.int64)

    def merge(self, other: LatencySketch) -> None:
        """Take in another sketch's values (same relative accuracy): the sketch of the union."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("sketches of different relative accuracies do not merge")
        if other.count == 0:
            return
        self.sketch.merge(other.sketch)
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1) of the values, within the relative accuracy of the
        order statistic at rank q x (count - 1); the exact minimum and maximum at 0 and 1.
        None when empty."""
        if self.count == 0:
            return None
        if q <= 0.0:
            return self.min
        if q >= 1.0:
            return self.max
        value = self.sketch.get_quantile_value(q)
        return None if value is None else float(min(max(value, self.min), self.max))

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None
