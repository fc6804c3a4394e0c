"""Catalogs: the GPUs, models and prices that scenarios name by id.

A catalog is data, shipped with the package as YAML (`gpus.yaml`, `models.yaml`,
`engines.yaml`, `prices.yaml` beside this file). Every entry says where its numbers come from (`source:`) and
when they were read (`as_of:`); a number that is an estimate says so in its source text. A
scenario may name its own catalog file (`catalog: my_hw.yaml`), whose entries are added to the
shipped ones or replace them id by id, field by field, so that a calibration or a negotiated
price does not need a copy of the whole catalog.

Quantities use the same human units as scenarios (`80GiB`, `3.35TB/s`) and are held in SI.
Peak FLOP/s are dense (no 2:4 sparsity), per GPU, per precision. Memory sizes are binary
where the hardware's are (an "80 GB" H100 shows the driver 81,559 MiB).

Engines (`engines.yaml`) are serving-engine profiles: the fractions of a GPU's peaks that
an engine reaches per operation, its per-iteration host overhead and all-reduce cost, and
the memory it keeps out of the KV cache, with defaults and per-GPU values where measurements
exist (`sim.kernels.roofline` says how they enter the step time).

Managed model APIs (`apis.yaml`) are providers' endpoints a scenario may serve from (a pool of
`kind: api`): the model each serves, its price per 1M input and output tokens, a latency
profile (lognormal time to first token and time per output token, each a median and a 90th
percentile) and, where one was found, its rate limit.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.spec.units import Bytes, BytesPerSecond, Seconds

CATALOG_DIR = Path(__file__).parent

Precision = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]

# Bytes per weight element for each precision a model may be served in.
BYTES_PER_PARAM: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}


class Sourced(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=3, description="where the numbers come from; estimates say so")
    as_of: dt.date = Field(description="when the source was read or published")


class Training(BaseModel):
    """How close fine-tuning gets to the GPU's dense bf16 peak (see sim.kernels.training)."""

    model_config = ConfigDict(extra="forbid")

    mfu: float = Field(default=0.4, gt=0, le=1, description="MFU of full fine-tuning (6 FLOPs per param-token)")
    lora_mfu: float = Field(default=0.4, gt=0, le=1, description="MFU of LoRA fine-tuning (4 FLOPs per param-token)")
    fitted_to: str = Field(default="", description="measurements the factors were fitted to")


class EngineFactors(BaseModel):
    """Fractions of datasheet peaks a serving engine reaches, and what it adds per iteration.

    Field names and meanings are those of `sim.kernels.roofline.EngineProfile`; every field
    may be left out of a per-GPU entry (the engine's defaults apply).
    """

    model_config = ConfigDict(extra="forbid")

    bandwidth: float | None = Field(default=None, gt=0, le=1, description="weight streaming, of memory bandwidth")
    kv_bandwidth: float | None = Field(default=None, gt=0, le=1, description="paged KV reads in decode attention")
    gemm: float | None = Field(default=None, gt=0, le=1, description="dense GEMM FLOP fraction at large M")
    gemm_half_m: float | None = Field(default=None, ge=1, le=4096, description="GEMM rows at half efficiency")
    attention_prefill: float | None = Field(default=None, gt=0, le=1, description="prefill attention FLOP fraction")
    moe_gemm: float | None = Field(default=None, gt=0, le=1, description="expert GEMM FLOP fraction at large M")
    overhead_s: Seconds | None = Field(default=None, ge=0, le=1, description="host time per iteration")
    overhead_per_seq_s: Seconds | None = Field(default=None, ge=0, le=0.01, description="per scheduled sequence")
    overhead_per_prefill_token_s: Seconds | None = Field(default=None, ge=0, le=0.001,
                                                         description="per prefill token")
    allreduce_latency_s: Seconds | None = Field(default=None, ge=0, le=0.01, description="per all-reduce call")
    allreduce_bandwidth: float | None = Field(default=None, gt=0, le=1, description="of interconnect bandwidth")
    frontend_s: Seconds | None = Field(default=None, ge=0, le=1, description="API server time to each client")
    frontend_per_step: float | None = Field(default=None, ge=0, le=4,
                                            description="streaming lag, as a fraction of the iteration")

    def values(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class MemoryReserve(BaseModel):
    """GPU memory an engine keeps out of the KV cache: activations, CUDA graphs, buffers.

    reserve = fixed + per_batched_token x max_num_batched_tokens, per GPU.
    """

    model_config = ConfigDict(extra="forbid")

    fixed: Bytes = Field(ge=0)
    per_batched_token: Bytes = Field(ge=0)


class Engine(Sourced):
    """A serving engine's profile: default factors, per-GPU factors where data exist."""

    name: str
    version: str = ""
    defaults: EngineFactors
    gpus: dict[str, EngineFactors] = Field(default_factory=dict)
    priors: EngineFactors | None = Field(default=None, description="sourced values before fitting")
    memory_reserve: MemoryReserve
    async_scheduling: bool = Field(default=False, description="schedules iteration k+1 while k runs")
    fitted_to: str = Field(default="", description="measurements the factors were fitted to")
    fit_error: str = Field(default="", description="fit error on those measurements (leave-one-out)")

    @model_validator(mode="after")
    def _defaults_complete(self) -> Engine:
        missing = [f for f in EngineFactors.model_fields if getattr(self.defaults, f) is None]
        if missing:
            raise ValueError(f"an engine's defaults need every factor; missing: {', '.join(missing)}")
        return self

    def factors(self, gpu: str) -> dict[str, float]:
        """The engine's factors on one GPU: its defaults, with the GPU's own entry over them."""
        merged = self.defaults.values()
        if gpu in self.gpus:
            merged.update(self.gpus[gpu].values())
        return merged

    def reserve_bytes(self, max_num_batched_tokens: int) -> float:
        return self.memory_reserve.fixed + self.memory_reserve.per_batched_token * max_num_batched_tokens


class CloudPrice(Sourced):
    provider: str
    instance: str
    gpus_per_instance: int = Field(ge=1)
    usd_per_gpu_hour: float = Field(gt=0)
    pricing: Literal["on_demand", "reserved", "spot", "capacity_block"] = "on_demand"
    region: str = ""


class GPU(Sourced):
    name: str
    vendor: str
    peak_flops: dict[Precision, float] = Field(
        description="dense FLOP/s (or OP/s for int) per GPU, per precision"
    )
    memory: Bytes = Field(gt=0)
    memory_bandwidth: BytesPerSecond = Field(gt=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(gt=0)
    interconnect_bandwidth: BytesPerSecond = Field(gt=0, description="per-GPU scale-up bandwidth")
    purchase_usd: float = Field(gt=0, description="purchase price of one GPU")
    server_usd_per_gpu: float = Field(ge=0, description="host server share per GPU")
    training: Training = Field(default_factory=Training)
    cloud_prices: list[CloudPrice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _idle_below_tdp(self) -> GPU:
        if self.idle_w >= self.tdp_w:
            raise ValueError(f"idle_w ({self.idle_w}) must be below tdp_w ({self.tdp_w})")
        return self

    def peak(self, precision: str) -> float:
        """Peak dense FLOP/s for a compute precision; int4 weights compute in fp16/bf16."""
        if precision in self.peak_flops:
            return self.peak_flops[precision]  # type: ignore[index]
        for fallback in ("bf16", "fp16"):
            if fallback in self.peak_flops:
                return self.peak_flops[fallback]  # type: ignore[index]
        raise KeyError(precision)


class BatchLatency(Sourced):
    """latency(b) = a + c*b seconds for a batch of b items, for classic (non-LLM) models."""

    gpu: str
    a_s: float = Field(ge=0)
    c_s_per_item: float = Field(ge=0)


class Model(Sourced):
    name: str
    kind: Literal["transformer", "classic"]
    params: float = Field(gt=0, description="total parameters")
    layers: int = Field(ge=1)
    hidden: int | None = Field(default=None, ge=1)
    heads: int | None = Field(default=None, ge=1)
    kv_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    ffn: int | None = Field(default=None, ge=1, description="intermediate size of a dense FFN")
    vocab: int | None = Field(default=None, ge=1)
    max_context: int | None = Field(default=None, ge=1)
    experts: int | None = Field(default=None, ge=1)
    experts_per_token: int | None = Field(default=None, ge=1)
    expert_ffn: int | None = Field(default=None, ge=1)
    flops_per_item: float | None = Field(default=None, gt=0, description="classic models")
    batch_latency: list[BatchLatency] = Field(default_factory=list)

    @model_validator(mode="after")
    def _transformer_has_shape(self) -> Model:
        if self.kind == "transformer":
            missing = [
                f
                for f in ("hidden", "heads", "kv_heads", "head_dim", "vocab", "max_context")
                if getattr(self, f) is None
            ]
            if self.ffn is None and self.expert_ffn is None:
                missing.append("ffn")
            if missing:
                raise ValueError(f"a transformer needs {', '.join(missing)}")
        moe = (self.experts, self.experts_per_token, self.expert_ffn)
        if any(v is not None for v in moe) and any(v is None for v in moe):
            raise ValueError("a mixture-of-experts model needs experts, experts_per_token and expert_ffn")
        return self

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    def weight_bytes(self, precision: str) -> float:
        return self.params * BYTES_PER_PARAM[precision]

    def kv_bytes_per_token(self, kv_precision: str = "bf16") -> float:
        """2 (K and V) x layers x kv_heads x head_dim x bytes per element."""
        if self.kind != "transformer":
            return 0.0
        assert self.kv_heads is not None and self.head_dim is not None
        element = BYTES_PER_PARAM[kv_precision] if kv_precision in ("bf16", "fp16", "fp8") else 2.0
        return 2.0 * self.layers * self.kv_heads * self.head_dim * element


class EgressPrice(Sourced):
    usd_per_gb: float = Field(ge=0, description="first-tier internet egress")
    free_gb_per_month: float = Field(default=0, ge=0)
    inter_region_usd_per_gb: float = Field(default=0, ge=0)


class StoragePrice(Sourced):
    usd_per_gb_month: float = Field(ge=0)


class PowerPrice(Sourced):
    usd_per_kwh: float = Field(gt=0)
    pue: float = Field(ge=1)
    grid_kgco2e_per_kwh: float = Field(ge=0)


Z_90 = 1.2815515655446004  # the standard normal's 90th percentile


class Lognormal(BaseModel):
    """A lognormal latency given by its median and 90th percentile: sigma = ln(p90 / median) / z_0.9
    (p90 = median: always the median)."""

    model_config = ConfigDict(extra="forbid")

    median: Seconds = Field(ge=0)
    p90: Seconds = Field(ge=0)

    @model_validator(mode="after")
    def _p90_not_below_median(self) -> Lognormal:
        if self.p90 < self.median or (self.median == 0 and self.p90 > 0):
            raise ValueError(f"p90 ({self.p90:g} s) must be at least the median ({self.median:g} s), and 0 only "
                             "with a median of 0")
        return self

    @property
    def sigma(self) -> float:
        """The standard deviation of its logarithm."""
        return math.log(self.p90 / self.median) / Z_90 if self.median > 0 else 0.0


class ManagedApi(Sourced):
    """A managed model API: what it serves, what it charges, how fast it answers, how much it
    takes (`sim.kernels.batching` says how a pool of kind api runs on these)."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1, description="the model id it serves (catalog models)")
    usd_per_1m_input_tokens: float = Field(ge=0)
    usd_per_1m_output_tokens: float = Field(ge=0)
    ttft: Lognormal = Field(description="time to first token at the provider (the path to it not included)")
    time_per_output_token: Lognormal = Field(description="after the first token")
    requests_per_minute: int | None = Field(default=None, ge=1, description="unset: none known")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="prompt + output; unset: none known")


class Prices(BaseModel):
    model_config = ConfigDict(extra="forbid")

    egress: dict[str, EgressPrice] = Field(default_factory=dict, description="per cloud provider")
    storage: dict[str, StoragePrice] = Field(default_factory=dict, description="per cloud provider")
    power: dict[str, PowerPrice] = Field(default_factory=dict, description="per region / profile")


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: dict[str, GPU] = Field(default_factory=dict)
    models: dict[str, Model] = Field(default_factory=dict)
    engines: dict[str, Engine] = Field(default_factory=dict)
    prices: Prices = Field(default_factory=Prices)
    apis: dict[str, ManagedApi] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _engine_gpus_known(self) -> Catalog:
        for name, engine in self.engines.items():
            unknown = sorted(set(engine.gpus) - set(self.gpus))
            if unknown:
                raise ValueError(f"engine {name!r} has factors for unknown GPU(s): {', '.join(unknown)}")
        return self


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@cache
def _shipped_raw() -> dict:
    raw: dict = {}
    for name in ("gpus", "models", "engines", "prices", "apis"):
        with open(CATALOG_DIR / f"{name}.yaml", encoding="utf-8") as fh:
            raw = _deep_merge(raw, yaml.safe_load(fh) or {})
    return raw


def catalog_raw(extra: dict | None = None) -> dict:
    """The shipped catalog as a plain document, with `extra` merged over it id by id."""
    raw = _shipped_raw()
    return _deep_merge(raw, extra) if extra else dict(raw)


@cache
def shipped_catalog() -> Catalog:
    """The catalog that ships with deploysim."""
    return Catalog.model_validate(_shipped_raw())


def load_catalog(extra: dict | None = None) -> Catalog:
    """The shipped catalog, with a user's catalog document merged over it."""
    if not extra:
        return shipped_catalog()
    return Catalog.model_validate(catalog_raw(extra))
