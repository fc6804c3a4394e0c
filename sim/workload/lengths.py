"""Token lengths: how many prompt and output tokens each request has.

Each distribution is one class: the fields a scenario writes under `workload.prompt_tokens`
(or `output_tokens`) and `sample(n, rng, role)`, which returns an int32 array of n lengths
>= 1. `role` ("prompt" or "output") says which length is sampled; only `empirical` needs it.
`largest` names the field that bounds the lengths from above, so that a bound past int32 is
refused before anything is drawn; `file_fields` the fields that name files. Adding a
distribution is adding a class here, decorated with `@LENGTHS.register`: the scenario's
union is generated from `LENGTHS` (see `sim.spec.families`).

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

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from sim.spec.base import Spec
from sim.spec.families import Family
from sim.workload.limits import spec_error
from sim.workload.trace import AZURE_COLUMNS, INT32_MAX, read_token_column

Role = Literal["prompt", "output"]


class LengthDistribution(Spec):
    """The base of every token-length distribution."""

    dist: str
    largest: ClassVar[str | None] = None  # the field bounding the lengths, checked against int32

    def sample(self, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
        raise NotImplementedError


LENGTHS: Family[type[LengthDistribution]] = Family("length distribution", key="dist")


@LENGTHS.register
class Fixed(LengthDistribution):
    dist: Literal["fixed"]
    value: int = Field(ge=1)

    largest: ClassVar[str | None] = "value"

    def sample(self, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
        """`value` tokens for every request (draws nothing from the stream)."""
        return np.full(n, self.value, dtype=np.int32)


@LENGTHS.register
class Uniform(LengthDistribution):
    dist: Literal["uniform"]
    low: int = Field(ge=1)
    high: int = Field(ge=1)

    largest: ClassVar[str | None] = "high"

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self

    def sample(self, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
        """Integers in [low, high], both ends included."""
        return rng.integers(self.low, self.high, size=n, endpoint=True, dtype=np.int64).astype(np.int32)


@LENGTHS.register
class LogNormal(LengthDistribution):
    """Log-normal token counts given by their mean and the sigma of the underlying normal."""

    dist: Literal["lognormal"]
    mean: float = Field(gt=0, description="mean token count")
    sigma: float = Field(default=0.8, gt=0, le=4)
    min: int = Field(default=1, ge=1)
    max: int = Field(default=32768, ge=1)

    largest: ClassVar[str | None] = "max"

    @model_validator(mode="after")
    def _ordered(self) -> LogNormal:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    def sample(self, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
        """round(exp(mu + sigma Z)) with mu = ln(mean) - sigma^2 / 2, clipped to [min, max]."""
        mu = np.log(self.mean) - self.sigma**2 / 2.0
        with np.errstate(over="ignore"):  # an overflow to inf is clipped to `max` below
            lengths = np.rint(rng.lognormal(mu, self.sigma, size=n))
        return np.clip(lengths, self.min, self.max).astype(np.int32)


@LENGTHS.register
class Empirical(LengthDistribution):
    """Sample token counts from a trace file's column (with replacement)."""

    dist: Literal["empirical"]
    path: str
    format: Literal["azure", "csv"] = "azure"
    column: str | None = Field(default=None, description="defaults to the format's token column")

    file_fields: ClassVar[tuple[str, ...]] = ("path",)

    def sample(self, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
        """Lengths drawn with replacement from a trace column (a 0 counts as 1)."""
        where = f"workload.{role}_tokens"
        column = self.column
        if column is None:
            if self.format != "azure":
                raise spec_error(
                    f"{where}.column",
                    "an empirical length from a generic CSV needs `column`: the column to sample",
                )
            column = AZURE_COLUMNS[f"{role}_tokens"]
        values = read_token_column(self.path, column, where)
        return values[rng.integers(0, len(values), size=n)]


def sample_lengths(spec: LengthDistribution, n: int, rng: np.random.Generator, role: Role) -> np.ndarray:
    """n token lengths (int32, >= 1) for the prompt or output spec `spec`."""
    _check_fits_int32(spec, role)
    return spec.sample(n, rng, role)


def _check_fits_int32(spec: Any, role: Role) -> None:
    """Lengths are int32; a bound above that would wrap around silently."""
    name = spec.largest
    if name is not None and getattr(spec, name) > INT32_MAX:
        raise spec_error(f"workload.{role}_tokens.{name}", f"{getattr(spec, name)} tokens is too many",
                         allowed=f"at most {INT32_MAX}")
