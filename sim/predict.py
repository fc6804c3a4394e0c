"""The quick answer: how fast is this model on that GPU, without writing a scenario?

`predict(model="llama-3.1-8b", gpu="h100-sxm", precision="fp8", input_tokens=1000,
output_tokens=1000, batch=8)` runs B identical requests sent together to one replica (a static
batch, as offline benchmarks measure); with `concurrency=C, requests=N` it runs a closed loop
of C clients instead, each sending its next request as soon as the last one ends (as a serving
benchmark's max-concurrency mode does). Both go through the same serving kernel as full
scenarios, with the engine defaults of `sim.spec.scenario.Serving`.

    >>> from sim.predict import predict
    >>> answer = predict(model="llama-3.1-8b", gpu="h100-sxm", input_tokens=128, output_tokens=128)
    >>> 0.005 < answer["tpot_s"] < 0.05
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sim.catalog import Catalog, shipped_catalog
from sim.kernels.batching import DONE
from sim.kernels.replica import DEFAULT_ENGINE, build_pool, replica_setup
from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.scenario import MAX_TENSOR_PARALLEL, Serving
from sim.workload.limits import BYTES_PER_PREDICTED_REQUEST, check_memory

PRECISIONS = ("bf16", "fp16", "fp8", "int8", "int4")


def _check(name: str, value: Any, ok: bool, allowed: str, message: str = "not allowed") -> list[SpecIssue]:
    return [] if ok else [SpecIssue(f"--{name}", message, value, allowed)]


# Longer than any model's context: a bound that keeps a typo (99999999999999999999999) away
# from numpy; the real limit, the replica's KV cache, is checked once the replica is sized.
MAX_TOKENS = 10_000_000


def _kv_issues(kv_tokens: int, input_tokens: int, output_tokens: int, where: str) -> list[SpecIssue]:
    """A request the replica's KV cache cannot hold is never served (it ended as NaN latencies)."""
    total = input_tokens + output_tokens
    if total <= kv_tokens:
        return []
    name, value = ("input-tokens", input_tokens) if input_tokens >= output_tokens else ("output-tokens", output_tokens)
    return [SpecIssue(f"--{name}", f"a request of {total:,} tokens needs more KV cache than one replica holds "
                      f"({kv_tokens:,} tokens on {where})", value,
                      f"input + output tokens <= {kv_tokens:,}, or more GPUs (--gpus)")]


def _check_fits(batch: int, concurrency: int | None, requests: int | None, rate_per_s: float | None) -> None:
    """Refuse a batch or loop whose requests would not fit in memory, before allocating them."""
    if concurrency is not None:
        n, flag = requests or 10 * concurrency, "--requests" if requests else "--concurrency"
    elif rate_per_s is not None:
        n, flag = requests or 1000, "--requests"
    else:
        n, flag = batch, "--batch"
    try:
        check_memory([(f"{n:,} requests x {BYTES_PER_PREDICTED_REQUEST} B", float(n) * BYTES_PER_PREDICTED_REQUEST)],
                     flag, f"a smaller {flag}")
    except SpecError as exc:
        raise exc.with_source("deploysim predict") from None


def predict(
    *, model: str, gpu: str, gpus: int = 1, precision: str = "bf16", input_tokens: int = 1000,
    output_tokens: int = 1000, batch: int = 1, concurrency: int | None = None, requests: int | None = None,
    max_model_len: int | None = None, engine: str = DEFAULT_ENGINE,
    overrides: Mapping[str, float | None] | None = None,
    rate_per_s: float | None = None, catalog: Catalog | None = None,
) -> dict[str, Any]:
    """TTFT, TPOT, E2E and throughput for B identical requests (or a closed / Poisson loop).

    `engine` is a catalog engine profile; `overrides` replace some of its factors
    (calibration fits them this way); `rate_per_s` sends `requests` identical requests as a
    Poisson stream instead (seeded).
    """
    catalog = catalog or shipped_catalog()
    issues = []
    if model not in catalog.models:
        issues.append(SpecIssue("--model", f"unknown model id{suggest(model, catalog.models)}", model,
                                ", ".join(sorted(catalog.models))))
    if gpu not in catalog.gpus:
        issues.append(SpecIssue("--gpu", f"unknown GPU id{suggest(gpu, catalog.gpus)}", gpu,
                                ", ".join(sorted(catalog.gpus))))
    if engine not in catalog.engines:
        issues.append(SpecIssue("--engine", f"unknown engine{suggest(engine, catalog.engines)}", engine,
                                ", ".join(sorted(catalog.engines))))
    issues += _check("precision", precision, precision in PRECISIONS, ", ".join(PRECISIONS))
    for name, value in (("gpus", gpus), ("input-tokens", input_tokens), ("output-tokens", output_tokens),
                        ("batch", batch)):
        issues += _check(name, value, value >= 1, "a whole number >= 1", "out of range")
    if concurrency is not None:
        issues += _check("concurrency", concurrency, concurrency >= 1, "a whole number >= 1", "out of range")
    if requests is not None:
        issues += _check("requests", requests, requests >= 1, "a whole number >= 1", "out of range")
    if rate_per_s is not None:
        issues += _check("rate", rate_per_s, bool(np.isfinite(rate_per_s)) and rate_per_s > 0, "requests/s > 0",
                         "out of range")
    for name, value in (("input-tokens", input_tokens), ("output-tokens", output_tokens)):
        issues += _check(name, value, value <= MAX_TOKENS, f"a whole number up to {MAX_TOKENS:,}", "out of range")
    issues += _check("gpus", gpus, gpus <= MAX_TENSOR_PARALLEL, f"a whole number up to {MAX_TENSOR_PARALLEL}",
                     "out of range")
    if issues:
        raise SpecError(issues, "deploysim predict")
    _check_fits(batch, concurrency, requests, rate_per_s)
    card, device = catalog.models[model], catalog.gpus[gpu]
    if card.kind != "transformer":
        raise SpecError([SpecIssue("--model", "predict models transformers; classic models have no roofline", model,
                                   ", ".join(sorted(m for m, c in catalog.models.items() if c.kind == "transformer")))])
    if precision == "fp8" and "fp8" not in device.peak_flops:
        raise SpecError([SpecIssue("--precision", f"{gpu} has no fp8 tensor cores", precision, "bf16, fp16, int8, int4")])
    knobs = Serving()
    length = max_model_len or max(knobs.max_model_len, input_tokens + output_tokens)
    budget = max(knobs.max_num_batched_tokens, input_tokens if not knobs.chunked_prefill else 1)
    setup = replica_setup(catalog, model, gpu, precision, gpus, engine,
                          gpu_memory_utilization=knobs.gpu_memory_utilization, max_model_len=length,
                          max_num_batched_tokens=budget, kv_precision=knobs.kv_cache_precision,
                          block_size=knobs.block_size, overrides=overrides)
    memory = setup.memory
    if not memory.fits:
        raise SpecError([SpecIssue("--gpus", f"{model} at {precision} does not fit {gpus}x {gpu} with room for "
                                   f"{length} tokens of KV cache", gpus, "more GPUs, a smaller precision, or shorter requests")])
    kv = _kv_issues(memory.kv_tokens, input_tokens, output_tokens, f"{gpus}x {gpu} at {precision}")
    if kv:
        raise SpecError(kv, "deploysim predict")
    closed = concurrency is not None
    poisson = rate_per_s is not None and not closed
    if poisson:
        assert rate_per_s is not None
        n = requests or 1000
        arrivals = np.cumsum(np.random.default_rng(0).exponential(1.0 / rate_per_s, n))
    else:
        n = (requests or 10 * concurrency) if closed else batch  # type: ignore[operator]
        arrivals = np.zeros(n)
    knobs = knobs.model_copy(update={"max_num_seqs": max(knobs.max_num_seqs, batch), "max_num_batched_tokens": budget,
                                     "max_model_len": length})
    kernel = build_pool(knobs, setup.kernel_options(), arrivals, np.full(n, input_tokens, dtype=np.int64),
                        np.full(n, output_tokens, dtype=np.int64), replicas=1, clients=concurrency or 0)
    kernel.advance_to(np.inf)
    done = kernel.status == DONE
    ttft = kernel.first_token_s - kernel.arrival_s
    e2e = kernel.done_s - kernel.arrival_s
    tpot = (kernel.done_s - kernel.first_token_s) / max(output_tokens - 1, 1)
    span = float(np.nanmax(kernel.done_s) - np.nanmin(kernel.arrival_s))
    return {
        "mode": (f"closed loop, {concurrency} clients, {n} requests" if closed
                 else f"Poisson at {rate_per_s:g} req/s, {n} requests" if poisson else f"static batch of {batch}"),
        "model": model, "gpu": gpu, "gpus": gpus, "precision": precision, "engine": engine,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "requests": int(n), "completed": int(done.sum()),
        "ttft_s": float(np.nanmean(ttft[done])),
        "tpot_s": float(np.nanmean(tpot[done])) if output_tokens > 1 else None,  # no second token
        "e2e_s": float(np.nanmean(e2e[done])),
        "output_tokens_per_s": float(output_tokens * done.sum() / span) if span > 0 else 0.0,
        "requests_per_s": float(done.sum() / span) if span > 0 else 0.0,
        "kv_cache_tokens": int(memory.kv_tokens), "preemptions": int(kernel.preemptions.sum()),
    }
