"""Roofline step times, computed by hand from the catalog and the formulas of the module docstring.

`sim.kernels.roofline.step_time` is max(FLOPs / (tp x peak x MFU), bytes / (tp x bandwidth x
MBU)) + overhead + all-reduce. Each test writes out the FLOPs and bytes of one iteration for a
real model on a real GPU, says which roof it hits, and compares to 1e-12 relative (the same
arithmetic in a different order).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.catalog import GPU, Model, shipped_catalog
from sim.kernels.roofline import (
    P_DENSE_WEIGHT_BYTES,
    P_FLOPS_RATE,
    EngineEfficiency,
    chunk_pairs,
    decode_time_batch1,
    pack_params,
    step_time,
    weights_read_time,
)

REL = 1e-12


def catalog_pair(model_id: str, gpu_id: str) -> tuple[Model, GPU, EngineEfficiency]:
    catalog = shipped_catalog()
    gpu = catalog.gpus[gpu_id]
    e = gpu.efficiency
    return catalog.models[model_id], gpu, EngineEfficiency(e.mfu, e.mbu, e.iteration_overhead_s,
                                                           e.allreduce_efficiency)


def linear_flops_per_token(m: Model) -> float:
    """2 L (h n_h d + 2 h n_kv d + n_h d h + MLP), MLP = 3 h f, or k 3 h f_e + h E for MoE."""
    h, nh, nkv, d = m.hidden, m.heads, m.kv_heads, m.head_dim
    assert h and nh and nkv and d
    if m.is_moe:
        assert m.experts and m.experts_per_token and m.expert_ffn
        mlp = m.experts_per_token * 3 * h * m.expert_ffn + h * m.experts
    else:
        assert m.ffn
        mlp = 3 * h * m.ffn
    return 2 * m.layers * (h * nh * d + 2 * h * nkv * d + nh * d * h + mlp)


def kv_bytes_per_token(m: Model, element_bytes: float = 2.0) -> float:
    assert m.kv_heads and m.head_dim
    return 2 * m.layers * m.kv_heads * m.head_dim * element_bytes


def activation_bytes(m: Model, tokens: int) -> float:
    assert m.hidden
    return 8 * m.layers * m.hidden * 2 * tokens


def test_dense_decode_at_batch_one_is_memory_bound() -> None:
    """llama-3.1-8b bf16 on one H100, one sequence at context 2048.

    bytes = 8.03e9 params x 2 B + (2048 read + 1 written) x 128 KiB + 8 L h x 2 B; over
    3.35 TB/s x MBU 0.8 it is ~6.1 ms, while the FLOPs (~16 GFLOP + attention + LM head) over
    989 TFLOP/s x MFU 0.5 take ~0.04 ms. step = memory + 3 ms overhead.
    """
    m, gpu, eff = catalog_pair("llama-3.1-8b", "h100-sxm")
    params = pack_params(m, gpu, "bf16", 1, eff)
    context = 2048
    memory_bytes = m.params * 2 + (context + 1) * kv_bytes_per_token(m) + activation_bytes(m, 1)
    memory_s = memory_bytes / (gpu.memory_bandwidth * eff.mbu)
    flops = (linear_flops_per_token(m) + 4 * m.layers * m.heads * m.head_dim * context
             + 2 * m.hidden * m.vocab)
    compute_s = flops / (gpu.peak_flops["bf16"] * eff.mfu)
    assert kv_bytes_per_token(m) == 128 * 1024
    assert memory_s > 50 * compute_s
    expected = memory_s + eff.iteration_overhead_s
    assert math.isclose(step_time(params, 0, 0, 0, 1, context, 1), expected, rel_tol=REL)
    assert math.isclose(decode_time_batch1(params, context), expected, rel_tol=REL)
    assert math.isclose(weights_read_time(params), m.params * 2 / (gpu.memory_bandwidth * eff.mbu),
                        rel_tol=REL)


def test_large_prefill_is_compute_bound() -> None:
    """llama-3.1-8b bf16 on one H100, a 4096-token prompt from scratch, one logit.

    FLOPs = 4096 x 2 L (h n_h d + 2 h n_kv d + n_h d h + 3 h f) + 4 L n_h d x 4096 x 4097 / 2
    + 2 h V ~ 6.1e13 -> ~123 ms at 989 TFLOP/s x 0.5; the bytes (16 GB weights + 4096 KV
    tokens + activations) take ~6.3 ms.
    """
    m, gpu, eff = catalog_pair("llama-3.1-8b", "h100-sxm")
    params = pack_params(m, gpu, "bf16", 1, eff)
    P = 4096
    pairs = P * (P + 1) // 2
    flops = P * linear_flops_per_token(m) + 4 * m.layers * m.heads * m.head_dim * pairs + 2 * m.hidden * m.vocab
    compute_s = flops / (gpu.peak_flops["bf16"] * eff.mfu)
    memory_s = (m.params * 2 + P * kv_bytes_per_token(m) + activation_bytes(m, P)) / (gpu.memory_bandwidth * eff.mbu)
    assert compute_s > 10 * memory_s
    assert flops == pytest.approx(6.1e13, rel=0.02)
    expected = compute_s + eff.iteration_overhead_s
    assert math.isclose(step_time(params, P, chunk_pairs(P, 0), 0, 0, 0, 1), expected, rel_tol=REL)


def test_tensor_parallel_two_halves_compute_and_adds_the_all_reduce() -> None:
    """The 4096-token prefill on tp = 2: compute / 2, plus 2 L ring all-reduces of T h 2 B.

    all-reduce = 2 L x 2 (tp - 1) / tp x (4096 x 4096 x 2 B) / (900 GB/s x 0.75) ~ 3.2 ms.
    A memory-bound decode likewise halves its bytes term and pays the all-reduce for 1 token.
    """
    m, gpu, eff = catalog_pair("llama-3.1-8b", "h100-sxm")
    tp1 = pack_params(m, gpu, "bf16", 1, eff)
    tp2 = pack_params(m, gpu, "bf16", 2, eff)
    P = 4096
    overhead = eff.iteration_overhead_s

    def allreduce_s(tokens: int) -> float:
        ring = 2 * (2 - 1) / 2
        return 2 * m.layers * ring * tokens * m.hidden * 2 / (gpu.interconnect_bandwidth * eff.allreduce_efficiency)

    prefill1 = step_time(tp1, P, chunk_pairs(P, 0), 0, 0, 0, 1)
    prefill2 = step_time(tp2, P, chunk_pairs(P, 0), 0, 0, 0, 1)
    assert math.isclose(prefill2, (prefill1 - overhead) / 2 + overhead + allreduce_s(P), rel_tol=REL)
    assert allreduce_s(P) == pytest.approx(3.2e-3, rel=0.02)
    decode1 = step_time(tp1, 0, 0, 0, 1, 2048, 1)
    decode2 = step_time(tp2, 0, 0, 0, 1, 2048, 1)
    assert math.isclose(decode2, (decode1 - overhead) / 2 + overhead + allreduce_s(1), rel_tol=REL)


def test_moe_weight_bytes_follow_the_expected_experts_touched() -> None:
    """mixtral-8x7b bf16, T decoding sequences: weights = shared + L E (1 - (1 - k/E)^T) experts.

    Each layer-expert is 3 h f_e params; shared weights are the rest of the 46.7e9. At T = 1
    exactly k = 2 of 8 experts per layer are read (~12.9e9 active params), and as T grows the
    bytes rise towards all 46.7e9 params. Decode stays memory-bound for these T.
    """
    m, gpu, eff = catalog_pair("mixtral-8x7b", "h100-sxm")
    params = pack_params(m, gpu, "bf16", 1, eff)
    assert m.experts == 8 and m.experts_per_token == 2
    E, k, L = m.experts, m.experts_per_token, m.layers
    expert_params = 3 * m.hidden * m.expert_ffn
    shared_params = m.params - L * E * expert_params
    context = 100

    def weight_bytes(tokens: int) -> float:
        return (shared_params + L * E * (1 - (1 - k / E) ** tokens) * expert_params) * 2

    assert weight_bytes(1) / 2 == pytest.approx(12.9e9, rel=0.02)
    previous = 0.0
    for T in (1, 2, 4, 8, 16, 64, 256):
        memory_bytes = weight_bytes(T) + (T * context + T) * kv_bytes_per_token(m) + activation_bytes(m, T)
        memory_s = memory_bytes / (gpu.memory_bandwidth * eff.mbu)
        flops = T * linear_flops_per_token(m) + 4 * L * m.heads * m.head_dim * T * context + 2 * m.hidden * m.vocab * T
        assert memory_s > flops / (gpu.peak_flops["bf16"] * eff.mfu)
        step = step_time(params, 0, 0, 0, T, T * context, T)
        assert math.isclose(step, memory_s + eff.iteration_overhead_s, rel_tol=REL), T
        assert weight_bytes(T) > previous
        previous = weight_bytes(T)
    assert weight_bytes(256) == pytest.approx(m.params * 2, rel=1e-12)


def test_experts_touched_formula_is_the_routing_expectation() -> None:
    """T tokens each routed to k distinct experts of E at random touch E (1 - (1 - k/E)^T).

    Monte Carlo over 20,000 layers per T; within 4 standard errors.
    """
    rng = np.random.default_rng(20240505)
    E, k, trials = 8, 2, 20_000
    for T in (1, 2, 3, 5, 10):
        chosen = np.argsort(rng.random((trials, T, E)), axis=2)[:, :, :k]
        touched = np.zeros((trials, E), dtype=bool)
        for j in range(k):
            np.put_along_axis(touched, chosen[:, :, j], True, axis=1)
        counts = touched.sum(axis=1)
        expected = E * (1 - (1 - k / E) ** T)
        se = counts.std(ddof=1) / math.sqrt(trials) + 1e-12
        assert abs(counts.mean() - expected) < 4 * se, (T, counts.mean(), expected)


def test_fp8_computes_at_the_fp8_peak_with_one_byte_weights() -> None:
    """llama-3.1-8b fp8 on H100: the 4096-token prefill at 1979 TFLOP/s x MFU (twice bf16's
    rate), and 1 byte per weight. A100 has no fp8 peak and computes fp8 at its bf16 peak."""
    m, gpu, eff = catalog_pair("llama-3.1-8b", "h100-sxm")
    params = pack_params(m, gpu, "fp8", 1, eff)
    assert params[P_FLOPS_RATE] == gpu.peak_flops["fp8"] * eff.mfu
    assert params[P_DENSE_WEIGHT_BYTES] == m.params * 1
    P = 4096
    flops = P * linear_flops_per_token(m) + 4 * m.layers * m.heads * m.head_dim * (P * (P + 1) // 2) + 2 * m.hidden * m.vocab
    compute_s = flops / (gpu.peak_flops["fp8"] * eff.mfu)
    memory_s = (m.params * 1 + P * kv_bytes_per_token(m) + activation_bytes(m, P)) / (gpu.memory_bandwidth * eff.mbu)
    assert compute_s > memory_s
    expected = compute_s + eff.iteration_overhead_s
    assert math.isclose(step_time(params, P, chunk_pairs(P, 0), 0, 0, 0, 1), expected, rel_tol=REL)
    a100, a100_eff = catalog_pair("llama-3.1-8b", "a100-80gb")[1:]
    assert "fp8" not in a100.peak_flops
    assert pack_params(m, a100, "fp8", 1, a100_eff)[P_FLOPS_RATE] == a100.peak_flops["bf16"] * a100_eff.mfu


@pytest.mark.parametrize("gpu_id", ["h100-sxm", "a100-80gb"])
def test_int4_computes_at_bf16_with_half_the_weight_bytes_of_int8(gpu_id: str) -> None:
    """Weight-only int4: matmuls run in bf16 (not at an int4 peak, which A100 lists), weights are
    0.5 B/param, half of int8's; a compute-bound prefill takes exactly as long as in bf16."""
    m, gpu, eff = catalog_pair("llama-3.1-8b", gpu_id)
    int4 = pack_params(m, gpu, "int4", 1, eff)
    int8 = pack_params(m, gpu, "int8", 1, eff)
    bf16 = pack_params(m, gpu, "bf16", 1, eff)
    assert int4[P_FLOPS_RATE] == gpu.peak_flops["bf16"] * eff.mfu
    assert int4[P_DENSE_WEIGHT_BYTES] == 0.5 * int8[P_DENSE_WEIGHT_BYTES] == m.params * 0.5
    assert int8[P_FLOPS_RATE] == gpu.peak_flops["int8"] * eff.mfu
    P = 4096
    args = (P, chunk_pairs(P, 0), 0, 0, 0, 1)
    assert step_time(int4, *args) == step_time(bf16, *args)


def test_kv_precision_sets_kv_bytes() -> None:
    """An fp8 KV cache halves the KV term: a long-context decode reads 1 B per KV element."""
    m, gpu, eff = catalog_pair("llama-3.1-8b", "h100-sxm")
    params = pack_params(m, gpu, "bf16", 1, eff, kv_precision="fp8")
    context = 100_000
    memory_bytes = m.params * 2 + (context + 1) * kv_bytes_per_token(m, 1.0) + activation_bytes(m, 1)
    expected = memory_bytes / (gpu.memory_bandwidth * eff.mbu) + eff.iteration_overhead_s
    assert math.isclose(step_time(params, 0, 0, 0, 1, context, 1), expected, rel_tol=REL)


def test_empty_iteration_takes_no_time() -> None:
    m, gpu, eff = catalog_pair("llama-3.1-8b", "h100-sxm")
    assert step_time(pack_params(m, gpu, "bf16", 1, eff), 0, 0, 0, 0, 0, 0) == 0.0


@given(st.integers(0, 2000), st.integers(0, 5000))
def test_chunk_pairs_counts_causal_pairs(chunk: int, cached: int) -> None:
    """chunk x cached + chunk (chunk + 1) / 2: query j of the chunk (1-based) sees cached + j keys."""
    assert chunk_pairs(chunk, cached) == sum(cached + j for j in range(1, chunk + 1))


@given(st.lists(st.integers(1, 500), min_size=1, max_size=8), st.integers(0, 1000))
def test_chunk_pairs_of_consecutive_chunks_add_up(chunks: list[int], cached: int) -> None:
    """Prefilling in chunks attends to exactly the pairs of prefilling in one go."""
    done, total = cached, 0
    for chunk in chunks:
        total += chunk_pairs(chunk, done)
        done += chunk
    assert total == chunk_pairs(sum(chunks), cached)
