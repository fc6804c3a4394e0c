"""The scenario language: what a user writes to describe their world.

A scenario names the **sites** (premises and cloud regions, each in a trust zone, each with GPU
pools), the **links** between them, the **model** and how it is served, the **workload**, the
**placement** of every stage (inference, model registry, training, monitoring, training data),
the **routing** of each traffic class to serving pools (`sim.spec.routing` resolves it), the model
**lifecycle** (drift, monitoring, retraining, rollout, vendor updates), the
**privacy** weights of each data class, the **SLO**, and the run settings (`horizon`, `warmup`,
`seed`, `replications`).

The four seed scenarios differ only in `placement` and resources: no code anywhere branches on
a scenario's name. Quantities accept human units (`40ms`, `1Gbps`, `16GB`, `6h`) and are held
in SI (seconds, bytes, bytes/s, USD) from here on; see `sim.spec.units`.

Every model forbids unknown keys, so a typo is an error with a "did you mean" suggestion
rather than a silently ignored line (`sim.spec.base.Spec`). Checks that need more than one
field, or the catalog, live in `sim.spec.checks`.

The interchangeable parts are families, each with its members' models and behaviour in one
module: arrival processes and token lengths (`sim.workload`), service-time distributions,
routers (`sim.routers`) and drift detectors (`sim.detectors`). The unions and name lists
here are generated from their registries and rebuilt when a member is registered
(`sim.spec.families`); nothing here lists a family's members.
"""

from __future__ import annotations

import re
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from sim.catalog import CloudOffer, Pricing, cloud_offer
from sim.detectors import DETECTORS
from sim.routers import ROUTERS
from sim.spec.base import Spec
from sim.spec.units import Bytes, BytesPerSecond, Seconds, parse_duration
from sim.workload import limits
from sim.workload.arrivals import ARRIVALS, ArrivalProcess
from sim.workload.lengths import LENGTHS, LengthDistribution
from sim.workload.prefixes import PrefixGroups
from sim.workload.requests import DEFAULT_CLASS
from sim.workload.service_times import ServiceTime

if TYPE_CHECKING:
    from sim.catalog import Catalog

NONE_SITE = "none"

Zone = Literal["private", "third_party"]
Precision = Literal["bf16", "fp16", "fp8", "int8", "int4"]
PoolRole = Literal["serving", "training"]
PoolKind = Literal["gpus", "api"]


# The families a scenario chooses from, as pydantic sees them: generated from each family's
# registry (`sim.spec.families`); type checkers see the members' base class.
if TYPE_CHECKING:
    Arrivals = ArrivalProcess
    TokenLengths = LengthDistribution
    DetectorName = str
    RouterName = str
else:
    Arrivals = ARRIVALS.choice()
    TokenLengths = LENGTHS.choice()
    DetectorName = DETECTORS.choice()
    RouterName = ROUTERS.choice()


# --------------------------------------------------------------------------------------------
# Sites, pools and links
# --------------------------------------------------------------------------------------------


# More GPUs than any one site holds (the largest training clusters hold about 100k GPUs); past
# it the world's per-replica setup takes minutes before the first request.
MAX_GPUS_PER_POOL = 100_000
# The most GPUs one replica spans (tensor parallelism): beyond one rack's scale-up domain.
MAX_TENSOR_PARALLEL = 64
# Replications of one configuration: a 95% interval is a few percent wide long before this.
MAX_REPLICATIONS = 1000


AutoscaleMetric = Literal["queue_per_replica", "utilisation", "ttft"]
Billing = Literal["per_second", "per_hour"]


class Autoscale(Spec):
    """A serving pool's autoscaler: replicas follow the load between `min_replicas` and
    `max_replicas`.

    The contract (implemented by `sim.world.autoscaler`):

    - The pool starts with `count // model.tensor_parallel` replicas, clipped to
      [min_replicas, max_replicas].
    - Every `interval` (first at t = interval) the autoscaler reads `metric` over the interval
      just past and sets a desired number of replicas, clipped to [min_replicas, max_replicas]:
      `queue_per_replica`: X = the requests in the pool now (waiting or running) plus those
      whose route reached the pool during the interval while it had no active replica (a pool
      scaled to zero takes no requests, so this is the demand it missed); desired =
      ceil(X / target). `utilisation`: the busy fraction of the active replicas over the
      interval; desired = ceil(active x utilisation / target). `ttft`: the mean time to first
      token of the first tokens of the interval; one replica more above the target, one fewer
      below half of it. With no active replica, any demand wants at least one.
    - Scale up: when desired exceeds the active and provisioning replicas, the difference is
      requested at once; each becomes active `provisioning_delay` later, and is held (and
      billed) from the request on. Nothing is requested during a capacity shortage.
    - Scale down: to the highest desired count of the evaluations within the last `cooldown`
      (a stabilisation window), when that is below them and `cooldown` has passed since the
      last scaling action (up or down): the surplus replicas stop taking requests, finish the
      ones they run, and are released when idle. So the pool scales down at most once per cooldown;
      min_replicas 0 lets it scale to zero (and cost nothing while empty).

    A premises (private-zone) pool scales only within the GPUs it owns (`count`); a cloud pool
    must be elastic, up to its `max_count`.
    """

    min_replicas: int = Field(default=0, ge=0, le=MAX_GPUS_PER_POOL,
                              description="fewest replicas kept; 0 lets the pool scale to zero")
    max_replicas: int = Field(ge=1, le=MAX_GPUS_PER_POOL, description="most replicas the pool may run")
    metric: AutoscaleMetric = Field(
        default="queue_per_replica",
        description="what is held at target: requests in the pool (waiting or running) per replica, the busy "
                    "fraction of the active replicas, or the mean time to first token")
    target: float = Field(
        gt=0, description="queue_per_replica: requests in the pool per replica; utilisation: a busy "
                          "fraction in (0, 1]; ttft: a duration, e.g. '500ms'")
    interval: Seconds = Field(default=30.0, gt=0, description="how often the metric is read and acted on")
    provisioning_delay: Seconds | None = Field(
        default=None, ge=0, description="from a scale-up request to an active replica; unset: the pool's "
                                        "provisioning_delay")
    cooldown: Seconds = Field(default=300.0, ge=0,
                              description="least time from the last scaling action to a scale-down")

    @field_validator("target", mode="before")
    @classmethod
    def _target_in_metric_units(cls, value: Any, info: ValidationInfo) -> Any:
        """A ttft target is a duration (units allowed); the other metrics' targets are plain numbers."""
        metric = info.data.get("metric")
        if metric == "ttft":
            return parse_duration(value)
        if isinstance(value, str):
            raise ValueError(f"the target of metric {metric!r} is a plain number (a duration only for ttft)")
        return value

    @field_validator("target")
    @classmethod
    def _fraction_for_utilisation(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("metric") == "utilisation" and value > 1:
            raise ValueError("a utilisation target is a busy fraction in (0, 1]")
        return value


class RateLimit(Spec):
    """A managed API's rate limit: at most this many requests, and prompt + output tokens, sent
    to it within any 60 s (`sim.kernels.batching`: counted at the send; a request over it is
    skipped by overflow when another pool can take it, else answered HTTP 429)."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="unset: no request limit")
    tokens_per_minute: int | None = Field(default=None, ge=1,
                                          description="prompt + output tokens; unset: no token limit")


class Pool(Spec):
    """A group of identical GPUs at one site (kind `gpus`), or a managed model API (kind `api`:
    a provider's endpoint, priced per token, with a latency profile and a rate limit from the
    catalog's `apis`; it holds no GPUs of ours, only serves, and its site is a third party)."""

    name: str | None = Field(default=None, description="defaults to '<gpu>' or '<gpu>-<index>' (an API: '<api>')")
    gpu: str = Field(default="", description="GPU id from the catalog, e.g. 'h100-sxm' (kind gpus: required)")
    count: int = Field(default=0, ge=0, le=MAX_GPUS_PER_POOL,
                       description="GPUs held from the start (kind gpus: required)")
    roles: list[PoolRole] = Field(
        default_factory=lambda: list[PoolRole](["serving", "training"]),
        description="what the pool may be used for; a shared pool has both",
    )
    elastic: bool = Field(default=False, description="cloud pools may grow on demand")
    max_count: int | None = Field(default=None, ge=0, le=MAX_GPUS_PER_POOL, description="upper bound of an elastic pool")
    provisioning_delay: Seconds = Field(default=0.0, ge=0, description="time to add a GPU")
    pricing: Pricing = Field(
        default="on_demand",
        description="cloud pools: how the instances are paid for; reserved_1y, reserved_3y, savings_plan and "
                    "capacity_block are commitments paid for the pool's whole capacity every hour "
                    "(sim.metrics.cost)")
    price_usd_per_gpu_hour: float | None = Field(
        default=None, gt=0, description="overrides the catalog's cloud price"
    )
    instance: str | None = Field(
        default=None, min_length=1,
        description="cloud pools: the instance type rented (catalog cloud_prices, e.g. 'p5.48xlarge'); billed "
                    "whole; unset: the catalog's cheapest instance per replica for the provider and pricing")
    interruptions_per_hour: float | None = Field(
        default=None, ge=0, description="spot pools: reclaims per instance-hour held; unset: the catalog's")
    interruption_notice: Seconds | None = Field(
        default=None, ge=0, description="spot pools: warning before a reclaim; unset: the catalog's")
    billing: Billing = Field(
        default="per_second",
        description="how the provider bills a held GPU: by the second, or per started hour of each hold; "
                    "premises pools are owned, not billed by time, so only per_second (the default) there")
    autoscale: Autoscale | None = Field(
        default=None, description="serving pools: scale the replicas with the load (`Autoscale`); unset: "
                                  "the pool serves with `count` GPUs throughout")
    tensor_parallel: int | None = Field(
        default=None, ge=1, le=MAX_TENSOR_PARALLEL,
        description="serving pools: GPUs per replica here; unset: model.tensor_parallel")
    engine: str | None = Field(
        default=None, min_length=1, description="serving pools: the serving engine's profile here (catalog "
                                                "engines); unset: model.engine")

    kind: PoolKind = Field(
        default="gpus", description="'gpus': GPUs of ours running replicas; 'api': a managed model API")
    api: str | None = Field(
        default=None, min_length=1, description="kind api: the API from the catalog's apis, e.g. "
                                                "'bedrock-llama-3.1-8b' (prices, latency profile, rate limit)")
    rate_limit: RateLimit | None = Field(
        default=None, description="kind api: the account's rate limit, overriding the catalog's (each field "
                                  "on its own)")

    @model_validator(mode="after")
    def _an_api_only_serves(self) -> Pool:
        """An API pool's roles default to ['serving'] (a GPU pool's to both)."""
        if self.kind == "api" and "roles" not in self.model_fields_set:
            object.__setattr__(self, "roles", ["serving"])
        return self

    @property
    def is_api(self) -> bool:
        """A managed model API rather than GPUs of ours."""
        return self.kind == "api"

    def tp(self, model: ModelSpec) -> int:
        """GPUs per replica of this pool: its own tensor_parallel, else the model's."""
        return self.tensor_parallel if self.tensor_parallel is not None else model.tensor_parallel

    def engine_of(self, model: ModelSpec) -> str:
        """The serving engine of this pool: its own, else the model's."""
        return self.engine if self.engine is not None else model.engine

    @property
    def capacity(self) -> int:
        """The most GPUs the pool can ever hold."""
        return self.max_count if self.elastic and self.max_count is not None else self.count


class Power(Spec):
    """Premises power: the price paid per kWh at the meter and the facility overhead."""

    profile: str | None = Field(default=None, description="a power profile from the price catalog")
    price_usd_per_kwh: float | None = Field(default=None, gt=0)
    pue: float | None = Field(default=None, ge=1.0, le=3.0)
    grid_kgco2e_per_kwh: float | None = Field(default=None, ge=0)


class Capex(Spec):
    """How owned hardware is paid for: amortised linearly over its service life."""

    amortisation: Seconds = Field(default=3 * 365 * 86400.0, gt=0, description="e.g. '3y'")
    gpu_usd: float | None = Field(default=None, ge=0, description="overrides the catalog price")
    server_usd_per_gpu: float | None = Field(default=None, ge=0)
    ops_usd_per_year: float = Field(default=0.0, ge=0, description="staff and facility, if counted")
    server: str | None = Field(default=None, min_length=1,
                               description="server class (catalog servers); unset: the GPU's own")
    support_share_per_year: float | None = Field(
        default=None, ge=0, le=1, description="hardware support a year, as a share of capex; unset: the catalog's")
    colocation_usd_per_kw_month: float | None = Field(
        default=None, ge=0, description="space and power capacity per rated kW; unset: the catalog's; 0: not paid")


class LocalNetwork(Spec):
    """The network inside a site, between its clients and its GPUs.

    Defaults: FACTS §5 puts a premises LAN below 1 ms RTT [E]; 10 Gbps is a common
    data-centre access link [E].
    """

    rtt: Seconds = Field(default=0.0005, ge=0)
    bandwidth: BytesPerSecond = Field(default=1.25e9, gt=0)


class Site(Spec):
    zone: Zone = Field(description="'private' (the customer's premises) or 'third_party' (cloud)")
    provider: str | None = Field(default=None, description="cloud provider for prices: aws, gcp, azure")
    region: str | None = None
    pools: list[Pool] = Field(default_factory=list)
    power: Power = Field(default_factory=Power)
    capex: Capex = Field(default_factory=Capex)
    storage_usd_per_gb_month: float | None = Field(default=None, ge=0)
    lan: LocalNetwork = Field(default_factory=LocalNetwork)

    @model_validator(mode="after")
    def _name_pools(self) -> Site:
        seen: dict[str, int] = {}
        stems = [pool.api or "api" if pool.is_api else pool.gpu for pool in self.pools]
        for stem in stems:
            seen[stem] = seen.get(stem, 0) + 1
        index: dict[str, int] = {}
        for pool, stem in zip(self.pools, stems, strict=True):
            if pool.name is None:
                i = index.get(stem, 0)
                index[stem] = i + 1
                name = stem if seen[stem] == 1 else f"{stem}-{i}"
                object.__setattr__(pool, "name", name)
        names = [p.name or "" for p in self.pools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique within a site: {', '.join(map(str, duplicates))}")
        return self

    @property
    def gpu_count(self) -> int:
        return sum(p.capacity for p in self.pools)


class Link(Spec):
    """A network path between two sites, symmetric except for its egress prices."""

    ends: tuple[str, str] = Field(description="the two site names")
    rtt: Seconds = Field(ge=0, description="round-trip time, e.g. '20ms'")
    bandwidth: BytesPerSecond = Field(gt=0, description="e.g. '1Gbps' or '125MB/s'")
    jitter: Seconds = Field(default=0.0, ge=0, description="std. dev. added to each one-way delay")
    egress_usd_per_gb: dict[str, float] = Field(
        default_factory=dict,
        description="price per GB by direction, keyed 'from->to'; unset directions use the catalog",
    )

    @model_validator(mode="after")
    def _directions(self) -> Link:
        if self.ends[0] == self.ends[1]:
            raise ValueError(f"a link joins two different sites, got {self.ends[0]!r} twice")
        allowed = {f"{self.ends[0]}->{self.ends[1]}", f"{self.ends[1]}->{self.ends[0]}"}
        for key, price in self.egress_usd_per_gb.items():
            if key not in allowed:
                raise ValueError(
                    f"egress direction {key!r} is not one of this link's: {', '.join(sorted(allowed))}"
                )
            if price < 0:
                raise ValueError(f"egress price for {key!r} is negative ({price})")
        return self


# --------------------------------------------------------------------------------------------
# Model and serving engine
# --------------------------------------------------------------------------------------------


class Serving(Spec):
    """Serving-engine knobs, named as vLLM names them."""

    max_num_seqs: int = Field(default=256, ge=1, description="most sequences in one batch")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="token budget per iteration")
    chunked_prefill: bool = True
    prefix_caching: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="share of GPU memory for weights + KV cache")
    max_model_len: int = Field(default=8192, ge=16, description="longest prompt + output a replica accepts")
    kv_cache_precision: Literal["bf16", "fp16", "fp8"] = "bf16"
    block_size: int = Field(default=16, ge=1, description="tokens per KV-cache block")
    router: RouterName = Field(default="least_outstanding", description="a router of `sim.routers`")


ROUTERS.bind(Serving, "router")


class EfficiencyOverride(Spec):
    """Replace some of the engine profile's factors (and the GPUs' training MFU) for this
    scenario; names and meanings as in the catalog's `engines` (see `sim.kernels.roofline`)."""

    bandwidth: float | None = Field(default=None, gt=0, le=1, description="weight streaming, of memory bandwidth")
    kv_bandwidth: float | None = Field(default=None, gt=0, le=1, description="KV reads in decode attention")
    gemm: float | None = Field(default=None, gt=0, le=1, description="dense GEMM FLOP fraction")
    gemm_half_m: float | None = Field(default=None, ge=1, le=4096, description="GEMM rows at half efficiency")
    attention_prefill: float | None = Field(default=None, gt=0, le=1)
    moe_gemm: float | None = Field(default=None, gt=0, le=1)
    overhead_s: Seconds | None = Field(default=None, ge=0, le=1, description="host time per iteration")
    overhead_per_seq_s: Seconds | None = Field(default=None, ge=0, le=0.01)
    overhead_per_prefill_token_s: Seconds | None = Field(default=None, ge=0, le=0.001)
    allreduce_latency_s: Seconds | None = Field(default=None, ge=0, le=0.01)
    allreduce_bandwidth: float | None = Field(default=None, gt=0, le=1)
    frontend_s: Seconds | None = Field(default=None, ge=0, le=1, description="API-server time to each client")
    frontend_per_step: float | None = Field(default=None, ge=0, le=4)
    training_mfu: float | None = Field(default=None, gt=0, le=1, description="full fine-tuning MFU")
    lora_training_mfu: float | None = Field(default=None, gt=0, le=1, description="LoRA fine-tuning MFU")

    def profile_overrides(self) -> dict[str, float]:
        """The engine-profile factors set here (training MFU left out)."""
        return {k: v for k, v in self.model_dump().items()
                if v is not None and k not in ("training_mfu", "lora_training_mfu")}


class DynamicBatching(Spec):
    """Classic models (kind 'classic'): latency(b) = a + c x b, batches of up to max_batch_size."""

    max_batch_size: int = Field(default=8, ge=1)
    max_queue_delay: Seconds = Field(default=0.005, ge=0, description="longest wait for a batch to fill")
    latency_a: Seconds | None = Field(default=None, ge=0, description="overrides the catalog's a")
    latency_c_per_item: Seconds | None = Field(default=None, ge=0, description="overrides the catalog's c")


class ModelSpec(Spec):
    id: str = Field(description="model id from the catalog, e.g. 'llama-3.1-8b'")
    engine: str = Field(default="vllm", description="serving-engine profile from the catalog's engines")
    precision: Precision = "bf16"
    tensor_parallel: int = Field(default=1, ge=1, le=MAX_TENSOR_PARALLEL)
    serving: Serving = Field(default_factory=Serving)
    efficiency: EfficiencyOverride = Field(default_factory=EfficiencyOverride)
    batching: DynamicBatching = Field(default_factory=DynamicBatching)
    service_time: ServiceTime | None = Field(
        default=None, description="replace the engine by a service-time distribution (batch size 1)"
    )


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------


class SLO(Spec):
    """Latency targets; a missing target is not checked."""

    ttft_p99: Seconds | None = Field(default=None, gt=0)
    ttft_p90: Seconds | None = Field(default=None, gt=0)
    tpot_p99: Seconds | None = Field(default=None, gt=0)
    e2e_p99: Seconds | None = Field(default=None, gt=0)
    e2e_p90: Seconds | None = Field(default=None, gt=0)




# A class name is a label in files, tables and stream names ("arrivals:<name>"): kept plain.
CLASS_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
MAX_CLASS_NAME = 64
# Priorities are held as int32 by the serving kernel.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
# The zones a residency may name, besides sites.
ZONES: tuple[str, ...] = typing.get_args(Zone)


class TrafficClass(Spec):
    """One kind of traffic in the workload: who sends it, how long it is, how it must be served.

    A class takes its requests in one of two ways (exactly one):

    - `share`: that fraction of the main stream (`workload.arrivals`); each main-stream request
      belongs to one share class, drawn by the shares (the shares of all share classes sum to 1);
    - `arrivals`: its own open-loop arrival process, whose requests are added to the main
      stream and merged with it by send time.

    Every other field is optional and defaults to the workload's (or, for `slo`, the
    scenario's): the class's token lengths, prefix groups, the data classes of its payloads and
    its latency targets. `priority` orders admission: the serving engine admits waiting
    requests of a higher priority first (ties: first come, first served); 0 for all classes
    means one queue in arrival order. `residency` says where its requests may be served: zones
    (`private`, `third_party`) or site names; unset, anywhere.

    How requests are generated from classes: `sim.workload.requests`.
    """

    name: str = Field(min_length=1, max_length=MAX_CLASS_NAME,
                      description="a label: letters, digits, '_' and '-', unique within the workload")
    share: float | None = Field(default=None, gt=0, le=1,
                                description="fraction (0, 1] of workload.arrivals' requests in this class")
    arrivals: Arrivals | None = Field(
        default=None, discriminator="process", validate_default=True,
        description="the class's own open-loop arrival process, added to workload.arrivals' requests")
    prompt_tokens: TokenLengths | None = Field(default=None, discriminator="dist",
                                               description="prompt lengths (default: the workload's)")
    output_tokens: TokenLengths | None = Field(default=None, discriminator="dist",
                                               description="output lengths (default: the workload's)")
    prefixes: PrefixGroups | None = Field(
        default=None, description="the class's own shared prompt prefixes (default: the workload's)")
    data_class: str | None = Field(default=None, min_length=1,
                                   description="data class of its request payloads (default: the workload's)")
    response_data_class: str | None = Field(
        default=None, min_length=1, description="data class of its responses (default: the workload's)")
    slo: SLO | None = Field(default=None, description="latency targets of this class (default: the scenario's slo)")
    priority: int = Field(default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX,
                          description="admission order in the serving engine: higher is admitted first")
    residency: list[str] | None = Field(
        default=None, min_length=1,
        description="where its requests may be served: zones (private, third_party) or site names; "
                    "unset: anywhere")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not CLASS_NAME_PATTERN.fullmatch(value):
            raise ValueError(f"a class name is letters, digits, '_' and '-' (got {value!r})")
        return value

    @field_validator("arrivals")
    @classmethod
    def _share_or_open_loop(cls, value: ArrivalProcess | None, info: ValidationInfo) -> ArrivalProcess | None:
        """Exactly one of share and arrivals (checked here, with `validate_default`, so that the
        error names a field), and own arrivals that are an open loop."""
        if "share" not in info.data:
            return value  # share itself is invalid, and reported
        share = info.data["share"]
        either = "allowed: share (a fraction of workload.arrivals' requests) or arrivals (its own process)"
        if share is not None and value is not None:
            raise ValueError(f"the class sets both share ({share:g}) and arrivals; give one of them; {either}")
        if share is None and value is None:
            raise ValueError(f"the class sets neither share nor arrivals; {either}")
        if value is not None and value.closed_loop() is not None:
            open_loop = [name for name, member in zip(ARRIVALS, ARRIVALS.members(), strict=True)
                         if member.closed_loop is ArrivalProcess.closed_loop]
            raise ValueError(
                f"a class's own arrivals are merged with the main stream by send time, so they must be "
                f"an open-loop process, and {value.process!r} is a closed loop; allowed: "
                f"{', '.join(open_loop)}, or share: a fraction of workload.arrivals' requests")
        return value

    def allowed_sites(self, scenario: Scenario) -> set[str]:
        """The sites where this class's requests may be served: every site without a
        residency; else the sites of the zones it names, and the sites it names."""
        if self.residency is None:
            return set(scenario.sites)
        allowed = {name for name in self.residency if name in scenario.sites}
        allowed |= {name for name, site in scenario.sites.items() if site.zone in self.residency}
        return allowed


class Workload(Spec):
    """Who sends what, and when: the arrival process (`sim.workload.arrivals`) and the token
    lengths (`sim.workload.lengths`) are families; each member is its own model. `classes`
    splits the traffic into kinds with their own lengths, priorities and rules
    (`TrafficClass`); without classes, every request is of one class, `default`."""

    origin: str = Field(description="site where requests come from (the clients)")
    arrivals: Arrivals
    prompt_tokens: TokenLengths
    output_tokens: TokenLengths
    prefixes: PrefixGroups | None = None
    bytes_per_token: float = Field(default=4.0, gt=0, description="payload bytes per token on the wire")
    request_overhead: Bytes = Field(default=1024.0, ge=0, description="headers etc. per request")
    data_class: str = Field(default="prompt", description="data class of request payloads")
    response_data_class: str = Field(default="response")
    classes: list[TrafficClass] = Field(
        default_factory=list,
        description="traffic classes: each a share of `arrivals` or its own arrival process; "
                    "empty: one class, 'default'")

    def class_names(self) -> list[str]:
        """The class names, in declaration order: `Requests.traffic_class` indexes this list."""
        return [c.name for c in self.classes] or [DEFAULT_CLASS]

    def class_specs(self) -> list[TrafficClass]:
        """The classes in `class_names()` order; without classes, the implicit `default` class
        (all of the main stream, every field the workload's)."""
        return list(self.classes) or [TrafficClass(name=DEFAULT_CLASS, share=1.0)]

    def expected_requests(self, horizon_s: float) -> float:
        """About how many requests a run generates, own-arrival classes included
        (`sim.workload.limits.expected_requests`)."""
        return limits.expected_requests(self, horizon_s)

    def mean_rate_per_s(self, horizon_s: float) -> float | None:
        """The long-run mean request rate, own-arrival classes included; None for a closed loop
        (`sim.workload.limits.mean_rate_per_s`)."""
        return limits.mean_rate_per_s(self, horizon_s)


ARRIVALS.bind(Workload, "arrivals")
LENGTHS.bind(Workload, "prompt_tokens", "output_tokens")
ARRIVALS.bind(TrafficClass, "arrivals")
LENGTHS.bind(TrafficClass, "prompt_tokens", "output_tokens")


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------


class Placement(Spec):
    """Where each stage lives: a site name, or 'none' for stages the scenario does not run."""

    inference: str = Field(description="site whose GPUs serve requests")
    model_registry: str = Field(description="site that hosts the model weights and updates")
    training: str = Field(default=NONE_SITE, description="site that fine-tunes, or 'none'")
    monitoring: str = Field(default=NONE_SITE, description="site running drift detection, or 'none'")
    training_data: str = Field(default=NONE_SITE, description="site where labelled data is kept")
    monitoring_sees: Literal["requests", "aggregates"] = Field(
        default="aggregates",
        description="'requests': every prompt/response goes to monitoring; 'aggregates': telemetry",
    )
    training_sample: float = Field(
        default=1.0, gt=0, le=1, description="share of collected labelled data uploaded for training"
    )
    fallback: str = Field(
        default=NONE_SITE,
        description="site whose serving pool answers requests while the path to inference is cut "
                    "(the clients' own site, e.g. a small local model), or 'none'",
    )

    @field_validator("inference")
    @classmethod
    def _inference_somewhere(cls, value: str) -> str:
        if value == NONE_SITE:
            raise ValueError("inference must run at a site; 'none' is only for optional stages")
        return value

    def sites_named(self) -> dict[str, str]:
        return {
            "inference": self.inference,
            "model_registry": self.model_registry,
            "training": self.training,
            "monitoring": self.monitoring,
            "training_data": self.training_data,
        }


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


RoutingPolicy = Literal["overflow", "weighted"]


class Overflow(Spec):
    """When a request skips a pool for the next one in order: either test, once exceeded."""

    queue_per_replica: float | None = Field(
        default=None, ge=0, description="queued requests per active replica above which the pool is skipped; "
                                        "unset: never by this test")
    wait: Seconds | None = Field(
        default=None, ge=0, description="the pool is skipped while its oldest queued request has waited longer; "
                                        "unset: never by this test")


class RoutingRule(Spec):
    """Which serving pools a traffic class's requests go to, decided when the client sends.

    A class takes the first rule that names it in `classes`, else the first rule without
    `classes` (the catch-all). Its pools are those of the rule at sites its residency allows
    (`TrafficClass.allowed_sites`), in the rule's order. A pool is *available* while the path
    from the clients to its site is up and it has an active replica (a pool scaled to zero is
    not; its autoscaler sees the requests that sought it).

    - `overflow`: a request goes to the first available pool, unless that pool's queued
      requests per active replica exceed `overflow.queue_per_replica` or its oldest queued
      request has waited longer than `overflow.wait`; then the next available pool is tested
      the same way, and the last available pool takes what every earlier one passed on.
      Without thresholds the later pools take requests only on failover.
    - `weighted`: a request goes to a pool drawn by `weights` among the available pools; when
      no pool of positive weight is available, to the first pool whose path is up.

    Without `routing:` one implicit rule holds for every class: the serving pools at
    `placement.inference`, then those at `placement.fallback`, in file order, policy
    overflow without thresholds (`sim.spec.routing.class_routes`).
    """

    classes: list[str] | None = Field(
        default=None, min_length=1,
        description="the traffic classes this rule is for; unset: every class that no rule names")
    pools: list[str] = Field(min_length=1, description="serving pools as 'site/pool', in order of preference")
    policy: RoutingPolicy = Field(
        default="overflow", description="overflow: in order, on to the next pool past a threshold or on "
                                        "failover; weighted: split by weights")
    overflow: Overflow | None = Field(default=None, description="overflow only: the thresholds; unset: failover only")
    weights: list[Annotated[float, Field(ge=0)]] | None = Field(
        default=None, description="weighted only: one weight >= 0 per pool, summing to more than 0")


# --------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------


class AbruptDrift(Spec):
    kind: Literal["abrupt"]
    at: Seconds = Field(ge=0)
    error_rate: float = Field(ge=0, le=1, description="error rate of a stale model after the drift")
    feature_shift: float = Field(default=0.0, description="shift of the monitored feature, in std. devs")


class GradualDrift(Spec):
    kind: Literal["gradual"]
    at: Seconds = Field(ge=0)
    duration: Seconds = Field(gt=0, description="the error rate ramps linearly over this time")
    error_rate: float = Field(ge=0, le=1)
    feature_shift: float = 0.0


class RecurringDrift(Spec):
    kind: Literal["recurring"]
    at: Seconds = Field(ge=0, description="start of the first occurrence")
    period: Seconds = Field(gt=0)
    duration: Seconds = Field(gt=0, description="how long each occurrence lasts")
    error_rate: float = Field(ge=0, le=1)
    feature_shift: float = 0.0

    @model_validator(mode="after")
    def _fits_period(self) -> RecurringDrift:
        if self.duration > self.period:
            raise ValueError(f"duration ({self.duration}s) is longer than period ({self.period}s)")
        return self


DriftEvent = Annotated[AbruptDrift | GradualDrift | RecurringDrift, Field(discriminator="kind")]

class Monitor(Spec):
    detector: DetectorName = "adwin"
    params: dict[str, float | int] = Field(
        default_factory=dict, description="detector parameters, with River's names (delta, threshold, ...)"
    )
    signal: Literal["errors", "feature"] = Field(
        default="errors",
        description="'errors': labelled outcomes (0/1), as labels arrive; 'feature': a label-free input "
                    "feature per request, N(0, 1) plus the active drift events' feature_shift (std. devs), "
                    "seen as requests arrive: no labels needed, detection without the label delay"
    )
    interval: Seconds = Field(default=300.0, gt=0, description="how often the monitor runs")
    label_fraction: float = Field(default=0.1, gt=0, le=1, description="share of requests that get a label")
    label_delay: Seconds = Field(default=3600.0, ge=0, description="time until a label arrives")
    record_bytes: Bytes | None = Field(
        default=None, gt=0, description="size of one labelled record; unset: retraining.tokens_per_sample x "
                                        "workload.bytes_per_token (the record is the sample trained on)")


DETECTORS.bind(Monitor, "detector")


class LearningCurve(Spec):
    """What a retraining buys: the error a retrained version reaches on a drift, from how many
    fresh labelled samples it learnt from (`/work/shared/facts/ENGINES.md` §6.1, the rectified
    power law suggested there, an estimate [E]):

        err(n) = err_floor + (err_0 - err_floor) x (1 + n / n0)^(-beta)        (full fine-tuning)

    err_0 is the drift's error rate (the model without new data), err_floor the pre-drift
    `base_error_rate`: a fine-tune on a few thousand samples adapts the model to the shifted
    inputs, and is not expected to beat what its original training reached on its home
    distribution. n counts only *fresh* samples, served while the drift was in effect (older
    ones teach the old distribution), of those uploaded for training. A LoRA fine-tune wins
    `lora_share` of full fine-tuning's gain on the same n: err = err_0 - lora_share x (err_0 -
    err(n)). Fine-tuning an already adapted version adds its new fresh samples to the ones the
    serving version learnt from.
    """

    beta: float = Field(
        default=0.3, gt=0,
        description="power-law exponent: 0.3 [E], range 0.1-0.5 (Hestness et al. 2017 task-error exponents, "
                    "via ENGINES.md §6.1)")
    n0: float = Field(
        default=1000.0, gt=0,
        description="samples before the power-law phase: 1000 [E], range 300-3000 (the rectified law's "
                    "pre-power phase, Lin et al. 2024; LIMA's ~1000 examples; ENGINES.md §6.1)")
    lora_share: float = Field(
        default=0.8, gt=0, le=1,
        description="share of full fine-tuning's gain LoRA wins: 0.8 [E], range 0.7-0.9 (Biderman et al. 2024, "
                    "qualitative; ENGINES.md §6.1)")


class Retraining(Spec):
    """When and how the model is retrained.

    policy `triggered`: after a drift detection; `scheduled`: every `every`, on the labelled
    data collected since the last retraining; `both`. No retraining starts within `min_gap`
    of the previous one.
    """

    policy: Literal["triggered", "scheduled", "both"] = "triggered"
    every: Seconds = Field(default=7 * 86400.0, gt=0, description="period of scheduled retraining")
    first_at: Seconds | None = Field(default=None, ge=0, description="first scheduled run (default: every)")
    min_gap: Seconds = Field(default=0.0, ge=0, description="least time between two retrainings")
    priority: int = Field(default=10, description="in the training queue: higher goes first")
    method: Literal["full", "lora"] = "lora"
    samples: int = Field(default=2000, ge=1, description="labelled post-detection samples to collect")
    tokens_per_sample: int = Field(default=1024, ge=1)
    epochs: float = Field(default=2.0, gt=0)
    gpus: int = Field(default=4, ge=1)
    scaling_efficiency: float = Field(default=0.9, gt=0, le=1, description="data-parallel efficiency")
    validation: Seconds = Field(default=1800.0, ge=0, description="time to validate a candidate")
    lora_rank: int = Field(default=16, ge=1)
    learning_curve: LearningCurve = Field(
        default_factory=LearningCurve, description="the error a retrained version reaches, from its fresh samples")


class DevelopmentJob(Spec):
    """One kind of model-development job: a fine-tuning experiment or an evaluation."""

    name: str = Field(min_length=1)
    method: Literal["full", "lora", "eval"] = "lora"
    tokens: float = Field(gt=0, description="tokens processed (training tokens x epochs, or evaluated)")
    gpus: int = Field(default=1, ge=1)
    data: Bytes = Field(default=0.0, ge=0, description="training data moved to the training site")
    data_class: str = "labelled_sample"
    records: int = Field(default=0, ge=0, description="records in that data")


class DevelopmentWorkload(Spec):
    """The training application's own work: experiments and evaluations that compete for GPUs."""

    arrivals: Literal["poisson", "schedule"] = "poisson"
    rate_per_week: float = Field(default=5.0, gt=0, description="poisson: jobs per week")
    at: list[Seconds] = Field(default_factory=list, description="schedule: submission times")
    jobs: list[DevelopmentJob] = Field(min_length=1, description="job kinds, taken in turn")
    priority: int = Field(default=1, description="in the training queue: higher goes first")


class GpuSharing(Spec):
    """How training shares a premises pool that also serves.

    `preempt_serving`: training takes GPUs from serving replicas (drained first); serving keeps
    at least one replica. `reserved`: `reserved_gpus` of the pool never serve and are training's
    alone. `only_idle_gpus`: training uses only GPUs no serving replica holds (reserved ones,
    or replicas that are offline), so it never slows serving down; it may wait a long time.
    """

    policy: Literal["preempt_serving", "reserved", "only_idle_gpus"] = "preempt_serving"
    reserved_gpus: int = Field(default=0, ge=0)


class Deployment(Spec):
    artifact: Literal["full", "adapter"] = "adapter"
    rollout: Literal["rolling", "blue_green"] = "rolling"
    load_bandwidth: BytesPerSecond = Field(default=2e9, gt=0, description="weights load speed per replica")


class VendorUpdates(Spec):
    cadence: Seconds = Field(gt=0, description="time between vendor releases")
    first_at: Seconds = Field(default=0.0, ge=0)
    import_lead_time: Seconds = Field(default=86400.0, ge=0, description="from release to serving")
    fixes_drift: bool = Field(default=False, description="does a release fix the domain drift?")


class Lifecycle(Spec):
    """Drift, monitoring, retraining and rollout.

    A drift event is *recovered* once a version whose error rate on it is within
    `recovery_tolerance` of the pre-drift rate serves: err - base <= recovery_tolerance x
    (drift error_rate - base), i.e. the version has won back at least 1 - recovery_tolerance
    of the damage. The tolerance is a share of the drift's excess, not of the base rate: under
    the default learning curve no sample count of a few thousand brings a fine-tune within
    10% of the base rate, and a LoRA fine-tune never can (it wins only `lora_share` of the
    gain), so a relative-to-base band would call every retraining a failure.
    """

    base_error_rate: float = Field(default=0.05, ge=0, le=1)
    recovery_tolerance: float = Field(
        default=0.5, ge=0, lt=1,
        description="recovered when the serving version keeps at most this share of the drift's excess error "
                    "(a convention: 0.5 = at least half the damage undone; 0 = back to the base rate)")
    drift: list[DriftEvent] = Field(default_factory=list)
    monitor: Monitor = Field(default_factory=Monitor)
    retraining: Retraining = Field(default_factory=Retraining)
    deployment: Deployment = Field(default_factory=Deployment)
    vendor_updates: VendorUpdates | None = None
    development: DevelopmentWorkload | None = None
    gpu_sharing: GpuSharing = Field(default_factory=GpuSharing)



# --------------------------------------------------------------------------------------------
# Privacy, SLO and the scenario itself
# --------------------------------------------------------------------------------------------


class DataClass(Spec):
    sensitivity: float = Field(ge=0, description="weight of one record in the exposure score")
    retention: Seconds = Field(default=30 * 86400.0, ge=0, description="how long a third party keeps it")
    anonymised: bool = Field(default=False, description="uploaded as aggregates, not records")


DEFAULT_DATA_CLASSES: dict[str, dict[str, Any]] = {
    "prompt": {"sensitivity": 1.0},
    "response": {"sensitivity": 0.5},
    "labelled_sample": {"sensitivity": 1.0},
    "telemetry_aggregate": {"sensitivity": 0.01},
    "model_weights": {"sensitivity": 0.1},
}


class Privacy(Spec):
    data_classes: dict[str, DataClass] = Field(
        default_factory=lambda: {k: DataClass(**v) for k, v in DEFAULT_DATA_CLASSES.items()}
    )

    @field_validator("data_classes")
    @classmethod
    def _builtin_classes(cls, value: dict[str, DataClass]) -> dict[str, DataClass]:
        """The classes the simulator itself emits always exist; a file may re-weight them."""
        for name, default in DEFAULT_DATA_CLASSES.items():
            value.setdefault(name, DataClass(**default))
        return value


# --------------------------------------------------------------------------------------------
# Faults and outages
# --------------------------------------------------------------------------------------------


class OutageWindow(Spec):
    start: Seconds = Field(ge=0, description="when it begins, from the start of the run")
    duration: Seconds = Field(gt=0)


class RetryPolicy(Spec):
    """What clients do when a replica fails under their request or the path is cut."""

    max_attempts: int = Field(default=3, ge=1, description="attempts per request, the first included")
    timeout: Seconds | None = Field(
        default=None, gt=0,
        description="client timeout: a request not admitted this long after it was sent fails; "
                    "none = clients wait for ever",
    )


Repair = Literal["exponential", "deterministic"]


class _RandomFaults(Spec):
    """Failures at random: up times with mean `mtbf`, repairs with mean `mttr`."""

    mtbf: Seconds | None = Field(default=None, gt=0, description="mean time between failures")
    mttr: Seconds | None = Field(default=None, gt=0, description="mean time to repair")
    distribution: Repair = Field(
        default="exponential", description="of up times and repair times; 'deterministic' uses the means"
    )


class ReplicaFailures(_RandomFaults):
    """GPU failures of one pool's serving replicas: every replica at random (mtbf), and/or
    replica `replica` at the times in `at`; each failure takes `mttr` to repair."""

    site: str
    pool: str | None = Field(default=None, description="a pool of the site; default: its serving pool")
    at: list[Seconds] = Field(default_factory=list, description="scheduled failures of replica `replica`")
    replica: int = Field(default=0, ge=0, description="the replica that fails at the times in `at`")

    @model_validator(mode="after")
    def _something_fails(self) -> ReplicaFailures:
        if self.mttr is None:
            raise ValueError("replica failures need mttr (how long a repair takes)")
        if self.mtbf is None and not self.at:
            raise ValueError("give mtbf (random failures) or at (scheduled ones)")
        return self


class _Outages(_RandomFaults):
    windows: list[OutageWindow] = Field(default_factory=list, description="scheduled outages")

    @model_validator(mode="after")
    def _something_fails(self) -> _Outages:
        if (self.mtbf is None) != (self.mttr is None):
            raise ValueError("random outages need both mtbf and mttr")
        if self.mtbf is None and not self.windows:
            raise ValueError("give windows (scheduled outages) or mtbf and mttr (random ones)")
        return self


class LinkOutage(_Outages):
    """A link is cut: requests on it wait or fail, bulk transfers pause."""

    link: str


class SiteOutage(_Outages):
    """A whole site is down (a cloud region): its GPUs fail and every link to it is cut."""

    site: str


class CapacityShortage(Spec):
    """An elastic pool cannot grow during the windows (the provider has no capacity)."""

    site: str
    pool: str
    windows: list[OutageWindow] = Field(min_length=1)


class Faults(Spec):
    """Fault injection: what fails, when, and how clients and training cope."""

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    replica_failures: list[ReplicaFailures] = Field(default_factory=list)
    link_outages: list[LinkOutage] = Field(default_factory=list)
    site_outages: list[SiteOutage] = Field(default_factory=list)
    capacity_shortages: list[CapacityShortage] = Field(default_factory=list)
    checkpoint_interval: Seconds = Field(
        default=1800.0, gt=0, description="training saves a checkpoint this often; a fault loses the rest"
    )

    @property
    def any(self) -> bool:
        return bool(self.replica_failures or self.link_outages or self.site_outages or self.capacity_shortages)


class Projection(Spec):
    """How the simulated day(s) are projected to a month and a year (`sim.metrics.cost`)."""

    traffic_growth_per_month: float = Field(
        default=0.0, gt=-1, le=10, description="compound monthly growth of the traffic, e.g. 0.05 for 5%")


class Scenario(Spec):
    name: str = Field(default="scenario", min_length=1)
    description: str = ""
    catalog: str | None = Field(default=None, description="a catalog file that adds or overrides entries")
    seed: int = Field(default=0, ge=0, lt=2**63)
    horizon: Seconds = Field(default=86400.0, gt=0, le=10 * 365 * 86400.0)
    warmup: Seconds = Field(default=0.0, ge=0)
    replications: int = Field(default=1, ge=1, le=MAX_REPLICATIONS)
    sites: dict[str, Site] = Field(min_length=1)
    links: dict[str, Link] = Field(default_factory=dict)
    model: ModelSpec
    workload: Workload
    placement: Placement
    routing: list[RoutingRule] = Field(
        default_factory=list,
        description="which serving pools each traffic class uses (`RoutingRule`); empty: the serving pools "
                    "at placement.inference, then at placement.fallback")
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    privacy: Privacy = Field(default_factory=Privacy)
    slo: SLO = Field(default_factory=SLO)
    faults: Faults = Field(default_factory=Faults)
    projection: Projection = Field(default_factory=Projection)

    _catalog: Catalog | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="")

    def attach(self, catalog: Catalog, source: str = "") -> None:
        """Bind the catalog this scenario was checked against (done by the loader)."""
        self._catalog = catalog
        self._source = source

    @property
    def resolved_catalog(self) -> Catalog:
        """The shipped catalog merged with the scenario's own `catalog:` file."""
        if self._catalog is None:
            from sim.catalog import shipped_catalog

            return shipped_catalog()
        return self._catalog

    @property
    def source(self) -> str:
        return self._source

    def cloud_offer(self, site: str, pool: Pool, pricing: str | None = None) -> CloudOffer:
        """The instance a cloud pool rents under `pricing` (default: its own) and its price
        (`sim.catalog.cloud_offer`), for what the pool rents at a time: a serving replica,
        within one instance (tensor parallelism needs one scale-up domain), or a retraining
        job's GPUs. Raises `sim.catalog.MissingPrice` when the catalog cannot price it."""
        serving = "serving" in pool.roles
        gpus = pool.tp(self.model) if serving else self.lifecycle.retraining.gpus
        return cloud_offer(self.resolved_catalog, pool.gpu, self.sites[site].provider, pricing or pool.pricing,
                           pool.instance, gpus, one_instance=serving)

    def arrival_streams(self) -> list[tuple[str, Any]]:
        """(field path, arrival process) of every open-loop arrival stream: the workload's and
        each traffic class's own. What planning and deciding scale or replace together."""
        return [("workload.arrivals", self.workload.arrivals),
                *((f"workload.classes[{i}].arrivals", c.arrivals) for i, c in enumerate(self.workload.classes)
                  if c.arrivals is not None)]

    def link_between(self, a: str, b: str) -> tuple[str, Link] | None:
        """The link joining two sites (in either direction), or None."""
        for name, link in self.links.items():
            if set(link.ends) == {a, b}:
                return name, link
        return None
