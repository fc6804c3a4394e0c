"""Reproducing a measured point through the simulator itself.

A serving point runs the same replica and kernel as full scenarios (`sim.predict.predict`:
identical requests as a static batch, a closed loop of clients or a Poisson stream), or, with
per-request lengths, the same kernel request by request (`simulate_requests`), under the
point's engine profile. A training point runs `sim.kernels.training.training_time_s` with the
GPU's training MFU for the point's method. `overrides` replace factors: engine-profile
fields (`bandwidth`, `gemm`, `overhead_s`, ...) for serving points, the GPU's `mfu` /
`lora_mfu` for training points; calibration fits them this way.

    >>> from sim.calibration import Measurement, predict_measurement
    >>> point = Measurement(id="p1", source="example", model="llama-2-7b", gpu="a100-80gb",
    ...                     gpus=1, precision="fp16", setup="static", input_tokens=128,
    ...                     output_tokens=128, batch_or_concurrency=1, rate=None,
    ...                     metric="tpot", value=0.010, engine_id="vllm")
    >>> 0.005 < predict_measurement(point) < 0.05
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sim.calibration.measurements import (
    CLOSED_REQUESTS_PER_CLIENT,
    DEFAULT_ENGINE,
    POISSON_REQUESTS,
    Measurement,
)
from sim.catalog import Catalog, shipped_catalog
from sim.kernels.batching import DONE
from sim.kernels.replica import build_pool, replica_setup
from sim.kernels.training import training_time_s
from sim.predict import predict
from sim.spec.errors import SpecError, SpecIssue
from sim.spec.scenario import Serving

TRAINING_SCALING_EFFICIENCY = 0.9  # sim.spec.scenario.Retraining's default, for multi-GPU rows
TRAINING_FACTORS = ("mfu", "lora_mfu")


def training_factor(method: str | None) -> str:
    """The GPU training factor a training point's method uses."""
    return "lora_mfu" if method == "lora" else "mfu"


def predict_measurement(m: Measurement, overrides: Mapping[str, float] | None = None,
                        catalog: Catalog | None = None) -> float:
    """The simulator's value for a measured point, in the point's SI unit."""
    catalog = catalog or shipped_catalog()
    try:
        return _predict(m, overrides or {}, catalog)
    except SpecError as exc:  # name the point, not predict's flags
        raise SpecError([replace(i, path=f"{m.id}: {i.path.lstrip('-')}") for i in exc.issues], m.source) from None


def _predict(m: Measurement, overrides: Mapping[str, float], catalog: Catalog) -> float:
    if m.setup == "training":
        return _training_throughput(m, overrides, catalog)
    if m.input_lens is not None:
        return simulate_requests(m, overrides, catalog).metric(m.metric)
    output = max(m.output_tokens or 1, 1)
    if m.metric == "decode_throughput":
        output += 1  # the first token comes from the prefill; then `output` timed decode steps
    if m.metric == "prefill_throughput":
        output = 1
    kwargs: dict[str, Any] = {}
    if m.setup == "closed":
        kwargs.update(concurrency=m.batch_or_concurrency,
                      requests=m.requests or m.batch_or_concurrency * CLOSED_REQUESTS_PER_CLIENT)
    elif m.setup == "poisson":
        kwargs.update(rate_per_s=m.rate, requests=m.requests or POISSON_REQUESTS)
    else:
        kwargs.update(batch=m.batch_or_concurrency)
    answer = predict(model=m.model, gpu=m.gpu, gpus=m.gpus, precision=m.precision,
                     input_tokens=max(m.input_tokens, 1), output_tokens=output,
                     engine=m.engine_id or DEFAULT_ENGINE, overrides=overrides, catalog=catalog, **kwargs)
    if m.metric == "ttft":
        return float(answer["ttft_s"])
    if m.metric == "tpot":
        return float(answer["tpot_s"])
    if m.metric == "output_throughput":
        return float(answer["output_tokens_per_s"])
    if m.metric == "prefill_throughput":
        return max(m.input_tokens, 1) * (1 if m.setup != "static" else m.batch_or_concurrency) / answer["ttft_s"]
    if m.metric == "decode_throughput":
        return (1 if m.setup != "static" else m.batch_or_concurrency) / answer["tpot_s"]
    raise ValueError(f"metric {m.metric!r} is not a serving metric")


def _training_throughput(m: Measurement, overrides: Mapping[str, float], catalog: Catalog) -> float:
    tokens = float(max(m.input_tokens, 1) * m.batch_or_concurrency)  # one optimiser step
    gpu = catalog.gpus[m.gpu]
    name = training_factor(m.method)
    mfu = overrides.get(name, getattr(gpu.training, name))
    seconds = training_time_s(catalog.models[m.model], gpu, m.method or "full", tokens, m.gpus, mfu,
                              TRAINING_SCALING_EFFICIENCY)
    return tokens / seconds


@dataclass(frozen=True, eq=False)
class RequestTimes:
    """Per-request times of one simulated benchmark run (seconds; NaN where not reached)."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    done_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    done: np.ndarray

    @property
    def ttft_s(self) -> np.ndarray:
        return (self.first_token_s - self.arrival_s)[self.done]

    @property
    def tpot_s(self) -> np.ndarray:
        several = self.done & (self.output_tokens > 1)
        return (self.done_s - self.first_token_s)[several] / (self.output_tokens[several] - 1)

    @property
    def output_tokens_per_s(self) -> float:
        span = float(np.nanmax(self.done_s) - np.nanmin(self.arrival_s))
        return float(self.output_tokens[self.done].sum() / span) if span > 0 else 0.0

    def metric(self, metric: str) -> float:
        if metric == "ttft":
            return float(np.mean(self.ttft_s))
        if metric == "tpot":
            return float(np.mean(self.tpot_s))
        if metric == "output_throughput":
            return self.output_tokens_per_s
        raise ValueError(f"metric {metric!r} is not reproduced request by request")


def simulate_requests(m: Measurement, overrides: Mapping[str, float] | None = None,
                      catalog: Catalog | None = None) -> RequestTimes:
    """Run a serving point request by request and keep every request's times.

    Built as `sim.predict.predict` builds its kernel (engine defaults of
    `sim.spec.scenario.Serving`, the same seeded Poisson arrivals), but with per-request token
    counts (`m.input_lens` / `m.output_lens`, else identical requests) and vLLM's
    max_num_seqs, not the batch size, as the cap on running sequences.
    """
    catalog = catalog or shipped_catalog()
    if m.input_lens is not None and m.output_lens is not None:
        inputs = np.asarray(m.input_lens, dtype=np.int64)
        outputs = np.asarray(m.output_lens, dtype=np.int64)
    else:
        n = (m.batch_or_concurrency if m.setup == "static"
             else m.requests or (POISSON_REQUESTS if m.setup == "poisson"
                                 else m.batch_or_concurrency * CLOSED_REQUESTS_PER_CLIENT))
        inputs = np.full(n, max(m.input_tokens, 1), dtype=np.int64)
        outputs = np.full(n, max(m.output_tokens or 1, 1), dtype=np.int64)
    n = len(inputs)
    knobs = Serving()
    length = max(knobs.max_model_len, int((inputs + outputs).max()))
    budget = max(knobs.max_num_batched_tokens, 1 if knobs.chunked_prefill else int(inputs.max()))
    setup = replica_setup(catalog, m.model, m.gpu, m.precision, m.gpus, m.engine_id or DEFAULT_ENGINE,
                          gpu_memory_utilization=knobs.gpu_memory_utilization, max_model_len=length,
                          max_num_batched_tokens=budget, kv_precision=knobs.kv_cache_precision,
                          block_size=knobs.block_size, overrides=overrides)
    if not setup.memory.fits:
        raise SpecError([SpecIssue(f"{m.id}.gpus", f"{m.model} at {m.precision} does not fit {m.gpus}x {m.gpu} with "
                                   f"room for {length} tokens of KV cache", m.gpus, "more GPUs or a smaller precision")],
                        m.source)
    if m.setup == "poisson":
        assert m.rate is not None
        arrivals = np.cumsum(np.random.default_rng(0).exponential(1.0 / m.rate, n))
    else:
        arrivals = np.zeros(n)
    knobs = knobs.model_copy(update={"max_num_batched_tokens": budget, "max_model_len": length})
    kernel = build_pool(knobs, setup.kernel_options(), arrivals, inputs, outputs, replicas=1,
                        clients=m.batch_or_concurrency if m.setup == "closed" else 0)
    kernel.advance_to(np.inf)
    return RequestTimes(kernel.arrival_s.copy(), kernel.first_token_s.copy(), kernel.done_s.copy(),
                        inputs, outputs, kernel.status == DONE)
