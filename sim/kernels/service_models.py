"""Service models: how a replica forms an iteration, and how long the iteration takes.

The serving kernel (`sim.kernels.batching`) runs the same queues and routers for every
model; what differs is the service model, one `ServiceModel` in the `SERVICE_MODELS`
registry with everything it decides side by side:

- `batching`: how a replica forms its next iteration. `CONTINUOUS` is continuous batching
  (admit while the token budget, the sequence limit and the KV cache allow; an LLM engine);
  `DYNAMIC` is dynamic batching (wait until the batch is full or its oldest request has
  waited `max_queue_delay`; a classic model server). These are the kernel's two ways of
  composing an iteration, chosen at one place in `_compose` and one in `advance`.
- `iteration_s`: a numba function that says how long an iteration takes, all with one
  signature, `ITERATION_SIGNATURE`:

      iteration_s(params, service_s, prefill_tokens, prefill_pairs, prefill_context,
                  prefill_seqs, decodes, decode_context, logit_tokens) -> seconds

  `params` is the pool's parameter vector, `service_s` the service time drawn up front for
  the first request prefilling in the iteration (0 when none), and the rest describe the
  batch as `sim.kernels.roofline.step_time` takes it (for dynamic batching, `prefill_seqs`
  is the batch size). The kernel receives it as a first-class function, like the router,
  so a new duration model (a fitted table, another engine's formula) runs in the compiled,
  cached kernel without touching it.
- `unit_requests`: every request is one unit of service (one token in, one out, one
  request per replica at a time), as queueing theory's M/M/c has it.
- `applies(scenario, setup)` and `arguments(scenario, setup, count, seed, replication)`:
  when a scenario uses the model, and the pool's keyword arguments it then needs (what
  `sim.world.world.service_model` hands the kernel). Members are tried in registration
  order; the first that applies is used.

The three members:

- **service_time**: `model.service_time` is set: a plain distribution
  (`sim.workload.service_times`) replaces the engine; iteration time = the request's
  service time.
- **dynamic_batching**: the catalog's model is `classic` (CNN, BERT classifiers): batches of
  up to `max_batch_size` take a + c x b seconds (the catalog's fit for the GPU, or the
  scenario's `latency_a` / `latency_c_per_item`).
- **roofline**: everything else, an LLM under continuous batching, each iteration timed by the
  per-component roofline with the engine profile (`sim.kernels.roofline.step_time`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import types

from sim.jit import no_refcount_jit
from sim.kernels.roofline import step_time
from sim.spec.families import Family
from sim.streams import stream

CONTINUOUS = 0
DYNAMIC = 1

ITERATION_SIGNATURE = types.float64(types.float64[::1], types.float64, types.int64, types.int64, types.int64,
                                    types.int64, types.int64, types.int64, types.int64)
ITERATION_TYPE = types.FunctionType(ITERATION_SIGNATURE)
"""The numba type of every service model's `iteration_s`, as the kernel declares its argument."""

UNBOUNDED_TOKENS = 2**40  # "no limit" for service models without a KV cache


@dataclass(frozen=True)
class ServiceModel:
    """One member of the family; see the module docstring."""

    name: str
    iteration_s: Any  # a numba function with ITERATION_SIGNATURE
    batching: int  # CONTINUOUS or DYNAMIC
    unit_requests: bool
    applies: Callable[[Any, Any], bool]  # (scenario, serving setup) -> used?
    arguments: Callable[[Any, Any, int, int, int], dict[str, Any]]


SERVICE_MODELS: Family[ServiceModel] = Family("service model")


@no_refcount_jit()
def _service_time_s(params, service_s, prefill_tokens, prefill_pairs, prefill_context,  # noqa: ANN001, ANN202
                    prefill_seqs, decodes, decode_context, logit_tokens):
    return service_s


def _service_time_arguments(scenario: Any, setup: Any, count: int, seed: int, replication: int) -> dict[str, Any]:
    service = scenario.model.service_time.sample(count, stream(seed, replication, "service_time"))
    return {"service_s": service, "kv_capacity_tokens": UNBOUNDED_TOKENS, "max_model_len": UNBOUNDED_TOKENS}


@no_refcount_jit()
def _batch_latency_s(params, service_s, prefill_tokens, prefill_pairs, prefill_context,  # noqa: ANN001, ANN202
                     prefill_seqs, decodes, decode_context, logit_tokens):
    return params[0] + params[1] * prefill_seqs


def _dynamic_batching_arguments(scenario: Any, setup: Any, count: int, seed: int,
                                replication: int) -> dict[str, Any]:
    b = scenario.model.batching
    entry = next((e for e in setup.model.batch_latency if e.gpu == setup.gpu_id), None)
    a = b.latency_a if b.latency_a is not None else entry.a_s  # type: ignore[union-attr]
    c = b.latency_c_per_item if b.latency_c_per_item is not None else entry.c_s_per_item  # type: ignore[union-attr]
    return {"batch_latency": (a, c), "max_queue_delay_s": b.max_queue_delay, "max_num_seqs": b.max_batch_size,
            "max_model_len": UNBOUNDED_TOKENS}


@no_refcount_jit()
def _roofline_s(params, service_s, prefill_tokens, prefill_pairs, prefill_context,  # noqa: ANN001, ANN202
                prefill_seqs, decodes, decode_context, logit_tokens):
    return step_time(params, prefill_tokens, prefill_pairs, prefill_context, prefill_seqs, decodes,
                     decode_context, logit_tokens)


SERVICE_MODELS.register(ServiceModel(
    "service_time", _service_time_s, CONTINUOUS, unit_requests=True,
    applies=lambda scenario, setup: scenario.model.service_time is not None,
    arguments=_service_time_arguments))
SERVICE_MODELS.register(ServiceModel(
    "dynamic_batching", _batch_latency_s, DYNAMIC, unit_requests=False,
    applies=lambda scenario, setup: setup.model.kind == "classic",
    arguments=_dynamic_batching_arguments))
ROOFLINE = "roofline"
"""The default model's name: the kernel calls `step_time` directly for it (`batching._duration`)."""
SERVICE_MODELS.register(ServiceModel(
    ROOFLINE, _roofline_s, CONTINUOUS, unit_requests=False,
    applies=lambda scenario, setup: True,
    arguments=lambda scenario, setup, count, seed, replication: {}))


def service_model_for(scenario: Any, setup: Any) -> ServiceModel:
    """The first registered service model that applies to the scenario's serving setup."""
    return next(model for model in SERVICE_MODELS.members() if model.applies(scenario, setup))


def kernel_arguments(scenario: Any, setup: Any, count: int, seed: int, replication: int) -> dict[str, Any]:
    """The serving kernel's keyword arguments for the scenario's service model (`count`
    requests, replication `replication`): its name and what it needs."""
    model = service_model_for(scenario, setup)
    return {"service_model": model.name, **model.arguments(scenario, setup, count, seed, replication)}


def default_service_model(service_s: np.ndarray | None, batch_latency: tuple[float, float] | None) -> str:
    """The model a pool built without a name runs: service times or batch latencies given
    say which (the kernel's older keyword interface), else the roofline."""
    if service_s is not None:
        return "service_time"
    return "dynamic_batching" if batch_latency is not None else "roofline"
