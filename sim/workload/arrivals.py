"""Arrival processes: when clients send their requests.

Each process is one function `(spec, horizon_s, rng) -> times`, registered under the name the
spec's `process:` uses. Times are float64 seconds, sorted, inside [0, horizon_s). Adding a
process is adding a function here and a model in `sim.spec.scenario`.

- **poisson**: exponential gaps of mean 1/rate; t_k = g_1 + ... + g_(k+1). Gaps are drawn in
  chunks (the expected count plus 4 standard deviations) until the horizon is passed.
- **constant**: t_k = k / rate for k = 0, 1, ...; the first request leaves at time 0, as a load
  generator fires as soon as it starts, and [0, T) holds ceil(rate x T) requests.
- **bursty**: a two-state Markov-modulated Poisson process. It starts quiet; sojourns alternate
  quiet, burst, quiet, ... with exponential lengths of means `mean_quiet` and `mean_burst`. In a
  sojourn of length d at rate r the arrivals are Poisson: N ~ Poisson(r d) points at sorted
  uniform positions (the same law as exponential gaps, without a Python loop over sojourns).
  The long-run rate is (r_q m_q + r_b m_b) / (m_q + m_b), and counts are over-dispersed.
- **diurnal**: a non-homogeneous Poisson process with
  rate(t) = mean x (1 + amplitude x cos(2 pi (t - peak_at) / period)) (the spec's sine form,
  shifted by a quarter period), sampled by thinning: candidates arrive as a Poisson process at
  the peak rate mean x (1 + amplitude), and each is kept with probability rate(t) / peak.
- **stages**: each stage, in order, is a Poisson or constant process at its own rate for its
  duration (a constant stage fires first at its own start). With `repeat` the list loops until
  the horizon; without, nothing arrives after the last stage.
- **concurrency**: a closed loop, so send times are not known in advance. The first `clients`
  requests are sent at 0.0 and the rest are NaN: the serving kernel releases each when a
  client's previous request completes (plus the think time). There are `requests` requests, or
  `clients` x 1000 when the spec leaves it unset. This is the one process whose times are not
  all inside [0, horizon).
- **trace**: replay of a request trace; see `sim.workload.trace`.

Every random draw comes from the generator passed in (the "arrivals" stream), in an order
fixed by the spec alone, so the same seed gives bit-identical times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.spec.scenario import Bursty, Concurrency, Constant, Diurnal, Poisson, Stages, Trace
from sim.workload.limits import check_request_count
from sim.workload.trace import replay_trace

WHERE = "workload.arrivals"
CLOSED_LOOP_REQUESTS_PER_CLIENT = 1000


def poisson(spec: Poisson, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson arrivals at `rate_per_s`: cumulative sums of exponential gaps."""
    return _poisson_times(spec.rate_per_s, horizon_s, rng)


def constant(spec: Constant, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Evenly spaced arrivals, t_k = k / rate, the first at 0."""
    check_request_count(spec.rate_per_s * horizon_s, WHERE)
    return _constant_segments(np.zeros(1), np.array([horizon_s]), np.array([spec.rate_per_s]))


def bursty(spec: Bursty, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Two-state MMPP: quiet and burst sojourns, each with Poisson arrivals at its rate."""
    cycle = spec.mean_quiet + spec.mean_burst
    mean_rate = (spec.rate_per_s * spec.mean_quiet + spec.burst_rate_per_s * spec.mean_burst) / cycle
    check_request_count(mean_rate * horizon_s, WHERE)
    check_request_count(2 * horizon_s / cycle, f"{WHERE}.mean_quiet")  # sojourns are held too
    starts, ends = _alternating_sojourns(spec.mean_quiet, spec.mean_burst, horizon_s, rng)
    in_burst = np.arange(len(starts)) % 2 == 1
    rates = np.where(in_burst, spec.burst_rate_per_s, spec.rate_per_s)
    return _poisson_segments(starts, ends - starts, rates, rng)


def diurnal(spec: Diurnal, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Sinusoidal daily rate, by thinning a Poisson process at the peak rate."""
    peak_rate = spec.rate_per_s * (1.0 + spec.amplitude)
    candidates = _poisson_times(peak_rate, horizon_s, rng)
    phase = 2.0 * np.pi * (candidates - spec.peak_at) / spec.period
    keep_probability = (1.0 + spec.amplitude * np.cos(phase)) / (1.0 + spec.amplitude)
    keep = rng.random(len(candidates)) < keep_probability
    return candidates[keep]


def stages(spec: Stages, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Stages in sequence, each a Poisson or constant process; looped when `repeat`."""
    durations = np.array([stage.duration for stage in spec.stages])
    rates = np.array([stage.rate_per_s for stage in spec.stages])
    is_constant = np.array([stage.process == "constant" for stage in spec.stages])
    cycle = float(durations.sum())
    cycles = max(1, math.ceil(horizon_s / cycle)) if spec.repeat else 1
    check_request_count(cycles * len(durations), f"{WHERE}.stages")  # one segment each
    offsets = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    starts = (np.arange(cycles, dtype=np.float64)[:, None] * cycle + offsets[None, :]).ravel()
    lengths, rates, is_constant = (np.tile(a, cycles) for a in (durations, rates, is_constant))
    inside = starts < horizon_s
    starts, lengths, rates, is_constant = starts[inside], lengths[inside], rates[inside], is_constant[inside]
    lengths = np.minimum(lengths, horizon_s - starts)
    check_request_count(float(np.sum(rates * lengths)), WHERE)
    random_part = _poisson_segments(starts[~is_constant], lengths[~is_constant], rates[~is_constant], rng)
    even_part = _constant_segments(starts[is_constant], lengths[is_constant], rates[is_constant])
    if len(random_part) == 0 or len(even_part) == 0:
        return random_part if len(even_part) == 0 else even_part
    # Two sorted runs; a stable sort (timsort) merges them in linear time.
    return np.sort(np.concatenate([random_part, even_part]), kind="stable")


def concurrency(spec: Concurrency, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Closed loop: 0.0 for the first `clients` requests, NaN (sent on completion) for the rest."""
    count = spec.requests if spec.requests is not None else spec.clients * CLOSED_LOOP_REQUESTS_PER_CLIENT
    check_request_count(count, f"{WHERE}.requests")
    times = np.full(count, np.nan)
    times[: spec.clients] = 0.0
    return times


def trace(spec: Trace, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Send times replayed from a trace file (scaled, looped, cut at the horizon)."""
    return replay_trace(spec, horizon_s, WHERE)[0]


ArrivalProcess = Callable[[Any, float, np.random.Generator], np.ndarray]

ARRIVAL_PROCESSES: dict[str, ArrivalProcess] = {
    "poisson": poisson,
    "constant": constant,
    "bursty": bursty,
    "diurnal": diurnal,
    "stages": stages,
    "concurrency": concurrency,
    "trace": trace,
}


def arrival_times(spec: Any, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Send times for any arrival spec, by its `process` name."""
    return ARRIVAL_PROCESSES[spec.process](spec, horizon_s, rng)


# --------------------------------------------------------------------------------------------
# Expected counts, for memory estimates before anything is drawn
# --------------------------------------------------------------------------------------------


def _expected_stages(spec: Stages, horizon_s: float) -> float:
    cycle = sum(stage.duration for stage in spec.stages)
    total, start = 0.0, 0.0
    for stage in spec.stages:
        total += stage.rate_per_s * max(0.0, min(stage.duration, horizon_s - start))
        start += stage.duration
    if not spec.repeat:
        return total
    per_cycle = sum(stage.rate_per_s * stage.duration for stage in spec.stages)
    return per_cycle * math.ceil(horizon_s / cycle)


def _expected_bursty(spec: Bursty, horizon_s: float) -> float:
    cycle = spec.mean_quiet + spec.mean_burst
    return (spec.rate_per_s * spec.mean_quiet + spec.burst_rate_per_s * spec.mean_burst) / cycle * horizon_s


EXPECTED_REQUESTS: dict[str, Callable[[Any, float], float]] = {
    "poisson": lambda spec, horizon_s: spec.rate_per_s * horizon_s,
    "constant": lambda spec, horizon_s: spec.rate_per_s * horizon_s,
    "bursty": _expected_bursty,
    "diurnal": lambda spec, horizon_s: spec.rate_per_s * (1.0 + spec.amplitude) * horizon_s,  # candidates
    "stages": _expected_stages,
    "concurrency": lambda spec, horizon_s: (spec.requests if spec.requests is not None
                                            else spec.clients * CLOSED_LOOP_REQUESTS_PER_CLIENT),
    "trace": lambda spec, horizon_s: 0.0,  # known once the file is read; checked there
}


def expected_requests(spec: Any, horizon_s: float) -> float:
    """About how many requests (or, for diurnal, candidates) the process draws over the horizon."""
    return float(EXPECTED_REQUESTS[spec.process](spec, horizon_s))


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _poisson_times(rate: float, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """A homogeneous Poisson process on [0, horizon_s) from exponential gaps, drawn in chunks."""
    check_request_count(rate * horizon_s, WHERE)
    pieces: list[np.ndarray] = []
    last = 0.0
    while last < horizon_s:
        expected = rate * (horizon_s - last)
        chunk = int(expected + 4.0 * math.sqrt(expected)) + 16
        times = np.cumsum(rng.standard_exponential(chunk) / rate)
        times += last
        pieces.append(times)
        last = float(times[-1])
    times = np.concatenate(pieces)
    return times[: int(np.searchsorted(times, horizon_s, side="left"))]


def _alternating_sojourns(
    mean_first: float, mean_second: float, horizon_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of exponential sojourns alternating between two states, cut at the horizon.

    Sojourn 0 is in the first state. They are drawn in pairs, so even indices stay in the
    first state across chunks.
    """
    means = np.array([mean_first, mean_second])
    pieces: list[np.ndarray] = []
    last = 0.0
    while last < horizon_s:
        expected_pairs = (horizon_s - last) / (mean_first + mean_second)
        pairs = int(expected_pairs + 4.0 * math.sqrt(expected_pairs)) + 4
        ends = np.cumsum((rng.standard_exponential((pairs, 2)) * means).ravel())
        ends += last
        pieces.append(ends)
        last = float(ends[-1])
    ends = np.concatenate(pieces)
    started = int(np.searchsorted(ends, horizon_s, side="left")) + 1  # sojourns starting inside
    ends = ends[:started].copy()
    starts = np.concatenate([[0.0], ends[:-1]])
    ends[-1] = min(ends[-1], horizon_s)
    return starts, ends


def _poisson_segments(
    starts: np.ndarray, lengths: np.ndarray, rates: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Poisson arrivals in back-to-back segments, each at its own rate; sorted.

    A segment gets N ~ Poisson(rate x length) arrivals at sorted uniform positions. Sorted
    uniforms are made from N + 1 exponential spacings (position j = S_j / S_(N+1)), which sorts
    every segment at once in linear time.
    """
    counts = rng.poisson(rates * lengths)
    segment_count = len(counts)
    if segment_count == 0 or counts.sum() == 0:
        return np.empty(0)
    sums = np.cumsum(rng.standard_exponential(int(counts.sum()) + segment_count))
    last = np.cumsum(counts + 1) - 1  # index of each segment's closing spacing
    base = np.concatenate([[0.0], sums[last[:-1]]])
    total = sums[last] - base
    is_position = np.ones(len(sums), dtype=bool)
    is_position[last] = False
    segment = np.repeat(np.arange(segment_count), counts)
    fraction = (sums[is_position] - base[segment]) / total[segment]
    return starts[segment] + fraction * lengths[segment]


def _constant_segments(starts: np.ndarray, lengths: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Evenly spaced arrivals in back-to-back segments: start + k / rate while inside."""
    if len(starts) == 0:
        return np.empty(0)
    # One candidate more than ceil(rate x length) guards against rounding; extras are dropped.
    counts = np.ceil(rates * lengths).astype(np.int64) + 1
    segment = np.repeat(np.arange(len(starts)), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    offsets = k / rates[segment]
    inside = offsets < lengths[segment]
    return starts[segment[inside]] + offsets[inside]
