"""Step time: how long one engine iteration takes on a replica, component by component.

An iteration of a continuous-batching engine runs one forward pass over every token it
schedules: prefill tokens (a prompt, or a chunk of one) and one token for each decoding
sequence. A real iteration is a chain of kernels, each limited by its own roof (compute or
memory), so the step time is the *sum* of per-component rooflines, not one max over the
whole step:

    t_step = t_host + t_linear + t_head + t_attn_prefill + t_attn_decode + t_experts + t_allreduce

For a transformer of L layers, hidden size h, n_h query heads and n_kv KV heads of size d,
vocabulary V, and for an iteration with P prefill tokens in c chunks (attending to X cached
tokens, forming Q causal query-key pairs), D decoding sequences whose contexts sum to C, and
T = P + D scheduled tokens, on a replica of `tp` GPUs with peak FLOP/s F and bandwidth B
each (rates below are per replica: tp x F, tp x B):

    each component        t = max(FLOPs / (tp F f_op(m)),  bytes / (tp B b_op))

    linear (dense GEMMs)  FLOPs = 2 T N_lin,  bytes = N_lin x bytes/param,      m = T
                          N_lin = L (h n_h d + 2 h n_kv d + n_h d h + 3 h f)  (attention
                          projections and a gated MLP; MoE: the router h E instead of the MLP)
                          and the bytes are all streamed weights but the LM head and experts
    LM head               FLOPs = 2 h V x logits, bytes = h V x bytes/param,    m = logits
                          (logits: decoding sequences and prompts whose prefill ends here)
    attention, prefill    FLOPs = 4 L n_h d x Q,  bytes = (X + P) x kv_bytes_per_token
    attention, decode     FLOPs = 4 L n_h d x C,  bytes = (C + D) x kv_bytes_per_token,
                          at the KV-read bandwidth fraction b_kv (paged KV reads run well
                          below weight streaming)
    MoE experts           FLOPs = 2 T k x 3 h f_e x L, m = T k / E tokens per expert;
                          bytes = L x E (1 - (1 - k/E)^T) x 3 h f_e x bytes/param: only
                          the experts a batch touches (expected count, uniform routing)
    all-reduce (tp > 1)   2 L calls of (latency + log2(tp) x T h 2 bytes / (I x a)), with I
                          the per-GPU interconnect bandwidth and a its efficiency: recursive
                          doubling moves the whole message in each of its log2(tp) rounds
                          (Thakur, Rabenseifner & Gropp 2005). It matches the growth of vLLM's
                          custom all-reduce from TP2 to TP4 and TP8 at decode-sized messages
                          (shared/facts/ENGINES.md §5.1) better than a ring's 2 (tp-1)/tp
    host (scheduler)      t_host = o_fixed + o_seq x (D + c) + o_token x P

GEMM efficiency grows with the rows it multiplies (tiles of 64-128 rows are filled only by
large M): f_op(m) = f_op x m / (m + m_half), with m_half the engine profile's
`gemm_half_m`. Dense GEMMs, prefill attention and expert GEMMs each have their own f_op;
the LM head uses the dense one. Peak FLOP/s is the GPU's dense peak for the compute
precision: fp8 and int8 compute at their own peaks; int4 (weight-only) computes at bf16.
The fractions, overheads and all-reduce terms come from an engine profile (the catalog's
`engines`, per GPU with a default; see `sim.catalog`), fitted to measured runs.

Everything here is a pure function over a packed parameter vector, so the numba serving kernel
and the pure-SimPy oracle call the very same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from sim.catalog import BYTES_PER_PARAM, GPU, Engine, Model
from sim.jit import no_refcount_jit

# Indices into the packed parameter vector: model shape ...
P_LINEAR_FLOPS_PER_TOKEN = 0
P_LINEAR_BYTES = 1
P_HEAD_FLOPS_PER_TOKEN = 2
P_HEAD_BYTES = 3
P_ATTN_FLOPS_PER_PAIR = 4
P_KV_BYTES_PER_TOKEN = 5
P_EXPERT_FLOPS_PER_TOKEN = 6  # all experts a token visits, all layers
P_EXPERT_BYTES_PER_LAYER_EXPERT = 7
P_EXPERTS = 8
P_EXPERTS_PER_TOKEN = 9
P_LAYERS = 10
# ... and the replica's rates under the engine profile
P_GEMM_RATE = 11  # tp x peak x gemm fraction (large M)
P_ATTN_RATE = 12  # tp x peak x prefill-attention fraction
P_EXPERT_RATE = 13  # tp x peak x expert-GEMM fraction (large M)
P_GEMM_HALF_M = 14
P_WEIGHT_BW = 15  # tp x bandwidth x weight-streaming fraction
P_KV_BW = 16  # tp x bandwidth x KV-read fraction
P_OVERHEAD_S = 17
P_OVERHEAD_PER_SEQ_S = 18
P_OVERHEAD_PER_PREFILL_TOKEN_S = 19
P_ALLREDUCE_CALLS = 20  # 2 L when tp > 1, else 0
P_ALLREDUCE_LATENCY_S = 21
P_ALLREDUCE_S_PER_TOKEN = 22
P_SIZE = 23


@dataclass(frozen=True)
class EngineProfile:
    """How close one serving engine gets to a GPU's datasheet peaks, and what it adds.

    Fractions are of the datasheet peak (dense FLOP/s at the compute precision, memory
    bandwidth, interconnect bandwidth); times are seconds.
    """

    bandwidth: float = 0.80  # weight streaming, fraction of memory bandwidth
    kv_bandwidth: float = 0.50  # paged KV reads in decode attention
    gemm: float = 0.60  # dense GEMM FLOP fraction at large M
    gemm_half_m: float = 64.0  # rows at which a GEMM reaches half its large-M fraction
    attention_prefill: float = 0.45  # prefill (flash) attention FLOP fraction
    moe_gemm: float = 0.30  # expert (grouped) GEMM FLOP fraction at large M
    overhead_s: float = 0.001  # per iteration
    overhead_per_seq_s: float = 10e-6  # per scheduled sequence
    overhead_per_prefill_token_s: float = 0.0  # per prefill token (input preparation)
    allreduce_latency_s: float = 10e-6  # per all-reduce call
    allreduce_bandwidth: float = 0.5  # fraction of the interconnect bandwidth
    frontend_s: float = 0.0  # API server: from a token's iteration end to its client
    frontend_per_step: float = 0.0  # ... plus this fraction of that iteration (streaming lag)

    def with_values(self, **values: float) -> EngineProfile:
        return replace(self, **values)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


PROFILE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EngineProfile))


def engine_profile(engine: Engine, gpu_id: str, overrides: Mapping[str, float | None] | None = None) -> EngineProfile:
    """An engine's factors on one GPU (its defaults, the GPU's entry, then `overrides`)."""
    values = engine.factors(gpu_id)
    if overrides:
        values.update({k: v for k, v in overrides.items() if v is not None and k in PROFILE_FIELDS})
    return EngineProfile(**values)


def compute_precision(precision: str) -> str:
    """The precision matmuls run in: weight-only int4 computes in bf16."""
    return "bf16" if precision == "int4" else precision


def pack_params(
    model: Model,
    gpu: GPU,
    precision: str,
    tp: int,
    profile: EngineProfile,
    kv_precision: str = "bf16",
) -> np.ndarray:
    """The parameter vector `step_time` reads, for one replica of `tp` GPUs."""
    if model.kind != "transformer":
        raise ValueError(f"{model.name} is not a transformer; it has no roofline step model")
    L, h = model.layers, model.hidden
    nh, nkv, d = model.heads, model.kv_heads, model.head_dim
    assert h is not None and nh is not None and nkv is not None and d is not None
    assert model.vocab is not None
    bpp = BYTES_PER_PARAM[precision]
    attention_params = h * nh * d + 2 * h * nkv * d + nh * d * h
    head_params = float(h * model.vocab)
    streamed_params = model.params - head_params  # the embedding table is looked up, not streamed
    params = np.zeros(P_SIZE, dtype=np.float64)
    if model.is_moe:
        assert model.experts is not None and model.experts_per_token is not None
        assert model.expert_ffn is not None
        expert_params = 3.0 * h * model.expert_ffn
        linear_flop_params = L * (attention_params + h * model.experts)
        all_expert_params = L * model.experts * expert_params
        params[P_EXPERT_FLOPS_PER_TOKEN] = 2.0 * L * model.experts_per_token * expert_params
        params[P_EXPERT_BYTES_PER_LAYER_EXPERT] = expert_params * bpp
        params[P_EXPERTS] = model.experts
        params[P_EXPERTS_PER_TOKEN] = model.experts_per_token
    else:
        assert model.ffn is not None
        linear_flop_params = L * (attention_params + 3 * h * model.ffn)
        all_expert_params = 0.0
    params[P_LINEAR_FLOPS_PER_TOKEN] = 2.0 * linear_flop_params
    params[P_LINEAR_BYTES] = max(streamed_params - head_params - all_expert_params, 0.0) * bpp
    params[P_HEAD_FLOPS_PER_TOKEN] = 2.0 * head_params
    params[P_HEAD_BYTES] = head_params * bpp
    params[P_ATTN_FLOPS_PER_PAIR] = 4.0 * L * nh * d
    params[P_KV_BYTES_PER_TOKEN] = model.kv_bytes_per_token(kv_precision)
    params[P_LAYERS] = L
    peak = tp * gpu.peak(compute_precision(precision))
    params[P_GEMM_RATE] = peak * profile.gemm
    params[P_ATTN_RATE] = peak * profile.attention_prefill
    params[P_EXPERT_RATE] = peak * profile.moe_gemm
    params[P_GEMM_HALF_M] = profile.gemm_half_m
    params[P_WEIGHT_BW] = tp * gpu.memory_bandwidth * profile.bandwidth
    params[P_KV_BW] = tp * gpu.memory_bandwidth * profile.kv_bandwidth
    params[P_OVERHEAD_S] = profile.overhead_s
    params[P_OVERHEAD_PER_SEQ_S] = profile.overhead_per_seq_s
    params[P_OVERHEAD_PER_PREFILL_TOKEN_S] = profile.overhead_per_prefill_token_s
    if tp > 1:
        rounds = float(np.log2(tp))
        params[P_ALLREDUCE_CALLS] = 2.0 * L
        params[P_ALLREDUCE_LATENCY_S] = profile.allreduce_latency_s
        params[P_ALLREDUCE_S_PER_TOKEN] = rounds * h * 2.0 / (gpu.interconnect_bandwidth * profile.allreduce_bandwidth)
    return params


@no_refcount_jit(inline="always")
def _roof(flops, rate, m, half_m, nbytes, bandwidth):
    """max(compute, memory) of one component; the FLOP rate grows with the GEMM's rows m."""
    compute = 0.0
    if flops > 0.0:
        compute = flops * (m + half_m) / (rate * m)
    memory = nbytes / bandwidth
    return compute if compute > memory else memory


@no_refcount_jit()
def step_time(
    params: np.ndarray,
    prefill_tokens: int,
    prefill_pairs: int,
    prefill_context: int,
    prefill_seqs: int,
    decode_seqs: int,
    decode_context: int,
    logit_tokens: int,
) -> float:
    """Seconds for one iteration.

    prefill_tokens:  prompt tokens computed this iteration (all chunks)
    prefill_pairs:   causal (query, key) pairs of those chunks
    prefill_context: cached tokens the chunks attend to (read from the KV cache)
    prefill_seqs:    sequences with a prefill chunk this iteration
    decode_seqs:     sequences producing one token each
    decode_context:  sum of their context lengths (keys read from the KV cache)
    logit_tokens:    tokens that go through the LM head
    """
    tokens = prefill_tokens + decode_seqs
    if tokens <= 0:
        return 0.0
    half_m = params[P_GEMM_HALF_M]
    t = _roof(params[P_LINEAR_FLOPS_PER_TOKEN] * tokens, params[P_GEMM_RATE], tokens, half_m,
              params[P_LINEAR_BYTES], params[P_WEIGHT_BW])
    if logit_tokens > 0:
        t += _roof(params[P_HEAD_FLOPS_PER_TOKEN] * logit_tokens, params[P_GEMM_RATE], logit_tokens, half_m,
                   params[P_HEAD_BYTES], params[P_WEIGHT_BW])
    kv = params[P_KV_BYTES_PER_TOKEN]
    if prefill_tokens > 0:
        t += _roof(params[P_ATTN_FLOPS_PER_PAIR] * prefill_pairs, params[P_ATTN_RATE], prefill_tokens, half_m,
                   (prefill_context + prefill_tokens) * kv, params[P_WEIGHT_BW])
    if decode_seqs > 0:
        t += (decode_context + decode_seqs) * kv / params[P_KV_BW]
    experts = params[P_EXPERTS]
    if experts > 0.0:
        k = params[P_EXPERTS_PER_TOKEN]
        touched = experts * (1.0 - (1.0 - k / experts) ** tokens)
        t += _roof(params[P_EXPERT_FLOPS_PER_TOKEN] * tokens, params[P_EXPERT_RATE], tokens * k / experts, half_m,
                   params[P_LAYERS] * touched * params[P_EXPERT_BYTES_PER_LAYER_EXPERT], params[P_WEIGHT_BW])
    t += params[P_ALLREDUCE_CALLS] * (params[P_ALLREDUCE_LATENCY_S] + params[P_ALLREDUCE_S_PER_TOKEN] * tokens)
    t += (params[P_OVERHEAD_S] + params[P_OVERHEAD_PER_SEQ_S] * (decode_seqs + prefill_seqs)
          + params[P_OVERHEAD_PER_PREFILL_TOKEN_S] * prefill_tokens)
    return t


@no_refcount_jit(inline="always")
def decode_line(params: np.ndarray, decode_seqs: int) -> tuple[float, float]:
    """(a, b) such that a decode-only iteration of n = `decode_seqs` sequences with summed
    context c takes `step_time(params, 0, 0, 0, 0, n, c, n)` = a + b (c + n) seconds (to the
    last bits of rounding): everything but reading the KV cache depends on n alone, and that
    read is linear in the keys read. A run of decode-only iterations of the same n therefore
    has a closed-form sum (`sim.kernels.batching`'s decode stretches). `a` is `step_time` with
    the KV read at zero (c = -n makes its term exactly 0)."""
    return (step_time(params, 0, 0, 0, 0, decode_seqs, -decode_seqs, decode_seqs),
            params[P_KV_BYTES_PER_TOKEN] / params[P_KV_BW])

def work_seconds(params: np.ndarray, iterations: np.ndarray, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compute_s, memory_s) per replica: the seconds its summed work would take at the
    replica's achievable FLOP rates and at its achievable bandwidths (the engine's fractions of
    the datasheet peaks), from its iteration count and the kernel's work counters
    (`sim.kernels.batching.ClusterKernel.work`: tokens, attention pairs, KV tokens, LM-head
    tokens). FLOPs and bytes are those of `step_time`, with decode attention's FLOPs
    (4 L n_h d per context token) counted too. Expert weights read per iteration use the
    replica's mean tokens per iteration (the expected-touched count is not linear in tokens).
    These are what `sim.metrics.energy` turns into power."""
    tokens, pairs, kv_tokens, logits = (work[:, k] for k in range(4))
    compute_s = ((params[P_LINEAR_FLOPS_PER_TOKEN] * tokens + params[P_HEAD_FLOPS_PER_TOKEN] * logits)
                 / params[P_GEMM_RATE] + params[P_ATTN_FLOPS_PER_PAIR] * pairs / params[P_ATTN_RATE])
    weights = (params[P_LINEAR_BYTES] + params[P_HEAD_BYTES]) * iterations
    memory_s = weights / params[P_WEIGHT_BW] + kv_tokens * params[P_KV_BYTES_PER_TOKEN] / params[P_KV_BW]
    experts = params[P_EXPERTS]
    if experts > 0.0:
        compute_s = compute_s + params[P_EXPERT_FLOPS_PER_TOKEN] * tokens / params[P_EXPERT_RATE]
        mean_tokens = np.divide(tokens, iterations, out=np.zeros_like(tokens), where=iterations > 0)
        touched = experts * (1.0 - (1.0 - params[P_EXPERTS_PER_TOKEN] / experts) ** mean_tokens)
        expert_bytes = params[P_LAYERS] * touched * params[P_EXPERT_BYTES_PER_LAYER_EXPERT] * iterations
        memory_s = memory_s + expert_bytes / params[P_WEIGHT_BW]
    return compute_s, memory_s


def chunk_pairs(chunk: int, cached: int) -> int:
    """Causal (query, key) pairs of a prefill chunk of `chunk` tokens after `cached` tokens."""
    return chunk * cached + chunk * (chunk + 1) // 2


def decode_time_batch1(params: np.ndarray, context: int) -> float:
    """Convenience: one decoding sequence with `context` tokens."""
    return float(step_time(params, 0, 0, 0, 0, 1, context, 1))


def weights_read_time(params: np.ndarray) -> float:
    """Dense weight bytes / weight-streaming bandwidth: the floor of every decode step."""
    return float((params[P_LINEAR_BYTES] + params[P_HEAD_BYTES]) / params[P_WEIGHT_BW])
