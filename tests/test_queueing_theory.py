"""The serving kernel against queueing theory and against hand-computed iteration times.

In service-time mode a replica serves one request at a time for its drawn service time, and
the shared queue is one FIFO in front of c replicas: exactly the M/M/c, M/D/1 and M/M/1
queues of the textbooks, whose mean waits are known in closed form. The simulated means are
compared within a few standard errors, estimated by batch means (50 consecutive batches whose
length is far beyond the queue's relaxation time, so the batch means are nearly independent).
Seeds are fixed, so every run sees the same numbers.

In roofline mode Little's law must hold on the request arrays, and a request alone on the
pool must take exactly the roofline's prefill and decode times, computed here by hand from
the catalog numbers.
"""

from __future__ import annotations

import math

import numpy as np

from sim.catalog import shipped_catalog
from sim.catalog.sizing import replica_memory
from sim.kernels.batching import DONE, PoolKernel
from sim.kernels.replica import replica_setup

BATCHES = 50


def batch_means(x: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    """The mean of x and its standard error from `batches` consecutive batch means."""
    per = len(x) // batches
    means = x[: per * batches].reshape(batches, per).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / math.sqrt(batches))


def service_time_pool(arrival_s: np.ndarray, service_s: np.ndarray, servers: int) -> PoolKernel:
    """c servers behind one FIFO: a service-time pool with the shared-queue router, run to the end."""
    n = len(arrival_s)
    ones = np.ones(n, dtype=np.int64)
    kernel = PoolKernel(arrival_s, ones, ones, replicas=servers, max_num_seqs=1,
                        max_num_batched_tokens=16, chunked_prefill=False,
                        kv_capacity_tokens=1 << 40, max_model_len=1 << 40,
                        router="shared_queue", service_s=service_s)
    kernel.advance_to(math.inf)
    assert (kernel.status == DONE).all()
    return kernel


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c, offered load a = lambda / mu < c."""
    top = offered**servers / math.factorial(servers) / (1 - offered / servers)
    return top / (sum(offered**k / math.factorial(k) for k in range(servers)) + top)


def test_mmc_mean_wait_matches_erlang_c() -> None:
    """M/M/4, lambda = 3.2, mu = 1 (rho = 0.8), 1,000,000 customers, shared queue.

    Wq = C(c, a) / (c mu - lambda) with Erlang C(4, 3.2) = 8192/13735, so exactly
    Wq = 2048/2747 = 0.74554 s; and P(wait > 0) = C(4, 3.2) = 0.59643.

    Tolerance: 4 batch-means standard errors (50 batches of 20,000 customers; the queue
    relaxes in ~1/(c mu (1 - sqrt(rho))^2) ~ 20 s ~ 70 customers, so batches are nearly
    independent). The standard error of Wq at 1M customers is about 1.5% of Wq; the test also
    requires it to be below 3%, so that the comparison has teeth. A correct kernel fails with
    probability < 1e-4 per fresh seed.
    """
    rng = np.random.default_rng(20240501)
    n, lam, mu, c = 1_000_000, 3.2, 1.0, 4
    arrival = np.cumsum(rng.exponential(1 / lam, n))
    kernel = service_time_pool(arrival, rng.exponential(1 / mu, n), c)
    wait = kernel.dispatch_s - kernel.arrival_s
    exact = erlang_c(c, lam / mu) / (c * mu - lam)
    assert math.isclose(exact, 2048 / 2747, rel_tol=1e-12)
    mean, se = batch_means(wait)
    assert se < 0.03 * exact
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    waited, se_waited = batch_means((wait > 0).astype(float))
    assert abs(waited - erlang_c(c, lam / mu)) < 4 * se_waited, (waited, se_waited)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    """M/D/1, rho = 0.7 (lambda = 0.7, deterministic service 1 s), 1,000,000 customers.

    Pollaczek-Khinchine with zero service variance: Wq = rho / (2 mu (1 - rho)) = 7/6 s.
    Tolerance: 4 batch-means standard errors (50 batches of 20,000 customers, relaxation
    time ~ 1/(mu (1 - sqrt(rho))^2) ~ 37 s ~ 26 customers); the standard error is about 0.5%
    of Wq and must be below 2%.
    """
    rng = np.random.default_rng(20240502)
    n, lam, mu = 1_000_000, 0.7, 1.0
    arrival = np.cumsum(rng.exponential(1 / lam, n))
    kernel = service_time_pool(arrival, np.full(n, 1 / mu), 1)
    rho = lam / mu
    exact = rho / (2 * mu * (1 - rho))
    mean, se = batch_means(kernel.dispatch_s - kernel.arrival_s)
    assert se < 0.02 * exact
    assert abs(mean - exact) < 4 * se, (mean, exact, se)


def test_mm1_mean_sojourn() -> None:
    """M/M/1, lambda = 0.5, mu = 1, 1,000,000 customers: mean sojourn W = 1/(mu - lambda) = 2 s.

    Tolerance: 4 batch-means standard errors (50 batches of 20,000; relaxation ~ 12 s ~ 6
    customers); the standard error is about 0.3% of W and must be below 1%. Every request
    must also be served for exactly its own service time: done = dispatch + service.
    """
    rng = np.random.default_rng(20240503)
    n, lam, mu = 1_000_000, 0.5, 1.0
    arrival = np.cumsum(rng.exponential(1 / lam, n))
    service = rng.exponential(1 / mu, n)
    kernel = service_time_pool(arrival, service, 1)
    np.testing.assert_array_equal(kernel.done_s, kernel.dispatch_s + service)
    mean, se = batch_means(kernel.done_s - kernel.arrival_s)
    exact = 1 / (mu - lam)
    assert se < 0.01 * exact
    assert abs(mean - exact) < 4 * se, (mean, exact, se)


# ------------------------------------------------------------------------------------------
# Roofline mode: an LLM pool
# ------------------------------------------------------------------------------------------


def llama_on_h100(tp: int = 1):
    replica = replica_setup(shipped_catalog(), "llama-3.1-8b", "h100-sxm", "bf16", tp)
    return replica.model, replica.gpu, replica.params


def vllm_on_h100():
    return replica_setup(shipped_catalog(), "llama-3.1-8b", "h100-sxm", "bf16", 1).profile


def time_average_in_system(arrival: np.ndarray, done: np.ndarray, t0: float, t1: float) -> float:
    """(1 / (t1 - t0)) x integral over [t0, t1] of N(t) = #arrived - #done, by its jumps."""
    times = np.concatenate([arrival, done])
    jumps = np.concatenate([np.ones(len(arrival)), -np.ones(len(done))])
    order = np.argsort(times, kind="stable")
    times, in_system = times[order], np.cumsum(jumps[order])  # N on [times[k], times[k + 1])
    edges = np.clip(np.append(times, np.inf), t0, t1)
    return float((in_system * np.diff(edges)).sum() / (t1 - t0))


def test_littles_law_on_an_llm_pool() -> None:
    """L = lambda W on 20,000 LLM requests (llama-3.1-8b, 2 x H100, chunked, ~58 in system).

    Over the window [T0, T1] between the 10% and 90% arrivals: L is the time average of the
    number in system, integrated from the arrival and done arrays; lambda is the completions
    per second in the window and W the mean sojourn of those completions. Within 1%: the
    integral of N over the window equals the sum of those sojourns, minus the time before T0
    of the ones that arrived earlier, plus the time in the window of the ones still in the
    system at T1. The two edge terms have opposite signs and each is at most N(edge) x the
    longest sojourn, ~60 x 6.5 s ~ 400 s, under 0.9% of the ~46,000 request-seconds of the
    integral; in steady state they cancel in expectation (about 0.1% is seen). A lost,
    double-counted or time-travelling request breaks it.
    """
    model, gpu, params = llama_on_h100()
    kv_tokens = replica_memory(model, gpu, "bf16", 1, max_model_len=8192).kv_tokens
    rng = np.random.default_rng(20240504)
    n = 20_000
    arrival = np.cumsum(rng.exponential(1 / 20.0, n))
    kernel = PoolKernel(arrival, rng.integers(50, 2000, n), rng.integers(10, 400, n),
                        replicas=2, max_num_seqs=64, max_num_batched_tokens=2048,
                        chunked_prefill=True, kv_capacity_tokens=kv_tokens, max_model_len=8192,
                        params=params, router="least_outstanding")
    kernel.advance_to(math.inf)
    assert (kernel.status == DONE).all()
    assert (kernel.dispatch_s >= kernel.arrival_s).all()
    assert (kernel.first_token_s > kernel.dispatch_s).all()
    assert (kernel.done_s >= kernel.first_token_s).all()
    t0, t1 = arrival[n // 10], arrival[9 * n // 10]
    in_system = time_average_in_system(kernel.arrival_s, kernel.done_s, t0, t1)
    finished = (kernel.done_s >= t0) & (kernel.done_s <= t1)
    throughput = finished.sum() / (t1 - t0)
    sojourn = (kernel.done_s - kernel.arrival_s)[finished].mean()
    assert in_system > 10  # a loaded pool, not a trivial one
    assert math.isclose(in_system, throughput * sojourn, rel_tol=0.01), (in_system, throughput * sojourn)


def alone_on_the_pool(prompt: int, output: int, params: np.ndarray) -> PoolKernel:
    kernel = PoolKernel(np.zeros(1), np.array([prompt]), np.array([output]), replicas=1,
                        max_num_seqs=8, max_num_batched_tokens=8192, chunked_prefill=True,
                        kv_capacity_tokens=100_000, max_model_len=100_000, params=params)
    kernel.advance_to(math.inf)
    return kernel


def test_decode_at_batch_one_is_the_weight_read() -> None:
    """Prompt P = 1000, output 2, alone: done - first_token is one decode at context P + 1.

    By hand, llama-3.1-8b (bf16) on one H100 SXM under the vllm profile: every component is
    memory-bound, so the step is the streamed weights (all but the embedding table: linear
    layers and LM head) at the weight-streaming bandwidth, plus the KV cache read (the context
    and the token written) at the KV-read bandwidth, plus the host's fixed and per-sequence
    time; KV bytes/token = 2 L n_kv d x 2 B. Compared to 1e-12 relative.
    """
    model, gpu, params = llama_on_h100()
    p = vllm_on_h100()
    P = 1000
    kernel = alone_on_the_pool(P, 2, params)
    L, h, nh, nkv, d, f, V = 32, 4096, 32, 8, 128, 14336, 128256
    assert (model.layers, model.hidden, model.heads, model.kv_heads, model.head_dim, model.ffn,
            model.vocab) == (L, h, nh, nkv, d, f, V)
    context = P + 1
    kv_bytes_per_token = 2 * L * nkv * d * 2
    weights_s = (model.params - h * V) * 2 / (gpu.memory_bandwidth * p.bandwidth)
    kv_s = (context + 1) * kv_bytes_per_token / (gpu.memory_bandwidth * p.kv_bandwidth)
    flops = 2 * L * (h * nh * d + 2 * h * nkv * d + nh * d * h + 3 * h * f) + 2 * h * V
    compute_s = flops / (gpu.peak_flops["bf16"] * p.gemm * 1 / (1 + p.gemm_half_m))
    assert weights_s > 3 * compute_s  # decode at batch 1 reads weights, barely computes
    expected = weights_s + kv_s + p.overhead_s + p.overhead_per_seq_s
    decode = kernel.done_s[0] - kernel.first_token_s[0]
    assert math.isclose(decode, expected, rel_tol=1e-12), (decode, expected)


def test_ttft_at_batch_one_is_the_prefill() -> None:
    """Prompt P = 1000 alone: TTFT is one prefill iteration of P tokens.

    By hand: the linear layers are compute-bound, P x linear FLOPs/token at peak_bf16 x gemm x
    P / (P + gemm_half_m); the LM head (one logit) streams its weights; prefill attention does
    4 L n_h d x P (P + 1) / 2 FLOPs at peak x attention_prefill, or writes P KV tokens if that
    is longer; plus the host's fixed, per-sequence and per-prefill-token time. 1e-12 relative.
    """
    model, gpu, params = llama_on_h100()
    p = vllm_on_h100()
    P = 1000
    kernel = alone_on_the_pool(P, 1, params)
    L, h, nh, nkv, d, f, V = 32, 4096, 32, 8, 128, 14336, 128256
    peak, bw = gpu.peak_flops["bf16"], gpu.memory_bandwidth
    linear_flops = 2 * L * (h * nh * d + 2 * h * nkv * d + nh * d * h + 3 * h * f) * P
    linear_s = linear_flops / (peak * p.gemm * P / (P + p.gemm_half_m))
    linear_memory_s = (model.params - 2 * h * V) * 2 / (bw * p.bandwidth)
    assert linear_s > linear_memory_s
    head_s = max(2 * h * V / (peak * p.gemm / (1 + p.gemm_half_m)), h * V * 2 / (bw * p.bandwidth))
    attention_s = max(4 * L * nh * d * (P * (P + 1) // 2) / (peak * p.attention_prefill * P / (P + p.gemm_half_m)),
                      P * 2 * L * nkv * d * 2 / (bw * p.bandwidth))
    expected = linear_s + head_s + attention_s + p.overhead_s + p.overhead_per_seq_s + p.overhead_per_prefill_token_s * P
    ttft = kernel.first_token_s[0] - kernel.arrival_s[0]
    assert math.isclose(ttft, expected, rel_tol=1e-12), (ttft, expected)
    assert kernel.done_s[0] == kernel.first_token_s[0]
