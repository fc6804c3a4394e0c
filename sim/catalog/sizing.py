"""How a model sits in GPU memory: weights, KV cache, and whether a replica fits at all.

A replica spans `tp` GPUs (tensor parallelism). Each GPU gives `gpu_memory_utilization` of its
memory (as the driver counts it, in binary units: see the catalog) to the engine; weights are
split evenly across the `tp` GPUs; what remains, less the engine's reserve for activations,
CUDA graphs and communication buffers (`Engine.reserve_bytes`, which grows with the token
budget), holds the KV cache, in whole blocks. As vLLM does, a replica must hold at least one
sequence of `max_model_len` tokens in its KV cache, or it refuses to start.

    weights_per_gpu = params x bytes_per_param(precision) / tp
    usable_per_gpu  = memory x gpu_memory_utilization
    kv_bytes        = tp x (usable_per_gpu - weights_per_gpu - reserve_per_gpu)
    kv_tokens       = floor(kv_bytes / kv_bytes_per_token / block) x block,
    kv_bytes_per_token = 2 x layers x kv_heads x head_dim x bytes(kv_precision)

Checked against vLLM 0.15.1's reported capacities on H100 (tests/test_roofline.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import GPU, Catalog, Model

# What vLLM 0.15.1 kept out of the KV cache per GPU at a 2,048-token budget on H100 (1.3 GiB,
# derived from its reported capacities: shared/facts/ENGINES.md §2.1); callers with an engine
# profile pass `Engine.reserve_bytes(budget)` instead.
DEFAULT_RESERVE_BYTES = 1.3 * 2**30


@dataclass(frozen=True)
class ReplicaMemory:
    weights_per_gpu_bytes: float
    usable_per_gpu_bytes: float
    kv_cache_bytes: float
    kv_bytes_per_token: float
    kv_tokens: int
    needed_tokens: int

    @property
    def fits(self) -> bool:
        """Weights fit and the KV cache holds at least one `max_model_len` sequence."""
        return self.kv_cache_bytes > 0 and self.kv_tokens >= self.needed_tokens


def replica_memory(
    model: Model,
    gpu: GPU,
    precision: str,
    tp: int,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int = 8192,
    kv_precision: str = "bf16",
    reserve_bytes: float = DEFAULT_RESERVE_BYTES,
    block_size: int = 16,
) -> ReplicaMemory:
    weights = model.weight_bytes(precision) / tp
    usable = gpu.memory * gpu_memory_utilization
    kv_bytes = tp * (usable - weights - reserve_bytes)
    per_token = model.kv_bytes_per_token(kv_precision)
    if model.kind != "transformer":
        return ReplicaMemory(weights, usable, kv_bytes, 0.0, 0, 0)
    tokens = int(kv_bytes // per_token) // block_size * block_size if kv_bytes > 0 else 0
    needed = min(max_model_len, model.max_context or max_model_len)
    return ReplicaMemory(weights, usable, kv_bytes, per_token, tokens, needed)


def engine_replica_memory(
    catalog: Catalog,
    model: str,
    gpu: str,
    precision: str,
    tp: int,
    engine: str,
    *,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int = 8192,
    max_num_batched_tokens: int = 8192,
    kv_precision: str = "bf16",
    block_size: int = 16,
) -> ReplicaMemory:
    """`replica_memory` of `model` on `tp` x `gpu` (catalog ids) with `engine`'s reserve for this
    token budget: the memory `sim.kernels.replica.replica_setup` builds a replica on, here
    without the kernel (and numba) that `deploysim validate` does not need."""
    return replica_memory(catalog.models[model], catalog.gpus[gpu], precision, tp, gpu_memory_utilization,
                          max_model_len, kv_precision, catalog.engines[engine].reserve_bytes(max_num_batched_tokens),
                          block_size)


def smallest_fitting_tp(model: Model, gpu: GPU, precision: str, max_tp: int = 64, **kwargs: object) -> int | None:
    """The smallest power-of-two tensor-parallel degree whose replica fits, or None."""
    tp = 1
    while tp <= max_tp:
        if replica_memory(model, gpu, precision, tp, **kwargs).fits:  # type: ignore[arg-type]
            return tp
        tp *= 2
    return None
