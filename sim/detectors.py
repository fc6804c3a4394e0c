"""Drift detectors: how the monitor notices that the served model has gone stale.

A deployed model drifts when the world it serves moves away from the data it was trained on.
The monitor cannot see the drift itself; it sees a stream of numbers and asks, after each one,
"has this stream changed?". A drift detector answers that question online: it is fed one value
at a time with `update(x)` and raises its `drift_detected` flag on the update at which it
becomes convinced. What happens next (collect labels, retrain, roll out) is the lifecycle's
business, not the detector's.

The stream is one of two **signals** (`lifecycle.monitor.signal`):

- `errors`: one 0/1 value per labelled request, 1 when the model's answer was wrong. Labels
  are scarce and late, but the stream measures exactly what matters.
- `feature`: one real value per request, a property of the input (a length, an embedding
  coordinate). It needs no labels, so it reacts sooner, but a shifted input does not always
  mean a worse answer.

The family, and where each member comes from:

- `adwin` (River's `drift.ADWIN`): keeps an adaptive window and drops its older part when the
  means of the two parts differ by more than a Hoeffding-style bound (confidence `delta`).
  Works on either signal.
- `page_hinkley` (River's `drift.PageHinkley`): a cumulative sum of deviations from the running
  mean; fires when it exceeds `threshold`. Works on either signal.
- `kswin` (River's `drift.KSWIN`): a Kolmogorov-Smirnov test between the newest `stat_size`
  values and a random sample of the older part of its window. It draws random numbers, so it
  takes a `seed`. It compares distributions, so it is for a real-valued feature.
- `ddm` and `eddm` (River's `drift.binary.DDM` and `EDDM`): the error rate (DDM) or the
  distance between errors (EDDM) leaves its best-seen confidence band. They need a 0/1 error
  stream.
- `psi` (our own `PSI`, numpy): the population stability index of credit scoring, for a
  real-valued feature. The first `reference_size` values are the reference; each later value
  enters a sliding window of the last `window_size` values, and every `step` values once the
  window is full the window is binned on the reference's `bins` quantile bins (outer edges
  -inf and +inf) and compared with it:

      PSI = sum over bins of (a - e) * ln(a / e)

  where e and a are the shares of the reference and of the window in each bin, each floored at
  1e-4 so that an empty bin does not give an infinite index. The usual reading is PSI < 0.1
  "no real change", 0.1 to 0.25 "moderate shift" and > 0.25 "significant shift"; the default
  `threshold` is 0.25. After a detection the current window becomes the reference, so the
  detector learns the new regime instead of firing on it forever.

Parameters keep River's names (`delta`, `threshold`, `window_size`, ...). `make_detector`
checks them against the detector's own signature, so a typo in a scenario is a `SpecError`
with a "did you mean" rather than a crash deep in a run. `detect` runs a detector over a whole
array (this is `sim.detect`); `feed` gives a live detector the values the monitor has
gathered since its last run.

The family is one registry, `DETECTORS`: each `DetectorKind` holds a name, how to load its
class, the signals it can watch and the ranges of parameters its class does not check
itself. Adding a detector is registering one kind here; the spec's `Monitor.detector` names
are generated from the registry (`sim.spec.families`), and `FACTORIES` and `SIGNALS` are
views of it. River is imported the first time a detector is built or its parameters checked,
not when the spec (which needs only the names) is imported.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.families import Family

__all__ = [
    "DETECTORS",
    "EPSILON",
    "FACTORIES",
    "PSI",
    "SIGNALS",
    "Detector",
    "DetectorKind",
    "check_params",
    "check_signal",
    "detect",
    "feed",
    "make_detector",
    "population_stability_index",
    "psi_between",
    "quantile_edges",
]

EPSILON = 1e-4
"""Floor on a bin's share in the PSI, so an empty bin costs a lot but not infinitely much."""

DETECTOR_PATH = "lifecycle.monitor.detector"
PARAMS_PATH = "lifecycle.monitor.params"
SIGNAL_PATH = "lifecycle.monitor.signal"


class Detector(Protocol):
    """What the monitor needs from a detector: River's online interface."""

    def update(self, x: float) -> Any: ...

    @property
    def drift_detected(self) -> bool: ...


# --------------------------------------------------------------------------------------------
# The population stability index
# --------------------------------------------------------------------------------------------


def quantile_edges(reference: ArrayLike, bins: int = 10) -> NDArray[np.float64]:
    """Bin edges that split `reference` into `bins` equal-count bins: -inf, quantiles, +inf.

    Tied quantiles (a discrete feature) are merged, so there may be fewer bins than asked.
    """
    sample = np.asarray(reference, dtype=np.float64)
    inner = np.unique(np.quantile(sample, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return np.concatenate(([-np.inf], inner, [np.inf]))


def population_stability_index(expected: ArrayLike, actual: ArrayLike) -> float:
    """PSI between two histograms over the same bins (counts or shares; each is normalised).

    PSI = sum((a - e) * ln(a / e)), with every share floored at `EPSILON`.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"histograms must be 1-D and of equal length, got {e.shape} and {a.shape}")
    e = np.maximum(e / e.sum(), EPSILON)
    a = np.maximum(a / a.sum(), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_between(reference: ArrayLike, current: ArrayLike, bins: int = 10) -> float:
    """PSI of the sample `current` against the sample `reference`, on the reference's quantile bins."""
    edges = quantile_edges(reference, bins)
    expected = np.histogram(np.asarray(reference, dtype=np.float64), bins=edges)[0]
    actual = np.histogram(np.asarray(current, dtype=np.float64), bins=edges)[0]
    return population_stability_index(expected, actual)


def _positive_int(name: str, value: int, least: int = 1) -> int:
    number = int(value) if isinstance(value, int | np.integer) and not isinstance(value, bool) else None
    if number is None:
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    if number < least:
        raise ValueError(f"{name} must be >= {least}, got {number}")
    return number


class PSI:
    """Population stability index over a sliding window, with River's `update` / `drift_detected`.

    The first `reference_size` values are the reference. Later values fill a ring buffer of the
    last `window_size` values; when it is first full, and every `step` values after that, the
    window is compared with the reference (see the module docstring) and `drift_detected` is
    True after that update if the PSI exceeds `threshold` (0.25: "significant shift"; 0.1 is
    the usual "moderate shift"). On a detection the current window becomes the reference.

    The cost of an update is a store into the ring buffer; binning (`np.histogram`, O(window))
    happens only once every `step` values.
    """

    def __init__(
        self,
        reference_size: int = 500,
        window_size: int = 500,
        step: int = 50,
        bins: int = 10,
        threshold: float = 0.25,
    ) -> None:
        self.bins = _positive_int("bins", bins, least=2)
        self.reference_size = _positive_int("reference_size", reference_size, least=self.bins)
        self.window_size = _positive_int("window_size", window_size)
        self.step = _positive_int("step", step)
        if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        self.threshold = float(threshold)

        self._first = np.empty(self.reference_size)
        self._n_first = 0
        self._window = np.empty(self.window_size)
        self._position = 0
        self._until_check = self.window_size
        self._edges: NDArray[np.float64] | None = None
        self._expected: NDArray[np.int64] | None = None
        self._drift_detected = False
        self.psi = math.nan
        """The PSI found at the latest comparison (nan before the first)."""

    @property
    def drift_detected(self) -> bool:
        return self._drift_detected

    def update(self, x: float) -> None:
        self._drift_detected = False
        if self._n_first < self.reference_size:
            self._first[self._n_first] = x
            self._n_first += 1
            if self._n_first == self.reference_size:
                self._set_reference(self._first)
            return
        self._window[self._position] = x
        self._position += 1
        if self._position == self.window_size:
            self._position = 0
        self._until_check -= 1
        if self._until_check == 0:
            self._until_check = self.step
            self._compare()

    def _set_reference(self, sample: NDArray[np.float64]) -> None:
        self._edges = quantile_edges(sample, self.bins)
        self._expected = np.histogram(sample, bins=self._edges)[0]

    def _compare(self) -> None:
        assert self._edges is not None and self._expected is not None
        actual = np.histogram(self._window, bins=self._edges)[0]
        self.psi = population_stability_index(self._expected, actual)
        if self.psi > self.threshold:
            self._drift_detected = True
            self._set_reference(self._window)  # learn the new regime rather than fire on it

    def __repr__(self) -> str:
        return (f"PSI(reference_size={self.reference_size}, window_size={self.window_size}, "
                f"step={self.step}, bins={self.bins}, threshold={self.threshold})")


# --------------------------------------------------------------------------------------------
# The family: names, signals, parameters
# --------------------------------------------------------------------------------------------

Range = tuple[Callable[[float], bool], str]  # a check of a parameter's value, and its words


@dataclass(frozen=True)
class DetectorKind:
    """One member of the family: its name (as written in `lifecycle.monitor.detector`), how to
    load the class that builds it, the signals (`errors`, `feature`) it can watch, and ranges
    for parameters its class does not check itself."""

    name: str
    load: Callable[[], Callable[..., Detector]]
    signals: tuple[str, ...]
    ranges: Mapping[str, Range] = field(default_factory=dict)


def _river(module: str, name: str) -> Callable[[], Callable[..., Detector]]:
    """A loader for River's `module.name`, imported on first use (River takes a second)."""
    return lambda: getattr(importlib.import_module(module), name)


DETECTORS: Family[DetectorKind] = Family("detector")

# River checks some values itself (KSWIN's alpha, EDDM's alpha >= beta); ADWIN checks none,
# and some bad ADWIN values panic inside its Rust core, which no `except Exception` catches.
DETECTORS.register(DetectorKind(
    "adwin", _river("river.drift", "ADWIN"), ("errors", "feature"),  # a change in the mean of any bounded stream
    ranges={
        "delta": (lambda v: 0 < v < 1, "a number between 0 and 1, exclusive"),
        "clock": (lambda v: v >= 1, "a whole number >= 1"),
        "max_buckets": (lambda v: v >= 1, "a whole number >= 1"),
    }))
DETECTORS.register(DetectorKind(
    "page_hinkley", _river("river.drift", "PageHinkley"), ("errors", "feature")))  # any stream's mean
DETECTORS.register(DetectorKind(
    "kswin", _river("river.drift", "KSWIN"), ("feature",)))  # a KS test on a 0/1 stream says little
DETECTORS.register(DetectorKind(
    "ddm", _river("river.drift.binary", "DDM"), ("errors",)))  # models a Bernoulli error rate
DETECTORS.register(DetectorKind(
    "eddm", _river("river.drift.binary", "EDDM"), ("errors",)))  # models the distance between errors
DETECTORS.register(DetectorKind(
    "psi", lambda: PSI, ("feature",)))  # quantile bins of a 0/1 stream collapse to two


class _View(Mapping[str, Any]):
    """A read-only, always current view of the registry: name -> one attribute of each kind."""

    def __init__(self, attribute: Callable[[DetectorKind], Any]) -> None:
        self._attribute = attribute

    def __getitem__(self, name: str) -> Any:
        if name not in DETECTORS:
            raise KeyError(name)
        return self._attribute(DETECTORS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(DETECTORS)

    def __len__(self) -> int:
        return len(DETECTORS)


FACTORIES: Mapping[str, Callable[..., Detector]] = _View(lambda kind: kind.load())
"""Detector name (as written in `lifecycle.monitor.detector`) -> the class that builds it."""

SIGNALS: Mapping[str, tuple[str, ...]] = _View(lambda kind: kind.signals)
"""Detector name -> the signals (`errors`, `feature`) it can watch."""


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(DETECTORS[name].load())
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in signature.parameters.values() if p.kind in kinds}


def _wants_whole_number(parameter: inspect.Parameter) -> bool:
    """A parameter whose default is an int, or annotated int (KSWIN's `seed: int | None`)."""
    default = parameter.default
    if isinstance(default, int) and not isinstance(default, bool):
        return True
    annotation = str(parameter.annotation)
    return "int" in annotation and "float" not in annotation


def _unknown_detector(name: str) -> SpecIssue:
    return SpecIssue(DETECTOR_PATH, f"unknown detector {name!r}{suggest(name, DETECTORS)}",
                     name, ", ".join(DETECTORS))


def _resolve_params(name: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[SpecIssue]]:
    """Check parameter names and value types; whole-number floats (`100.0`) become ints."""
    allowed = _parameters(name)
    issues: list[SpecIssue] = []
    resolved: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{PARAMS_PATH}.{key}"
        if key not in allowed:
            issues.append(SpecIssue(path, f"unknown parameter {key!r} for {name}{suggest(key, allowed)}",
                                    allowed=", ".join(allowed), has_value=False))
            continue
        if _wants_whole_number(allowed[key]) and isinstance(value, float):
            if not value.is_integer():
                issues.append(SpecIssue(path, f"{name}'s {key} is a count", value, "a whole number"))
                continue
            value = int(value)
        check = DETECTORS[name].ranges.get(key)
        if check is not None and isinstance(value, int | float) and not check[0](value):
            issues.append(SpecIssue(path, "out of range", value, check[1]))
            continue
        resolved[key] = value
    return resolved, issues


def make_detector(name: str, params: Mapping[str, Any] | None = None, *, seed: int | None = None) -> Detector:
    """Build the detector `name` with `params` (River's names), or raise a `SpecError`.

    `seed` is given to detectors that draw random numbers (KSWIN) unless `params` sets one.

        >>> make_detector("adwin", {"delta": 0.01})
        ADWIN (
          delta=0.01
          clock=32
          max_buckets=5
          min_window_length=5
          grace_period=10
        )
    """
    if name not in DETECTORS:
        raise SpecError([_unknown_detector(name)])
    resolved, issues = _resolve_params(name, params or {})
    if issues:
        raise SpecError(issues)
    if seed is not None and "seed" in _parameters(name) and resolved.get("seed") is None:
        resolved["seed"] = seed
    try:
        return DETECTORS[name].load()(**resolved)
    except (TypeError, ValueError) as error:
        raise SpecError([SpecIssue(PARAMS_PATH, f"{name} rejects these parameters: {error}",
                                   dict(params or {}))]) from None


def check_params(name: str, params: Mapping[str, Any] | None = None) -> list[SpecIssue]:
    """The issues `make_detector(name, params)` would raise, for the scenario checks."""
    try:
        make_detector(name, params)
    except SpecError as error:
        return error.issues
    return []


def check_signal(detector: str, signal: str) -> SpecIssue | None:
    """An issue when `detector` cannot watch `signal` (e.g. DDM on a real-valued feature)."""
    if detector not in DETECTORS:
        return _unknown_detector(detector)
    if signal in SIGNALS[detector]:
        return None
    others = [name for name, signals in SIGNALS.items() if signal in signals]
    what = {"errors": "a 0/1 error stream", "feature": "a real-valued feature"}
    return SpecIssue(
        SIGNAL_PATH,
        f"{detector} watches {' or '.join(what.get(s, s) for s in SIGNALS[detector])}; "
        f"for {what.get(signal, signal)} use one of {', '.join(others)}",
        signal,
        ", ".join(SIGNALS[detector]),
    )


# --------------------------------------------------------------------------------------------
# Running detectors over values
# --------------------------------------------------------------------------------------------


def _as_values(values: ArrayLike) -> NDArray[np.float64]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError([SpecIssue("values", "values must be numbers", values)]) from None
    if array.ndim != 1:
        raise SpecError([SpecIssue("values", f"values must be one-dimensional, got shape {array.shape}",
                                   has_value=False)])
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise SpecError([SpecIssue("values", "values must be finite numbers", float(bad))])
    return array


def _require_binary(name: str, values: NDArray[np.float64]) -> None:
    outside = values[(values != 0.0) & (values != 1.0)]
    if outside.size:
        features = ", ".join(n for n, signals in SIGNALS.items() if "feature" in signals)
        raise SpecError([SpecIssue(
            "values",
            f"{name} reads a 0/1 error stream (1 = a wrong answer), but {outside.size} of "
            f"{values.size} values are neither 0 nor 1; for a real-valued feature use {features}",
            float(outside[0]),
            "0 or 1",
        )])


def _run(detector: Detector, values: NDArray[np.float64]) -> list[int]:
    if _adwin_core(detector):
        return _run_adwin(detector, values)
    update = detector.update
    fired: list[int] = []
    for i, x in enumerate(values.tolist()):  # Python floats: River's fastest input
        update(x)
        if detector.drift_detected:
            fired.append(i)
    return fired


def _adwin_core(detector: Any) -> bool:
    """Is `detector` River's ADWIN over its Rust core, as `_run_adwin` knows it?"""
    from river.drift import ADWIN

    return (type(detector) is ADWIN and hasattr(detector, "_helper") and hasattr(detector, "_reset")
            and isinstance(getattr(detector, "_drift_detected", None), bool))


def _run_adwin(detector: Any, values: NDArray[np.float64]) -> list[int]:
    """`_run` for ADWIN: the steps of its `update` (a detection resets the window before the
    next value; then the Rust core takes the value and says whether it detected a change),
    without the Python wrapper and property around each value, which took two thirds of the
    time (0.38 -> 0.13 us a value; a busy day's monitor feeds ADWIN 21M labels). The detector
    is left as `update` would leave it (tests/test_detectors.py holds the two to each other)."""
    fired: list[int] = []
    detected = detector._drift_detected
    update = detector._helper.update
    for i, x in enumerate(values.tolist()):
        if detected:
            detector._reset()
            update = detector._helper.update
        detected = update(x)
        if detected:
            fired.append(i)
    detector._drift_detected = bool(detected)
    return fired


def feed(detector: Detector, values: ArrayLike) -> list[int]:
    """Update a live `detector` with each of `values` in turn; where (in `values`) it fired.

    This is how the monitor hands over what it gathered since its last run: the detector keeps
    its state between calls, so feeding batches gives what one pass over them all would.
    """
    array = _as_values(values)
    if _is_binary(detector):
        _require_binary(type(detector).__name__, array)
    return _run(detector, array)


def _is_binary(detector: Any) -> bool:
    """River's binary detectors (DDM, EDDM) read 0/1 values only; `detector` is one or its class."""
    from river import base as river_base

    binary = river_base.BinaryDriftDetector
    return isinstance(detector, binary) or (isinstance(detector, type) and issubclass(detector, binary))


def detect(detector: str, values: ArrayLike, *, seed: int | None = 0, **params: Any) -> NDArray[np.int64]:
    """Run a fresh detector over `values`; the indices after whose update it reported a drift.

    `detector` is a name from `DETECTORS`, `params` its parameters with River's names. `seed`
    fixes detectors that draw random numbers (KSWIN), so that a call is reproducible.

        >>> import numpy as np, sim
        >>> rng = np.random.default_rng(1)
        >>> errors = np.concatenate([rng.random(3000) < 0.05, rng.random(3000) < 0.3])
        >>> sim.detect("adwin", errors.astype(int))  # the error rate jumps at index 3000
        array([3071])
    """
    if detector not in DETECTORS:
        raise SpecError([_unknown_detector(detector)])
    array = _as_values(values)
    if _is_binary(DETECTORS[detector].load()):
        _require_binary(detector, array)
    live = make_detector(detector, params, seed=seed)
    return np.asarray(_run(live, array), dtype=np.int64)
