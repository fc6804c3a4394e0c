"""The workload generator: arrival processes, token lengths, prefixes, trace replay, streams.

Statistical tests use fixed seeds, so they are deterministic; their tolerances are set at about
4 standard deviations of the estimate (or wider, as stated), so a change of seed would not
make them flaky either.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.spec import SpecError
from sim.spec.scenario import Workload
from sim.streams import stream
from sim.workload import Requests, generate_requests
from sim.workload.lengths import sample_lengths
from sim.workload.limits import BYTES_PER_REQUEST
from sim.workload.trace import read_trace

REAL_TRACE = Path("/work/shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv")
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
REAL_TRACE_HEAD = [  # the first rows of the conv trace, as published
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:50.9951690,396,109",
    "2023-11-16 18:15:51.2224670,879,55",
    "2023-11-16 18:15:51.3910170,91,16",
]


def workload(arrivals: dict[str, Any], prompt: dict[str, Any] | None = None,
             output: dict[str, Any] | None = None, **extra: Any) -> Workload:
    """A workload from its parts; lengths default to fixed 100 / 10 tokens."""
    return Workload.model_validate({
        "origin": "edge",
        "arrivals": arrivals,
        "prompt_tokens": prompt or {"dist": "fixed", "value": 100},
        "output_tokens": output or {"dist": "fixed", "value": 10},
        **extra,
    })


def spec_of(arrivals: dict[str, Any]) -> Any:
    return workload(arrivals).arrivals


def write_csv(directory: Path, lines: list[str], name: str = "trace.csv") -> Path:
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def azure_rows(offsets_s: list[float], prompt: list[int], output: list[int]) -> list[str]:
    """Azure-format lines (with header) for requests at the given seconds after 18:17:00."""
    lines = [AZURE_HEADER]
    for offset, p, o in zip(offsets_s, prompt, output, strict=True):
        whole = int(offset)
        frac = round((offset - whole) * 1e7)
        lines.append(f"2023-11-16 18:{17 + whole // 60:02d}:{whole % 60:02d}.{frac:07d},{p},{o}")
    return lines


def trace_workload(path: Path, **trace: Any) -> Workload:
    return workload({"process": "trace", "path": str(path), **trace})


# --------------------------------------------------------------------------------------------
# Arrival processes
# --------------------------------------------------------------------------------------------


def test_poisson_counts_and_exponential_gaps() -> None:
    """Poisson: count within 4 sd of rate x horizon; gaps exponential (mean 2%, CV 3%)."""
    rate, horizon = 50.0, 20_000.0
    times = spec_of({"process": "poisson", "rate_per_s": rate}).times(horizon, stream(7, 0, "arrivals"))
    expected = rate * horizon
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)
    assert times[0] > 0 and times[-1] < horizon and np.all(np.diff(times) >= 0)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)


def test_constant_spacing_is_exact() -> None:
    """Constant: t_k = k / rate exactly, first at 0, and every k / rate below the horizon."""
    for rate, horizon in [(3.0, 10.0), (0.7, 10.0), (1000.0, 3.3)]:
        times = spec_of({"process": "constant", "rate_per_s": rate}).times(horizon, stream(0, 0, "arrivals"))
        n = len(times)
        np.testing.assert_array_equal(times, np.arange(n) / rate)
        assert (n - 1) / rate < horizon <= n / rate


def test_bursty_mean_rate_and_overdispersion() -> None:
    """Bursty MMPP: long-run rate (r_q m_q + r_b m_b)/(m_q + m_b) within 3%; counts over-dispersed.

    With r_q=1, r_b=5, m_q=m_b=10 s the asymptotic index of dispersion is about 14, so the
    count over 200,000 s has a relative sd of about 0.5%; 3% is about 6 sd. Counts per 100 s
    window must have variance/mean > 2 (a Poisson process gives 1).
    """
    spec = spec_of({"process": "bursty", "rate_per_s": 1, "burst_rate_per_s": 5,
                    "mean_quiet": 10, "mean_burst": 10})
    horizon = 200_000.0
    times = spec.times(horizon, stream(3, 0, "arrivals"))
    assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < horizon
    mean_rate = (1 * 10 + 5 * 10) / 20
    assert len(times) / horizon == pytest.approx(mean_rate, rel=0.03)
    counts = np.bincount((times // 100).astype(int), minlength=int(horizon // 100))
    assert counts.var() / counts.mean() > 2.0


def test_bursty_starts_quiet() -> None:
    """The first sojourn is quiet: in the first second, with a 1000 s mean quiet sojourn at
    0.001/s, almost nothing arrives (a start in the 1000/s burst state would bring ~1000)."""
    spec = spec_of({"process": "bursty", "rate_per_s": 0.001, "burst_rate_per_s": 1000,
                    "mean_quiet": 1000, "mean_burst": 1})
    assert len(spec.times(1.0, stream(1, 0, "arrivals"))) <= 2


def test_diurnal_peak_to_trough_ratio_and_total() -> None:
    """Diurnal: peak-hour/trough-hour counts ~ (1+a)/(1-a) within 10%, total within 3%.

    Over 4 days at 1/s the peak hours hold ~21,600 requests and the trough hours ~7,200, so the
    ratio's relative sd is ~1.4%. The hour-average of the cosine (0.997) moves the ratio from
    3.0 to 2.99, well inside the tolerance.
    """
    a, period, peak = 0.5, 86_400.0, 14 * 3600.0
    spec = spec_of({"process": "diurnal", "rate_per_s": 1.0, "amplitude": a,
                    "period": period, "peak_at": peak})
    horizon = 4 * period
    times = spec.times(horizon, stream(5, 0, "arrivals"))
    assert np.all(np.diff(times) >= 0) and times[-1] < horizon
    phase = (times - peak) % period
    at_peak = np.sum((phase < 1800) | (phase >= period - 1800))
    at_trough = np.sum(np.abs(phase - period / 2) < 1800)
    assert at_peak / at_trough == pytest.approx((1 + a) / (1 - a), rel=0.10)
    assert len(times) == pytest.approx(1.0 * horizon, rel=0.03)


def test_stages_run_in_order_and_stop_after_the_last() -> None:
    """Stages: each stage's count matches its rate (Poisson 4 sd, constant exact); none after the last."""
    spec = spec_of({"process": "stages", "stages": [
        {"duration": 100, "rate_per_s": 5},
        {"duration": 100, "rate_per_s": 20, "process": "constant"},
        {"duration": 100, "rate_per_s": 1},
    ]})
    times = spec.times(1000.0, stream(2, 0, "arrivals"))
    assert np.all(np.diff(times) >= 0)
    counts = np.histogram(times, bins=[0, 100, 200, 300, 1000])[0]
    assert abs(counts[0] - 500) < 4 * math.sqrt(500)
    assert counts[1] == 2000
    np.testing.assert_allclose(times[(times >= 100) & (times < 200)], 100 + np.arange(2000) / 20)
    assert abs(counts[2] - 100) < 4 * math.sqrt(100)
    assert counts[3] == 0


def test_stages_repeat_until_the_horizon() -> None:
    """Repeated stages loop: a 10 s constant stage at 1/s then a 10 s quiet-ish one, cut mid-cycle."""
    spec = spec_of({"process": "stages", "repeat": True, "stages": [
        {"duration": 10, "rate_per_s": 1, "process": "constant"},
        {"duration": 10, "rate_per_s": 0.1, "process": "constant"},
    ]})
    times = spec.times(45.0, stream(0, 0, "arrivals"))
    expected = [*range(0, 10), 10, *range(20, 30), 30, *range(40, 45)]
    np.testing.assert_allclose(times, expected)


def test_concurrency_gives_clients_zeros_then_nans() -> None:
    """Closed loop: the first `clients` send at 0, the rest are NaN; default count is clients x 1000."""
    requests = generate_requests(
        workload({"process": "concurrency", "clients": 4, "think_time": "2s", "requests": 10}),
        horizon_s=60.0, seed=0, replication=0)
    assert requests.count == 10 and requests.clients == 4 and requests.think_time_s == 2.0
    np.testing.assert_array_equal(requests.arrival_s[:4], 0.0)
    assert np.isnan(requests.arrival_s[4:]).all()
    default = generate_requests(workload({"process": "concurrency", "clients": 3}), 60.0, 0, 0)
    assert default.count == 3000 and np.isnan(default.arrival_s[3:]).all()


def test_open_loop_has_no_clients() -> None:
    """An open-loop workload reports clients = 0 and think time 0."""
    requests = generate_requests(workload({"process": "poisson", "rate_per_s": 2}), 10.0, 0, 0)
    assert requests.clients == 0 and requests.think_time_s == 0.0


def test_absurd_request_counts_are_refused() -> None:
    """A rate x horizon far beyond memory is a SpecError naming the arrivals, the estimate (at the
    measured bytes per request), the memory available and what to change; not an OOM."""
    with pytest.raises(SpecError) as caught:
        generate_requests(workload({"process": "poisson", "rate_per_s": 1e6}), 1e6, 0, 0)
    assert caught.value.issues[0].path == "workload.arrivals"
    text = str(caught.value)
    assert f"1,000,000,000,000 requests x {BYTES_PER_REQUEST} B" in text
    assert "available" in text and "a lower rate, a shorter horizon" in text


# --------------------------------------------------------------------------------------------
# Trace replay
# --------------------------------------------------------------------------------------------


def test_azure_trace_times_are_relative_scaled_and_cut(tmp_path: Path) -> None:
    """Azure replay: times relative to the first row, x time_scale, requests at/after horizon cut."""
    path = write_csv(tmp_path, azure_rows([3.0, 3.5, 4.25, 5.0, 7.0], [10, 20, 30, 40, 50],
                                          [1, 2, 3, 4, 5]))
    requests = generate_requests(trace_workload(path), 10.0, 0, 0)
    np.testing.assert_allclose(requests.arrival_s, [0, 0.5, 1.25, 2.0, 4.0], atol=1e-9)
    np.testing.assert_array_equal(requests.prompt_tokens, [10, 20, 30, 40, 50])
    np.testing.assert_array_equal(requests.output_tokens, [1, 2, 3, 4, 5])

    slow = generate_requests(trace_workload(path, time_scale=2), 10.0, 0, 0)
    np.testing.assert_allclose(slow.arrival_s, [0, 1.0, 2.5, 4.0, 8.0], atol=1e-9)

    cut = generate_requests(trace_workload(path), 2.0, 0, 0)  # the request at 2.0 is cut
    np.testing.assert_allclose(cut.arrival_s, [0, 0.5, 1.25], atol=1e-9)
    np.testing.assert_array_equal(cut.prompt_tokens, [10, 20, 30])


def test_azure_trace_loop_repeats_with_the_mean_gap(tmp_path: Path) -> None:
    """Loop: copies follow every span + mean gap (4 + 1 = 5 s), tokens repeat with them."""
    path = write_csv(tmp_path, azure_rows([0.0, 0.5, 1.25, 2.0, 4.0], [1, 2, 3, 4, 5],
                                          [6, 7, 8, 9, 10]))
    requests = generate_requests(trace_workload(path, loop=True), 12.0, 0, 0)
    one = np.array([0, 0.5, 1.25, 2.0, 4.0])
    np.testing.assert_allclose(requests.arrival_s, np.concatenate([one, one + 5, one[:3] + 10]),
                               atol=1e-9)
    np.testing.assert_array_equal(requests.prompt_tokens, [1, 2, 3, 4, 5] * 2 + [1, 2, 3])
    np.testing.assert_array_equal(requests.output_tokens, [6, 7, 8, 9, 10] * 2 + [6, 7, 8])


def test_trace_sorted_zero_tokens_and_sub_microsecond_times(tmp_path: Path) -> None:
    """Rows out of order are sorted with their tokens; 0 tokens become 1; 7-digit fractions kept."""
    path = write_csv(tmp_path, [
        AZURE_HEADER,
        "2023-11-16 18:17:05.0000000,30,0",
        "2023-11-16 18:17:03.9799600,0,7",
        "2023-11-16 18:17:03.9799601,5,8",
    ])
    times, prompt, output = read_trace(path)
    np.testing.assert_allclose(times, [0.0, 1e-7, 1.02004], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(prompt, [1, 5, 30])
    np.testing.assert_array_equal(output, [7, 8, 1])
    assert prompt.dtype == np.int32 and times.dtype == np.float64


def test_trace_without_token_counts_uses_the_distributions(tmp_path: Path) -> None:
    """use_token_counts: false keeps the trace's times and samples lengths from the spec."""
    path = write_csv(tmp_path, azure_rows([0, 1, 2], [10, 20, 30], [1, 2, 3]))
    spec = workload({"process": "trace", "path": str(path), "use_token_counts": False},
                    prompt={"dist": "fixed", "value": 77}, output={"dist": "fixed", "value": 5})
    requests = generate_requests(spec, 10.0, 0, 0)
    np.testing.assert_allclose(requests.arrival_s, [0, 1, 2])
    np.testing.assert_array_equal(requests.prompt_tokens, [77, 77, 77])
    np.testing.assert_array_equal(requests.output_tokens, [5, 5, 5])


def test_generic_csv_with_column_mapping_and_milliseconds(tmp_path: Path) -> None:
    """Format csv: columns map time/prompt/output, time_unit ms becomes seconds; other columns ignored."""
    path = write_csv(tmp_path, [
        "id,sent_ms,input_len,output_len,note",
        "a,1000,100,10,x",
        "b,1250,200,20,y",
        "c,3000,300,30,z",
    ])
    spec = trace_workload(path, format="csv", time_unit="ms", columns={
        "time": "sent_ms", "prompt_tokens": "input_len", "output_tokens": "output_len"})
    requests = generate_requests(spec, 100.0, 0, 0)
    np.testing.assert_allclose(requests.arrival_s, [0.0, 0.25, 2.0])
    np.testing.assert_array_equal(requests.prompt_tokens, [100, 200, 300])
    np.testing.assert_array_equal(requests.output_tokens, [10, 20, 30])


def test_relative_trace_path_resolves_against_base_dir(tmp_path: Path) -> None:
    """A Workload built in code with a relative path reads it from `base_dir`."""
    write_csv(tmp_path, azure_rows([0, 1], [10, 20], [1, 2]), name="t.csv")
    requests = generate_requests(trace_workload(Path("t.csv")), 10.0, 0, 0, base_dir=tmp_path)
    np.testing.assert_array_equal(requests.prompt_tokens, [10, 20])


def test_trace_rereads_an_edited_file(tmp_path: Path) -> None:
    """The read cache is keyed by modification time and size: an edited trace is read again."""
    path = write_csv(tmp_path, azure_rows([0, 1], [10, 20], [1, 2]))
    assert read_trace(path)[1].tolist() == [10, 20]
    write_csv(tmp_path, azure_rows([0, 1, 2], [11, 21, 31], [1, 2, 3]))
    assert read_trace(path)[1].tolist() == [11, 21, 31]


def test_real_azure_trace_head(tmp_path: Path) -> None:
    """The conv trace's first rows read as published: the real file when present, else its head.

    Gaps between the first four requests are 4.314579 s, 0.227298 s and 0.168550 s.
    """
    path = REAL_TRACE if REAL_TRACE.is_file() else write_csv(tmp_path, [AZURE_HEADER, *REAL_TRACE_HEAD])
    times, prompt, output = read_trace(path)
    np.testing.assert_allclose(times[:4], [0.0, 4.314579, 4.541877, 4.710427], atol=1e-9)
    np.testing.assert_array_equal(prompt[:4], [374, 396, 879, 91])
    np.testing.assert_array_equal(output[:4], [44, 109, 55, 16])
    assert np.all(np.diff(times) >= 0) and prompt.min() >= 1 and output.min() >= 1


# --------------------------------------------------------------------------------------------
# Bad trace files
# --------------------------------------------------------------------------------------------


def trace_error(path: Path, **trace: Any) -> SpecError:
    with pytest.raises(SpecError) as caught:
        generate_requests(trace_workload(path, **trace), 100.0, 0, 0)
    return caught.value


def test_missing_trace_file_is_a_spec_error(tmp_path: Path) -> None:
    """A missing file names the file, under workload.arrivals.path."""
    error = trace_error(tmp_path / "nope.csv")
    assert error.issues[0].path == "workload.arrivals.path"
    assert "not found" in str(error) and "nope.csv" in str(error)


def test_missing_column_names_the_file_and_column(tmp_path: Path) -> None:
    """An Azure file without GeneratedTokens: the error names file, column and the columns it has."""
    path = write_csv(tmp_path, ["TIMESTAMP,ContextTokens", "2023-11-16 18:17:03.9799600,5"])
    error = trace_error(path)
    issue = error.issues[0]
    assert issue.path == "workload.arrivals.path"
    assert str(path) in issue.message and "'GeneratedTokens'" in issue.message
    assert "TIMESTAMP, ContextTokens" in issue.allowed


def test_unreadable_token_names_file_and_line(tmp_path: Path) -> None:
    """'abc' in ContextTokens on line 5 (after a blank line 3): message names file, line 5, column."""
    lines = azure_rows([0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4])
    lines[3] = lines[3].replace(",3,", ",abc,")
    lines.insert(2, "")  # a blank line: pandas skips it, the line count must not
    path = write_csv(tmp_path, lines)
    message = trace_error(path).issues[0].message
    assert message == f"{path}, line 5: cannot read 'abc' as ContextTokens (a whole number >= 0)"


def test_negative_tokens_name_the_line(tmp_path: Path) -> None:
    """A negative GeneratedTokens on line 3 is reported with its line."""
    path = write_csv(tmp_path, azure_rows([0, 1, 2], [1, 2, 3], [1, -4, 3]))
    message = trace_error(path).issues[0].message
    assert f"{path}, line 3: GeneratedTokens is negative (-4)" in message


def test_infinite_tokens_name_the_line(tmp_path: Path) -> None:
    """An 'inf' token count (an OverflowError before) is reported with its line as not finite."""
    path = write_csv(tmp_path, azure_rows([0, 1, 2], [1, 2, 3], [1, "inf", 3]))
    message = trace_error(path).issues[0].message
    assert f"{path}, line 3: GeneratedTokens is inf, not a finite number" in message


def test_trace_that_is_not_a_regular_file_or_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO is refused without opening it (it would block); a file over the cap names the cap."""
    import os

    import sim.workload.trace as trace_module

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert "not a regular file" in str(trace_error(fifo))
    monkeypatch.setattr(trace_module, "MAX_TRACE_BYTES", 10)
    path = write_csv(tmp_path, azure_rows([0, 1, 2], [1, 2, 3], [1, 2, 3]))
    assert "over the 10 B cap for a trace" in str(trace_error(path))


def test_bad_rows_report_the_first_one(tmp_path: Path) -> None:
    """With a bad timestamp on line 4 and a fractional token on line 3, line 3 is reported."""
    lines = azure_rows([0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4])
    lines[2] = lines[2].rsplit(",", 1)[0] + ",2.5"
    lines[3] = "yesterday,3,3"
    path = write_csv(tmp_path, lines)
    assert "line 3: cannot read '2.5' as GeneratedTokens" in trace_error(path).issues[0].message
    lines[2] = lines[2].rsplit(",", 1)[0] + ",2"
    path = write_csv(tmp_path, lines)
    assert "line 4: cannot read 'yesterday' as TIMESTAMP (a date and time" in trace_error(path).issues[0].message


def test_row_with_extra_fields_is_reported(tmp_path: Path) -> None:
    """A row with more fields than the header (an unquoted comma) is an error on its line."""
    lines = azure_rows([0, 1, 2], [1, 2, 3], [1, 2, 3])
    lines[2] += ",oops"
    message = trace_error(write_csv(tmp_path, lines)).issues[0].message
    assert "line 3: 4 fields where the header has 3" in message


def test_empty_and_header_only_traces(tmp_path: Path) -> None:
    """An empty file and a header without rows are errors that say so."""
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in str(trace_error(empty))
    assert "no rows" in str(trace_error(write_csv(tmp_path, [AZURE_HEADER])))


def test_csv_format_needs_a_time_column(tmp_path: Path) -> None:
    """Format csv without columns.time is an error at workload.arrivals.columns."""
    path = write_csv(tmp_path, ["t,p,o", "1,2,3"])
    error = trace_error(path, format="csv", time_unit="s")
    assert error.issues[0].path == "workload.arrivals.columns"
    assert "columns.time" in error.issues[0].message


def test_csv_mapping_to_a_missing_column_blames_the_mapping(tmp_path: Path) -> None:
    """columns.prompt_tokens naming a column the file lacks: error at that key, with a suggestion."""
    path = write_csv(tmp_path, ["t,input_len,o", "1,2,3"])
    error = trace_error(path, format="csv", time_unit="s",
                        columns={"time": "t", "prompt_tokens": "input_lem", "output_tokens": "o"})
    assert error.issues[0].path == "workload.arrivals.columns.prompt_tokens"
    assert "did you mean 'input_len'" in error.issues[0].message


def test_loop_needs_a_trace_with_length(tmp_path: Path) -> None:
    """A one-row trace cannot loop: there is no span to repeat."""
    path = write_csv(tmp_path, azure_rows([1.0], [5], [5]))
    error = trace_error(path, loop=True)
    assert error.issues[0].path == "workload.arrivals.loop"


# --------------------------------------------------------------------------------------------
# Token lengths and prefixes
# --------------------------------------------------------------------------------------------


def lengths_of(spec: dict[str, Any], n: int, name: str = "prompt_tokens", seed: int = 0) -> np.ndarray:
    return sample_lengths(workload({"process": "poisson", "rate_per_s": 1}, prompt=spec).prompt_tokens,
                          n, stream(seed, 0, name), "prompt")


def test_lognormal_mean_matches_when_clipping_is_negligible() -> None:
    """Lognormal(mean 500, sigma 0.8): sample mean within 2% (its sd is ~0.2%); int32 >= 1."""
    lengths = lengths_of({"dist": "lognormal", "mean": 500, "sigma": 0.8}, 200_000)
    assert lengths.dtype == np.int32 and lengths.min() >= 1
    assert lengths.mean() == pytest.approx(500, rel=0.02)


def test_lognormal_bounds_are_respected() -> None:
    """Clipping to [min, max]: every length inside, and both bounds reached."""
    lengths = lengths_of({"dist": "lognormal", "mean": 300, "sigma": 1.5, "min": 100, "max": 1000}, 50_000)
    assert lengths.min() == 100 and lengths.max() == 1000


def test_uniform_includes_both_bounds() -> None:
    """Uniform low..high: exactly the integers 3..7, each about a fifth of the time (4 sd)."""
    lengths = lengths_of({"dist": "uniform", "low": 3, "high": 7}, 50_000)
    values, counts = np.unique(lengths, return_counts=True)
    assert values.tolist() == [3, 4, 5, 6, 7]
    assert np.all(np.abs(counts - 10_000) < 4 * math.sqrt(50_000 * 0.2 * 0.8))


def test_lengths_beyond_int32_are_refused() -> None:
    """A bound above 2**31 - 1 tokens would wrap around in int32: it is a SpecError instead."""
    with pytest.raises(SpecError) as caught:
        lengths_of({"dist": "uniform", "low": 1, "high": 2**31}, 3)
    assert caught.value.issues[0].path == "workload.prompt_tokens.high"


def test_fixed_lengths() -> None:
    """Fixed: every request has `value` tokens."""
    assert lengths_of({"dist": "fixed", "value": 42}, 5).tolist() == [42] * 5


def test_empirical_samples_the_format_column(tmp_path: Path) -> None:
    """Empirical from an Azure file: prompts from ContextTokens, outputs from GeneratedTokens."""
    path = write_csv(tmp_path, azure_rows([0, 1, 2], [10, 20, 0], [7, 8, 9]))
    spec = workload({"process": "poisson", "rate_per_s": 50},
                    prompt={"dist": "empirical", "path": str(path)},
                    output={"dist": "empirical", "path": str(path)})
    requests = generate_requests(spec, 100.0, 0, 0)
    assert set(requests.prompt_tokens.tolist()) == {1, 10, 20}  # the 0 counts as 1
    assert set(requests.output_tokens.tolist()) == {7, 8, 9}


def test_empirical_from_generic_csv_needs_a_column(tmp_path: Path) -> None:
    """Empirical from a csv without `column` is an error at workload.prompt_tokens.column."""
    path = write_csv(tmp_path, ["n", "5"])
    spec = workload({"process": "poisson", "rate_per_s": 1},
                    prompt={"dist": "empirical", "path": str(path), "format": "csv"})
    with pytest.raises(SpecError) as caught:
        generate_requests(spec, 10.0, 0, 0)
    assert caught.value.issues[0].path == "workload.prompt_tokens.column"
    spec = workload({"process": "poisson", "rate_per_s": 1},
                    prompt={"dist": "empirical", "path": str(path), "format": "csv", "column": "n"})
    assert set(generate_requests(spec, 10.0, 0, 0).prompt_tokens.tolist()) == {5}


@pytest.mark.parametrize("spec", [
    {"dist": "lognormal", "mean": 800, "sigma": 1.2},
    {"dist": "uniform", "low": 1, "high": 4096},
    {"dist": "uniform", "low": 1, "high": 3_000_000_000 // 2},
])
def test_lengths_are_drawn_by_index(spec: dict[str, Any]) -> None:
    """Drawing n lengths gives the same first k as drawing k (numpy draws sequentially)."""
    np.testing.assert_array_equal(lengths_of(spec, 1_000), lengths_of(spec, 5_000)[:1_000])


def test_prefix_share_and_prompt_includes_the_prefix() -> None:
    """Prefixes: share 0.3 of requests grouped (4 sd), groups uniform over 4, prompt = sampled + prefix."""
    arrivals = {"process": "poisson", "rate_per_s": 100}
    prompt = {"dist": "lognormal", "mean": 200}
    plain = generate_requests(workload(arrivals, prompt), 400.0, 9, 0)
    grouped = generate_requests(
        workload(arrivals, prompt, prefixes={"groups": 4, "prefix_tokens": 1000, "share": 0.3}),
        400.0, 9, 0)
    n = grouped.count
    has = grouped.prefix_group >= 0
    assert abs(has.sum() - 0.3 * n) < 4 * math.sqrt(n * 0.3 * 0.7)
    assert set(np.unique(grouped.prefix_group[has]).tolist()) == {0, 1, 2, 3}
    group_counts = np.bincount(grouped.prefix_group[has])
    assert np.all(np.abs(group_counts - has.sum() / 4) < 4 * math.sqrt(has.sum() * 0.25 * 0.75))
    np.testing.assert_array_equal(grouped.prefix_tokens, np.where(has, 1000, 0))
    np.testing.assert_array_equal(grouped.prompt_tokens, plain.prompt_tokens + grouped.prefix_tokens)
    np.testing.assert_array_equal(grouped.arrival_s, plain.arrival_s)


# --------------------------------------------------------------------------------------------
# Streams: reproducibility and common random numbers
# --------------------------------------------------------------------------------------------

RICH = {
    "prompt": {"dist": "lognormal", "mean": 600, "sigma": 1.0},
    "output": {"dist": "uniform", "low": 10, "high": 400},
    "prefixes": {"groups": 8, "prefix_tokens": 256, "share": 0.5},
}


def rich(arrivals: dict[str, Any]) -> Workload:
    return workload(arrivals, **RICH)


def arrays(requests: Requests) -> list[bytes]:
    return [getattr(requests, name).tobytes() for name in
            ("arrival_s", "prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens")]


@pytest.mark.parametrize("arrivals", [
    {"process": "poisson", "rate_per_s": 20},
    {"process": "bursty", "rate_per_s": 2, "burst_rate_per_s": 50, "mean_quiet": 30, "mean_burst": 5},
    {"process": "diurnal", "rate_per_s": 10, "period": 600},
    {"process": "stages", "repeat": True, "stages": [{"duration": 50, "rate_per_s": 10},
                                                       {"duration": 50, "rate_per_s": 5, "process": "constant"}]},
])
def test_same_seed_is_bit_identical_and_replications_differ(arrivals: dict[str, Any]) -> None:
    """Same (seed, replication): identical bytes in every array. Another replication: different."""
    spec = rich(arrivals)
    first, again = generate_requests(spec, 1000.0, 42, 0), generate_requests(spec, 1000.0, 42, 0)
    assert arrays(first) == arrays(again)
    other = generate_requests(spec, 1000.0, 42, 1)
    assert not np.array_equal(first.arrival_s[:100], other.arrival_s[:100])
    assert not np.array_equal(first.prompt_tokens[:100], other.prompt_tokens[:100])
    assert not np.array_equal(first.prefix_group[:100], other.prefix_group[:100])


def test_changing_the_rate_keeps_request_lengths() -> None:
    """Common random numbers: at twice the rate, request i keeps its prompt, output and prefix."""
    slow = generate_requests(rich({"process": "poisson", "rate_per_s": 10}), 500.0, 3, 0)
    fast = generate_requests(rich({"process": "poisson", "rate_per_s": 20}), 500.0, 3, 0)
    k = slow.count
    assert fast.count > k
    for name in ("prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens"):
        np.testing.assert_array_equal(getattr(fast, name)[:k], getattr(slow, name))
    assert not np.array_equal(fast.arrival_s[:k], slow.arrival_s)


# --------------------------------------------------------------------------------------------
# The Requests record
# --------------------------------------------------------------------------------------------


def test_requests_record() -> None:
    """Requests: dtypes, count, payload bytes, read-only arrays, equal lengths enforced."""
    requests = Requests(arrival_s=[0.0, 1.0], prompt_tokens=[10, 20], output_tokens=[1, 2],
                        prefix_group=[-1, 0], prefix_tokens=[0, 5])
    assert requests.count == len(requests) == 2
    assert requests.prompt_tokens.dtype == np.int32 and requests.arrival_s.dtype == np.float64
    np.testing.assert_allclose(requests.payload_bytes(4.0, 1024), [1064.0, 1104.0])
    with pytest.raises(ValueError):
        requests.prompt_tokens[0] = 3
    with pytest.raises(ValueError, match="differ in length"):
        Requests(arrival_s=[0.0], prompt_tokens=[1, 2], output_tokens=[1], prefix_group=[-1],
                 prefix_tokens=[0])


def test_requests_does_not_freeze_the_callers_arrays() -> None:
    """Building a Requests leaves the caller's own arrays writable."""
    times = np.array([0.0, 1.0])
    Requests(arrival_s=times, prompt_tokens=np.array([1, 2], dtype=np.int32),
             output_tokens=[1, 1], prefix_group=[-1, -1], prefix_tokens=[0, 0])
    times[0] = 0.5  # still writable


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

lengths_spec = st.one_of(
    st.builds(lambda mean, sigma, lo, span: {"dist": "lognormal", "mean": mean, "sigma": sigma,
                                               "min": lo, "max": lo + span},
              st.floats(1, 20_000), st.floats(0.05, 4), st.integers(1, 5_000), st.integers(0, 30_000)),
    st.builds(lambda lo, span: {"dist": "uniform", "low": lo, "high": lo + span},
              st.integers(1, 100_000), st.integers(0, 100_000)),
)

arrivals_spec = st.one_of(
    st.builds(lambda r: {"process": "poisson", "rate_per_s": r}, st.floats(0.01, 200)),
    st.builds(lambda r: {"process": "constant", "rate_per_s": r}, st.floats(0.01, 200)),
    st.builds(lambda rq, rb, mq, mb: {"process": "bursty", "rate_per_s": rq, "burst_rate_per_s": rb,
                                      "mean_quiet": mq, "mean_burst": mb},
              st.floats(0.01, 50), st.floats(0.01, 200), st.floats(0.01, 100), st.floats(0.01, 100)),
    st.builds(lambda r, a, p, peak: {"process": "diurnal", "rate_per_s": r, "amplitude": a,
                                     "period": p, "peak_at": peak},
              st.floats(0.01, 100), st.floats(0, 1), st.floats(1, 1000), st.floats(0, 1000)),
    st.builds(lambda stages, repeat: {"process": "stages", "stages": stages, "repeat": repeat},
              st.lists(st.builds(lambda d, r, c: {"duration": d, "rate_per_s": r,
                                                  "process": "constant" if c else "poisson"},
                                 st.floats(0.01, 100), st.floats(0.01, 100), st.booleans()),
                       min_size=1, max_size=4),
              st.booleans()),
)


def bounds(spec: dict[str, Any]) -> tuple[int, int]:
    return (spec["min"], spec["max"]) if spec["dist"] == "lognormal" else (spec["low"], spec["high"])


@settings(max_examples=60, deadline=None)
@given(arrivals=arrivals_spec, prompt=lengths_spec, output=lengths_spec,
       horizon=st.floats(0.5, 500), seed=st.integers(0, 2**32))
def test_any_valid_spec_gives_sorted_times_and_bounded_lengths(
    arrivals: dict[str, Any], prompt: dict[str, Any], output: dict[str, Any], horizon: float, seed: int
) -> None:
    """For any valid open-loop spec: times sorted in [0, horizon); lengths within their bounds."""
    requests = generate_requests(workload(arrivals, prompt, output), horizon, seed, 0)
    times = requests.arrival_s
    assert np.all(np.isfinite(times)) and np.all(np.diff(times) >= 0)
    assert requests.count == 0 or (times[0] >= 0 and times[-1] < horizon)
    for spec, lengths in ((prompt, requests.prompt_tokens), (output, requests.output_tokens)):
        low, high = bounds(spec)
        assert lengths.dtype == np.int32
        assert requests.count == 0 or (lengths.min() >= low and lengths.max() <= high)


def test_trace_prompts_already_hold_their_shared_prefix(tmp_path: Path) -> None:
    """With prefix groups, a trace's prompt lengths are kept: the prefix is the prompt's first
    tokens (at most all but one), never tokens added on top of what the trace measured."""
    path = write_csv(tmp_path, azure_rows([0.0, 1.0, 2.0, 3.0], [500, 50, 1, 800], [5, 5, 5, 5]))
    spec = workload({"process": "trace", "path": str(path)},
                    prefixes={"groups": 2, "prefix_tokens": 300, "share": 1.0})
    requests = generate_requests(spec, horizon_s=60.0, seed=3, replication=0)
    assert requests.prompt_tokens.tolist() == [500, 50, 1, 800]
    assert requests.prefix_tokens.tolist() == [300, 49, 0, 300]
    assert requests.prefix_group[2] == -1  # a one-token prompt has no room for a prefix
    assert (requests.prefix_group[[0, 1, 3]] >= 0).all()
