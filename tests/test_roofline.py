"""Step times by hand: each component of `sim.kernels.roofline.step_time` written out.

The step time is a sum of per-component rooflines (linear layers, LM head, prefill attention,
decode attention, MoE experts), each max(FLOPs / rate, bytes / bandwidth), plus all-reduce and
host time (see the module docstring). The first tests build small made-up models and a
made-up GPU with round numbers and compute every term by hand; the others check real models
on real GPUs against the catalog, and the KV capacity against what vLLM 0.15.1 reported.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.catalog import GPU, Model, shipped_catalog
from sim.kernels.replica import replica_setup
from sim.kernels.roofline import (
    P_GEMM_RATE,
    P_HEAD_BYTES,
    P_LINEAR_BYTES,
    EngineProfile,
    chunk_pairs,
    decode_line,
    pack_params,
    step_time,
    weights_read_time,
)

REL = 1e-12

TOY_GPU = GPU(name="toy", vendor="test", peak_flops={"bf16": 1e12, "fp8": 2e12}, memory=1e9,
              memory_bandwidth=1e10, tdp_w=100, idle_w=10, loaded_idle_w=20, interconnect_bandwidth=1e10,
              purchase_usd=1, server="hgx-8", source="test fixture", as_of="2026-11-01")
TOY_PROFILE = EngineProfile(bandwidth=0.5, kv_bandwidth=0.25, gemm=0.5, gemm_half_m=10.0, attention_prefill=0.4,
                            moe_gemm=0.2, overhead_s=1e-3, overhead_per_seq_s=1e-4, overhead_per_prefill_token_s=1e-6,
                            allreduce_latency_s=1e-5, allreduce_bandwidth=0.5)
# 2 layers, hidden 64, 4 heads and 2 KV heads of 16, FFN 128, vocabulary 100:
# attention projections 64x64 + 2 x 64x32 + 64x64 = 12,288 per layer, MLP 3 x 64 x 128 = 24,576,
# LM head and embedding 6,400 each: 2 x 36,864 + 2 x 6,400 = 86,528 parameters.
TOY_DENSE = Model(name="toy dense", kind="transformer", params=86_528, layers=2, hidden=64, heads=4, kv_heads=2,
                  head_dim=16, ffn=128, vocab=100, max_context=4096, source="test fixture", as_of="2026-11-01")
# The same attention with 4 experts of FFN 32, 2 per token: router 64 x 4 = 256 and experts
# 4 x 3 x 64 x 32 = 24,576 per layer: 2 x (12,288 + 256 + 24,576) + 12,800 = 87,040 parameters.
TOY_MOE = Model(name="toy moe", kind="transformer", params=87_040, layers=2, hidden=64, heads=4, kv_heads=2,
                head_dim=16, experts=4, experts_per_token=2, expert_ffn=32, vocab=100, max_context=4096,
                source="test fixture", as_of="2026-11-01")


def roof(flops: float, rate: float, rows: float, nbytes: float, bandwidth: float, half_m: float = 10.0) -> float:
    """One component: compute at rate x rows / (rows + half_m) against memory."""
    compute = flops / (rate * rows / (rows + half_m)) if flops else 0.0
    return max(compute, nbytes / bandwidth)


def test_a_mixed_dense_iteration_by_hand() -> None:
    """A 20-token prefill chunk after 30 cached tokens, batched with 3 decodes (contexts summing
    to 300), on the toy dense model: one GEMM pass over all 23 tokens, the LM head for the 4
    sequences that produce a token, prefill and decode attention apart, then host time."""
    params = pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, TOY_PROFILE)
    kv = 2 * 2 * 2 * 16 * 2  # K and V x layers x KV heads x head_dim x 2 bytes = 256 B per token
    linear = roof(2 * 73_728 * 23, 1e12 * 0.5, 23, 73_728 * 2, 1e10 * 0.5)
    head = roof(2 * 6_400 * 4, 1e12 * 0.5, 4, 6_400 * 2, 1e10 * 0.5)
    pairs = 20 * 30 + 20 * 21 // 2  # 810 causal query-key pairs
    attention_prefill = roof(4 * 2 * 4 * 16 * pairs, 1e12 * 0.4, 20, (30 + 20) * kv, 1e10 * 0.5)
    attention_decode = (300 + 3) * kv / (1e10 * 0.25)
    host = 1e-3 + 1e-4 * (3 + 1) + 1e-6 * 20
    expected = linear + head + attention_prefill + attention_decode + host
    got = step_time(params, 20, pairs, 30, 1, 3, 300, 4)
    assert math.isclose(got, expected, rel_tol=REL)
    # the per-component sum is above any single roofline over the whole step
    assert got > max(linear, head, attention_prefill, attention_decode) + host


def test_an_moe_iteration_by_hand() -> None:
    """3 decodes on the toy MoE: the experts touched per layer are 4 (1 - (1 - 2/4)^3) = 3.5, so
    3.5 experts' weights are read; the expert GEMMs do 2 x 2 x 3 x 64 x 32 FLOPs per token per
    layer, with 3 x 2 / 4 = 1.5 rows per expert at the expert-GEMM fraction."""
    params = pack_params(TOY_MOE, TOY_GPU, "bf16", 1, TOY_PROFILE)
    expert = 3 * 64 * 32  # parameters of one expert
    dense_params = 87_040 - 2 * 6_400 - 2 * 4 * expert  # attention and router, all layers
    linear = roof(2 * 2 * (12_288 + 256) * 3, 1e12 * 0.5, 3, dense_params * 2, 1e10 * 0.5)
    head = roof(2 * 6_400 * 3, 1e12 * 0.5, 3, 6_400 * 2, 1e10 * 0.5)
    touched = 4 * (1 - (1 - 2 / 4) ** 3)
    experts = roof(2 * 2 * 2 * expert * 3, 1e12 * 0.2, 3 * 2 / 4, 2 * touched * expert * 2, 1e10 * 0.5)
    attention_decode = (90 + 3) * 256 / (1e10 * 0.25)
    host = 1e-3 + 1e-4 * 3
    expected = linear + head + experts + attention_decode + host
    assert math.isclose(step_time(params, 0, 0, 0, 0, 3, 90, 3), expected, rel_tol=REL)


def test_tensor_parallel_splits_the_work_and_adds_all_reduces_by_hand() -> None:
    """TP4 on the toy dense model: rates x 4, and 2 L = 4 all-reduces per step of 10 us plus
    log2(4) = 2 rounds of the T x 64 x 2-byte message at half of 10 GB/s."""
    tp1 = pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, TOY_PROFILE)
    tp4 = pack_params(TOY_DENSE, TOY_GPU, "bf16", 4, TOY_PROFILE)
    T = 5
    all_reduce = 2 * 2 * (1e-5 + 2 * T * 64 * 2 / (1e10 * 0.5))
    linear4 = roof(2 * 73_728 * T, 4 * 1e12 * 0.5, T, 73_728 * 2, 4 * 1e10 * 0.5)
    head4 = roof(2 * 6_400 * T, 4 * 1e12 * 0.5, T, 6_400 * 2, 4 * 1e10 * 0.5)
    decode4 = (T * 100 + T) * 256 / (4 * 1e10 * 0.25)
    expected = linear4 + head4 + decode4 + all_reduce + 1e-3 + 1e-4 * T
    assert math.isclose(step_time(tp4, 0, 0, 0, 0, T, T * 100, T), expected, rel_tol=REL)
    assert step_time(tp1, 0, 0, 0, 0, T, T * 100, T) > step_time(tp4, 0, 0, 0, 0, T, T * 100, T) - all_reduce


def test_gemm_efficiency_grows_with_the_rows_it_multiplies() -> None:
    """A compute-bound GEMM over m rows runs at gemm x m / (m + gemm_half_m) of the peak: 10
    rows at half the large-M fraction, 1000 rows within 1% of it."""
    profile = TOY_PROFILE.with_values(bandwidth=0.95)
    params = pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, profile)
    for rows, share in ((10, 0.5), (1000, 1000 / 1010)):
        linear = 2 * 73_728 * rows / (1e12 * 0.5 * share)
        step = step_time(params, rows, chunk_pairs(rows, 0), 0, 1, 0, 0, 1)
        assert step >= linear
    assert math.isclose(1000 / 1010, 0.990099, rel_tol=1e-5)


def test_llama_decode_at_batch_one_is_weight_streaming_plus_overheads() -> None:
    """Llama-3.1-8B bf16 on one H100 under the vllm profile, one sequence with 2,048 tokens of
    context: every weight but the embedding is read once, the KV cache at the KV-read
    bandwidth, plus the host's fixed and per-sequence time; compute is negligible."""
    catalog = shipped_catalog()
    replica = replica_setup(catalog, "llama-3.1-8b", "h100-sxm", "bf16", 1)
    m, gpu, p = replica.model, replica.gpu, replica.profile
    streamed = (m.params - m.hidden * m.vocab) * 2
    assert math.isclose(weights_read_time(replica.params), streamed / (gpu.memory_bandwidth * p.bandwidth), rel_tol=REL)
    kv = 2 * m.layers * m.kv_heads * m.head_dim * 2
    expected = (streamed / (gpu.memory_bandwidth * p.bandwidth) + (2048 + 1) * kv / (gpu.memory_bandwidth * p.kv_bandwidth)
                + p.overhead_s + p.overhead_per_seq_s)
    assert math.isclose(step_time(replica.params, 0, 0, 0, 0, 1, 2048, 1), expected, rel_tol=REL)


def test_fp8_computes_at_the_fp8_peak_with_one_byte_weights() -> None:
    """fp8: the GEMM rate is the fp8 peak (twice bf16 on the toy GPU) and weights are 1 byte;
    a GPU without fp8 peaks computes fp8 at its bf16 peak."""
    bf16 = pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, TOY_PROFILE)
    fp8 = pack_params(TOY_DENSE, TOY_GPU, "fp8", 1, TOY_PROFILE)
    assert fp8[P_GEMM_RATE] == 2 * bf16[P_GEMM_RATE] == 2e12 * 0.5
    assert fp8[P_LINEAR_BYTES] == bf16[P_LINEAR_BYTES] / 2 and fp8[P_HEAD_BYTES] == 6_400
    a100 = shipped_catalog().gpus["a100-80gb"]
    assert "fp8" not in a100.peak_flops
    assert pack_params(TOY_DENSE, a100, "fp8", 1, TOY_PROFILE)[P_GEMM_RATE] == a100.peak_flops["bf16"] * 0.5


@pytest.mark.parametrize("gpu_id", ["h100-sxm", "a100-80gb"])
def test_int4_computes_at_bf16_with_half_the_weight_bytes_of_int8(gpu_id: str) -> None:
    """Weight-only int4: matmuls run in bf16, weights are 0.5 B/param, half of int8's; a
    compute-bound prefill chunk (one that does not reach the LM head) takes exactly as long as
    in bf16."""
    catalog = shipped_catalog()
    m, gpu = catalog.models["llama-3.1-8b"], catalog.gpus[gpu_id]
    profile = EngineProfile()
    int4, int8, bf16 = (pack_params(m, gpu, p, 1, profile) for p in ("int4", "int8", "bf16"))
    assert int4[P_GEMM_RATE] == gpu.peak_flops["bf16"] * profile.gemm
    assert int4[P_LINEAR_BYTES] == 0.5 * int8[P_LINEAR_BYTES]
    P = 4096
    args = (P, chunk_pairs(P, 0), 0, 1, 0, 0, 0)
    assert step_time(int4, *args) == step_time(bf16, *args)


def test_kv_precision_sets_kv_bytes() -> None:
    """An fp8 KV cache halves the decode-attention term of a long-context decode."""
    bf16 = pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, TOY_PROFILE)
    fp8 = pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, TOY_PROFILE, kv_precision="fp8")
    context = 100_000
    saved = (context + 1) * 128 / (1e10 * 0.25)
    assert math.isclose(step_time(bf16, 0, 0, 0, 0, 1, context, 1) - step_time(fp8, 0, 0, 0, 0, 1, context, 1), saved,
                        rel_tol=1e-9)


def test_empty_iteration_takes_no_time() -> None:
    assert step_time(pack_params(TOY_DENSE, TOY_GPU, "bf16", 1, TOY_PROFILE), 0, 0, 0, 0, 0, 0, 0) == 0.0


@pytest.mark.parametrize(("model", "tp", "reported"), [
    ("codellama-34b", 2, 425_648), ("llama-2-70b", 4, 501_712), ("mixtral-8x7b", 2, 440_176),
])
def test_kv_capacity_matches_what_vllm_reported_on_h100(model: str, tp: int, reported: int) -> None:
    """vLLM 0.15.1 on H100 80GB (gpu_memory_utilization 0.9, 2,048-token budget, 16-token blocks)
    reported these KV capacities (shared/data/vllm-v0.15-benchmarks/README.md). The replica's
    capacity, with the driver's 81,559 MiB and the vllm profile's memory reserve, is within 5%
    (it is within 0.2%); with 80e9 bytes it was 14-21% low."""
    replica = replica_setup(shipped_catalog(), model, "h100-sxm", "bf16", tp, max_model_len=4096,
                            max_num_batched_tokens=2048, gpu_memory_utilization=0.9, block_size=16)
    assert abs(replica.kv_tokens / reported - 1) < 0.05
    assert replica.kv_tokens % 16 == 0


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


@pytest.mark.parametrize(("model", "gpu", "tp"), [("llama-3.1-8b", "h100-sxm", 1), ("codellama-34b", "h100-sxm", 2),
                                                  ("mixtral-8x7b", "h100-sxm", 2), ("llama-3.1-8b", "l40s", 1)])
def test_a_decode_only_iteration_is_affine_in_its_context(model: str, gpu: str, tp: int) -> None:
    """`decode_line`: for n decoding sequences with summed context c, step_time = a + b (c + n)
    (dense, tensor-parallel and MoE), b being the KV bytes per token over the KV-read bandwidth:
    what lets the kernel time a stretch of decode-only iterations in closed form."""
    params = replica_setup(shipped_catalog(), model, gpu, "bf16", tp).params
    rng = np.random.default_rng(7)
    for n in (1, 2, 7, 64, 256):
        a, b = decode_line(params, n)
        assert b > 0 and a > 0
        for c in rng.integers(n, 500_000, 20):
            c = int(c)
            assert step_time(params, 0, 0, 0, 0, n, c, n) == pytest.approx(a + b * (c + n), rel=REL)
        # the line's slope is the KV read alone: one more key read costs b
        assert step_time(params, 0, 0, 0, 0, n, 10_001, n) - step_time(params, 0, 0, 0, 0, n, 10_000, n) == \
            pytest.approx(b, rel=1e-6)
