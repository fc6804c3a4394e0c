"""experiments/api_vs_selfhost.py: its break-even, checked by direct runs on both sides.

A small case: Llama-3.1-8B on one L40S per replica, a replica given a capacity of 2 req/s
(what the experiment would measure with `max_rate` is its own business), 10-minute runs at a
constant rate. The experiment says above which daily volume owning beats the API; a direct
run of the API and of the sized premises pool just below that volume finds the API cheaper,
and just above it the premises pool cheaper. The arithmetic of the staircase is checked by
hand too.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("api_vs_selfhost", ROOT / "experiments" / "api_vs_selfhost.py")
assert _spec is not None and _spec.loader is not None
experiment = importlib.util.module_from_spec(_spec)
sys.modules["api_vs_selfhost"] = experiment
_spec.loader.exec_module(experiment)

CAPACITY = 2.0
HORIZON = "10min"


def test_the_staircase_by_hand() -> None:
    """a = $1 per 1,000 requests, a replica-day $60 carrying 43,200 requests a day at peak
    (1 req/s, peak twice the mean): g k = 60 / 43,200 = $1.39e-3 per request > a: never. At
    $30 a replica-day, g k = 6.9e-4 < 1e-3: a / (a - g k) = 3.27, so n = 3 is the last step on
    which the API is cheaper, up to 30 x 3 / 1e-3 = 90,000 a day; the first win is at 30,000
    (30 / 1e-3)."""
    assert experiment.break_even(1e-3, 60.0, 1.0, peak_to_mean=2.0).always is None
    found = experiment.break_even(1e-3, 30.0, 1.0, peak_to_mean=2.0)
    assert found.first == pytest.approx(30_000) and found.always == pytest.approx(90_000)
    assert found.last_api_step == 3
    below, above = experiment.brackets(1e-3, 30.0, 1.0, peak_to_mean=2.0)
    assert below == pytest.approx((86_400 + 90_000) / 2) and above == pytest.approx((90_000 + 129_600) / 2)
    assert experiment.replicas_for(86_400.0, 1.0, 2.0) == 2 and experiment.replicas_for(86_401.0, 1.0, 2.0) == 3


def test_the_printed_break_even_holds_in_direct_runs() -> None:
    m = experiment.MODELS["8b"]
    measured = experiment.measure(m, HORIZON, capacity_rps=CAPACITY)
    a, g = measured.margin("own"), measured.replica_usd_per_day["own"]
    found = experiment.break_even(a, g, CAPACITY)
    assert found.always is not None and found.last_api_step >= 1
    assert f"owning beats it above {experiment._volume(found.always)} requests/day" in experiment.answer_line([measured])
    below, above = experiment.brackets(a, g, CAPACITY)
    cheaper = {}
    for label, volume in (("below", below), ("above", above)):
        rate = volume / experiment.DAY_S
        replicas = experiment.replicas_for(volume, CAPACITY)
        own, _ = experiment.run_cost(experiment.scenario_doc(m, "own", replicas, rate, HORIZON))
        api, _ = experiment.run_cost(experiment.scenario_doc(m, "api", 0, rate, HORIZON))
        cheaper[label] = "api" if api < own else "own"
        assert math.isfinite(own) and math.isfinite(api)
    assert cheaper == {"below": "api", "above": "own"}
