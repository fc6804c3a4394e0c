"""The scenario language: models, units, loading, overrides and readable errors.

The names below are imported on first use. A scenario is composed of families (arrival
processes, token lengths, routers, detectors) whose modules build on `sim.spec.base`;
importing this package must not pull the scenario in, or a family module imported first
would meet itself half-imported through the scenario that imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.spec.errors import SpecError, SpecIssue
    from sim.spec.loader import (
        apply_overrides,
        dump_scenario,
        load_document,
        load_scenario,
        spec_hash,
    )
    from sim.spec.scenario import Scenario

_HOME = {
    "Scenario": "sim.spec.scenario",
    "SpecError": "sim.spec.errors",
    "SpecIssue": "sim.spec.errors",
    "apply_overrides": "sim.spec.loader",
    "dump_scenario": "sim.spec.loader",
    "load_document": "sim.spec.loader",
    "load_scenario": "sim.spec.loader",
    "spec_hash": "sim.spec.loader",
}

__all__ = [
    "Scenario",
    "SpecError",
    "SpecIssue",
    "apply_overrides",
    "dump_scenario",
    "load_document",
    "load_scenario",
    "spec_hash",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'sim.spec' has no attribute {name!r}")
