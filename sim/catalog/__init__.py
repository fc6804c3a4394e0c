"""Catalogs: the GPUs, models and prices that scenarios name by id.

A catalog is data, shipped with the package as YAML (`gpus.yaml`, `models.yaml`,
`engines.yaml`, `servers.yaml`, `prices.yaml` beside this file). Every entry says where its numbers come from (`source:`) and
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
import typing
from dataclasses import dataclass
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


Pricing = Literal["on_demand", "reserved_1y", "reserved_3y", "savings_plan", "spot", "capacity_block"]
PRICINGS: tuple[str, ...] = typing.get_args(Pricing)
COMMITTED: tuple[str, ...] = ("reserved_1y", "reserved_3y", "savings_plan", "capacity_block")
"""Pricing models paid for every hour of their term, used or not (TCO.md §2 modeling note; a
capacity block is paid up front, §4)."""


class CloudPrice(Sourced):
    """One instance type as a provider sells it, under one pricing model.

    Instances are sold whole (TCO.md conventions): `usd_per_gpu_hour` is the instance's price
    divided by its `gpus_per_instance`, and whoever rents one GPU of it pays for all of them.
    A spot entry says how often such an instance is reclaimed and with how much notice.
    """

    provider: str
    instance: str
    gpus_per_instance: int = Field(ge=1)
    usd_per_gpu_hour: float = Field(gt=0)
    pricing: Pricing = "on_demand"
    region: str = ""
    interruptions_per_hour: float | None = Field(
        default=None, ge=0, description="spot only: reclaims per instance-hour held")
    interruption_notice_s: float | None = Field(default=None, ge=0, description="spot only: warning before a reclaim")

    @model_validator(mode="after")
    def _spot_fields_only_on_spot(self) -> CloudPrice:
        spot_fields = (self.interruptions_per_hour, self.interruption_notice_s)
        if self.pricing != "spot" and any(v is not None for v in spot_fields):
            raise ValueError("interruptions_per_hour and interruption_notice_s describe spot prices only")
        return self

    @property
    def usd_per_instance_hour(self) -> float:
        return self.usd_per_gpu_hour * self.gpus_per_instance


class Commitments(Sourced):
    """A provider's discounts off on-demand for committing to capacity, as fractions."""

    reserved_1y: float | None = Field(default=None, ge=0, lt=1)
    reserved_3y: float | None = Field(default=None, ge=0, lt=1)
    savings_plan: float | None = Field(default=None, ge=0, lt=1)


class ServerClass(Sourced):
    """A server that holds GPUs: what the host costs beyond its GPUs, and what it draws.

    Host power is the server's draw beyond its GPU boards (CPUs, memory, NICs, NVSwitch, fans,
    PSU loss); `host_max_w` is its share of the rated power that a colocation contract
    reserves (rated kW = GPUs x TDP + host_max_w).
    """

    name: str
    gpus_per_server: int = Field(ge=1)
    host_usd_per_gpu: float = Field(ge=0, description="server price beyond its GPUs, per GPU slot")
    host_idle_w: float = Field(ge=0, description="host draw with its GPUs idle")
    host_load_w: float = Field(ge=0, description="host draw with its GPUs at full activity")
    host_max_w: float = Field(ge=0, description="host share of the server's rated power")

    @model_validator(mode="after")
    def _ordered(self) -> ServerClass:
        if not self.host_idle_w <= self.host_load_w <= self.host_max_w:
            raise ValueError("host power needs host_idle_w <= host_load_w <= host_max_w")
        return self


class Facility(Sourced):
    """Premises costs beyond hardware and energy."""

    colocation_usd_per_kw_month: float = Field(ge=0, description="space and power capacity, per rated kW")
    support_share_per_year: float = Field(ge=0, le=1, description="hardware support, a share of capex per year")


class GPU(Sourced):
    name: str
    vendor: str
    peak_flops: dict[Precision, float] = Field(
        description="dense FLOP/s (or OP/s for int) per GPU, per precision"
    )
    memory: Bytes = Field(gt=0)
    memory_bandwidth: BytesPerSecond = Field(gt=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(gt=0, description="powered, no engine on it")
    loaded_idle_w: float = Field(gt=0, description="an engine's weights and KV pool resident, no work")
    interconnect_bandwidth: BytesPerSecond = Field(gt=0, description="per-GPU scale-up bandwidth")
    purchase_usd: float = Field(gt=0, description="purchase price of one GPU")
    server: str = Field(description="the server class (catalog servers) it is bought in")
    training: Training = Field(default_factory=Training)
    cloud_prices: list[CloudPrice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _idle_below_tdp(self) -> GPU:
        if not self.idle_w <= self.loaded_idle_w < self.tdp_w:
            raise ValueError(f"need idle_w ({self.idle_w}) <= loaded_idle_w ({self.loaded_idle_w}) < tdp_w "
                             f"({self.tdp_w})")
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
    commitments: dict[str, Commitments] = Field(default_factory=dict, description="per cloud provider")
    facility: Facility | None = Field(default=None, description="premises colocation and support")


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: dict[str, GPU] = Field(default_factory=dict)
    models: dict[str, Model] = Field(default_factory=dict)
    engines: dict[str, Engine] = Field(default_factory=dict)
    servers: dict[str, ServerClass] = Field(default_factory=dict)
    prices: Prices = Field(default_factory=Prices)
    apis: dict[str, ManagedApi] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _engine_gpus_known(self) -> Catalog:
        for name, engine in self.engines.items():
            unknown = sorted(set(engine.gpus) - set(self.gpus))
            if unknown:
                raise ValueError(f"engine {name!r} has factors for unknown GPU(s): {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _servers_known(self) -> Catalog:
        if not self.servers:  # a catalog document without servers (a fragment) is not checked
            return self
        for name, gpu in self.gpus.items():
            if gpu.server not in self.servers:
                raise ValueError(f"GPU {name!r} names server class {gpu.server!r}, which the catalog lacks "
                                 f"(it has: {', '.join(sorted(self.servers))})")
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
    for name in ("gpus", "models", "engines", "servers", "prices", "apis"):
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


# ------------------------------------------------------------------------------------------
# Cloud offers: what renting a GPU costs under a pricing model, instances as sold
# ------------------------------------------------------------------------------------------


class MissingPrice(LookupError):
    """The catalog cannot price what a pool asks for; the message says what is missing."""


@dataclass(frozen=True)
class CloudOffer:
    """An instance type at a provider under one pricing model, as a pool rents it."""

    provider: str
    instance: str
    gpus_per_instance: int
    usd_per_gpu_hour: float
    pricing: str
    source: str  # where the price comes from, with the derivation of an estimate
    interruptions_per_hour: float | None = None  # spot: the catalog's reclaim rate
    interruption_notice_s: float | None = None

    def instances_for(self, gpus: int) -> int:
        """Whole instances holding `gpus` GPUs (instances are sold whole)."""
        return math.ceil(gpus / self.gpus_per_instance)

    def billed_gpus(self, gpus: int) -> int:
        """GPUs paid for when `gpus` are needed: every GPU of every instance rented."""
        return self.instances_for(gpus) * self.gpus_per_instance


def _newest(prices: list[CloudPrice]) -> CloudPrice:
    """The most recent price, ties going to the lowest."""
    return max(prices, key=lambda c: (c.as_of, -c.usd_per_gpu_hour))


def _offer(price: CloudPrice, source: str | None = None, usd: float | None = None,
           pricing: str | None = None) -> CloudOffer:
    return CloudOffer(price.provider, price.instance, price.gpus_per_instance,
                      price.usd_per_gpu_hour if usd is None else usd, pricing or price.pricing,
                      source or f"{price.provider} {price.instance}, {price.pricing}, as of {price.as_of}",
                      price.interruptions_per_hour, price.interruption_notice_s)


def cloud_offer(catalog: Catalog, gpu_id: str, provider: str | None, pricing: str, instance: str | None = None,
                gpus_needed: int = 1, one_instance: bool = False) -> CloudOffer:
    """The instance a pool of `gpu_id` at `provider` rents under `pricing` (`instance` when it
    names one), and its price per GPU-hour.

    Per instance type, the newest catalog price for the pricing model wins (ties: the lowest).
    A commitment (reserved_1y, reserved_3y, savings_plan) the catalog does not list for the
    instance is derived [E] from its on-demand price and the provider's commitment discount
    (`prices.commitments`). Among instance types, the one whose whole instances cost least for
    `gpus_needed` GPUs is taken (a one-GPU replica rents a one-GPU instance when there is one);
    with `one_instance` (a serving replica: tensor parallelism needs one scale-up domain) only
    instances holding all of them are. Raises MissingPrice naming what is missing; nothing falls
    back to another pricing model."""
    gpu = catalog.gpus[gpu_id]
    mine = [c for c in gpu.cloud_prices if provider in (None, c.provider) and instance in (None, c.instance)]
    where = f"{gpu_id} at provider {provider!r}" + (f" on instance {instance!r}" if instance else "")
    if not mine:
        sold = sorted({f"{c.provider}/{c.instance}" for c in gpu.cloud_prices}) or ["none"]
        raise MissingPrice(f"the catalog sells no {where} (it has: {', '.join(sold)})")
    offers = []
    for key in sorted({(c.provider, c.instance) for c in mine}):
        prices = [c for c in mine if (c.provider, c.instance) == key]
        direct = [c for c in prices if c.pricing == pricing]
        if direct:
            offers.append(_offer(_newest(direct)))
            continue
        on_demand = [c for c in prices if c.pricing == "on_demand"]
        commitment = catalog.prices.commitments.get(key[0])
        discount = getattr(commitment, pricing, None) if pricing in COMMITTED and commitment is not None else None
        if on_demand and discount is not None:
            base = _newest(on_demand)
            usd = base.usd_per_gpu_hour * (1 - discount)
            offers.append(_offer(base, f"[E] {key[0]} {key[1]} on-demand ${base.usd_per_gpu_hour:.4g}/GPU-h (as of "
                                       f"{base.as_of}) x (1 - {discount:.0%} {pricing} discount, "
                                       f"prices.commitments.{key[0]})", usd, pricing))
    if not offers:
        providers = sorted({c.provider for c in mine})
        how = (f"none listed, and no {pricing} discount in prices.commitments for {', '.join(providers)} to derive "
               "one from on-demand" if pricing in COMMITTED else "none listed")
        have = sorted({f"{c.provider}/{c.instance}/{c.pricing}" for c in mine})
        raise MissingPrice(f"the catalog has no {pricing} price for {where}: {how} (it has: {', '.join(have)})")
    if one_instance:
        offers = [o for o in offers if o.gpus_per_instance >= gpus_needed]
        if not offers:
            raise MissingPrice(f"no {pricing} instance of {where} holds a {gpus_needed}-GPU replica")
    return min(offers, key=lambda o: (o.billed_gpus(gpus_needed) * o.usd_per_gpu_hour, o.gpus_per_instance,
                                      o.instance))
