"""Roofline step time: how long one engine iteration takes on a GPU.

An iteration of a continuous-batching engine runs one forward pass over every token in the
batch: prefill tokens (a prompt, or a chunk of one) and one token for each decoding sequence.
Its time is set by whichever roof it hits first, compute or memory, plus a fixed overhead:

    time = max(FLOPs / (tp x peak x MFU), bytes / (tp x bandwidth x MBU)) + overhead + allreduce

with, for a transformer of L layers, hidden size h, n_h query heads and n_kv KV heads of size
d, FFN size f (gated: three matrices), vocabulary V, and T = prefill tokens + decoding
sequences in the batch:

    linear FLOPs per token  = 2 x L x (h x n_h d + 2 h x n_kv d + n_h d x h + 3 h f)
    (mixture of experts: 3 h f is replaced by k x 3 h f_e + h x E for k of E experts)
    attention FLOPs         = 4 x L x n_h x d per (query, key) pair; a prefill chunk of n
                              tokens after c cached ones has n c + n (n + 1) / 2 pairs,
                              a decoding sequence with context c has c pairs
    LM head FLOPs           = 2 x h x V per token that produces a logit (decoding sequences,
                              and prompts whose prefill completes in this iteration)
    weight bytes            = params x bytes/param, read once per iteration
                              (MoE: shared weights + the experts the batch touches; T tokens
                              touch E x (1 - (1 - k/E)^T) experts per layer in expectation)
    KV bytes                = (context read + T written) x 2 L n_kv d x bytes(KV element)
    activation bytes        = 8 x L x h x T x 2 (inputs and outputs of the four projections)
    allreduce (tp > 1)      = 2 L all-reduces of T x h x 2 bytes, ring: 2 (tp-1)/tp x size /
                              (interconnect x efficiency)

Peak FLOP/s is the GPU's dense peak for the compute precision: fp8 and int8 compute at their
own peaks; int4 (weight-only) computes at bf16. MFU, MBU, the per-iteration overhead and the
all-reduce efficiency come from the catalog (fitted per GPU) or the scenario.

Everything here is a pure function over a packed parameter vector, so the numba serving kernel
and the pure-SimPy oracle call the very same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from sim.catalog import BYTES_PER_PARAM, GPU, Model

# Indices into the packed parameter vector.
P_LINEAR_FLOPS_PER_TOKEN = 0
P_ATTN_FLOPS_PER_PAIR = 1
P_LM_HEAD_FLOPS_PER_TOKEN = 2
P_DENSE_WEIGHT_BYTES = 3  # weights every iteration reads (all of them for a dense model)
P_EXPERT_BYTES_PER_LAYER_EXPERT = 4
P_EXPERTS = 5
P_EXPERTS_PER_TOKEN = 6
P_LAYERS = 7
P_KV_BYTES_PER_TOKEN = 8
P_ACT_BYTES_PER_TOKEN = 9
P_FLOPS_RATE = 10  # tp x peak x MFU
P_BYTES_RATE = 11  # tp x bandwidth x MBU
P_OVERHEAD_S = 12
P_ALLREDUCE_S_PER_TOKEN = 13
P_SIZE = 14


@dataclass(frozen=True)
class EngineEfficiency:
    mfu: float
    mbu: float
    iteration_overhead_s: float
    allreduce_efficiency: float


def compute_precision(precision: str) -> str:
    """The precision matmuls run in: weight-only int4 computes in bf16."""
    return "bf16" if precision == "int4" else precision


def pack_params(
    model: Model,
    gpu: GPU,
    precision: str,
    tp: int,
    efficiency: EngineEfficiency,
    kv_precision: str = "bf16",
) -> np.ndarray:
    """The parameter vector `step_time` reads, for one replica of `tp` GPUs."""
    if model.kind != "transformer":
        raise ValueError(f"{model.name} is not a transformer; it has no roofline step model")
    L, h = model.layers, model.hidden
    nh, nkv, d = model.heads, model.kv_heads, model.head_dim
    assert h is not None and nh is not None and nkv is not None and d is not None
    assert model.vocab is not None
    attention_params = h * nh * d + 2 * h * nkv * d + nh * d * h
    bpp = BYTES_PER_PARAM[precision]
    if model.is_moe:
        assert model.experts is not None and model.experts_per_token is not None
        assert model.expert_ffn is not None
        expert_params = 3 * h * model.expert_ffn
        mlp_flops_params = model.experts_per_token * expert_params + h * model.experts
        all_expert_params = L * model.experts * expert_params
        dense_weight_bytes = (model.params - all_expert_params) * bpp
        expert_bytes = expert_params * bpp
        experts, experts_per_token = model.experts, model.experts_per_token
    else:
        assert model.ffn is not None
        mlp_flops_params = 3 * h * model.ffn
        dense_weight_bytes = model.params * bpp
        expert_bytes, experts, experts_per_token = 0.0, 0, 0
    params = np.zeros(P_SIZE, dtype=np.float64)
    params[P_LINEAR_FLOPS_PER_TOKEN] = 2.0 * L * (attention_params + mlp_flops_params)
    params[P_ATTN_FLOPS_PER_PAIR] = 4.0 * L * nh * d
    params[P_LM_HEAD_FLOPS_PER_TOKEN] = 2.0 * h * model.vocab
    params[P_DENSE_WEIGHT_BYTES] = dense_weight_bytes
    params[P_EXPERT_BYTES_PER_LAYER_EXPERT] = expert_bytes
    params[P_EXPERTS] = experts
    params[P_EXPERTS_PER_TOKEN] = experts_per_token
    params[P_LAYERS] = L
    params[P_KV_BYTES_PER_TOKEN] = model.kv_bytes_per_token(kv_precision)
    params[P_ACT_BYTES_PER_TOKEN] = 8.0 * L * h * 2.0
    params[P_FLOPS_RATE] = tp * gpu.peak(compute_precision(precision)) * efficiency.mfu
    params[P_BYTES_RATE] = tp * gpu.memory_bandwidth * efficiency.mbu
    params[P_OVERHEAD_S] = efficiency.iteration_overhead_s
    if tp > 1:
        bytes_per_token = h * 2.0
        ring = 2.0 * (tp - 1) / tp
        params[P_ALLREDUCE_S_PER_TOKEN] = (
            2 * L * ring * bytes_per_token / (gpu.interconnect_bandwidth * efficiency.allreduce_efficiency)
        )
    return params


@njit(cache=True)
def step_time(
    params: np.ndarray,
    prefill_tokens: int,
    prefill_pairs: int,
    prefill_context: int,
    decode_seqs: int,
    decode_context: int,
    logit_tokens: int,
) -> float:
    """Seconds for one iteration.

    prefill_tokens:  prompt tokens computed this iteration (all chunks)
    prefill_pairs:   causal (query, key) pairs of those chunks
    prefill_context: cached tokens the chunks attend to (read from the KV cache)
    decode_seqs:     sequences producing one token each
    decode_context:  sum of their context lengths (keys read from the KV cache)
    logit_tokens:    tokens that go through the LM head
    """
    tokens = prefill_tokens + decode_seqs
    if tokens <= 0:
        return 0.0
    flops = (
        params[P_LINEAR_FLOPS_PER_TOKEN] * tokens
        + params[P_ATTN_FLOPS_PER_PAIR] * (prefill_pairs + decode_context)
        + params[P_LM_HEAD_FLOPS_PER_TOKEN] * logit_tokens
    )
    weight_bytes = params[P_DENSE_WEIGHT_BYTES]
    experts = params[P_EXPERTS]
    if experts > 0.0:
        untouched = (1.0 - params[P_EXPERTS_PER_TOKEN] / experts) ** tokens
        weight_bytes += params[P_LAYERS] * experts * (1.0 - untouched) * params[P_EXPERT_BYTES_PER_LAYER_EXPERT]
    kv_bytes = (prefill_context + decode_context + tokens) * params[P_KV_BYTES_PER_TOKEN]
    memory_bytes = weight_bytes + kv_bytes + params[P_ACT_BYTES_PER_TOKEN] * tokens
    compute_s = flops / params[P_FLOPS_RATE]
    memory_s = memory_bytes / params[P_BYTES_RATE]
    return max(compute_s, memory_s) + params[P_OVERHEAD_S] + params[P_ALLREDUCE_S_PER_TOKEN] * tokens


def chunk_pairs(chunk: int, cached: int) -> int:
    """Causal (query, key) pairs of a prefill chunk of `chunk` tokens after `cached` tokens."""
    return chunk * cached + chunk * (chunk + 1) // 2


def decode_time_batch1(params: np.ndarray, context: int) -> float:
    """Convenience: one decoding sequence with `context` tokens."""
    return float(step_time(params, 0, 0, 0, 1, context, 1))


def weights_read_time(params: np.ndarray) -> float:
    """Dense weight bytes / (tp x bandwidth x MBU): the floor of every decode step."""
    return float(params[P_DENSE_WEIGHT_BYTES] / params[P_BYTES_RATE])
