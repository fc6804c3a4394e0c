"""Routing across pools, decided when the client sends: the kernel against the oracle, and by hand.

`sim.kernels.batching.ClusterKernel` and `tests/oracle.py`'s cluster must agree on every
request's pool, why it went there, when its payload entered the path, its arrival, dispatch,
first token and completion (to 1e-9 s), its status, replica and preemptions. Hypothesis draws
clusters of 1-3 heterogeneous pools (engine, KV capacity, batch limits, async scheduling,
front end; or a managed API with lognormal latency draws and a rate limit that binds), paths (one-way delay, bandwidth, jitter, outage windows that cut them), routes per
traffic class (overflow with queue or wait thresholds, weighted splits), class priorities,
every router (prefix affinity included), open and closed loops. Explicit cases then check the
overflow threshold and the path arithmetic by hand.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracle import OraclePath, OracleRoute, run_cluster_oracle
from test_serving_oracle import PARAMS, TICK_S, tiny_params

from sim.kernels.batching import (
    DONE,
    FAILED,
    FAILOVER,
    OVERFLOW,
    PREFERRED,
    REJECTED,
    WEIGHTED,
    ApiConfig,
    ClusterKernel,
    PathConfig,
    PoolConfig,
    RouteConfig,
)
from sim.routers import ROUTERS

AMPLE = 10**6
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(kernel: ClusterKernel, oracle: Any) -> None:
    for name in ("send_s", "link_send_s", "arrival_s", "dispatch_s", "first_token_s", "done_s"):
        k, o = getattr(kernel, name), getattr(oracle, name)
        np.testing.assert_array_equal(np.isnan(k), np.isnan(o), err_msg=f"{name}: NaN positions")
        np.testing.assert_allclose(k, o, rtol=0, atol=1e-9, err_msg=name)
    for name in ("pool", "reason", "status", "replica", "preemptions"):
        np.testing.assert_array_equal(getattr(kernel, name), getattr(oracle, name), err_msg=name)
    assert np.isin(kernel.status, [DONE, REJECTED]).all(), "a request never finished"


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 50))
    n_pools = draw(st.integers(1, 3))
    engine = draw(st.sampled_from(sorted(PARAMS)))
    tick = TICK_S[engine]
    gaps = st.one_of(st.floats(0, 1, exclude_max=True).map(lambda u: -math.log1p(-u) * tick),
                     st.integers(0, 2).map(lambda k: k * tick))
    send = np.cumsum(draw(st.lists(gaps, min_size=n, max_size=n)))
    paths = []
    for _ in range(draw(st.integers(1, n_pools))):
        windows = []
        if draw(st.booleans()):
            start = draw(st.floats(0, float(send[-1]) + tick))
            windows.append((start, start + draw(st.sampled_from([tick, 5 * tick]))))
        paths.append(dict(
            one_way_s=draw(st.sampled_from([0.0, 0.25 * tick, 2 * tick])),
            bandwidth_bytes_per_s=draw(st.sampled_from([math.inf, 1e6, 2e4])),
            jitter_s=draw(st.sampled_from([0.0, 0.1 * tick])), windows=windows))
    pools: list[dict[str, Any]] = []
    for _ in range(n_pools):
        if draw(st.integers(0, 3)) == 0:  # a managed API: latency draws, a rate limit that binds
            api = ApiConfig(ttft_median_s=draw(st.sampled_from([0.0, tick, 3 * tick])),
                            tpot_median_s=draw(st.sampled_from([0.0, 0.1 * tick])),
                            ttft_sigma=draw(st.sampled_from([0.0, 0.5])), tpot_sigma=draw(st.sampled_from([0.0, 0.3])),
                            requests_per_minute=draw(st.sampled_from([None, 1, 3])),
                            tokens_per_minute=draw(st.sampled_from([None, 400])))
            pools.append(dict(replicas=0, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                              kv_capacity_tokens=0, max_model_len=0, path=draw(st.integers(0, len(paths) - 1)),
                              loop_delay_s=draw(st.sampled_from([0.0, tick])), api=api))
            continue
        pools.append(dict(
            replicas=draw(st.integers(1, 3)),
            max_num_seqs=draw(st.integers(1, 8)),
            max_num_batched_tokens=draw(st.integers(32, 512)),
            chunked_prefill=draw(st.booleans()),
            kv_capacity_tokens=draw(st.one_of(st.integers(60, 800), st.just(AMPLE))),
            max_model_len=draw(st.one_of(st.integers(80, 400), st.just(AMPLE))),
            params=draw(st.sampled_from([PARAMS[engine], tiny_params()])),
            async_scheduling=draw(st.booleans()),
            frontend_s=draw(st.sampled_from([0.0, 0.001])),
            frontend_per_step=draw(st.sampled_from([0.0, 0.5])),
            path=draw(st.integers(0, len(paths) - 1)),
            loop_delay_s=draw(st.sampled_from([0.0, tick])),
        ))
    n_classes = draw(st.integers(1, 2))
    routes = []
    for _ in range(n_classes):
        members = draw(st.permutations(range(n_pools)))[: draw(st.integers(1, n_pools))]
        if draw(st.booleans()):
            routes.append(dict(pools=list(members), policy="weighted",
                               weights=draw(st.lists(st.sampled_from([0.0, 1.0, 3.0]), min_size=len(members),
                                                     max_size=len(members)).filter(lambda w: sum(w) > 0))))
        else:
            routes.append(dict(pools=list(members), policy="overflow",
                               queue_per_replica=draw(st.sampled_from([math.inf, 0.0, 1.0, 2.0])),
                               wait_s=draw(st.sampled_from([math.inf, 0.0, tick]))))
    uniform = st.floats(0, 1, exclude_max=True)
    case = dict(
        pools=pools, paths=paths, routes=routes, send_s=send,
        prompt_tokens=np.array(draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)), dtype=np.int64),
        output_tokens=np.array(draw(st.lists(st.integers(1, 60), min_size=n, max_size=n)), dtype=np.int64),
        request_class=np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))),
        class_route=list(range(n_classes)),
        class_priority=draw(st.lists(st.integers(0, 2), min_size=n_classes, max_size=n_classes)),
        request_bytes=np.array(draw(st.lists(st.sampled_from([0.0, 500.0, 4000.0]), min_size=n, max_size=n))),
        jitter_z=np.array(draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n))),
        route_u=np.array(draw(st.lists(uniform, min_size=n, max_size=n))),
        router=draw(st.sampled_from(sorted(ROUTERS))),
        router_u=np.array(draw(st.lists(uniform, min_size=n, max_size=n))),
        api_z=np.array(draw(st.lists(st.tuples(st.floats(-3, 3), st.floats(-3, 3)), min_size=n, max_size=n))),
    )
    if draw(st.booleans()):
        groups = draw(st.integers(1, 3))
        group = np.array(draw(st.lists(st.integers(-1, groups - 1), min_size=n, max_size=n)))
        prefix_of_group = np.array(draw(st.lists(st.integers(1, 64), min_size=groups, max_size=groups)))
        prefix = np.where(group >= 0, prefix_of_group[np.maximum(group, 0)], 0)
        case["prompt_tokens"] = np.where(group >= 0, np.maximum(case["prompt_tokens"], prefix + 1),
                                         case["prompt_tokens"])
        case["prefix_group"], case["prefix_tokens"] = group, prefix
    if draw(st.booleans()) and not any(p["windows"] for p in paths):
        case["clients"] = draw(st.integers(1, 4))
    return case


def run_both(case: dict[str, Any]) -> tuple[ClusterKernel, Any]:
    kernel = ClusterKernel(
        [PoolConfig(**p) for p in case["pools"]], case["send_s"], case["prompt_tokens"], case["output_tokens"],
        paths=[PathConfig(**p) for p in case["paths"]], routes=[RouteConfig(**r) for r in case["routes"]],
        **{k: v for k, v in case.items() if k not in ("pools", "paths", "routes", "send_s", "prompt_tokens",
                                                       "output_tokens")})
    kernel.advance_to(math.inf)
    oracle = run_cluster_oracle(
        case["pools"], case["send_s"], case["prompt_tokens"], case["output_tokens"],
        paths=[OraclePath(**p) for p in case["paths"]], routes=[OracleRoute(**r) for r in case["routes"]],
        **{k: v for k, v in case.items() if k not in ("pools", "paths", "routes", "send_s", "prompt_tokens",
                                                       "output_tokens")})
    return kernel, oracle


@PROPERTY
@given(clusters())
def test_kernel_matches_oracle_on_random_clusters_and_rules(case: dict[str, Any]) -> None:
    kernel, oracle = run_both(case)
    assert_same(kernel, oracle)
    for name in ("overflows", "failovers", "resends", "rate_limited"):
        if oracle.stats[name]:
            event(name)
    if len(case["pools"]) > 1 and len(set(kernel.pool.tolist())) > 1:
        event("several pools served")
    if any(case["pools"][p].get("api") is not None for p in set(kernel.pool.tolist())):
        event("an API served")


def two_pools(**route: Any) -> dict[str, Any]:
    """One replica each, service-time mode (each request takes 1 s), zero paths."""
    pool = dict(replicas=1, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                kv_capacity_tokens=AMPLE, max_model_len=AMPLE)
    return dict(pools=[PoolConfig(**pool), PoolConfig(**pool)], routes=[RouteConfig(pools=[0, 1], **route)])


def test_overflow_engages_only_above_its_threshold() -> None:
    """Requests every 0.1 s, 1 s of service, one replica per pool, overflow when more than two
    requests per replica are in the preferred pool (waiting or running). At each send the
    preferred pool holds: request 0 nothing; 1 one (request 0 running); 2 two (not above
    two); 3 three: above, so 3 overflows, and so do 4..7 (request 0 runs until 1.0 s, the pool
    holds three throughout). By hand: pools [0, 0, 0, 1, 1, 1, 1, 1]."""
    n = 8
    send = np.arange(n) * 0.1
    kernel = ClusterKernel(**two_pools(queue_per_replica=2.0), send_s=send, prompt_tokens=np.ones(n, int),
                           output_tokens=np.ones(n, int), service_s=np.ones(n))
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(kernel.reason, [PREFERRED] * 3 + [OVERFLOW] * 5)
    # preferred pool: back to back from 0 s; the overflow pool takes 3..7 from 0.3 s
    np.testing.assert_allclose(kernel.done_s[:3], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(kernel.done_s[3:], [1.3, 2.3, 3.3, 4.3, 5.3])
    # the same sends with a looser threshold never overflow
    kernel = ClusterKernel(**two_pools(queue_per_replica=10.0), send_s=send, prompt_tokens=np.ones(n, int),
                           output_tokens=np.ones(n, int), service_s=np.ones(n))
    kernel.advance_to(math.inf)
    assert (kernel.pool == 0).all() and (kernel.reason == PREFERRED).all()


def test_a_wait_threshold_overflows_when_the_oldest_waits_too_long() -> None:
    """wait_s = 0.25: request 1 (sent 0.1 s) waits behind request 0; at 0.4 s it has waited
    0.3 s > 0.25 s, so request 4 (and later ones while it waits) overflows; 2 and 3 do not."""
    n = 6
    send = np.arange(n) * 0.1
    kernel = ClusterKernel(**two_pools(wait_s=0.25), send_s=send, prompt_tokens=np.ones(n, int),
                           output_tokens=np.ones(n, int), service_s=np.ones(n))
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [0, 0, 0, 0, 1, 1])


def test_a_cut_path_fails_over_and_a_request_waits_when_every_path_is_cut() -> None:
    """Pool 0's path is cut in [1, 2), pool 1's in [1.5, 2.5): sends at 1.2 go to pool 1
    (failover); at 1.7 both are cut, so the client sends again at 2.0, when pool 0's comes back."""
    pool = PoolConfig(replicas=1, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                      kv_capacity_tokens=AMPLE, max_model_len=AMPLE, path=0)
    kernel = ClusterKernel([pool, PoolConfig(**{**pool.__dict__, "path": 1})], np.array([0.0, 1.2, 1.7]),
                           np.ones(3, int), np.ones(3, int), service_s=np.full(3, 0.1),
                           paths=[PathConfig(windows=[(1.0, 2.0)]), PathConfig(windows=[(1.5, 2.5)])],
                           routes=[RouteConfig(pools=[0, 1])])
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [0, 1, 0])
    np.testing.assert_array_equal(kernel.reason, [PREFERRED, FAILOVER, PREFERRED])
    np.testing.assert_allclose(kernel.link_send_s, [0.0, 1.2, 2.0])
    np.testing.assert_allclose(kernel.done_s, [0.1, 1.3, 2.1])


def test_the_path_is_a_fifo_then_the_one_way_delay() -> None:
    """1000-byte payloads at 1000 B/s and 0.5 s one way, sent at 0 and 0.2: the second waits
    for the first to leave (start 1.0), so they arrive at 1.5 and 2.5 (sim.kernels.links)."""
    pool = PoolConfig(replicas=1, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                      kv_capacity_tokens=AMPLE, max_model_len=AMPLE)
    kernel = ClusterKernel([pool], np.array([0.0, 0.2]), np.ones(2, int), np.ones(2, int),
                           service_s=np.full(2, 0.1), request_bytes=np.full(2, 1000.0),
                           paths=[PathConfig(one_way_s=0.5, bandwidth_bytes_per_s=1000.0)])
    kernel.advance_to(math.inf)
    np.testing.assert_allclose(kernel.arrival_s, [1.5, 2.5])


def test_weighted_split_follows_the_weights() -> None:
    """Weights 3:1 and each request's own uniform draw: pool 0 when u < 0.75."""
    n = 2000
    u = np.random.default_rng(7).random(n)
    kernel = ClusterKernel(**two_pools(policy="weighted", weights=[3.0, 1.0]), send_s=np.arange(n) * 10.0,
                           prompt_tokens=np.ones(n, int), output_tokens=np.ones(n, int), service_s=np.ones(n),
                           route_u=u)
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, np.where(u < 0.75, 0, 1))
    assert (kernel.reason == WEIGHTED).all()


def test_higher_priority_is_admitted_first() -> None:
    """One replica busy until 1 s; a low-priority request (class 0) sent at 0.1 and a high-
    priority one (class 1) at 0.2 wait: the high one is served first."""
    pool = PoolConfig(replicas=1, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                      kv_capacity_tokens=AMPLE, max_model_len=AMPLE)
    kernel = ClusterKernel([pool], np.array([0.0, 0.1, 0.2]), np.ones(3, int), np.ones(3, int),
                           service_s=np.ones(3), request_class=np.array([0, 0, 1]), class_route=[0, 0],
                           class_priority=[0, 5])
    kernel.advance_to(math.inf)
    np.testing.assert_allclose(kernel.done_s, [1.0, 3.0, 2.0])


@pytest.mark.parametrize("cached", [True, False])
def test_prefix_affinity_sends_a_group_to_the_replica_that_holds_it(cached: bool) -> None:
    """Two replicas; request 0 (group 0, a long answer) computes the prefix on replica 0 and
    is still decoding at 5 s; request 1 (no group, short) finished on replica 1 long before.
    Request 2 (group 0) at 5 s: prefix affinity sends it to replica 0, where the prefix is
    cached, although replica 0 has one outstanding request and replica 1 none; without
    prefix caching nothing is held, so it goes to the least outstanding replica, 1."""
    params = tiny_params()
    pool = PoolConfig(replicas=2, max_num_seqs=8, max_num_batched_tokens=512, chunked_prefill=True,
                      kv_capacity_tokens=AMPLE, max_model_len=AMPLE, params=params, prefix_caching=cached)
    kernel = ClusterKernel([pool], np.array([0.0, 0.0, 5.0]), np.array([100, 100, 100]), np.array([400, 2, 2]),
                           prefix_group=np.array([0, -1, 0]), prefix_tokens=np.array([80, 0, 80]),
                           router="prefix_affinity")
    kernel.advance_to(math.inf)
    assert kernel.replica[0] == 0 and kernel.replica[1] == 1
    assert kernel.done_s[1] < 5.0 < kernel.done_s[0]
    assert kernel.replica[2] == (0 if cached else 1)


def test_a_client_gives_up_while_every_path_is_cut() -> None:
    """One pool, its path cut in [1, 5), client timeout 2 s, 0.5 s of service. Request 0 (sent
    at 0) is served; request 1 (sent at 1.5) waits for the path and gives up at its deadline
    1.5 + 2 = 3.5 (FAILED there, never sent, no pool); request 2 (sent at 4) waits too and is
    sent when the path comes back at 5, within its deadline 6: done at 5.5."""
    pool = PoolConfig(replicas=1, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                      kv_capacity_tokens=AMPLE, max_model_len=AMPLE)
    kernel = ClusterKernel([pool], np.array([0.0, 1.5, 4.0]), np.ones(3, int), np.ones(3, int),
                           service_s=np.full(3, 0.5), paths=[PathConfig(windows=[(1.0, 5.0)])], timeout_s=2.0)
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.status, [DONE, FAILED, DONE])
    np.testing.assert_allclose(kernel.done_s, [0.5, 3.5, 5.5])
    np.testing.assert_allclose(kernel.link_send_s, [0.0, np.nan, 5.0])
    np.testing.assert_array_equal(kernel.pool, [0, -1, 0])
