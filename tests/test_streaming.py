"""Streamed runs: requests generated and fed in chunks, summarised as they end, in bounded memory.

A streamed run must say what an exact run says: the same counts and sums (the same requests,
the same kernel outcomes, bit for bit), and percentiles within the sketch's stated relative
error of the exact order statistics. Chunk boundaries must change nothing, sketches must merge
into the sketch of the union, and the kernel must hold a window of requests that does not
grow with the run. What cannot stream yet is refused by name, and exact mode keeps it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SCENARIOS_DIR
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.kernels.batching import RI_NEXT
from sim.kernels.streaming import EndedRows
from sim.metrics.invariants import check_ledger, check_streamed
from sim.metrics.sketch import LatencySketch
from sim.metrics.tally import RequestTally, tally_of
from sim.record import RequestTable
from sim.result import Result, collect
from sim.runner import results_mode, run_world
from sim.spec.errors import SpecError
from sim.streams import stream
from sim.workload.arrivals import Diurnal, Poisson
from sim.workload.requests import generate_requests, request_chunks
from sim.world import World

S1 = SCENARIOS_DIR / "s1_local.yaml"
# two traffic classes, a managed API with a rate limit that overflows to a GPU pool, the WAN
# (jitter, payloads in the ledger) and a client timeout: most of what the kernel streams
API = SCENARIOS_DIR / "examples" / "api_serving.yaml"
PERCENTILE_FIELDS = ("_p50_s", "_p90_s", "_p99_s", "measured_s")
MODE_FIELDS = ("results_mode", "latency_relative_error", "requests_table")


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def streamed(scenario: sim.Scenario, chunk_requests: int) -> tuple[Result, RequestTally]:
    """A streamed run with small chunks, its conservation laws checked as the runner does."""
    record = run_world(scenario, 0, streamed=True, chunk_requests=chunk_requests)
    result = collect(record)
    check_streamed(record)
    check_ledger(record, result.tables["transfers"])
    return result, record.tally


@pytest.fixture(scope="module")
def api_runs() -> tuple[Result, Result]:
    """The API scenario for 3 hours (7,314 requests), exact, and streamed in chunks of 300 gaps."""
    scenario = sim.load_scenario(API, ["horizon=3h"])
    return collect(World(scenario, 0).run()), streamed(scenario, 300)[0]


def test_a_streamed_run_counts_and_sums_what_an_exact_run_does(api_runs: tuple[Result, Result]) -> None:
    """Every summary field but the percentiles is the exact run's: request counts by status,
    pool and class, SLO attainment, availability, exposure, cost, energy, the lifecycle; means
    are sums over counts added in another order (equal to 1e-12). The ledger, costs and
    routing tables are the exact run's, row for row."""
    exact, stream_ = api_runs
    a = flat(exact.summary)
    assert a["requests_total"] == 7314 and a["classes.confidential.requests"] > 0
    assert stream_.summary["results_mode"] == "streamed" and a["results_mode"] == "exact"
    assert same_summary(exact.summary, stream_.summary, percentiles=False) > 150
    for name in ("transfers", "costs", "routing", "pools"):
        left, right = exact.tables[name], stream_.tables[name]
        assert list(left.columns) == list(right.columns), name
        assert len(left) == len(right) > 0, name
        for column in left.columns:
            if left[column].dtype.kind == "f":
                np.testing.assert_allclose(right[column].to_numpy(), left[column].to_numpy(), rtol=1e-12,
                                           err_msg=f"{name}.{column}")
            else:
                assert right[column].astype(str).tolist() == left[column].astype(str).tolist(), f"{name}.{column}"


def same_summary(left: dict[str, Any], right: dict[str, Any], percentiles: bool) -> int:
    """Assert two summaries agree field by field (floats to 1e-12: sums added in another
    order), percentiles too when `percentiles`; returns the fields compared."""
    a, b = flat(left), flat(right)
    assert set(a) - set(MODE_FIELDS) == set(b) - set(MODE_FIELDS)
    compared = 0
    for key in sorted(set(a) - set(MODE_FIELDS)):
        if not percentiles and key.endswith(PERCENTILE_FIELDS):
            continue
        if isinstance(a[key], float) and isinstance(b[key], float):
            assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-15), key
        else:
            assert b[key] == a[key], key
        compared += 1
    return compared


def order_statistics(values: np.ndarray, q: float) -> tuple[float, float]:
    """The two order statistics around rank q x (n - 1), which the percentile lies between."""
    ordered = np.sort(values)
    position = q * (len(ordered) - 1)
    return float(ordered[math.floor(position)]), float(ordered[math.ceil(position)])


def test_streamed_percentiles_are_within_the_stated_relative_error(api_runs: tuple[Result, Result]) -> None:
    """Each class's p50, p90 and p99 of TTFT, TPOT and E2E from the sketch lies within the
    summary's `latency_relative_error` of the exact order statistics around its rank (from
    the exact run's requests), and so does each SLO verdict's percentile."""
    exact, stream_ = api_runs
    a = stream_.summary["latency_relative_error"]
    assert a == 0.0025
    requests = exact.requests
    steady = requests[(requests["arrival_s"] >= exact.scenario.warmup) & (requests["status"] == "completed")]
    checked = 0
    for name, summary in stream_.summary["classes"].items():
        mine = steady[steady["traffic_class"] == name]
        for stem in ("ttft", "tpot", "e2e"):
            values = mine[f"{stem}_s"].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            for q in (50, 90, 99):
                low, high = order_statistics(values, q / 100)
                sketched = summary[f"{stem}_p{q}_s"]
                assert low * (1 - a) <= sketched <= high * (1 + a), (name, stem, q, low, high, sketched)
                checked += 1
            assert summary[f"{stem}_mean_s"] == pytest.approx(values.mean(), rel=1e-12)
    assert checked == 18
    for target, verdict in stream_.summary["slo"].items():
        exact_value = exact.summary["slo"][target]["measured_s"]
        assert verdict["met"] == exact.summary["slo"][target]["met"]
        assert abs(verdict["measured_s"] - exact_value) <= 2 * a * exact_value + 1e-9, target


def capture_ended(monkeypatch: pytest.MonkeyPatch) -> list[EndedRows]:
    """Record every chunk of ended requests a streamed world hands to its tally."""
    seen: list[EndedRows] = []
    original = World._ended

    def ended(self: World, rows: EndedRows) -> None:
        seen.append(rows)
        original(self, rows)

    monkeypatch.setattr(World, "_ended", ended)
    return seen


def outcomes(chunks: list[EndedRows]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every request's kernel rows (req_i, req_f), by request number."""
    request = np.concatenate([c.request for c in chunks])
    order = np.argsort(request)
    return request[order], np.concatenate([c.req_i for c in chunks])[order], np.concatenate(
        [c.req_f for c in chunks])[order]


@pytest.mark.parametrize(("path", "hours", "requests"), [(S1, 6, 19_000), (API, 3, 7_000)], ids=["s1", "api"])
def test_chunk_boundaries_change_nothing(monkeypatch: pytest.MonkeyPatch, path: Path, hours: int,
                                         requests: int) -> None:
    """S1 for 6 hours (19,431 requests), and the API example for 3 (its rate window, jitter
    and timeouts), streamed in chunks of 200 and of 5,000 gaps: every request's kernel row
    (pool, route, replica, status, version, preemptions, every time) is bit-identical between
    the two and to the whole kernel's row in an exact run, and the tallies (counts, sums,
    sketches) are equal."""
    scenario = sim.load_scenario(path, [f"horizon={hours}h"])
    exact = World(scenario, 0)
    exact.run()
    runs = []
    for chunk in (200, 5000):
        seen = capture_ended(monkeypatch)
        result, tally = streamed(scenario, chunk)
        runs.append((result, tally, outcomes(seen)))
        monkeypatch.undo()
    (small, a, (ids, rows_i, rows_f)), (large, b, (ids2, rows_i2, rows_f2)) = runs
    assert small.summary["requests_total"] == exact.requests.count == len(ids) > requests
    np.testing.assert_array_equal(ids, np.arange(exact.requests.count))
    outcome_columns = np.arange(exact.kernel.req_i.shape[1]) != RI_NEXT  # a link to another row: a row number
    for got_i, got_f in ((rows_i, rows_f), (rows_i2, rows_f2)):
        np.testing.assert_array_equal(got_i[:, outcome_columns], exact.kernel.req_i[:, outcome_columns])
        np.testing.assert_array_equal(got_f, exact.kernel.req_f)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.parts_count == b.parts_count and a.completed_output_tokens == b.completed_output_tokens
    for stem in ("ttft", "tpot", "e2e"):
        for q in (0.5, 0.9, 0.99):
            assert a.merged_latency(stem).quantile(q) == b.merged_latency(stem).quantile(q)
    assert same_summary(small.summary, large.summary, percentiles=True) > 180


def test_a_sketch_merged_from_parts_is_the_sketch_of_the_union() -> None:
    """Three replications' latencies sketched apart and merged give the union's sketch:
    the same count, the same quantile at every rank, the same exact min, max and sum."""
    rng = np.random.default_rng(7)
    parts = [rng.lognormal(mean, 0.9, size) for mean, size in ((-1.0, 40_000), (0.5, 25_000), (-0.2, 60_000))]
    merged = LatencySketch()
    for part in parts:
        sketch = LatencySketch()
        sketch.add(part)
        merged.merge(sketch)
    union = LatencySketch()
    union.add(np.concatenate(parts))
    assert merged.count == union.count == 125_000
    assert (merged.min, merged.max) == (union.min, union.max)
    assert merged.sum == pytest.approx(union.sum, rel=1e-12)
    for q in np.linspace(0.0, 1.0, 101):
        assert merged.quantile(q) == union.quantile(q)
    values = np.concatenate(parts)
    for q in (0.5, 0.9, 0.99, 0.999):
        low, high = order_statistics(values, q)
        assert low * (1 - merged.relative_accuracy) <= merged.quantile(q) <= high * (1 + merged.relative_accuracy)


def test_the_sketch_answers_as_the_ddsketch_package_does() -> None:
    """The numpy bucket counts give DDSketch's own answers: for 20,000 lognormal values and
    some zeros, every quantile equals that of the package's DDSketch fed value by value."""
    from ddsketch import DDSketch

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(-1.5, 1.2, 20_000), np.zeros(37)])
    reference = DDSketch(LatencySketch().relative_accuracy)
    for value in values.tolist():
        reference.add(value)
    sketch = LatencySketch()
    sketch.add(values[:7_000])
    sketch.add(values[7_000:])
    for q in np.linspace(0.001, 0.999, 97):
        expected = min(max(reference.get_quantile_value(q), values.min()), values.max())
        assert sketch.quantile(q) == pytest.approx(expected, rel=1e-12), q


def subset(table: RequestTable, index: np.ndarray) -> RequestTable:
    return RequestTable(**{f.name: getattr(table, f.name)[index] for f in dataclasses.fields(table)})


def test_a_tally_of_parts_merges_into_the_tally_of_the_whole() -> None:
    """An exact run's requests tallied in two interleaved halves and merged equal the tally
    of all of them: counts, windows, sums and sketches (the replications' pooling rests on it)."""
    scenario = sim.load_scenario(S1, ["horizon=2h"])
    record = World(scenario, 0).run()
    table, n = record.requests, len(record.requests)
    names = record.pool_names
    whole = tally_of(scenario, names, table)
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    left = tally_of(scenario, names, subset(table, even), even)
    right = tally_of(scenario, names, subset(table, odd), odd)
    assert not left.all_seen(n)
    left.merge(right)
    assert left.all_seen(n) and whole.all_seen(n)
    np.testing.assert_array_equal(left.counts, whole.counts)
    np.testing.assert_array_equal(left.window_ok, whole.window_ok)
    np.testing.assert_array_equal(left.routing, whole.routing)
    assert left.completed_output_tokens == whole.completed_output_tokens
    for stem in ("ttft", "tpot", "e2e"):
        for q in (0.5, 0.9, 0.99):
            assert left.merged_latency(stem).quantile(q) == whole.merged_latency(stem).quantile(q)


def test_the_kernel_window_does_not_grow_with_the_run() -> None:
    """S1 streamed for one day and for two (259k and 518k requests, each with a 14:00 peak):
    the most rows the kernel ever held is the same order either way (chunks of 2,000 gaps plus
    the requests in flight), not proportional to the requests (an exact kernel holds them all);
    the monitor's label feed ends each run holding only the labels of the last half hour or so
    (its label delay and a monitor interval), not the day's."""
    held = {}
    for hours in (24, 48):
        scenario = sim.load_scenario(S1, [f"horizon={hours}h"])
        world = World(scenario, 0, streamed=True, chunk_requests=2000, on_requests=lambda table, request: None)
        world.run()
        held[hours] = (world.kernel.capacity_max, world.kernel.fed)  # type: ignore[attr-defined]
        labels = world.lifecycle.labels
        kept = len(labels.index) + sum(len(part[0]) for part in labels._taken)
        assert kept < 40 * 60 * 5.4 * 0.25  # 40 minutes of labels at the peak rate
    (one_day, day_requests), (two_days, two_day_requests) = held[24], held[48]
    assert two_day_requests > 1.9 * day_requests > 450_000
    assert two_days <= 1.2 * one_day
    assert two_days < two_day_requests / 100


def test_arrival_blocks_draw_the_same_times_as_one_draw() -> None:
    """Poisson and diurnal arrivals drawn in blocks of 10,007 gaps are bit-identical to one draw."""
    for process in (Poisson(process="poisson", rate_per_s=40.0),
                    Diurnal(process="diurnal", rate_per_s=25.0, amplitude=0.8)):
        whole = process.times(86_400.0, stream(3, 1, "arrivals"))
        blocks = process.time_blocks(86_400.0, stream(3, 1, "arrivals"), 10_007)
        assert blocks is not None
        parts = list(blocks)
        assert len(parts) > 100
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_request_chunks_are_the_generated_requests() -> None:
    """A workload with share classes of their own lengths and shared prefixes, and one with
    uniform prompt lengths (bounded integers), in chunks, give generate_requests' arrays exactly."""
    workload = sim.load_scenario(SCENARIOS_DIR / "examples" / "hetero_h100_l4.yaml").workload
    uniform = sim.load_scenario(S1, ["workload.prompt_tokens={dist: uniform, low: 10, high: 5000}"]).workload
    for workload_, block in ((workload, 3000), (uniform, 2999)):
        whole = generate_requests(workload_, 6 * 3600.0, 11, 2)
        chunks = list(request_chunks(workload_, 6 * 3600.0, 11, 2, block=block))
        assert len(chunks) > 10
        for name in ("arrival_s", "prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens",
                     "traffic_class"):
            np.testing.assert_array_equal(np.concatenate([getattr(c, name) for c in chunks]), getattr(whole, name))
    assert len(set(generate_requests(workload, 3600.0, 11, 2).traffic_class.tolist())) == 2


def test_what_cannot_stream_is_refused_by_name() -> None:
    """A closed loop and injected faults cannot stream yet: a streamed world refuses them with
    an issue naming the field; exact mode runs them."""
    closed = sim.load_scenario(S1, ["horizon=10min", "warmup=1min",
                                    "workload.arrivals={process: concurrency, clients: 4}"])
    with pytest.raises(SpecError) as caught:
        run_world(closed, 0, streamed=True)
    assert [issue.path for issue in caught.value.issues] == ["workload.arrivals"]
    assert "closed loop" in caught.value.render() and "--keep-requests" in caught.value.render()
    faults = sim.load_scenario(SCENARIOS_DIR / "faults" / "s2_local_fallback.yaml", ["horizon=2h"])
    with pytest.raises(SpecError) as caught:
        run_world(faults, 0, streamed=True)
    assert "faults" in [issue.path for issue in caught.value.issues]
    assert World(closed, 0).run().requests.status.size > 0


def test_auto_mode_streams_only_large_runs() -> None:
    """`auto` keeps S1's requests (3 req/s: 467k expected candidates) and streams it at 100
    req/s; a large run that cannot stream (a closed loop of 2,000 clients) stays exact."""
    assert results_mode(sim.load_scenario(S1), "auto") == "exact"
    assert results_mode(sim.load_scenario(S1, ["workload.arrivals.rate_per_s=100"]), "auto") == "streamed"
    assert results_mode(sim.load_scenario(S1, ["workload.arrivals.rate_per_s=100"]), "exact") == "exact"
    closed = sim.load_scenario(S1, ["workload.arrivals={process: concurrency, clients: 2000}"])  # 2M requests
    assert results_mode(closed, "auto") == "exact"  # it cannot stream: the memory check judges it


def test_deploysim_run_stream_says_what_it_kept(tmp_path: Path) -> None:
    """`deploysim run --stream` writes the summary with results_mode and the sketch's error,
    and no requests.parquet, saying so; --stream with --keep-requests, or a scenario that
    cannot stream, is a usage error (exit 2) naming the option or field."""
    runner = CliRunner()
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(S1), "--stream", "-q", "--out", str(out), "--set", "horizon=1h",
                               "--set", "warmup=5min"])
    assert done.exit_code == 0, done.output
    assert "requests.parquet not written" in done.output
    assert not (out / "requests.parquet").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results_mode"] == "streamed" and summary["latency_relative_error"] == 0.0025
    assert "--keep-requests" in summary["requests_table"]
    both = runner.invoke(app, ["run", str(S1), "--stream", "--keep-requests", "-q", "--out", str(out)])
    assert both.exit_code == 2 and "--stream" in both.output
    faults = runner.invoke(app, ["run", str(SCENARIOS_DIR / "faults" / "s2_local_fallback.yaml"), "--stream", "-q",
                                 "--out", str(out), "--set", "horizon=1h", "--set", "warmup=5min"])
    assert faults.exit_code == 2 and "faults" in faults.output and "Traceback" not in faults.output


def test_a_comparison_pools_streamed_replications_by_merging_their_sketches() -> None:
    """Three replications of S1 (2 hours) streamed: the comparison's pooled p50/p99 of TTFT
    and E2E are the merged sketches' and lie within the sketch's error of the exact pooled
    order statistics (the same replications run exact); the timeline bins count the same
    completed requests as the exact digest's."""
    from sim.experiment import Comparison, digest
    from sim.runner import run_point

    scenario = sim.load_scenario(S1, ["horizon=2h", "warmup=10min"])
    exact = [digest(run_point(scenario, k, mode="exact")) for k in range(3)]
    streamed_runs = [digest(run_point(scenario, k, mode="streamed")) for k in range(3)]
    assert all(run.sketches and not run.latency for run in streamed_runs)
    pooled = {name: Comparison([scenario], {scenario.name: runs}, 3) for name, runs in
              (("exact", exact), ("streamed", streamed_runs))}
    a = LatencySketch().relative_accuracy
    for latency in ("ttft_s", "e2e_s"):
        values = np.concatenate([run.latency[latency] for run in exact]).astype(np.float64)
        for q in (50, 99):
            low, high = order_statistics(values, q / 100)
            # the exact digest keeps float32 latencies: allow their rounding too
            value = pooled["streamed"].pooled_percentile(scenario.name, latency, q)
            assert low * (1 - a) * (1 - 1e-6) <= value <= high * (1 + a) * (1 + 1e-6), (latency, q)
    for run_exact, run_streamed in zip(exact, streamed_runs, strict=True):
        assert run_exact.timeline["requests"].tolist() == run_streamed.timeline["requests"].tolist()
        np.testing.assert_allclose(run_streamed.timeline["ttft_mean_s"], run_exact.timeline["ttft_mean_s"],
                                   rtol=1e-9)


def test_a_streamed_run_is_judged_by_what_it_holds_and_capped_in_requests() -> None:
    """At 20,000 req/s for a day (1.7e9 requests) an exact run would need 1.5 TB and is
    refused, but a streamed one holds a bit per request (216 MB) and a window, and fits;
    at 1e6 req/s (8.6e10 requests, more than a streamed run takes) both are refused by name."""
    from sim.workload.limits import check_run_fits

    busy = sim.load_scenario(S1, ["workload.arrivals={process: poisson, rate_per_s: 20000}"])
    with pytest.raises(SpecError, match="would need about"):
        check_run_fits(busy)
    check_run_fits(busy, streamed=True)
    typo = sim.load_scenario(S1, ["workload.arrivals={process: poisson, rate_per_s: 1000000}"])
    with pytest.raises(SpecError) as caught:
        check_run_fits(typo, streamed=True)
    assert caught.value.issues[0].path == "workload.arrivals"
    assert "would simulate about" in caught.value.render() or "would need about" in caught.value.render()


def test_the_tally_thread_takes_chunks_in_order_bounded_and_raises_what_the_tally_raised() -> None:
    """`TallyThread` (a streamed run's tally on a thread of its own): chunks reach `add` in the
    order given, at most `backlog` wait (the caller blocks, not the queue grows), and an error
    in `add` comes back to the caller at the latest on `join`."""
    import threading
    import time

    from sim.metrics.tally import TallyThread

    taken: list[int] = []
    waiting_most = 0
    gate = threading.Event()

    def add(_: Any, request: np.ndarray) -> None:
        gate.wait(5.0)
        time.sleep(0.001)
        taken.append(int(request[0]))

    behind = TallyThread(add, backlog=2)
    for k in range(3):  # the third call blocks until the first chunk is taken: release it
        if k == 2:
            threading.Timer(0.05, gate.set).start()
        behind(None, np.array([k]))  # type: ignore[arg-type]
        waiting_most = max(waiting_most, len(behind._waiting))
    for k in range(3, 40):
        behind(None, np.array([k]))  # type: ignore[arg-type]
        waiting_most = max(waiting_most, len(behind._waiting))
    behind.join()
    assert taken == list(range(40))
    assert waiting_most <= 2

    def broken(_: Any, request: np.ndarray) -> None:
        if int(request[0]) == 3:
            raise ValueError("chunk 3 breaks an invariant")

    behind = TallyThread(broken)
    with pytest.raises(ValueError, match="chunk 3"):
        for k in range(5):
            behind(None, np.array([k]))  # type: ignore[arg-type]
        behind.join()


def test_read_ahead_prepares_the_next_item_on_its_thread_in_order_and_stops() -> None:
    """`ReadAhead` (a streamed run's next chunk drawn and its rows written while the kernel runs):
    items come prepared, in order, each made on a thread of its own before the caller asks for
    it; an error in the items or in `prepare` comes back at that item; `close` stops it with
    at most one item read ahead."""
    import threading

    from sim.kernels.streaming import ReadAhead

    threads: set[int] = set()
    asked: list[int] = []
    ready = {k: threading.Event() for k in range(6)}

    def items() -> Any:
        for k in range(6):
            asked.append(k)
            yield k

    def prepare(k: int) -> int:
        threads.add(threading.get_ident())
        ready[k].set()
        return k * k

    ahead = ReadAhead(items(), prepare)
    got = []
    for value in ahead:
        k = len(got)
        got.append(value)
        if k + 1 < 6:  # the next one is made while the caller still holds this one
            assert ready[k + 1].wait(5.0)
    assert got == [k * k for k in range(6)]
    assert threads and threading.get_ident() not in threads
    assert next(ahead, None) is None  # exhausted, and stays so

    def broken() -> Any:
        yield 1
        raise ValueError("chunk 2 cannot be drawn")

    ahead = ReadAhead(broken(), lambda k: k)
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="chunk 2"):
        next(ahead)
    assert next(ahead, None) is None  # and it stopped

    asked.clear()
    ahead = ReadAhead(items(), lambda k: k)
    assert next(ahead) == 0
    ahead.close()
    assert asked in ([0], [0, 1])  # at most the one read ahead
    assert next(ahead, None) is None
