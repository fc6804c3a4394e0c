"""Managed model APIs as serving pools: the kernel's semantics by hand, then the world's.

A request routed to an API pool starts when it arrives (no queue of ours), its first token
comes its TTFT later and its last (output - 1) per-token times after that; the API's rate limit
is a sliding window of 60 s counted at the send; a request over it is skipped by overflow when
another pool can take it, and answered 429 (REJECTED at its arrival) when none can. Kernel ==
oracle on random clusters with APIs is in tests/test_routing.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SCENARIOS_DIR, WriteYaml
from oracle import OraclePath, OracleRoute, run_cluster_oracle

import sim
from sim.catalog import shipped_catalog
from sim.kernels.batching import (
    DONE,
    OVERFLOW,
    PREFERRED,
    REJECTED,
    WEIGHTED,
    ApiConfig,
    ClusterKernel,
    PathConfig,
    PoolConfig,
    RouteConfig,
    api_pool,
)
from sim.record import RunRecord
from sim.result import Result, collect
from sim.spec.errors import SpecError
from sim.spec.loader import dump_scenario
from sim.streams import stream
from sim.world.world import World

AMPLE = 10**6


def one_gpu(path: int = 0) -> PoolConfig:
    """One replica in service-time mode (each request takes its service time), ample KV."""
    return PoolConfig(replicas=1, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                      kv_capacity_tokens=AMPLE, max_model_len=AMPLE, path=path)


def test_a_request_takes_the_path_its_ttft_and_its_tokens() -> None:
    """One request, 1000 B at 1000 B/s and 0.04 s one way: it arrives at 1.04; TTFT 0.2 s
    (median, sigma 0), then 9 more tokens at 0.01 s: first token 1.24, done 1.33; so the
    kernel's latency is path + TTFT + (n - 1) x TPOT exactly."""
    api = ApiConfig(ttft_median_s=0.2, tpot_median_s=0.01)
    kernel = ClusterKernel([api_pool(api)], np.array([0.0]), np.array([50]), np.array([10]),
                           request_bytes=np.array([1000.0]),
                           paths=[PathConfig(one_way_s=0.04, bandwidth_bytes_per_s=1000.0)])
    kernel.advance_to(math.inf)
    assert kernel.status[0] == DONE and kernel.replica[0] == -1 and kernel.version[0] == 0
    np.testing.assert_allclose([kernel.arrival_s[0], kernel.dispatch_s[0]], [1.04, 1.04], rtol=0, atol=1e-12)
    np.testing.assert_allclose(kernel.first_token_s[0], 1.04 + 0.2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kernel.done_s[0], 1.04 + 0.2 + 9 * 0.01, rtol=0, atol=1e-12)


def test_lognormal_draws_scale_the_medians() -> None:
    """z = (1, -1) with sigma 0.5 and 0.25: TTFT 0.1 e^0.5, per-token 0.02 e^-0.25; no queue,
    so two requests sent together both start at once."""
    api = ApiConfig(ttft_median_s=0.1, tpot_median_s=0.02, ttft_sigma=0.5, tpot_sigma=0.25)
    z = np.array([[1.0, -1.0], [0.0, 0.0]])
    kernel = ClusterKernel([api_pool(api)], np.zeros(2), np.array([5, 5]), np.array([3, 3]), api_z=z)
    kernel.advance_to(math.inf)
    ttft, tpot = 0.1 * math.exp(0.5), 0.02 * math.exp(-0.25)
    np.testing.assert_allclose(kernel.first_token_s, [ttft, 0.1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(kernel.done_s, [ttft + 2 * tpot, 0.1 + 2 * 0.02], rtol=0, atol=1e-12)


def test_the_rate_limit_rejects_exactly_the_requests_over_it() -> None:
    """3 requests per minute, sends at 0, 10, 20, 30, 59.9, 60, 61, 70, 80, 121. The window
    (t - 60, t] of admitted sends: 0, 10, 20 fill it; 30 and 59.9 are over (429); at 60 the send
    at 0 has left the window (60 - 0 >= 60): admitted; at 61 the window holds 10, 20, 60: over;
    70: 10 has left, admitted; 80: 20 has left, admitted; 121: 60 has left, admitted. Rejected
    ones count in no window and end at their arrival (here their send: a zero path)."""
    send = np.array([0.0, 10.0, 20.0, 30.0, 59.9, 60.0, 61.0, 70.0, 80.0, 121.0])
    n = len(send)
    api = ApiConfig(ttft_median_s=0.1, tpot_median_s=0.0, requests_per_minute=3)
    kernel = ClusterKernel([api_pool(api)], send, np.ones(n, int), np.ones(n, int))
    kernel.advance_to(math.inf)
    rejected = [3, 4, 6]
    expected = np.full(n, DONE)
    expected[rejected] = REJECTED
    np.testing.assert_array_equal(kernel.status, expected)
    np.testing.assert_allclose(kernel.done_s[rejected], send[rejected])
    assert (kernel.pool == 0).all()


def test_the_token_limit_counts_prompt_and_output() -> None:
    """1000 tokens per minute; requests of 400 + 100 tokens: two fit (1000), the third (at 1 s)
    is over; at 60 s the first has left: admitted."""
    send = np.array([0.0, 0.5, 1.0, 60.0])
    api = ApiConfig(ttft_median_s=0.1, tpot_median_s=0.0, tokens_per_minute=1000)
    kernel = ClusterKernel([api_pool(api)], send, np.full(4, 400), np.full(4, 100))
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.status, [DONE, DONE, REJECTED, DONE])


def test_overflow_skips_an_api_over_its_limit() -> None:
    """Route [API (2 per minute), GPU pool]: sends at 0, 1, 2, 3: the first two go to the API;
    the API is then loaded, so 2 and 3 overflow to the GPU pool (OVERFLOW, not rejected). With
    the GPU pool first and loaded past 0 requests per replica, the API takes the overflow
    until its limit, and the rest queue at the GPU pool (the end of the chain: an API over its
    limit never is)."""
    api = api_pool(ApiConfig(ttft_median_s=0.5, tpot_median_s=0.0, requests_per_minute=2))
    send = np.arange(4.0)
    kernel = ClusterKernel([api, one_gpu()], send, np.ones(4, int), np.ones(4, int), service_s=np.full(4, 10.0),
                           routes=[RouteConfig(pools=[0, 1])])
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [0, 0, 1, 1])
    np.testing.assert_array_equal(kernel.reason, [PREFERRED, PREFERRED, OVERFLOW, OVERFLOW])
    assert (kernel.status == DONE).all()
    np.testing.assert_allclose(kernel.done_s, [0.5, 1.5, 12.0, 22.0])
    kernel = ClusterKernel([api, one_gpu()], send, np.ones(4, int), np.ones(4, int), service_s=np.full(4, 10.0),
                           routes=[RouteConfig(pools=[1, 0], queue_per_replica=0.0)])
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [1, 0, 0, 1])
    np.testing.assert_array_equal(kernel.reason, [PREFERRED, OVERFLOW, OVERFLOW, PREFERRED])


def test_with_nowhere_else_to_go_an_api_over_its_limit_answers_429() -> None:
    """Two APIs of 1 request per minute each, route [a, b]: 0 goes to a, 1 overflows to b, 2
    finds both over their limit and goes to the first (a), which rejects it on arrival, after
    the path (0.05 s one way)."""
    api = api_pool(ApiConfig(ttft_median_s=0.1, tpot_median_s=0.0, requests_per_minute=1))
    kernel = ClusterKernel([api, api], np.array([0.0, 1.0, 2.0]), np.ones(3, int), np.ones(3, int),
                           paths=[PathConfig(one_way_s=0.05)], routes=[RouteConfig(pools=[0, 1])])
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [0, 1, 0])
    np.testing.assert_array_equal(kernel.status, [DONE, DONE, REJECTED])
    np.testing.assert_allclose(kernel.done_s[2], 2.05)


def test_a_weighted_draw_leaves_out_an_api_over_its_limit() -> None:
    """Weights 1:1 over [API (1 per minute), GPU]; draws u = 0.1 each (the API's half): the
    first goes to the API, the second finds it over its limit and draws among the GPU pool
    alone."""
    api = api_pool(ApiConfig(ttft_median_s=0.1, tpot_median_s=0.0, requests_per_minute=1))
    kernel = ClusterKernel([api, one_gpu()], np.array([0.0, 1.0]), np.ones(2, int), np.ones(2, int),
                           service_s=np.ones(2), route_u=np.array([0.1, 0.1]),
                           routes=[RouteConfig(pools=[0, 1], policy="weighted", weights=[1.0, 1.0])])
    kernel.advance_to(math.inf)
    np.testing.assert_array_equal(kernel.pool, [0, 1])
    assert (kernel.reason == WEIGHTED).all() and (kernel.status == DONE).all()


def test_a_closed_loop_through_an_api_matches_the_oracle() -> None:
    """Two clients, loop delay 5 s, an API with a 3-per-minute limit behind nothing else: each
    completion (or 429) releases the next request, over about two minutes (the window moves on);
    kernel and oracle agree request by request."""
    n = 40
    api = ApiConfig(ttft_median_s=0.3, tpot_median_s=0.05, ttft_sigma=0.4, tpot_sigma=0.2, requests_per_minute=3)
    pool = dict(replicas=0, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False, kv_capacity_tokens=0,
                max_model_len=0, loop_delay_s=5.0, api=api)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((n, 2))
    output = rng.integers(1, 20, n)
    kernel = ClusterKernel([PoolConfig(**pool)], np.zeros(n), np.ones(n, int), output, clients=2, api_z=z)
    kernel.advance_to(math.inf)
    oracle = run_cluster_oracle([pool], np.zeros(n), np.ones(n, int), output, paths=[OraclePath()],
                                routes=[OracleRoute(pools=[0])], clients=2, api_z=z)
    for name in ("send_s", "arrival_s", "first_token_s", "done_s"):
        np.testing.assert_allclose(getattr(kernel, name), getattr(oracle, name), rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(kernel.status, oracle.status)
    assert (kernel.status == REJECTED).any() and (kernel.status == DONE).any()


# ------------------------------------------------------------------------------------------
# In the world: the example scenario, shortened (the first two hours: night, 0.6-1 req/s)
# ------------------------------------------------------------------------------------------

EXAMPLE = SCENARIOS_DIR / "examples" / "api_serving.yaml"
SHORT = ["horizon=2h", "warmup=0s", "replications=1", "lifecycle.development=null"]


def short_run(*overrides: str) -> tuple[RunRecord, Result]:
    record = World(sim.load_scenario(EXAMPLE, [*SHORT, *overrides])).run()
    return record, collect(record)


def test_the_example_keeps_confidential_traffic_home_and_exposes_every_prompt_sent_to_the_api() -> None:
    """A 20-per-minute quota that binds: general requests go to the API until it is reached
    and overflow to the premises GPU beyond it; no confidential request reaches the API; the
    ledger's prompt records sent to the API equal the requests sent there (each a distinct
    record), its responses those it completed; no GPU-hours, no cloud GPU cost."""
    record, result = short_run("sites.cloud.pools[0].rate_limit.requests_per_minute=20")
    req = record.requests
    api = record.pool_names.index("cloud/bedrock")
    general = req.traffic_class == record.class_names.index("general")
    at_api = req.pool == api
    assert not (at_api & ~general).any()
    assert 0 < at_api.sum() < general.sum()  # the quota binds: some general requests overflowed
    assert (req.reason[general & ~at_api] == OVERFLOW).all()
    assert (req.status[at_api] == DONE).all()  # overflow took what was over the quota: no 429
    # no window of 60 s holds more than 20 sends to the API
    sends = np.sort(req.send_s[at_api])
    assert (np.searchsorted(sends, sends + 60.0, side="left") - np.arange(len(sends)) <= 20).all()
    exposure = result.summary["classes"]["confidential"]["exposure"]
    assert exposure["exposed_records"] == 0 and exposure["exposed_bytes"] == 0
    records = result.summary["exposed_records_by_class"]
    assert records["prompt"] == int(at_api.sum())
    assert records["response"] == int((at_api & req.completed).sum())
    summary_pool = result.summary["pools"]["cloud/bedrock"]
    assert summary_pool["gpu_hours"] == 0 and summary_pool["requests"] == int(at_api.sum())
    assert "cloud/bedrock" not in result.summary["gpu_utilisation"]
    assert result.summary["cost_usd_by_component"]["cloud_gpu"] == 0


def test_api_tokens_cost_by_hand() -> None:
    """Two rows: the completed API requests' prompt tokens x $0.22/1M and output tokens x
    $0.22/1M (bedrock-llama-3.1-8b), and nothing else for the API pool."""
    record, result = short_run()
    req = record.requests
    mine = (req.pool == record.pool_names.index("cloud/bedrock")) & req.completed
    costs = result.tables["costs"]
    rows = costs[costs["component"] == "api_tokens"].set_index("unit")
    tokens_in, tokens_out = int(req.prompt_tokens[mine].sum()), int(req.output_tokens[mine].sum())
    assert rows.loc["M input tokens", "quantity"] == pytest.approx(tokens_in / 1e6, rel=1e-12)
    assert rows.loc["M output tokens", "quantity"] == pytest.approx(tokens_out / 1e6, rel=1e-12)
    assert rows["usd"].sum() == pytest.approx((tokens_in + tokens_out) / 1e6 * 0.22, rel=1e-12)
    assert set(costs.loc[costs["pool"] == "bedrock", "component"]) == {"api_tokens"}
    assert result.summary["cost_usd_by_component"]["api_tokens"] == pytest.approx(rows["usd"].sum())


def test_the_latency_profile_is_the_catalogs_lognormal() -> None:
    """At the API, TTFT = 90 ms x exp(sigma z) with sigma = ln(180/90) / z_0.9 and the
    request's draw z from the scenario's 'api_latency' stream; the last token (output - 1) x
    3.57 ms x exp(sigma' z') later. Over the run, the TTFT's median and 90th percentile are
    the catalog's 90 ms and 180 ms within sampling error (about 3,000 requests: 5%)."""
    record, _ = short_run()
    req = record.requests
    at_api = np.flatnonzero((req.pool == record.pool_names.index("cloud/bedrock")) & req.completed)
    api = shipped_catalog().apis["bedrock-llama-3.1-8b"]
    scenario = record.scenario
    z = stream(scenario.seed, 0, "api_latency").standard_normal((len(req), 2))[at_api]
    ttft = req.first_token_s[at_api] - req.pool_arrival_s[at_api]
    np.testing.assert_allclose(ttft, api.ttft.median * np.exp(api.ttft.sigma * z[:, 0]), rtol=1e-9)
    tpot = api.time_per_output_token
    np.testing.assert_allclose(req.done_s[at_api] - req.first_token_s[at_api],
                               (req.output_tokens[at_api] - 1) * tpot.median * np.exp(tpot.sigma * z[:, 1]),
                               rtol=1e-9, atol=1e-12)
    assert len(at_api) > 2000
    assert np.median(ttft) == pytest.approx(0.090, rel=0.05)
    assert np.quantile(ttft, 0.9) == pytest.approx(0.180, rel=0.05)


def test_a_run_is_bit_identical_for_the_same_seed() -> None:
    first, _ = short_run()
    again, _ = short_run()
    for name in ("first_token_s", "done_s", "client_done_s", "pool"):
        np.testing.assert_array_equal(getattr(first.requests, name), getattr(again.requests, name))


# ------------------------------------------------------------------------------------------
# Validation: what cannot take effect on an API pool is an error naming the field
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "path"), [
    ("sites.cloud.pools[0].count=2", "sites.cloud.pools[0].count"),
    ("sites.cloud.pools[0].gpu=l40s", "sites.cloud.pools[0].gpu"),
    ("sites.cloud.pools[0].tensor_parallel=2", "sites.cloud.pools[0].tensor_parallel"),
    ("sites.cloud.pools[0].engine=vllm", "sites.cloud.pools[0].engine"),
    ("sites.cloud.pools[0].autoscale={max_replicas: 2, target: 4}", "sites.cloud.pools[0].autoscale"),
    ("sites.cloud.pools[0].elastic=true", "sites.cloud.pools[0].elastic"),
    ("sites.cloud.pools[0].roles=[serving, training]", "sites.cloud.pools[0].roles"),
    ("sites.cloud.zone=private", "sites.cloud.zone"),
    ("sites.cloud.pools[0].api=bedrock-llama-3.1-70b", "sites.cloud.pools[0].api"),
    ("sites.cloud.pools[0].api=bedrok-llama-3.1-8b", "sites.cloud.pools[0].api"),
    ("sites.premises.pools[0].rate_limit={requests_per_minute: 5}", "sites.premises.pools[0].rate_limit"),
    ("model.service_time={dist: exponential, mean: 1}", "model.service_time"),
])
def test_what_cannot_take_effect_is_an_error_naming_the_field(override: str, path: str) -> None:
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(EXAMPLE, [override])
    assert path in {issue.path for issue in caught.value.issues}, caught.value.issues


def test_a_pool_of_gpus_still_needs_its_gpu_and_count(write_yaml: WriteYaml) -> None:
    """gpu and count have defaults only so that an API pool can leave them out."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    del doc["sites"]["premises"]["pools"][0]["gpu"], doc["sites"]["premises"]["pools"][0]["count"]
    doc["extends"] = str(SCENARIOS_DIR / "base.yaml")
    with pytest.raises(SpecError) as caught:
        sim.load_scenario(write_yaml(doc))
    paths = {issue.path for issue in caught.value.issues}
    assert {"sites.premises.pools[0].gpu", "sites.premises.pools[0].count"} <= paths


def test_a_resolved_scenario_with_an_api_pool_loads_again(tmp_path: Path) -> None:
    """A run's scenario.yaml spells every default out (gpu '', count 0, ...): loading it again
    finds nothing written that an API pool cannot take, and the same pools."""
    scenario = sim.load_scenario(EXAMPLE)
    path = tmp_path / "scenario.yaml"
    path.write_text(dump_scenario(scenario), encoding="utf-8")
    again = sim.load_scenario(path)
    assert again.sites["cloud"].pools[0] == scenario.sites["cloud"].pools[0]
    assert again.sites["cloud"].pools[0].roles == ["serving"]


def test_the_command_line_validates_the_example_and_refuses_a_gpu_field_with_exit_code_2() -> None:
    """`deploysim validate` lists the API pool (provider, prices, latency, quota); with
    `--set sites.cloud.pools[0].count=2` it exits 2 with an error naming that field."""
    from typer.testing import CliRunner

    from sim.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(EXAMPLE)], terminal_width=400)
    assert ok.exit_code == 0, ok.output
    assert "managed API bedrock-llama-3.1-8b (aws, llama-3.1-8b): $0.22 / $0.22" in ok.stdout
    assert "150 requests/min" in ok.stdout
    bad = runner.invoke(app, ["validate", str(EXAMPLE), "--set", "sites.cloud.pools[0].count=2"], terminal_width=400)
    assert bad.exit_code == 2
    assert "sites.cloud.pools[0].count" in bad.output and "Traceback" not in bad.output
