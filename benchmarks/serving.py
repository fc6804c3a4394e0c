"""Serving kernel vs the pure-SimPy oracle: simulated requests per wall second, and memory.

The workload is the one the serving issue names: 4 replicas of Llama-3.1-8B (bf16) on
H100-SXM, Poisson arrivals at 80% of the pool's measured capacity, lognormal prompt and output
lengths. The kernel runs N requests (default 1M); the oracle runs the first M of the same
requests (default 20k). Prints one JSON object: both rates, their ratio, and the kernel's peak
memory per request (tracemalloc: numpy arrays allocated while building and running the pool).

The `cluster` entry runs the same requests through a cluster of two pools of two replicas
each (the same 4 replicas in all): a premises pool over a LAN and a cloud pool over a 10 ms,
1 Gbps path, two traffic classes (a third confidential, routed to the premises pool only; the
rest overflowing to the cloud past 64 requests per replica), paying the path both ways. It
measures what routing at send time, the paths and the priorities cost against one pool.
The `large_pool` entry runs them through one pool of `--large-replicas` replicas (400) at the
same load per replica: what grows with the number of replicas. `where_the_time_goes` splits
the kernel's wall time into building its arrays and advancing, per event; it counts the
iterations per request, those ended by an event and those a replica ran ahead through
without one (a decode stretch, timed in closed form), and what one roofline call costs.

    python benchmarks/serving.py [--requests 1000000] [--oracle-requests 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.catalog import shipped_catalog  # noqa: E402
from sim.jit import no_refcount_jit  # noqa: E402
from sim.kernels.batching import (  # noqa: E402
    DONE,
    ClusterKernel,
    PathConfig,
    PoolConfig,
    PoolKernel,
    RouteConfig,
)
from sim.kernels.replica import replica_setup  # noqa: E402
from sim.kernels.roofline import step_time  # noqa: E402

REPLICAS = 4


def setup():
    """The vllm engine profile's replica of Llama-3.1-8B on one H100 (step time and KV only:
    the benchmark measures the batching kernel, not the engine's front end)."""
    replica = replica_setup(shipped_catalog(), "llama-3.1-8b", "h100-sxm", "bf16", 1)
    return replica.params, replica.kv_tokens


def lengths(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    prompt = np.clip(np.rint(rng.lognormal(np.log(512) - 0.32, 0.8, n)), 1, 4096).astype(np.int64)
    output = np.clip(np.rint(rng.lognormal(np.log(128) - 0.18, 0.6, n)), 1, 1024).astype(np.int64)
    return prompt, output


def kernel(arrivals, prompt, output, params, kv) -> PoolKernel:
    return PoolKernel(arrivals, prompt, output, replicas=REPLICAS, max_num_seqs=256,
                      max_num_batched_tokens=8192, chunked_prefill=True, kv_capacity_tokens=kv,
                      max_model_len=8192, params=params)


def cluster(arrivals, prompt, output, params, kv, rng) -> ClusterKernel:
    """Two pools of two replicas, two paths, two classes (see the module docstring)."""
    n = len(arrivals)
    pool = dict(replicas=REPLICAS // 2, max_num_seqs=256, max_num_batched_tokens=8192, chunked_prefill=True,
                kv_capacity_tokens=kv, max_model_len=8192, params=params)
    confidential = (rng.random(n) < 1 / 3).astype(np.int64)
    return ClusterKernel(
        [PoolConfig(**pool, path=0), PoolConfig(**pool, path=1)], arrivals, prompt, output,
        paths=[PathConfig(one_way_s=0.00025, bandwidth_bytes_per_s=1.25e9),
               PathConfig(one_way_s=0.01, bandwidth_bytes_per_s=1.25e8, jitter_s=0.0005)],
        routes=[RouteConfig(pools=[0, 1], queue_per_replica=64.0), RouteConfig(pools=[0])],
        request_class=confidential, class_route=[0, 1], class_priority=[0, 1],
        request_bytes=4.0 * prompt + 1024.0, jitter_z=rng.standard_normal(n))


@no_refcount_jit()
def _step_loop(params, prompt, output, n):
    total = 0.0
    for k in range(n):  # a decode batch of 32 with one prefill chunk, as a loaded replica runs
        total += step_time(params, prompt[k] % 512, 512 * (prompt[k] % 512), 0, 1, 32, 32 * (600 + output[k]), 33)
    return total


def step_time_ns(params, prompt, output, n: int = 1_000_000) -> float:
    """What one roofline step time costs, called in a compiled loop (the kernel calls it once
    per iteration)."""
    _step_loop(params, prompt, output, 10)
    started = time.perf_counter()
    _step_loop(params, prompt, output, n)
    return (time.perf_counter() - started) / n * 1e9


def capacity_rps(params, kv, prompt, output) -> float:
    """Requests/s the pool completes when saturated (all requests at t=0)."""
    n = len(prompt)
    k = kernel(np.zeros(n), prompt, output, params, kv)
    k.advance_to(np.inf)
    return n / float(np.nanmax(k.done_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--oracle-requests", type=int, default=20_000)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--large-replicas", type=int, default=400,
                        help="replicas of the large-pool case (the same load per replica)")
    args = parser.parse_args()
    params, kv = setup()
    rng = np.random.default_rng(2026)
    prompt, output = lengths(args.requests, rng)
    warm = kernel(np.zeros(10), prompt[:10], output[:10], params, kv)
    warm.advance_to(np.inf)  # compile (or load the numba cache) outside the timing
    capacity = capacity_rps(params, kv, prompt[:20_000], output[:20_000])
    rate = args.load * capacity
    arrivals = np.cumsum(rng.exponential(1.0 / rate, args.requests))

    started = time.perf_counter()
    k = kernel(arrivals, prompt, output, params, kv)
    built = time.perf_counter()
    k.advance_to(np.inf)
    kernel_s = time.perf_counter() - started
    advance_s = kernel_s - (built - started)
    completed = int((k.status == DONE).sum())
    del k
    tracemalloc.start()  # memory in a run of its own: tracing slows allocation, not to be timed
    k = kernel(arrivals, prompt, output, params, kv)
    k.advance_to(np.inf)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    step_ns = step_time_ns(params, prompt, output)

    # many replicas at the same load per replica: what grows with R (event choice, routing, caches)
    large = args.large_replicas
    large_arrivals = np.cumsum(rng.exponential(1.0 / (rate * large / REPLICAS), args.requests))
    started = time.perf_counter()
    big = PoolKernel(large_arrivals, prompt, output, replicas=large, max_num_seqs=256, max_num_batched_tokens=8192,
                     chunked_prefill=True, kv_capacity_tokens=kv, max_model_len=8192, params=params)
    big.advance_to(np.inf)
    large_s = time.perf_counter() - started

    cluster_rng = np.random.default_rng(7)
    warm_cluster = cluster(np.zeros(10), prompt[:10], output[:10], params, kv, cluster_rng)
    warm_cluster.advance_to(np.inf)
    started = time.perf_counter()
    c = cluster(arrivals, prompt, output, params, kv, cluster_rng)
    c.advance_to(np.inf)
    cluster_s = time.perf_counter() - started

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from oracle import run_oracle  # the pure-SimPy reference model

    m = args.oracle_requests
    started = time.perf_counter()
    run_oracle(arrivals[:m], prompt[:m], output[:m], replicas=REPLICAS, max_num_seqs=256,
                  max_num_batched_tokens=8192, chunked_prefill=True, kv_capacity_tokens=kv,
                  max_model_len=8192, params=params)
    oracle_s = time.perf_counter() - started

    kernel_rate = args.requests / kernel_s
    oracle_rate = m / oracle_s
    print(json.dumps({
        "benchmark": "serving",
        "replicas": REPLICAS, "model": "llama-3.1-8b", "gpu": "h100-sxm", "precision": "bf16",
        "load": args.load, "capacity_rps": capacity, "arrival_rate_rps": rate,
        "kernel_requests": args.requests, "kernel_completed": completed, "kernel_wall_s": kernel_s,
        "kernel_requests_per_wall_s": kernel_rate, "kernel_events": int(k.events),
        "kernel_iterations": int(k.iterations.sum()),
        "where_the_time_goes": {
            "build_s": kernel_s - advance_s, "advance_s": advance_s,
            "events_per_request": k.events / args.requests,
            # every request is sent and arrives (two events); the rest are iteration ends
            "iteration_end_events_per_request": k.events / args.requests - 2.0,
            "iterations_per_request": float(k.iterations.sum()) / args.requests,
            # decode-only iterations a replica ran ahead through (closed-form stretches): no event
            "iterations_without_event_per_request": (float(k.iterations.sum()) - (k.events - 2.0 * args.requests))
            / args.requests,
            "ns_per_event": advance_s / k.events * 1e9,
            "step_time_ns_per_call": step_ns,
        },
        "oracle_requests": m, "oracle_wall_s": oracle_s, "oracle_requests_per_wall_s": oracle_rate,
        "speedup_vs_oracle": kernel_rate / oracle_rate,
        "peak_bytes_per_request": peak / args.requests,
        "cluster": {"pools": 2, "replicas": REPLICAS, "classes": 2, "wall_s": cluster_s,
                    "requests_per_wall_s": args.requests / cluster_s,
                    "completed": int((c.status == DONE).sum()),
                    "share_to_cloud": float((c.pool == 1).mean()),
                    "ratio_to_single_pool": (args.requests / cluster_s) / kernel_rate},
        "large_pool": {"replicas": large, "arrival_rate_rps": rate * large / REPLICAS, "wall_s": large_s,
                       "requests_per_wall_s": args.requests / large_s, "events": int(big.events),
                       "ns_per_event": large_s / big.events * 1e9,
                       "completed": int((big.status == DONE).sum())},
        "targets": {"speedup_vs_oracle": 100, "kernel_requests_per_wall_s": 3_000_000,
                    "peak_bytes_per_request": 200},
    }, indent=2))


if __name__ == "__main__":
    main()
