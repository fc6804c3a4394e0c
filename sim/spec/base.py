"""The base of every scenario model.

Every part of a scenario, from a site to an arrival process, is a `Spec`: a pydantic model
that forbids unknown keys (a typo is an error with a "did you mean", never a silently ignored
line), re-checks values on edit and refuses NaN and infinities. It lives in a module of its
own so that the families a scenario is composed of (arrival processes, token lengths, ...)
can build on it without importing the scenario that, in turn, imports them.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Base of every scenario model: unknown keys are errors, values are re-checked on edit,
    and no number is NaN or infinite (`.nan` or `.inf` in YAML, `"inf"` as text): one rule
    here instead of one per field, so a new field cannot forget it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              allow_inf_nan=False)

    file_fields: ClassVar[tuple[str, ...]] = ()
    """The fields that name files, relative to the scenario file that wrote them (a trace)."""
