"""The scenario language: models, units, loading, overrides and readable errors."""

from sim.spec.errors import SpecError, SpecIssue
from sim.spec.loader import apply_overrides, dump_scenario, load_document, load_scenario, spec_hash
from sim.spec.scenario import Scenario

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
