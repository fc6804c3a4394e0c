"""How a model sits in GPU memory: weights, KV cache, and whether a replica fits at all.

A replica spans `tp` GPUs (tensor parallelism). Each GPU gives `gpu_memory_utilization` of its
memory to the engine; weights are split evenly across the `tp` GPUs; what remains, less a
small activation reserve, holds the KV cache. As vLLM does, a replica must hold at least one
sequence of `max_model_len` tokens in its KV cache, or it refuses to start.

    weights_per_gpu = params x bytes_per_param(precision) / tp
    usable_per_gpu  = memory x gpu_memory_utilization
    kv_bytes        = tp x (usable_per_gpu - weights_per_gpu - activation_reserve)
    kv_tokens       = kv_bytes / (2 x layers x kv_heads x head_dim x bytes(kv_precision))
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import GPU, Model

# Activations, CUDA graphs and allocator slack that the engine keeps out of the KV cache.
# vLLM profiles this at start-up; a few percent of memory is typical for 7-70B models.
ACTIVATION_RESERVE_FRACTION = 0.03


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
) -> ReplicaMemory:
    weights = model.weight_bytes(precision) / tp
    usable = gpu.memory * gpu_memory_utilization
    reserve = gpu.memory * ACTIVATION_RESERVE_FRACTION
    kv_bytes = tp * (usable - weights - reserve)
    per_token = model.kv_bytes_per_token(kv_precision)
    if model.kind != "transformer":
        return ReplicaMemory(weights, usable, kv_bytes, 0.0, 0, 0)
    tokens = int(kv_bytes // per_token) if kv_bytes > 0 else 0
    needed = min(max_model_len, model.max_context or max_model_len)
    return ReplicaMemory(weights, usable, kv_bytes, per_token, tokens, needed)


def smallest_fitting_tp(model: Model, gpu: GPU, precision: str, max_tp: int = 64, **kwargs: object) -> int | None:
    """The smallest power-of-two tensor-parallel degree whose replica fits, or None."""
    tp = 1
    while tp <= max_tp:
        if replica_memory(model, gpu, precision, tp, **kwargs).fits:  # type: ignore[arg-type]
            return tp
        tp *= 2
    return None
