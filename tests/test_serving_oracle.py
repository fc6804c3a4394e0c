"""The serving kernel and the pure-SimPy oracle give the same per-request results.

For identical inputs, `sim.kernels.batching.PoolKernel` and `tests/oracle.py` must agree on
every request's dispatch, first-token and completion time (to 1e-9 s), its status, replica,
model version and number of preemptions. Hypothesis draws small pools (1-60 requests,
exponential or exactly tied arrivals, 1-4 replicas, tight to ample KV, every router, prefix
groups with and without caching, chunked prefill on and off) with the real llama-3.1-8b on
h100-sxm roofline and with a tiny synthetic one, in open and closed loops, and in the
service-time and dynamic-batching modes; a seeded sweep and explicit examples make sure that
preemption, rejection, prefix-cache hits, evictions and chunking really happen.
Advancing the kernel in random slices must give bit-identical arrays to one advance.

The kernel deviations found while writing the oracle are pinned at the end as strict
expected failures, each with its smallest input; they turn into plain passes once fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracle import OracleResult, run_oracle

from sim.catalog import shipped_catalog
from sim.kernels import roofline as R
from sim.kernels.batching import DONE, PF_BUSY_UNTIL, PF_CK_START, PI_AHEAD, REJECTED, PoolKernel
from sim.kernels.replica import replica_setup
from sim.kernels.roofline import chunk_pairs, step_time

ROUTERS = ["shared_queue", "round_robin", "least_outstanding", "random"]
AMPLE = 10**6


def llama_on_h100() -> np.ndarray:
    catalog = shipped_catalog()
    return replica_setup(catalog, "llama-3.1-8b", "h100-sxm", "bf16", 1).params


def tiny_params() -> np.ndarray:
    """A made-up engine: decodes take ~20 ms, long prefills ~0.3 s; both roofs matter."""
    p = np.zeros(R.P_SIZE)
    p[R.P_LINEAR_FLOPS_PER_TOKEN] = 1.0
    p[R.P_LINEAR_BYTES] = 20.0
    p[R.P_HEAD_FLOPS_PER_TOKEN] = 0.5
    p[R.P_ATTN_FLOPS_PER_PAIR] = 0.01
    p[R.P_KV_BYTES_PER_TOKEN] = 0.1
    for rate in (R.P_GEMM_RATE, R.P_ATTN_RATE, R.P_EXPERT_RATE, R.P_WEIGHT_BW, R.P_KV_BW):
        p[rate] = 1000.0
    p[R.P_OVERHEAD_S] = 0.001
    p[R.P_OVERHEAD_PER_SEQ_S] = 1e-4
    return p


PARAMS = {"llama-3.1-8b/h100-sxm": llama_on_h100(), "tiny": tiny_params()}
# a typical iteration time of each engine, the unit of the arrival gaps
TICK_S = {"llama-3.1-8b/h100-sxm": 0.01, "tiny": 0.05}


@dataclass
class PoolCase:
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)

    def kernel(self) -> PoolKernel:
        return PoolKernel(self.arrival_s.copy(), self.prompt_tokens, self.output_tokens,
                          **self.options)

    def run_kernel(self) -> PoolKernel:
        kernel = self.kernel()
        kernel.advance_to(math.inf)
        return kernel

    def run_oracle(self) -> OracleResult:
        return run_oracle(self.arrival_s, self.prompt_tokens, self.output_tokens,
                          **self.options)


def assert_same(kernel: PoolKernel, oracle: OracleResult) -> None:
    for name in ("arrival_s", "dispatch_s", "first_token_s", "done_s"):
        k, o = getattr(kernel, name), getattr(oracle, name)
        np.testing.assert_array_equal(np.isnan(k), np.isnan(o), err_msg=f"{name}: NaN positions")
        np.testing.assert_allclose(k, o, rtol=0, atol=1e-9, err_msg=name)
    for name in ("status", "replica", "version", "preemptions"):
        np.testing.assert_array_equal(getattr(kernel, name), getattr(oracle, name), err_msg=name)
    assert np.isin(kernel.status, [DONE, REJECTED]).all(), "a request never finished"


def check(case: PoolCase) -> tuple[PoolKernel, OracleResult]:
    kernel = case.run_kernel()
    oracle = case.run_oracle()
    assert_same(kernel, oracle)
    return kernel, oracle


# ------------------------------------------------------------------------------------------
# Hypothesis: random small pools
# ------------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gaps(tick: float, mean_ticks: float) -> st.SearchStrategy[float]:
    """Exponential gaps, or exact ties (0) and whole ticks."""
    exponential = st.floats(0, 1, exclude_max=True).map(lambda u: -math.log1p(-u) * mean_ticks * tick)
    return st.one_of(exponential, st.integers(0, 3).map(lambda k: k * tick))


@st.composite
def pool_cases(draw: st.DrawFn, closed_loop: bool = False) -> PoolCase:
    n = draw(st.integers(1, 60))
    engine = draw(st.sampled_from(sorted(PARAMS)))
    tick = TICK_S[engine]
    mean_ticks = draw(st.sampled_from([0.2, 1.0, 5.0]))
    arrival = np.cumsum(draw(st.lists(gaps(tick, mean_ticks), min_size=n, max_size=n)))
    prompt = np.array(draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)), dtype=np.int64)
    output = np.array(draw(st.lists(st.integers(1, 80), min_size=n, max_size=n)), dtype=np.int64)
    options: dict[str, Any] = dict(
        replicas=draw(st.integers(1, 4)),
        max_num_seqs=draw(st.integers(1, 16)),
        max_num_batched_tokens=draw(st.integers(16, 512)),
        chunked_prefill=draw(st.booleans()),
        kv_capacity_tokens=draw(st.one_of(st.integers(40, 800), st.just(AMPLE))),
        max_model_len=draw(st.one_of(st.integers(50, 400), st.just(AMPLE))),
        params=PARAMS[engine],
        router=draw(st.sampled_from(ROUTERS)),
        router_u=np.array(draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=n, max_size=n))),
        async_scheduling=draw(st.booleans()),
    )
    if draw(st.booleans()):  # an engine front end between iteration ends and the clients
        options.update(frontend_s=draw(st.sampled_from([0.0, 0.001, tick])),
                       frontend_per_step=draw(st.sampled_from([0.0, 0.25, 1.0])))
    if draw(st.booleans()):
        groups = draw(st.integers(1, 3))
        prefix_of_group = draw(st.lists(st.integers(1, 64), min_size=groups, max_size=groups))
        member = st.one_of(st.integers(0, groups - 1), st.just(-1))
        group = np.array(draw(st.lists(member, min_size=n, max_size=n)))
        prefix = np.where(group >= 0, np.array(prefix_of_group)[np.maximum(group, 0)], 0)
        if draw(st.booleans()):
            prompt = np.where(group >= 0, np.maximum(prompt, prefix + 1), prompt)
        else:  # as a trace has it: a prompt shorter than its group's prefix holds only part of it
            prefix = np.minimum(prefix, prompt - 1)
            group = np.where(prefix > 0, group, -1)
            prefix = np.where(group >= 0, prefix, 0)
        options.update(prefix_group=group, prefix_tokens=prefix, prefix_caching=draw(st.sampled_from([True, True, False])))
    if closed_loop:
        # the first clients arrive together (see test_closed_loop_arrivals_are_taken_in_time_order)
        clients = draw(st.integers(1, 8))
        start = draw(st.sampled_from([0.0, 0.013]))
        arrival = np.where(np.arange(n) < clients, start, np.nan)
        delay = draw(st.one_of(st.just(0.0), st.floats(0, 3 * tick)))
        options.update(clients=clients, loop_delay_s=delay)
    return PoolCase(arrival, prompt, output, options)


@st.composite
def service_time_cases(draw: st.DrawFn) -> PoolCase:
    """Service-time mode; whole-tick arrivals and services make arrivals tie with iteration ends."""
    n = draw(st.integers(1, 60))
    arrival = np.cumsum(draw(st.lists(gaps(1.0, draw(st.sampled_from([0.3, 1.0]))), min_size=n, max_size=n)))
    exponential = st.floats(0, 1, exclude_max=True).map(lambda u: -math.log1p(-u))
    service = draw(st.lists(st.one_of(exponential, st.integers(1, 3).map(float)), min_size=n, max_size=n))
    options: dict[str, Any] = dict(
        replicas=draw(st.integers(1, 4)),
        max_num_seqs=draw(st.integers(1, 16)),
        max_num_batched_tokens=16,
        chunked_prefill=draw(st.booleans()),
        kv_capacity_tokens=AMPLE,
        max_model_len=AMPLE,
        router=draw(st.sampled_from(ROUTERS)),
        router_u=np.array(draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=n, max_size=n))),
        service_s=np.array(service),
    )
    prompt = np.array(draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)), dtype=np.int64)
    return PoolCase(arrival, prompt, np.ones(n, dtype=np.int64), options)


def label_features(oracle: OracleResult) -> None:
    """Hypothesis statistics (pytest --hypothesis-show-statistics): what the examples exercised."""
    for feature in ("preemptions", "rejections", "prefix_hits", "evictions", "partial_chunks"):
        if oracle.stats[feature] > 0:
            event(feature)


@st.composite
def dynamic_batch_cases(draw: st.DrawFn) -> PoolCase:
    """Dynamic batching; on the quarter-second grid, arrivals tie with batch ends and timers."""
    n = draw(st.integers(1, 60))
    on_grid = draw(st.booleans())
    if on_grid:
        gap = st.integers(0, 2).map(lambda k: k * 0.25)
        latency = (0.5, 0.25)
        delay = draw(st.sampled_from([0.0, 0.5, 1.0]))
    else:
        gap = gaps(0.01, draw(st.sampled_from([0.5, 2.0, 10.0])))
        latency = (draw(st.floats(0.001, 0.02)), draw(st.floats(0.0, 0.005)))
        delay = draw(st.sampled_from([0.0, 0.01, 0.05]))
    arrival = np.cumsum(draw(st.lists(gap, min_size=n, max_size=n)))
    options: dict[str, Any] = dict(
        replicas=draw(st.integers(1, 4)),
        max_num_seqs=draw(st.integers(1, 16)),
        max_num_batched_tokens=64,
        chunked_prefill=draw(st.booleans()),
        kv_capacity_tokens=draw(st.one_of(st.integers(40, 800), st.just(AMPLE))),
        max_model_len=draw(st.one_of(st.integers(50, 400), st.just(AMPLE))),
        router=draw(st.sampled_from(ROUTERS)),
        router_u=np.array(draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=n, max_size=n))),
        batch_latency=latency,
        max_queue_delay_s=delay,
        frontend_s=draw(st.sampled_from([0.0, 0.0, 0.25 if on_grid else 0.003])),
        frontend_per_step=draw(st.sampled_from([0.0, 0.0, 0.5])),
    )
    prompt = np.array(draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)), dtype=np.int64)
    output = np.array(draw(st.lists(st.integers(1, 80), min_size=n, max_size=n)), dtype=np.int64)
    if draw(st.booleans()):
        clients = draw(st.integers(1, 6))
        arrival = np.where(np.arange(n) < clients, 0.0, np.nan)
        options.update(clients=clients, loop_delay_s=draw(st.sampled_from([0.0, 0.25])))
    return PoolCase(arrival, prompt, output, options)


@PROPERTY
@given(pool_cases())
def test_kernel_matches_oracle(case: PoolCase) -> None:
    """Open loop, roofline mode: identical per-request outcomes."""
    label_features(check(case)[1])


@PROPERTY
@given(pool_cases(closed_loop=True))
def test_kernel_matches_oracle_in_a_closed_loop(case: PoolCase) -> None:
    """Closed loop (the first `clients` requests arrive together): identical outcomes."""
    label_features(check(case)[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_cases(), st.integers(5, 40), st.booleans())
def test_kernel_matches_oracle_with_many_replicas(case: PoolCase, replicas: int, tied: bool) -> None:
    """The kernel finds the next iteration end in a tournament tree over the replicas (levels
    appear from 3 replicas on, odd sizes leave a leaf paired with a node); ties go to the
    lowest replica as the oracle's scan has it. `tied`: every iteration lasts the same, so
    ends coincide across many replicas."""
    case = replace(case, options={**case.options, "replicas": replicas})
    if tied:
        case = replace(case, arrival_s=np.floor(case.arrival_s / TICK_S["tiny"]) * TICK_S["tiny"],
                       options={**case.options, "service_s": np.full(len(case.arrival_s), TICK_S["tiny"])})
    check(case)


@settings(max_examples=100, deadline=None)
@given(service_time_cases())
def test_kernel_matches_oracle_in_service_time_mode(case: PoolCase) -> None:
    """Service-time mode, arrivals and iteration ends often at the same instant."""
    check(case)


@settings(max_examples=100, deadline=None)
@given(dynamic_batch_cases())
def test_kernel_matches_oracle_with_dynamic_batching(case: PoolCase) -> None:
    """Classic models: batches start when full or when the head has waited long enough."""
    check(case)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pool_cases(), cuts=st.lists(st.floats(0, 1.2), max_size=12), snaps=st.lists(st.integers(0, 10**6), max_size=6))
def test_advance_in_slices_is_bit_identical(case: PoolCase, cuts: list[float], snaps: list[int]) -> None:
    """advance_to(t1), ..., advance_to(inf) leaves every array exactly as one advance_to(inf).

    Cut times are random fractions of the run's length, plus some exact event times
    (arrivals, first tokens, completions), where `<= t` decides what is taken. (The `events`
    counter is not compared: decode-only iterations run ahead up to t, so it counts calls.
    Under the roofline they are timed in closed form from their stretch's start, wherever a
    run or a cut stopped. A run ahead also goes past arrivals and is taken back by one that joins its replica's
    queue: the cuts, which stop runs, must not change any result.)
    """
    whole = case.run_kernel()
    events = np.concatenate([whole.arrival_s, whole.first_token_s, whole.done_s])
    events = events[np.isfinite(events)]
    horizon = float(events.max())
    times = [c * horizon for c in cuts] + [float(events[s % len(events)]) for s in snaps]
    sliced = case.kernel()
    for t in sorted(times):
        sliced.advance_to(t)
    sliced.advance_to(math.inf)
    arrays = [name for name, value in vars(whole).items() if isinstance(value, np.ndarray)]
    assert {"req_i", "req_f", "rep_i", "rep_f"} <= set(arrays)
    # where a replica's last run ahead started is bookkeeping that depends on the cuts
    # (a run stops at each one); everything else must be equal
    own = {"rep_i": slice(0, PI_AHEAD), "rep_f": slice(0, PF_CK_START)}
    for name in arrays:
        columns = own.get(name, slice(None))
        assert np.array_equal(getattr(whole, name)[..., columns], getattr(sliced, name)[..., columns],
                              equal_nan=True), name


# ------------------------------------------------------------------------------------------
# A seeded sweep: equality on every case, and every feature exercised somewhere
# ------------------------------------------------------------------------------------------


def seeded_case(rng: np.random.Generator) -> PoolCase:
    n = int(rng.integers(1, 61))
    engine = str(rng.choice(sorted(PARAMS)))
    tick = TICK_S[engine]
    gap = rng.exponential(tick * rng.choice([0.2, 1.0, 5.0]), n)
    if rng.random() < 0.3:
        gap = np.round(gap / tick) * tick  # exact ties
    prompt = rng.integers(1, 301, n)
    output = rng.integers(1, 81, n)
    options: dict[str, Any] = dict(
        replicas=int(rng.integers(1, 5)),
        max_num_seqs=int(rng.integers(1, 17)),
        max_num_batched_tokens=int(rng.integers(16, 513)),
        chunked_prefill=bool(rng.random() < 0.5),
        kv_capacity_tokens=int(rng.integers(40, 800)) if rng.random() < 0.6 else AMPLE,
        max_model_len=int(rng.integers(50, 400)) if rng.random() < 0.5 else AMPLE,
        params=PARAMS[engine],
        router=ROUTERS[int(rng.integers(0, 4))],
        router_u=rng.random(n),
    )
    if rng.random() < 0.6:
        groups = int(rng.integers(1, 4))
        prefix_of_group = rng.integers(1, 64, groups)
        group = np.where(rng.random(n) < 0.7, rng.integers(0, groups, n), -1)
        prefix = np.where(group >= 0, prefix_of_group[np.maximum(group, 0)], 0)
        prompt = np.where(group >= 0, np.maximum(prompt, prefix + 1), prompt)
        options.update(prefix_group=group, prefix_tokens=prefix, prefix_caching=bool(rng.random() < 0.8))
    return PoolCase(np.cumsum(gap), prompt, output, options)


def test_seeded_sweep_matches_and_exercises_every_feature() -> None:
    """120 seeded pools agree, and between them preempt, reject, hit, evict and chunk."""
    totals: dict[str, int] = {}
    routers: set[str] = set()
    for seed in range(120):
        case = seeded_case(np.random.default_rng(seed))
        kernel, oracle = check(case)
        routers.add(case.options["router"])
        counts = dict(oracle.stats, kernel_preemptions=int(kernel.preemptions.sum()),
                      kernel_rejections=int((kernel.status == REJECTED).sum()))
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    assert routers == set(ROUTERS)
    for feature in ("preemptions", "kernel_preemptions", "rejections", "kernel_rejections",
                    "prefix_hits", "prefixes_cached", "evictions", "partial_chunks",
                    "mixed_iterations"):
        assert totals[feature] > 0, feature


# ------------------------------------------------------------------------------------------
# Explicit examples, one per feature
# ------------------------------------------------------------------------------------------


def test_preemption_in_both() -> None:
    """Six requests at once outgrow 300 KV tokens while decoding: the newest are preempted."""
    n = 6
    for chunked in (False, True):
        case = PoolCase(np.zeros(n), np.full(n, 40), np.full(n, 60), dict(
            replicas=1, max_num_seqs=8, max_num_batched_tokens=512, chunked_prefill=chunked,
            kv_capacity_tokens=300, max_model_len=AMPLE, params=PARAMS["tiny"]))
        kernel, oracle = check(case)
        assert kernel.preemptions.sum() > 0
        assert oracle.stats["preemptions"] == kernel.preemptions.sum()
        assert kernel.preemptions[0] == 0  # the oldest always progresses


@pytest.mark.parametrize(("max_model_len", "kv_capacity"), [(100, AMPLE), (AMPLE, 100)])
def test_rejection_in_both(max_model_len: int, kv_capacity: int) -> None:
    """101 tokens against a limit of 100 (model length, or KV): rejected at arrival."""
    case = PoolCase(np.array([0.0, 0.1, 0.2]), np.array([90, 10, 1]), np.array([11, 10, 100]), dict(
        replicas=2, max_num_seqs=4, max_num_batched_tokens=64, chunked_prefill=True,
        kv_capacity_tokens=kv_capacity, max_model_len=max_model_len, params=PARAMS["tiny"]))
    kernel, _ = check(case)
    np.testing.assert_array_equal(kernel.status, [REJECTED, DONE, REJECTED])
    np.testing.assert_array_equal(kernel.done_s[[0, 2]], [0.0, 0.2])
    assert np.isnan(kernel.dispatch_s[[0, 2]]).all() and (kernel.replica[[0, 2]] == -1).all()


@pytest.mark.parametrize("caching", [True, False])
def test_prefix_cache_hit_skips_the_prefix(caching: bool) -> None:
    """The second request of a group prefills only its own 50 tokens, after 200 cached ones."""
    params = PARAMS["llama-3.1-8b/h100-sxm"]
    case = PoolCase(np.array([0.0, 1.0]), np.array([250, 250]), np.array([1, 1]), dict(
        replicas=1, max_num_seqs=4, max_num_batched_tokens=512, chunked_prefill=True,
        kv_capacity_tokens=10_000, max_model_len=AMPLE, params=params,
        prefix_group=np.array([0, 0]), prefix_tokens=np.array([200, 200]), prefix_caching=caching))
    kernel, oracle = check(case)
    full = step_time(params, 250, chunk_pairs(250, 0), 0, 1, 0, 0, 1)
    hit = step_time(params, 50, chunk_pairs(50, 200), 200, 1, 0, 0, 1)
    assert kernel.first_token_s[0] == full
    assert kernel.first_token_s[1] - 1.0 == pytest.approx(hit if caching else full, rel=1e-12)
    assert oracle.stats["prefix_hits"] == (1 if caching else 0)


def test_least_recently_used_prefix_is_evicted() -> None:
    """KV of 250 holds two cached 100-token prefixes and one 10-token remainder.

    0 caches g0, 1 caches g1, 2 hits g0 (so g1 is now least recently used), 3 (g2) must evict
    g1 to fit, and 4 (g1) misses and evicts g0: one hit, two evictions, and 4 prefills all of
    its 110 tokens.
    """
    params = PARAMS["tiny"]
    case = PoolCase(np.arange(5.0), np.full(5, 110), np.ones(5, dtype=np.int64), dict(
        replicas=1, max_num_seqs=1, max_num_batched_tokens=512, chunked_prefill=False,
        kv_capacity_tokens=250, max_model_len=AMPLE, params=params,
        prefix_group=np.array([0, 1, 0, 2, 1]), prefix_tokens=np.full(5, 100)))
    kernel, oracle = check(case)
    assert oracle.stats["prefix_hits"] == 1
    assert oracle.stats["evictions"] == 2
    full = step_time(params, 110, chunk_pairs(110, 0), 0, 1, 0, 0, 1)
    assert kernel.first_token_s[4] - 4.0 == pytest.approx(full, rel=1e-12)


def test_chunked_prefill_splits_a_long_prompt() -> None:
    """A 300-token prompt under a 64-token budget takes five chunks: 64, 64, 64, 64, 44."""
    params = PARAMS["llama-3.1-8b/h100-sxm"]
    case = PoolCase(np.zeros(1), np.array([300]), np.array([1]), dict(
        replicas=1, max_num_seqs=4, max_num_batched_tokens=64, chunked_prefill=True,
        kv_capacity_tokens=AMPLE, max_model_len=AMPLE, params=params))
    kernel, oracle = check(case)
    t = 0.0
    for done in range(0, 300, 64):
        chunk = min(64, 300 - done)
        t += step_time(params, chunk, chunk_pairs(chunk, done), done, 1, 0, 0, 1 if done + chunk == 300 else 0)
    assert kernel.first_token_s[0] == t
    assert oracle.stats["partial_chunks"] == 4


def test_arrivals_go_before_iteration_ends_at_the_same_time() -> None:
    """At t=1 request 3 arrives as replica 0 ends an iteration; it is routed first.

    least_outstanding: replica 0 runs 0 (until t=1) with 2 queued, replica 1 runs 1 (until 5).
    Routed before replica 0's iteration end, 3 sees 2 vs 1 outstanding and joins replica 1;
    had the end gone first it would have seen 1 vs 1 and joined replica 0.
    """
    case = PoolCase(np.array([0.0, 0.0, 0.2, 1.0]), np.ones(4, dtype=np.int64), np.ones(4, dtype=np.int64), dict(
        replicas=2, max_num_seqs=1, max_num_batched_tokens=16, chunked_prefill=False,
        kv_capacity_tokens=AMPLE, max_model_len=AMPLE, router="least_outstanding",
        service_s=np.array([1.0, 5.0, 1.0, 1.0])))
    kernel, _ = check(case)
    np.testing.assert_array_equal(kernel.replica, [0, 1, 0, 1])
    np.testing.assert_array_equal(kernel.dispatch_s, [0.0, 0.0, 1.0, 5.0])


def test_partial_batch_starts_when_its_head_has_waited_long_enough() -> None:
    """S = 4, max_queue_delay 1 s, latency 0.5 + 0.25 b: the first batch starts at its head's
    deadline (t = 1) with the 3 requests that arrived by then, the one arriving at exactly
    t = 1 included (arrivals go before the timer); the next two wait for theirs (t = 3)."""
    case = PoolCase(np.array([0.0, 0.5, 1.0, 2.0, 2.5]), np.ones(5, dtype=np.int64), np.ones(5, dtype=np.int64), dict(
        replicas=1, max_num_seqs=4, max_num_batched_tokens=16, chunked_prefill=False,
        kv_capacity_tokens=AMPLE, max_model_len=AMPLE, router="round_robin",
        batch_latency=(0.5, 0.25), max_queue_delay_s=1.0))
    kernel, _ = check(case)
    np.testing.assert_array_equal(kernel.dispatch_s, [1.0, 1.0, 1.0, 3.0, 3.0])
    np.testing.assert_array_equal(kernel.done_s, [2.25, 2.25, 2.25, 4.0, 4.0])
    np.testing.assert_array_equal(kernel.first_token_s, kernel.done_s)


def test_lowest_replica_ends_first_at_the_same_time() -> None:
    """Both replicas end at t=1 with request 2 waiting in the shared queue: replica 0 takes it."""
    case = PoolCase(np.array([0.0, 0.0, 0.5]), np.ones(3, dtype=np.int64), np.ones(3, dtype=np.int64), dict(
        replicas=2, max_num_seqs=1, max_num_batched_tokens=16, chunked_prefill=False,
        kv_capacity_tokens=AMPLE, max_model_len=AMPLE, router="shared_queue",
        service_s=np.ones(3)))
    kernel, _ = check(case)
    np.testing.assert_array_equal(kernel.replica, [0, 1, 0])
    np.testing.assert_array_equal(kernel.done_s, [1.0, 1.0, 2.0])


def test_a_request_holding_part_of_a_prefix_never_caches_it() -> None:
    """Group 0's system prompt is 64 tokens. Request 0 (a trace's 30-token prompt) holds only
    its first 29 and finishes first; request 1 (100 tokens, the whole prefix) comes later. Had
    request 0 cached "the prefix", request 1 would skip 64 tokens of which only 29 were ever
    computed; it must prefill all 100, exactly as when it runs alone, and then cache the prefix
    so that request 2 (the whole prefix too) skips it."""
    tiny = PARAMS["tiny"]
    base = dict(replicas=1, max_num_seqs=4, max_num_batched_tokens=512, chunked_prefill=True,
                kv_capacity_tokens=AMPLE, max_model_len=AMPLE, params=tiny, prefix_caching=True)
    arrival = np.array([0.0, 5.0, 10.0])
    prompt, output = np.array([30, 100, 100]), np.array([1, 1, 1])
    case = PoolCase(arrival, prompt, output, dict(base, prefix_group=np.array([0, 0, 0]),
                                                  prefix_tokens=np.array([29, 64, 64])))
    kernel, _ = check(case)
    alone = PoolCase(arrival[1:2], prompt[1:2], output[1:2], dict(base)).run_kernel()
    assert kernel.done_s[1] - 5.0 == alone.done_s[0] - 5.0  # request 1 computed all 100 tokens
    full = step_time(tiny, 100, chunk_pairs(100, 0), 0, 1, 0, 0, 1)
    hit = step_time(tiny, 36, chunk_pairs(36, 64), 64, 1, 0, 0, 1)
    assert kernel.done_s[1] - 5.0 == pytest.approx(full) and kernel.done_s[2] - 10.0 == pytest.approx(hit)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_cases(), st.integers(16, 48))
def test_least_outstanding_tree_matches_the_router_scan(case: PoolCase, replicas: int) -> None:
    """From 16 replicas on, the kernel answers least_outstanding from a tree of the replicas'
    counts (a range query per pool) instead of the router's scan; the oracle scans. Same
    choices, same results."""
    check(replace(case, options={**case.options, "replicas": replicas, "router": "least_outstanding"}))


def test_lowest_of_many_replicas_ends_first_at_the_same_time() -> None:
    """Eleven replicas all end at t=1 with ten requests waiting in the shared queue: replicas
    0..9 take them in order (the tree's tie-break, across its levels and its odd leaf)."""
    n = 21
    arrival = np.concatenate([np.zeros(11), np.full(10, 0.5)])
    case = PoolCase(arrival, np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64), dict(
        replicas=11, max_num_seqs=1, max_num_batched_tokens=16, chunked_prefill=False,
        kv_capacity_tokens=AMPLE, max_model_len=AMPLE, router="shared_queue", service_s=np.ones(n)))
    kernel, _ = check(case)
    np.testing.assert_array_equal(kernel.replica, list(range(11)) + list(range(10)))
    np.testing.assert_array_equal(kernel.done_s, [1.0] * 11 + [2.0] * 10)


# ------------------------------------------------------------------------------------------
# Regressions: deviations the oracle once found in the kernel
# ------------------------------------------------------------------------------------------


def test_decode_kv_is_taken_before_prompts_are_admitted() -> None:
    """KV never exceeds capacity: 0 decodes (10 KV + 1) when 1 asks for 10 of the 20 tokens.

    After 0's prefill, 0 holds 10 tokens and writes one more in the next iteration; 1 (prompt
    10) fits only if those 11 are not counted. The docstring's step 1 reserves them first.
    """
    params = tiny_params()
    case = PoolCase(np.array([0.0, 0.001]), np.array([10, 10]), np.array([5, 1]), dict(
        replicas=1, max_num_seqs=4, max_num_batched_tokens=16, chunked_prefill=True,
        kv_capacity_tokens=20, max_model_len=100, params=params))
    kernel = case.run_kernel()
    assert_same(kernel, case.run_oracle())


def test_closed_loop_arrivals_are_taken_in_time_order() -> None:
    """Client 0 finishes at 1 and releases request 2 at 1; client 1 only arrives at 10.

    Request 2 must be served at 1-2 on the idle replica, not after request 1 at 11-12.
    """
    case = PoolCase(np.array([0.0, 10.0, np.nan]), np.ones(3, dtype=np.int64), np.ones(3, dtype=np.int64), dict(
        replicas=1, max_num_seqs=1, max_num_batched_tokens=16, chunked_prefill=False,
        kv_capacity_tokens=100, max_model_len=100, router="shared_queue", service_s=np.ones(3),
        clients=2))
    kernel = case.run_kernel()
    np.testing.assert_array_equal(kernel.done_s, [1.0, 11.0, 2.0])
    assert_same(kernel, case.run_oracle())


def test_request_whose_prompt_is_a_cached_prefix_completes() -> None:
    """Request 1's 4-token prompt is exactly group 0's cached prefix: it must still finish."""
    for chunked in (True, False):
        case = PoolCase(np.array([0.0, 5.0]), np.array([8, 4]), np.array([2, 2]), dict(
            replicas=1, max_num_seqs=4, max_num_batched_tokens=16, chunked_prefill=chunked,
            kv_capacity_tokens=100, max_model_len=100, params=tiny_params(),
            prefix_group=np.array([0, 0]), prefix_tokens=np.array([4, 4])))
        kernel = case.run_kernel()
        np.testing.assert_array_equal(kernel.status, [DONE, DONE])


def test_oracle_keeps_kv_within_capacity_when_reserving_first() -> None:
    """The oracle's own reading (decode KV first) never overcommits on the tight sweep cases."""
    for seed in range(40):
        case = seeded_case(np.random.default_rng(1000 + seed))
        case = replace(case, options=dict(case.options, chunked_prefill=True))
        result = case.run_oracle()  # raises if KV ever exceeds capacity
        assert np.isin(result.status, [DONE, REJECTED]).all()


def test_a_long_decode_stretch_jumps_in_closed_form_and_equals_the_steps() -> None:
    """Three requests decode together for thousands of iterations on one replica (roofline):
    the kernel times each decode-only stretch in closed form from its start (a + b (c + n) per
    iteration, summed) and jumps to its end, in a handful of events; the oracle sums the
    same iterations one by one. Their times agree to 1e-9 s after ~4,700 iterations, and
    stopping inside the stretches (slices) changes no bit."""
    case = PoolCase(np.array([0.0, 0.0, 0.0]), np.array([300, 20, 4000]), np.array([900, 4_700, 2_500]),
                    dict(replicas=1, max_num_seqs=16, max_num_batched_tokens=8192, chunked_prefill=True,
                         kv_capacity_tokens=AMPLE, max_model_len=AMPLE, params=PARAMS["llama-3.1-8b/h100-sxm"],
                         frontend_s=0.001, frontend_per_step=0.25))
    kernel = case.run_kernel()
    assert_same(kernel, case.run_oracle())
    assert int(kernel.iterations.sum()) >= 4_700
    assert kernel.events < 20  # the three arrivals, the prefill, the three completions' iterations
    sliced = case.kernel()
    for t in np.linspace(0.0, float(np.nanmax(kernel.done_s)), 37)[1:-1]:
        sliced.advance_to(float(t))
        assert sliced.rep_f[0, PF_BUSY_UNTIL] > t  # stopped inside an iteration in flight at t
    sliced.advance_to(math.inf)
    for name in ("req_i", "req_f"):
        assert np.array_equal(getattr(kernel, name), getattr(sliced, name), equal_nan=True), name
    assert np.array_equal(kernel.rep_f[:, :PF_CK_START], sliced.rep_f[:, :PF_CK_START])
