"""One model replica on GPUs, as the serving kernel sees it.

A replica is `tp` GPUs of one type running one model under one serving engine. What the
kernel needs to know about it comes from three catalogs: the model's shape (step-time FLOPs
and bytes), the GPU's peaks and memory, and the engine's profile on that GPU (the fractions of
those peaks it reaches, its overheads, whether it schedules asynchronously, its front end).
`replica_setup` joins them once, so that a scenario's serving pool, `deploysim predict` and
calibration build the very same replica:

    profile   = engine defaults, then the engine's entry for the GPU, then user overrides
    params    = sim.kernels.roofline.pack_params(model, gpu, precision, tp, profile)
    memory    = sim.catalog.sizing.engine_replica_memory(...)  (reserve = engine reserve at the budget)

`kernel_options()` are the `PoolKernel` keyword arguments that follow from it, and
`build_pool(serving, options, ...)` is the one place a pool's kernel is assembled from the
serving-engine knobs (`sim.spec.scenario.Serving`), those options and the requests: the
world's serving pools (`sim.world.serving`), `deploysim predict` and calibration all call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.catalog import GPU, Catalog, Engine, Model
from sim.catalog.sizing import ReplicaMemory, engine_replica_memory
from sim.kernels.batching import PoolConfig, PoolKernel
from sim.kernels.roofline import EngineProfile, engine_profile, pack_params
from sim.spec.scenario import Serving

DEFAULT_ENGINE = "vllm"


@dataclass(frozen=True, eq=False)
class ReplicaSetup:
    engine_id: str
    engine: Engine
    model: Model
    gpu: GPU
    precision: str
    tp: int
    profile: EngineProfile
    params: np.ndarray
    memory: ReplicaMemory

    @property
    def kv_tokens(self) -> int:
        return self.memory.kv_tokens

    def kernel_options(self) -> dict[str, Any]:
        """PoolKernel keyword arguments for this replica's engine."""
        return {
            "params": self.params,
            "kv_capacity_tokens": self.memory.kv_tokens,
            "async_scheduling": self.engine.async_scheduling,
            "frontend_s": self.profile.frontend_s,
            "frontend_per_step": self.profile.frontend_per_step,
        }


def replica_setup(
    catalog: Catalog,
    model: str,
    gpu: str,
    precision: str,
    tp: int,
    engine: str = DEFAULT_ENGINE,
    *,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int = 8192,
    max_num_batched_tokens: int = 8192,
    kv_precision: str = "bf16",
    block_size: int = 16,
    overrides: Mapping[str, float | None] | None = None,
) -> ReplicaSetup:
    """The replica of `model` on `tp` x `gpu` under `engine` (ids of the catalog)."""
    card, device, profile_of = catalog.models[model], catalog.gpus[gpu], catalog.engines[engine]
    profile = engine_profile(profile_of, gpu, overrides)
    memory = engine_replica_memory(catalog, model, gpu, precision, tp, engine,
                                   gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                   max_num_batched_tokens=max_num_batched_tokens, kv_precision=kv_precision,
                                   block_size=block_size)
    params = pack_params(card, device, precision, tp, profile, kv_precision)
    return ReplicaSetup(engine, profile_of, card, device, precision, tp, profile, params, memory)


def build_pool(serving: Serving, options: Mapping[str, Any], arrival_s: np.ndarray, prompt_tokens: np.ndarray,
               output_tokens: np.ndarray, **extra: Any) -> PoolKernel:
    """A serving pool's kernel: the serving knobs, then the replica / service-model options
    (`ReplicaSetup.kernel_options()` and the like), then `extra` (replicas, prefix groups,
    router draws, closed loop, timeouts...), later keys winning."""
    settings = {"router": serving.router, **_settings(serving, options, extra)}
    return PoolKernel(arrival_s, prompt_tokens, output_tokens, **settings)


def _settings(serving: Serving, options: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The serving-engine knobs, then `options`, then `extra`, later keys winning (the router
    is the caller's: per pool or per cluster)."""
    settings: dict[str, Any] = {
        "max_num_seqs": serving.max_num_seqs, "max_num_batched_tokens": serving.max_num_batched_tokens,
        "chunked_prefill": serving.chunked_prefill, "max_model_len": serving.max_model_len,
        "prefix_caching": serving.prefix_caching,
    }
    settings.update(options)
    settings.update(extra)
    return settings


_POOL_FIELDS = frozenset(f.name for f in dataclasses.fields(PoolConfig))


def pool_config(serving: Serving, options: Mapping[str, Any], **extra: Any) -> tuple[PoolConfig, dict[str, Any]]:
    """One pool of a serving cluster from the same knobs as `build_pool`: its `PoolConfig`,
    and the cluster-wide keyword arguments the options carry (the service model, per-request
    service times), for `ClusterKernel`."""
    settings = _settings(serving, options, extra)
    own = {k: v for k, v in settings.items() if k in _POOL_FIELDS}
    return PoolConfig(**own), {k: v for k, v in settings.items() if k not in _POOL_FIELDS}
