"""Token lengths: how many prompt and output tokens each request has.

Each distribution is one function `(spec, n, rng) -> int32 array of n lengths >= 1`, registered
under the spec's `dist:` name; `empirical` also needs to know which length it samples.

- **fixed**: every request has `value` tokens.
- **uniform**: integers from `low` to `high`, both included, equally likely.
- **lognormal**: given by the mean token count m and the sigma s of the underlying normal, so
  that the mean is m before rounding: mu = ln(m) - s^2 / 2, length = round(exp(mu + s Z)),
  then clipped to [min, max] (clipping moves the mean when the bounds cut into the tails).
- **empirical**: drawn with replacement from a column of a trace file. The column defaults, in
  the Azure format, to `ContextTokens` for prompts and `GeneratedTokens` for outputs; in a
  generic CSV it must be named. A 0 in the file counts as 1.

Lengths are drawn by request index: request i takes the i-th draw of its own stream (one
uniform or normal per request; numpy generators draw sequentially), so the first k lengths
are the same whether n = k or n > k. That is what keeps request i's length unchanged when the
arrival rate changes, for common random numbers across scenarios.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from sim.spec.scenario import Empirical, Fixed, LogNormal, Uniform
from sim.workload.limits import spec_error
from sim.workload.trace import AZURE_COLUMNS, INT32_MAX, read_token_column

Role = Literal["prompt", "output"]


def fixed(spec: Fixed, n: int, rng: np.random.Generator) -> np.ndarray:
    """`value` tokens for every request (draws nothing from the stream)."""
    return np.full(n, spec.value, dtype=np.int32)


def uniform(spec: Uniform, n: int, rng: np.random.Generator) -> np.ndarray:
    """Integers in [low, high], both ends included."""
    return rng.integers(spec.low, spec.high, size=n, endpoint=True, dtype=np.int64).astype(np.int32)


def lognormal(spec: LogNormal, n: int, rng: np.random.Generator) -> np.ndarray:
    """round(exp(mu + sigma Z)) with mu = ln(mean) - sigma^2 / 2, clipped to [min, max]."""
    mu = np.log(spec.mean) - spec.sigma**2 / 2.0
    with np.errstate(over="ignore"):  # an overflow to inf is clipped to `max` below
        lengths = np.rint(rng.lognormal(mu, spec.sigma, size=n))
    return np.clip(lengths, spec.min, spec.max).astype(np.int32)


def empirical(spec: Empirical, n: int, rng: np.random.Generator, role: Role = "prompt") -> np.ndarray:
    """Lengths drawn with replacement from a trace column (a 0 counts as 1)."""
    where = f"workload.{role}_tokens"
    column = spec.column
    if column is None:
        if spec.format != "azure":
            raise spec_error(
                f"{where}.column",
                "an empirical length from a generic CSV needs `column`: the column to sample",
            )
        column = AZURE_COLUMNS[f"{role}_tokens"]
    values = read_token_column(spec.path, column, where)
    return values[rng.integers(0, len(values), size=n)]


Sampler = Callable[[Any, int, np.random.Generator], np.ndarray]

LENGTH_DISTRIBUTIONS: dict[str, Sampler] = {
    "fixed": fixed,
    "uniform": uniform,
    "lognormal": lognormal,
}


def sample_lengths(spec: Any, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
    """n token lengths (int32, >= 1) for the prompt or output spec `spec`."""
    _check_fits_int32(spec, role)
    if isinstance(spec, Empirical):
        return empirical(spec, n, rng, role)
    return LENGTH_DISTRIBUTIONS[spec.dist](spec, n, rng)


def _check_fits_int32(spec: Any, role: Role) -> None:
    """Lengths are int32; a bound above that would wrap around silently."""
    bound_names = {"fixed": "value", "uniform": "high", "lognormal": "max"}
    name = bound_names.get(spec.dist)
    if name is not None and getattr(spec, name) > INT32_MAX:
        raise spec_error(f"workload.{role}_tokens.{name}", f"{getattr(spec, name)} tokens is too many",
                         allowed=f"at most {INT32_MAX}")
