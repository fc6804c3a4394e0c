"""Arrival processes: when clients send their requests.

Each process is one class: the fields a scenario writes under `workload.arrivals` and what
the process does with them, side by side. Every member answers the same questions:

- `times(horizon_s, rng)`: the send times, float64 seconds, sorted, inside [0, horizon_s);
- `sample(horizon_s, rng)`: the send times and, for a process that knows them (a trace),
  the requests' token counts;
- `mean_rate_per_s(horizon_s)`: the long-run mean rate over the horizon (what capacity
  planning sizes for), or None for a closed loop, whose rate is what the servers make it;
- `mean_rate_overrides(rate, horizon_s)`: the field values that give a mean rate `rate`,
  or None when the process has no rate to set (`plan` varies the load through it);
- `expected_requests(horizon_s)`: about how many send times the process draws, for the
  memory guard (`sim.workload.limits`) before anything is drawn;
- `closed_loop()`: the clients and think time of a closed loop, None for an open one;
- `file_fields`: the fields that name files, relative to the scenario file.

Adding a process is adding a class here, decorated with `@ARRIVALS.register`: the scenario's
`workload.arrivals` union is generated from `ARRIVALS` (see `sim.spec.families`).

- **poisson**: exponential gaps of mean 1/rate; t_k = g_1 + ... + g_(k+1). Gaps are drawn in
  chunks (the expected count plus 4 standard deviations) until the horizon is passed.
- **constant**: t_k = k / rate for k = 0, 1, ...; the first request leaves at time 0, as a load
  generator fires as soon as it starts, and [0, T) holds ceil(rate x T) requests.
- **bursty**: a two-state Markov-modulated Poisson process. It starts quiet; sojourns alternate
  quiet, burst, quiet, ... with exponential lengths of means `mean_quiet` and `mean_burst`. In a
  sojourn of length d at rate r the arrivals are Poisson: N ~ Poisson(r d) points at sorted
  uniform positions (the same law as exponential gaps, without a Python loop over sojourns).
  The long-run rate is (r_q m_q + r_b m_b) / (m_q + m_b), and counts are over-dispersed.
  `rate_per_s` is the quiet rate, not the mean: planning at a mean rate R scales both rates
  by the same factor, which keeps the burst ratio and the sojourns.
- **diurnal**: a non-homogeneous Poisson process with
  rate(t) = mean x (1 + amplitude x cos(2 pi (t - peak_at) / period)) (the spec's sine form,
  shifted by a quarter period), sampled by thinning: candidates arrive as a Poisson process at
  the peak rate mean x (1 + amplitude), and each is kept with probability rate(t) / peak.
- **stages**: each stage, in order, is a Poisson or constant process at its own rate for its
  duration (a constant stage fires first at its own start). With `repeat` the list loops until
  the horizon; without, nothing arrives after the last stage. The mean rate is the
  duration-weighted mean over the horizon (a gap after the last stage counts as rate 0).
- **concurrency**: a closed loop, so send times are not known in advance. The first `clients`
  requests are sent at 0.0 and the rest are NaN: the serving kernel releases each when a
  client's previous request completes (plus the think time). There are `requests` requests, or
  `clients` x 1000 when the spec leaves it unset. This is the one process whose times are not
  all inside [0, horizon).
- **trace**: replay of a request trace (`sim.workload.trace`), with its token counts when
  `use_token_counts`; its mean rate is the requests replayed over the horizon.

Every random draw comes from the generator passed in (the "arrivals" stream), in an order
fixed by the spec alone, so the same seed gives bit-identical times.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from sim.spec.base import Spec
from sim.spec.families import Family
from sim.spec.units import Seconds
from sim.workload.limits import check_request_count
from sim.workload.trace import replay_trace

WHERE = "workload.arrivals"
CLOSED_LOOP_REQUESTS_PER_CLIENT = 1000


@dataclass(frozen=True)
class ArrivalSample:
    """What an arrival process draws: send times and, when it knows them, token counts."""

    times: np.ndarray
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None


@dataclass(frozen=True)
class ClosedLoop:
    """A closed loop's clients, and a client's pause between a response and its next request."""

    clients: int
    think_time_s: float


class ArrivalProcess(Spec):
    """The base of every arrival process; see the module docstring for what each answers."""

    process: str

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample(self, horizon_s: float, rng: np.random.Generator) -> ArrivalSample:
        return ArrivalSample(self.times(horizon_s, rng))

    def time_blocks(self, horizon_s: float, rng: np.random.Generator, block: int) -> Iterator[np.ndarray] | None:
        """`times(horizon_s, rng)` in consecutive blocks (a streamed run's requests), the same
        floats from the same draws; None for a process that cannot yet draw in blocks."""
        return None

    def mean_rate_per_s(self, horizon_s: float) -> float | None:
        raise NotImplementedError

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float] | None:
        """Field paths (below `workload.arrivals`) and values that give this mean rate."""
        return None

    def peak_rate_per_s(self, horizon_s: float) -> float | None:
        """The highest rate the process sends at for a sustained time (what capacity must carry);
        None when it has no rate (a closed loop) or none known ahead (a trace). By default the
        mean: a process with one rate."""
        return self.mean_rate_per_s(horizon_s)

    def expected_requests(self, horizon_s: float) -> float:
        return float(self.mean_rate_per_s(horizon_s) or 0.0) * horizon_s

    def closed_loop(self) -> ClosedLoop | None:
        return None


ARRIVALS: Family[type[ArrivalProcess]] = Family("arrival process", key="process")


def processes_with_rate() -> list[str]:
    """The processes whose mean rate can be set (`mean_rate_overrides` is theirs)."""
    return [name for name, process in zip(ARRIVALS, ARRIVALS.members(), strict=True)
            if process.mean_rate_overrides is not ArrivalProcess.mean_rate_overrides]


@ARRIVALS.register
class Poisson(ArrivalProcess):
    process: Literal["poisson"]
    rate_per_s: float = Field(gt=0)

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Poisson arrivals at `rate_per_s`: cumulative sums of exponential gaps."""
        return _poisson_times(self.rate_per_s, horizon_s, rng)

    def time_blocks(self, horizon_s: float, rng: np.random.Generator, block: int) -> Iterator[np.ndarray]:
        return _poisson_blocks(self.rate_per_s, horizon_s, rng, block)

    def mean_rate_per_s(self, horizon_s: float) -> float:
        return self.rate_per_s

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float]:
        return {"rate_per_s": mean_rate_per_s}


@ARRIVALS.register
class Constant(ArrivalProcess):
    process: Literal["constant"]
    rate_per_s: float = Field(gt=0)

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Evenly spaced arrivals, t_k = k / rate, the first at 0."""
        check_request_count(self.rate_per_s * horizon_s, WHERE)
        return _constant_segments(np.zeros(1), np.array([horizon_s]), np.array([self.rate_per_s]))

    def mean_rate_per_s(self, horizon_s: float) -> float:
        return self.rate_per_s

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float]:
        return {"rate_per_s": mean_rate_per_s}


@ARRIVALS.register
class Bursty(ArrivalProcess):
    """Two-state Markov-modulated Poisson process: quiet and burst, with exponential sojourns."""

    process: Literal["bursty"]
    rate_per_s: float = Field(gt=0, description="rate in the quiet state")
    burst_rate_per_s: float = Field(gt=0, description="rate in the burst state")
    mean_quiet: Seconds = Field(gt=0, description="mean sojourn in the quiet state")
    mean_burst: Seconds = Field(gt=0, description="mean sojourn in the burst state")

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Two-state MMPP: quiet and burst sojourns, each with Poisson arrivals at its rate."""
        cycle = self.mean_quiet + self.mean_burst
        check_request_count(self.mean_rate_per_s(horizon_s) * horizon_s, WHERE)
        check_request_count(2 * horizon_s / cycle, f"{WHERE}.mean_quiet")  # sojourns are held too
        starts, ends = _alternating_sojourns(self.mean_quiet, self.mean_burst, horizon_s, rng)
        in_burst = np.arange(len(starts)) % 2 == 1
        rates = np.where(in_burst, self.burst_rate_per_s, self.rate_per_s)
        return _poisson_segments(starts, ends - starts, rates, rng)

    def mean_rate_per_s(self, horizon_s: float) -> float:
        """(r_q m_q + r_b m_b) / (m_q + m_b): each state's rate, weighted by its share of time."""
        cycle = self.mean_quiet + self.mean_burst
        return (self.rate_per_s * self.mean_quiet + self.burst_rate_per_s * self.mean_burst) / cycle

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float]:
        scale = mean_rate_per_s / self.mean_rate_per_s(horizon_s)
        return {"rate_per_s": self.rate_per_s * scale, "burst_rate_per_s": self.burst_rate_per_s * scale}

    def peak_rate_per_s(self, horizon_s: float) -> float:
        return max(self.rate_per_s, self.burst_rate_per_s)


@ARRIVALS.register
class Diurnal(ArrivalProcess):
    """A sinusoidal day: rate(t) = mean x (1 + amplitude x sin(2 pi (t - peak + period/4) / period))."""

    process: Literal["diurnal"]
    rate_per_s: float = Field(gt=0, description="mean rate over a period")
    amplitude: float = Field(default=0.5, ge=0, le=1, description="peak-to-mean swing, 0..1")
    period: Seconds = Field(default=86400.0, gt=0)
    peak_at: Seconds = Field(default=14 * 3600.0, ge=0, description="time of the daily peak")

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Sinusoidal daily rate, by thinning a Poisson process at the peak rate."""
        peak_rate = self.rate_per_s * (1.0 + self.amplitude)
        candidates = _poisson_times(peak_rate, horizon_s, rng)
        return candidates[rng.random(len(candidates)) < self._keep_probability(candidates)]

    def _keep_probability(self, t: np.ndarray) -> np.ndarray:
        phase = 2.0 * np.pi * (t - self.peak_at) / self.period
        return (1.0 + self.amplitude * np.cos(phase)) / (1.0 + self.amplitude)

    def time_blocks(self, horizon_s: float, rng: np.random.Generator, block: int) -> Iterator[np.ndarray]:
        """The thinning draws its uniforms after every candidate's gap: a copy of the generator
        first draws (and drops) the gaps, so it stands where `times` draws the uniforms."""
        peak_rate = self.rate_per_s * (1.0 + self.amplitude)
        uniforms = copy.deepcopy(rng)
        for _ in _poisson_blocks(peak_rate, horizon_s, uniforms, block):
            pass
        for candidates in _poisson_blocks(peak_rate, horizon_s, rng, block):
            yield candidates[uniforms.random(len(candidates)) < self._keep_probability(candidates)]

    def mean_rate_per_s(self, horizon_s: float) -> float:
        return self.rate_per_s

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float]:
        return {"rate_per_s": mean_rate_per_s}

    def peak_rate_per_s(self, horizon_s: float) -> float:
        return self.rate_per_s * (1.0 + self.amplitude)

    def expected_requests(self, horizon_s: float) -> float:
        return self.rate_per_s * (1.0 + self.amplitude) * horizon_s  # the candidates thinning draws


class Stage(Spec):
    duration: Seconds = Field(gt=0)
    rate_per_s: float = Field(gt=0)
    process: Literal["poisson", "constant"] = "poisson"


@ARRIVALS.register
class Stages(ArrivalProcess):
    """Piecewise load, as load tests ramp: one rate (and process) per stage, in order."""

    process: Literal["stages"]
    stages: list[Stage] = Field(min_length=1)
    repeat: bool = Field(default=False, description="loop the stages until the horizon")

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Stages in sequence, each a Poisson or constant process; looped when `repeat`."""
        durations = np.array([stage.duration for stage in self.stages])
        rates = np.array([stage.rate_per_s for stage in self.stages])
        is_constant = np.array([stage.process == "constant" for stage in self.stages])
        cycle = float(durations.sum())
        cycles = max(1, math.ceil(horizon_s / cycle)) if self.repeat else 1
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

    def mean_rate_per_s(self, horizon_s: float) -> float:
        """Expected arrivals in [0, horizon_s) over horizon_s: each stage weighted by its time
        inside the horizon, all cycles of a repeated list counted."""
        return self._expected_inside(horizon_s) / horizon_s

    def _expected_inside(self, horizon_s: float) -> float:
        cycle = sum(stage.duration for stage in self.stages)
        per_cycle = sum(stage.rate_per_s * stage.duration for stage in self.stages)
        full = math.floor(horizon_s / cycle) if self.repeat else 0
        total, start = full * per_cycle, full * cycle
        for stage in self.stages:
            total += stage.rate_per_s * max(0.0, min(stage.duration, horizon_s - start))
            start += stage.duration
        return total

    def mean_rate_overrides(self, mean_rate_per_s: float, horizon_s: float) -> dict[str, float]:
        scale = mean_rate_per_s / self.mean_rate_per_s(horizon_s)
        return {f"stages[{k}].rate_per_s": stage.rate_per_s * scale for k, stage in enumerate(self.stages)}

    def peak_rate_per_s(self, horizon_s: float) -> float:
        start, peak = 0.0, 0.0
        for stage in self.stages:
            if start < horizon_s or self.repeat:
                peak = max(peak, stage.rate_per_s)
            start += stage.duration
        return peak

    def expected_requests(self, horizon_s: float) -> float:
        if not self.repeat:
            return self._expected_inside(horizon_s)
        cycle = sum(stage.duration for stage in self.stages)  # whole cycles: what `times` lays out
        return sum(stage.rate_per_s * stage.duration for stage in self.stages) * math.ceil(horizon_s / cycle)


@ARRIVALS.register
class Concurrency(ArrivalProcess):
    """Closed loop: a fixed number of clients, each sending its next request when one ends."""

    process: Literal["concurrency"]
    clients: int = Field(ge=1)
    think_time: Seconds = Field(default=0.0, ge=0)
    requests: int | None = Field(default=None, ge=1, description="stop after this many requests")

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Closed loop: 0.0 for the first `clients` requests, NaN (sent on completion) for the rest."""
        count = self.expected_requests(horizon_s)
        check_request_count(count, f"{WHERE}.requests")
        times = np.full(int(count), np.nan)
        times[: self.clients] = 0.0
        return times

    def mean_rate_per_s(self, horizon_s: float) -> None:
        return None  # the servers set a closed loop's pace

    def expected_requests(self, horizon_s: float) -> float:
        return float(self.requests if self.requests is not None
                     else self.clients * CLOSED_LOOP_REQUESTS_PER_CLIENT)

    def closed_loop(self) -> ClosedLoop:
        return ClosedLoop(self.clients, self.think_time)


@ARRIVALS.register
class Trace(ArrivalProcess):
    """Replay a request trace: the Azure LLM trace format or a CSV with a column mapping."""

    process: Literal["trace"]
    path: str = Field(description="CSV file, relative to the scenario file")
    format: Literal["azure", "csv"] = "azure"
    columns: dict[Literal["time", "prompt_tokens", "output_tokens"], str] = Field(
        default_factory=dict, description="for format 'csv': which column holds what"
    )
    time_unit: Literal["s", "ms", "us", "datetime"] = "datetime"
    time_scale: float = Field(default=1.0, gt=0, description="stretch (>1) or compress (<1) time")
    loop: bool = Field(default=False, description="repeat the trace until the horizon")
    use_token_counts: bool = Field(default=True, description="take token lengths from the trace")

    file_fields: ClassVar[tuple[str, ...]] = ("path",)

    def times(self, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
        """Send times replayed from a trace file (scaled, looped, cut at the horizon)."""
        return replay_trace(self, horizon_s, WHERE)[0]

    def sample(self, horizon_s: float, rng: np.random.Generator) -> ArrivalSample:
        """The replayed times and, with `use_token_counts`, the trace's own token counts."""
        return ArrivalSample(*replay_trace(self, horizon_s, WHERE))

    def peak_rate_per_s(self, horizon_s: float) -> None:
        return None  # a trace's busiest stretch depends on the window: replay it instead

    def mean_rate_per_s(self, horizon_s: float) -> float:
        """Requests replayed inside the horizon, over the horizon (reads the file)."""
        return len(replay_trace(self, horizon_s, WHERE)[0]) / horizon_s

    def expected_requests(self, horizon_s: float) -> float:
        return 0.0  # known once the file is read; `replay_trace` checks it there


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


def _poisson_blocks(rate: float, horizon_s: float, rng: np.random.Generator, block: int) -> Iterator[np.ndarray]:
    """`_poisson_times`' values in blocks of at most `block` gaps, bit for bit: the same
    pieces of gaps drawn in the same order, each piece's running sum carried across blocks
    (a cumulative sum adds left to right). Draws past the horizon are made and dropped, so the
    generator ends where `_poisson_times` leaves it."""
    last = 0.0
    while last < horizon_s:
        expected = rate * (horizon_s - last)
        remaining = int(expected + 4.0 * math.sqrt(expected)) + 16
        running = 0.0
        while remaining:
            gaps = rng.standard_exponential(min(block, remaining)) / rate
            remaining -= len(gaps)
            sums = np.cumsum(np.concatenate(([running], gaps)))[1:]
            running = float(sums[-1])
            times = sums + last
            yield times[times < horizon_s]
        last = running + last


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
