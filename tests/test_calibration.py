"""Calibration (`sim.calibration`) and the fidelity report (`sim.report.fidelity`).

The published points live in tests/data/calibration/measurements.csv, a verbatim copy of the
12 rows of ../shared/data/calibration/measurements.csv, and the ten vLLM runs under load in
tests/data/vllm-v0.15-benchmarks/runs.csv, a verbatim copy of
../shared/data/vllm-v0.15-benchmarks/runs.csv (sources in their README and columns), so these
tests do not need the shared folder.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.calibration import (
    BenchmarkRun,
    Measurement,
    calibrate,
    fidelity,
    fit_engine,
    fit_training,
    predict_measurement,
    read_measurements,
    resolve_engine,
    resolve_gpu,
    resolve_model,
    resolve_precision,
    run_key,
    simulate_requests,
    simulate_run,
    write_catalog_override,
)
from sim.calibration.measurements import OFFLINE_REQUESTS
from sim.calibration.runs import run_requests
from sim.catalog import load_catalog
from sim.report.fidelity import write_fidelity_report
from sim.spec import SpecError, load_scenario

DATA = Path(__file__).parent / "data" / "calibration"
PUBLISHED = DATA / "measurements.csv"
RUNS = Path(__file__).parent / "data" / "vllm-v0.15-benchmarks" / "runs.csv"
# A known vllm profile, away from the priors, for synthetic "measurements".
TRUE = {"bandwidth": 0.7, "kv_bandwidth": 0.42, "overhead_s": 0.0021, "frontend_s": 0.0032}

# The published points with their engines' profiles as shipped (fitted to them: in-sample):
# the issue's target is a mean absolute percentage error <= 12% (9.7% when last fitted).
PUBLISHED_MAPE_BOUND = 0.12
# The ten vLLM runs: leave-one-out median |error| of the whole-run means with the shipped
# fit settings (30 s stages, all factors the data pins down). Targets of the fidelity issue:
# E2E <= 8%, TTFT <= 15%, TPOT <= 8% (3.4%, 4.1%, 4.8% when last fitted).
LOO_BOUNDS = {"e2e": 0.08, "ttft": 0.15, "tpot": 0.08}


def point(metric: str, input_tokens: int, output_tokens: int | None, batch: int = 1, setup: str = "static",
          **kw: object) -> Measurement:
    """A measured point of Llama-2-7B at fp16 on one A100 80GB under vllm; value filled in later."""
    fields: dict = dict(id=f"{metric}-{input_tokens}-{output_tokens}-{setup}{batch}", source="synthetic",
                        model="llama-2-7b", gpu="a100-80gb", gpus=1, precision="fp16", setup=setup,
                        input_tokens=input_tokens, output_tokens=output_tokens, batch_or_concurrency=batch,
                        rate=None, metric=metric, value=1.0, engine_id="vllm")
    fields.update(kw)
    return Measurement(**fields)


@pytest.fixture(scope="module")
def published() -> list[Measurement]:
    return read_measurements(PUBLISHED)


@pytest.fixture(scope="module")
def runs() -> list[BenchmarkRun]:
    return read_measurements(RUNS)


def short(run: BenchmarkRun, seconds: float = 150.0) -> BenchmarkRun:
    """The run with every stage cut to `seconds` (a cheaper workload of the same shape)."""
    return replace(run, stages=tuple((rate, seconds) for rate, _ in run.stages))


def synthetic_runs(runs: list[BenchmarkRun], profile: dict[str, float], seconds: float = 150.0) -> list[BenchmarkRun]:
    """Shortened runs whose 'measured' numbers are the simulator's under the vllm priors with
    `profile` over them (a fit starts from the priors and holds what it does not fit there).

    Stages of 150 s: a simulated mean moves in small steps as events reorder, about 1% on a
    40 s stage, which would blur a 2% recovery; 150 s averages that out."""
    priors = load_catalog().engines["vllm"].priors
    assert priors is not None
    truth = {**priors.values(), **profile}
    out = []
    for run in runs:
        cut = short(run, seconds)
        out.append(replace(cut, measured=simulate_run(cut, overrides=truth).values))
    return out


# ------------------------------------------------------------------------------------------
# Benchmark runs under load
# ------------------------------------------------------------------------------------------


def test_runs_are_read_with_their_workload_and_server(runs: list[BenchmarkRun]) -> None:
    """The ten runs parse: catalog ids, TP, the server's knobs, two constant-rate stages, the
    tokenised prompt length (measured, or system + question + template), the distinct prompts
    (system prompts x users) and every measured number in seconds."""
    assert [r.id for r in runs] == ["2", "6", "9", "14", "16", "26", "36", "40", "49", "55"]
    by_id = {r.id: r for r in runs}
    r = by_id["2"]
    assert (r.model, r.gpu, r.gpus, r.engine_id, r.precision) == ("codellama-34b", "h100-sxm", 2, "vllm", "fp16")
    assert (r.max_num_seqs, r.max_num_batched_tokens, r.max_model_len) == (128, 2048, 4096)
    assert r.gpu_memory_utilization == 0.9 and r.chunked_prefill and r.prefix_caching
    assert r.stages == ((5.0, 600.0), (10.0, 600.0))
    assert (r.prompt_tokens, r.output_tokens, r.distinct_prompts) == (593, 247, 44)
    assert r.measured[run_key("all", "ttft")] == pytest.approx(0.0455805)
    assert r.measured[run_key("s1", "e2e", "p99")] == pytest.approx(3.88187)
    assert r.measured[run_key("s0", "tpot")] == pytest.approx(0.0143571)
    assert by_id["36"].gpu == "a100-80gb" and by_id["55"].gpu == "l40s" and by_id["49"].gpus == 8
    assert by_id["14"].prompt_tokens == 100 + 466 + 30 and "template" in by_id["14"].notes
    assert r.cached_prefix_tokens == 592  # whole 16-token blocks, the last token recomputed


def test_a_run_is_reproduced_with_its_own_load(runs: list[BenchmarkRun]) -> None:
    """The load generator: constant spacing 1/rate within each stage, stages back to back, and
    the distinct prompts sent in turn (request i sends prompt i mod D)."""
    r = short(runs[0], 10.0)
    arrival, stage, prompt = run_requests(r)
    assert len(arrival) == 5 * 10 + 10 * 10
    np.testing.assert_allclose(np.diff(arrival[:50]), 0.2)
    assert arrival[50] == pytest.approx(10.0) and np.diff(arrival[50:]) == pytest.approx(0.1)
    assert (stage[:50] == 0).all() and (stage[50:] == 1).all()
    assert (prompt == np.arange(150) % 44).all()
    predicted = simulate_run(r)
    assert predicted.completed == predicted.requests == 150
    for part in ("all", "s0", "s1"):
        for metric in ("ttft", "e2e", "tpot"):
            assert predicted.values[run_key(part, metric)] > 0


def test_repeated_prompts_hit_the_prefix_cache(runs: list[BenchmarkRun]) -> None:
    """After the first cycle of distinct prompts every prompt is cached, so TTFT is a few
    decode steps; with prefix caching off every request prefills its whole prompt (slower)."""
    r = short(runs[0], 20.0)
    cached = simulate_run(r).values[run_key("all", "ttft")]
    cold = simulate_run(replace(r, prefix_caching=False)).values[run_key("all", "ttft")]
    assert cold > 1.2 * cached


def test_a_shortened_run_estimates_the_whole_runs_means(runs: list[BenchmarkRun]) -> None:
    """Fitting shortens stages; with the first (cold) cycle weighted as in the whole run, a run
    cut to 60 s per stage gives whole-run means within 2% of the 600 s run's."""
    r = runs[4]  # Llama-3.1-8B on one H100, 8 then 20 req/s
    whole = simulate_run(r).values
    cut = simulate_run(r, cap_s=60.0).values
    for metric in ("ttft", "e2e", "tpot"):
        assert cut[run_key("all", metric)] == pytest.approx(whole[run_key("all", metric)], rel=0.02), metric


# How closely a fit from the priors recovers each factor of a known profile. Measured on this
# test's four runs with stages of 150, 200 and 300 s, before and after decode stretches were
# timed in closed form (the same simulated times to 1e-11 s): the worst misses were bandwidth
# 0.8%, KV-read bandwidth 3.4%, host overhead 7.7% and front-end delay 6.0%. The two fixed
# delays trade off against each other, and the simulated means are step functions of the
# factors at fine scales (events reorder), so the trust region stops in a step a few percent
# from the truth with the data matched to about 0.5% (where it stops moves with the last bits
# of the simulated times; a 2% bound on all four held for one of those six fits).
RECOVERY = {"bandwidth": 0.02, "kv_bandwidth": 0.05, "overhead_s": 0.10, "frontend_s": 0.10}


def test_fit_recovers_known_factors_from_synthetic_runs(runs: list[BenchmarkRun]) -> None:
    """Runs 'measured' by the simulator with a known profile: fitting bandwidth, KV-read
    bandwidth, host overhead and front-end delay from the priors recovers each within
    RECOVERY, and the fitted model reproduces the runs' medians to within 1%."""
    chosen = [runs[i] for i in (0, 3, 4, 6)]  # CodeLlama TP2, Qwen, Llama-8B (H100), Qwen (A100)
    data = synthetic_runs(chosen, TRUE)
    result = fit_engine(data, "vllm", fit=list(TRUE), per_gpu=(), cap_s=None, loo=False)
    assert set(result.fitted) == set(TRUE)
    for name, value in TRUE.items():
        assert result.defaults[name] == pytest.approx(value, rel=RECOVERY[name]), name
    priors = fit_engine(data, "vllm", fit=[], per_gpu=(), cap_s=None, loo=False)
    for metric, error in result.errors().items():
        assert error < 0.01, (metric, result.errors())
        assert error < priors.errors()[metric], (metric, "the fit is no better than the priors")


def test_leave_one_out_never_sees_the_left_out_run(runs: list[BenchmarkRun]) -> None:
    """A run's leave-one-out prediction comes from a fit without it: multiplying what it
    measured by 3 changes its in-sample prediction but not its leave-one-out one."""
    chosen = synthetic_runs([runs[i] for i in (3, 4, 5)], TRUE, seconds=30.0)
    options = dict(fit=["bandwidth", "overhead_s"], per_gpu=(), cap_s=None)
    honest = fit_engine(chosen, "vllm", **options)
    lying = replace(chosen[0], measured={k: 3 * v for k, v in chosen[0].measured.items()})
    skewed = fit_engine([lying, *chosen[1:]], "vllm", **options)
    key = run_key("all", "e2e")
    assert skewed.items[0].loo_predicted == honest.items[0].loo_predicted
    assert skewed.items[0].predicted[key] != pytest.approx(honest.items[0].predicted[key], rel=1e-3)
    assert skewed.items[1].loo_predicted[key] != pytest.approx(honest.items[1].loo_predicted[key], rel=1e-3)


def test_the_shipped_vllm_profile_holds_its_leave_one_out_error(runs: list[BenchmarkRun]) -> None:
    """Refitting the vllm profile to the ten runs as `deploysim calibrate` does (from the
    priors, 30 s stages, leave-one-out with two processes) gives whole-run leave-one-out median
    errors within LOO_BOUNDS, and its in-sample errors are no larger than its LOO ones."""
    result = fit_engine(runs, "vllm", workers=2)
    loo, fitted = result.errors(loo=True), result.errors()
    for metric, bound in LOO_BOUNDS.items():
        assert loo[metric] <= bound, (metric, loo)
        assert fitted[metric] <= loo[metric] + 0.01, (metric, fitted, loo)
    assert "a100-80gb" in result.gpus  # two A100 runs: the A100 gets its own KV-read bandwidth


def test_fidelity_of_the_shipped_profile_on_the_runs(runs: list[BenchmarkRun]) -> None:
    """The shipped profile on the ten whole runs: median |error| of the means within the LOO
    bounds (it was fitted to them), per GPU too, and p90/p99 reported where measured."""
    result = fidelity(runs)
    assert len(result.runs) == 10 and not result.points
    errors = result.run_errors("mean")
    for metric, bound in LOO_BOUNDS.items():
        assert errors[metric] <= bound, (metric, errors)
    assert set(result.run_errors("p99")) == {"e2e", "ttft"}
    assert set(result.run_gpus) == {"h100-sxm", "a100-80gb", "l40s"}
    table = result.runs_table()
    assert set(table["stat"]) == {"mean", "p50", "p90", "p99"} and set(table["part"]) == {"all", "s0", "s1"}


def test_bad_run_rows_name_the_line_the_run_and_the_column(tmp_path: Path) -> None:
    """A broken cell in a runs file names the line, the run id and the column."""
    rows = list(csv.DictReader(RUNS.open(encoding="utf-8")))
    columns = list(rows[0])
    rows[1]["stage1_rate_req_per_s"] = "lots"
    rows[2]["gpu_type"] = "Z80"
    rows[2]["gpu_desc"] = ""
    path = tmp_path / "runs.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SpecError) as caught:
        read_measurements(path)
    paths = [i.path for i in caught.value.issues]
    assert "line 3 (run 6).stage1_rate_req_per_s" in paths and "line 4 (run 9).gpu_type" in paths
    assert caught.value.source == str(path)


# ------------------------------------------------------------------------------------------
# Points: engines, training, the published table
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("TensorRT-LLM v0.5 (gptSessionBenchmark)", "tensorrt-llm"), ("lmdeploy TurboMind v0.1.0a1", "lmdeploy"),
    ("llama.cpp llama-bench (CUDA; ggml-backend branch)", "llama.cpp"), ("vllm 0.15.1", "vllm"),
    ("torchtune (lora_finetune_single_device)", None), ("SGLang 0.4", None),
])
def test_engine_names_map_to_catalog_engines(text: str, expected: str | None) -> None:
    assert resolve_engine(text) == expected


def test_published_points_carry_their_engines(published: list[Measurement]) -> None:
    """Serving points name their engine's profile; the fine-tuning points have none."""
    engines = {m.id: m.engine_id for m in published}
    assert engines["V01"] == engines["V36"] == "tensorrt-llm"
    assert engines["V16"] == "lmdeploy" and engines["V26"] == "llama.cpp"
    assert engines["V50"] is None and engines["V52"] is None


def test_published_points_with_their_engines_profiles(published: list[Measurement]) -> None:
    """The shipped engine profiles and training MFUs put the 12 published points within
    PUBLISHED_MAPE_BOUND (mean absolute percentage error)."""
    result = fidelity(published)
    assert len(result.points) == 12
    assert result.mape is not None and result.mape <= PUBLISHED_MAPE_BOUND


def test_fitting_the_published_points_reports_leave_one_out(published: list[Measurement]) -> None:
    """Each engine fits at most one factor per two points (an exact fit proves nothing), and
    every benchmark with a sibling gets a leave-one-out value (the engines with the cheapest
    points; TensorRT-LLM's offline-throughput point alone simulates 8,192 requests a time)."""
    result = calibrate([m for m in published if m.engine_id != "tensorrt-llm"])
    assert set(result.engines) == {"lmdeploy", "llama.cpp"} and set(result.training) == {"rtx-4090"}
    for fit in result.engines.values():
        assert len(fit.fitted) <= max(1, len(fit.items) // 2)
        assert all(item.loo_predicted is not None for item in fit.items)


@pytest.mark.parametrize("setup, extra", [
    ("static", {"batch_or_concurrency": 8}),
    ("closed", {"batch_or_concurrency": 16, "requests": 64}),
    ("poisson", {"rate": 2.0, "requests": 100}),
])
@pytest.mark.parametrize("metric", ["ttft", "tpot", "output_throughput"])
def test_request_by_request_runner_agrees_with_predict(setup: str, extra: dict, metric: str) -> None:
    """With identical requests the per-request runner (used for vLLM results and KS samples)
    reproduces sim.predict.predict's TTFT, TPOT and throughput to 1e-9 relative."""
    m = point(metric, 300, 50, setup=setup, **extra)
    assert simulate_requests(m).metric(metric) == pytest.approx(predict_measurement(m), rel=1e-9)


def test_training_point_matches_the_training_kernel() -> None:
    """LoRA at training MFU 0.35 on an RTX 4090: 4 x 6.74e9 FLOPs per token against 165.2 TFLOP/s
    x 0.35, i.e. 165.2e12 x 0.35 / (4 x 6.738e9) tokens/s, to 1e-9."""
    m = point("training_throughput", 2048, None, batch=4, setup="training", method="lora", gpu="rtx-4090",
              precision="bf16", engine_id=None)
    params = load_catalog().models["llama-2-7b"].params
    expected = 165.2e12 * 0.35 / (4 * params)
    assert predict_measurement(m, {"lora_mfu": 0.35}) == pytest.approx(expected, rel=1e-9)


def test_training_fit_takes_one_mfu_per_method(published: list[Measurement]) -> None:
    """LoRA and full fine-tuning each fit their own MFU and reproduce their point; with one
    point per method there is no leave-one-out value, and the notes say so."""
    result = fit_training(published, "rtx-4090")
    assert result.mape() == pytest.approx(0.0, abs=1e-9)
    assert result.values["lora_mfu"] > 2 * result.values["mfu"]  # full fine-tuning on 24 GB pages its optimiser
    assert all(item.loo_predicted is None for item in result.items) and len(result.notes) == 2


def test_calibrated_catalog_file_is_picked_up_by_a_scenario(tmp_path: Path, scenarios_dir: Path,
                                                            runs: list[BenchmarkRun]) -> None:
    """write_catalog_override writes {engines: {vllm: {defaults, gpus, fitted_to, fit_error}}};
    a scenario extending s1_local names it as `catalog: my_hw.yaml`, relative to the scenario
    file, and its resolved catalog carries the fitted factors (to the 4 significant digits
    written); other engines keep the shipped profiles."""
    data = synthetic_runs([runs[i] for i in (3, 4)], TRUE)
    result = calibrate(data, fit=["bandwidth", "overhead_s"], per_gpu=(), cap_s=None, loo=False)
    override = write_catalog_override(result, tmp_path / "my_hw.yaml")
    doc = yaml.safe_load(override.read_text(encoding="utf-8"))
    assert set(doc["engines"]) == {"vllm"} and "fit_error" in doc["engines"]["vllm"]
    scenario_path = tmp_path / "scenario.yaml"
    scenario_path.write_text(yaml.safe_dump({"extends": str(scenarios_dir / "s1_local.yaml"),
                                             "catalog": "my_hw.yaml"}), encoding="utf-8")
    catalog = load_scenario(scenario_path).resolved_catalog
    engine = catalog.engines["vllm"]
    assert engine.factors("l40s")["bandwidth"] == pytest.approx(result.engines["vllm"].defaults["bandwidth"], rel=1e-3)
    assert engine.fitted_to.startswith("runs.csv (2 runs")
    assert catalog.engines["tensorrt-llm"] == load_catalog().engines["tensorrt-llm"]


# ------------------------------------------------------------------------------------------
# Reading the published CSV
# ------------------------------------------------------------------------------------------


def test_published_rows_are_read_as_published(published: list[Measurement]) -> None:
    """All 12 rows parse, with catalog ids, SI values and each row's setup (spot checks)."""
    by_id = {m.id: m for m in published}
    assert list(by_id) == ["V01", "V03", "V04", "V09", "V16", "V17", "V18", "V26", "V27", "V36", "V50", "V52"]
    assert (by_id["V01"].gpu, by_id["V01"].precision, by_id["V01"].metric) == ("h100-sxm", "fp8", "ttft")
    assert by_id["V01"].value == pytest.approx(0.007)
    assert by_id["V16"].gpu == by_id["V03"].gpu == "a100-80gb"
    assert by_id["V18"].metric == "tpot" and by_id["V18"].value == pytest.approx(0.010)
    assert (by_id["V26"].model, by_id["V26"].metric, by_id["V26"].precision) == ("llama-2-7b", "prefill_throughput",
                                                                                 "fp16")
    assert by_id["V27"].metric == "decode_throughput"
    assert by_id["V36"].model == "llama-3.1-8b"
    assert by_id["V36"].batch_or_concurrency == OFFLINE_REQUESTS
    assert (by_id["V50"].setup, by_id["V50"].method) == ("training", "lora")
    assert (by_id["V52"].setup, by_id["V52"].method) == ("training", "full")
    assert by_id["V03"].reference == by_id["V01"].reference  # "same as V01"


@pytest.mark.parametrize("text, expected", [
    ("H100 SXM 80GB", "h100-sxm"), ("A100 80GB SXM", "a100-80gb"), ("A100 80GB", "a100-80gb"),
    ("L40S", "l40s"), ("RTX 4090", "rtx-4090"), ("NVIDIA H100 SXM5 80GB", "h100-sxm"), ("NVIDIA L4", "l4"),
    ("H100", None), ("A100", None),
])
def test_gpu_names_map_to_catalog_ids(text: str, expected: str | None) -> None:
    """Free-text GPU names map to the id whose words they contain; ambiguous names do not."""
    assert resolve_gpu(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Llama-2-7B (LLaMA 7B)", "llama-2-7b"), ("CodeLlama-7B (llama 7B arch; 6.74B params)", "llama-2-7b"),
    ("Llama-3.1-8B-Instruct (nvidia FP8 ckpt)", "llama-3.1-8b"), ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("Llama-3.1-70B", "llama-3.1-70b"), ("gpt-2", None),
])
def test_model_names_map_to_catalog_ids(text: str, expected: str | None) -> None:
    """Model names, with notes in brackets and HF org prefixes, map to catalog ids."""
    assert resolve_model(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("FP8", "fp8"), ("FP16", "fp16"), ("F16 (12.55 GiB)", "fp16"), ("BF16 (LoRA)", "bf16"), ("Q4_K_M", None),
])
def test_precision_names(text: str, expected: str | None) -> None:
    assert resolve_precision(text) == expected


# ------------------------------------------------------------------------------------------
# Bad measurement files
# ------------------------------------------------------------------------------------------


def _published_rows() -> tuple[list[str], list[dict[str, str]]]:
    with PUBLISHED.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("row_id, field, bad, path_part, message", [
    ("V03", "value", "", "line 3 (id V03).value", "missing"),
    ("V03", "value", "seven", "line 3 (id V03).value", "not a number"),
    ("V04", "value", "-133", "line 4 (id V04).value", "must be positive"),
    ("V04", "input_tokens", "-2048", "line 4 (id V04).input_tokens", "must not be negative"),
    ("V16", "unit", "furlongs/s", "line 6 (id V16).unit", "unknown unit"),
    ("V01", "unit", "parsecs", "line 2 (id V01).unit", "unknown unit"),
    ("V09", "gpu", "h100-sxn", "line 5 (id V09).gpu", "did you mean 'h100-sxm'"),
    ("V09", "model", "llama-2-7c", "line 5 (id V09).model", "did you mean 'llama-2-7b'"),
    ("V09", "precision", "FP64", "line 5 (id V09).precision", "unknown precision"),
    ("V03", "precision", "FP8", "line 3 (id V03).precision", "a100-80gb has no fp8"),
    ("V18", "metric", "joy per token", "line 8 (id V18).metric", "unknown metric"),
    ("V18", "output_tokens", "1", "line 8 (id V18).output_tokens", "out of range"),
])
def test_bad_rows_name_file_row_and_field(tmp_path: Path, row_id: str, field: str, bad: str, path_part: str,
                                          message: str) -> None:
    """One broken cell gives a SpecError whose source is the file and whose issue names the
    line, the row id and the column, says what is wrong and what is allowed."""
    columns, rows = _published_rows()
    for row in rows:
        if row["id"] == row_id:
            row[field] = bad
    path = _write_csv(tmp_path / "bad.csv", columns, rows)
    with pytest.raises(SpecError) as caught:
        read_measurements(path)
    error = caught.value
    assert error.source == str(path)
    assert [i.path for i in error.issues] == [path_part]
    assert message in error.render()
    assert error.issues[0].allowed or "did you mean" in error.render()


def test_missing_columns_are_listed_with_the_flags_that_can_replace_them(tmp_path: Path) -> None:
    """Without value and gpu columns: one issue on the header naming both, mentioning --gpu."""
    columns, rows = _published_rows()
    path = _write_csv(tmp_path / "cols.csv", [c for c in columns if c not in ("value", "gpu")], rows)
    with pytest.raises(SpecError) as caught:
        read_measurements(path)
    (issue,) = caught.value.issues
    assert issue.path == "header" and "value" in issue.message and "gpu" in issue.message
    assert "--gpu" in issue.allowed


def test_flags_fill_missing_columns(tmp_path: Path) -> None:
    """A CSV without model / gpu / precision columns reads with --model --gpu --precision."""
    columns, rows = _published_rows()
    keep = [c for c in columns if c not in ("model", "gpu", "n_gpus", "precision")]
    path = _write_csv(tmp_path / "bare.csv", keep, [r for r in rows if r["id"] in ("V03", "V04")])
    points = read_measurements(path, model="llama-2-7b", gpu="a100-80gb", gpus=1, precision="fp16")
    assert {(m.model, m.gpu, m.gpus, m.precision) for m in points} == {("llama-2-7b", "a100-80gb", 1, "fp16")}


def test_unknown_flag_gpu_is_an_error_with_did_you_mean() -> None:
    with pytest.raises(SpecError, match="did you mean 'l40s'"):
        read_measurements(PUBLISHED, gpu="l40x")


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="file not found"):
        read_measurements(DATA / "nope.csv")


# ------------------------------------------------------------------------------------------
# vLLM benchmark JSON
# ------------------------------------------------------------------------------------------


def vllm_result(profile: dict[str, float], **overrides: object) -> dict:
    """A `vllm bench serve --save-result` document whose numbers the simulator produced.

    Llama-3.1-8B on an L40S at bf16, 120 requests at 3 req/s with prompt and output lengths
    drawn up front, detailed per-request results (ttfts in seconds, as vLLM saves them).
    """
    rng = np.random.default_rng(7)
    n = 120
    inputs, outputs = rng.integers(64, 900, n), rng.integers(16, 200, n)
    probe = Measurement(id="probe", source="x", model="llama-3.1-8b", gpu="l40s", gpus=1, precision="bf16",
                        setup="poisson", input_tokens=0, output_tokens=0, batch_or_concurrency=1, rate=3.0,
                        metric="ttft", value=1.0, requests=n, input_lens=inputs, output_lens=outputs,
                        engine_id="vllm")
    times = simulate_requests(probe, profile)
    doc = {
        "date": "20250601-120000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct", "num_prompts": n, "request_rate": 3.0,
        "burstiness": 1.0, "max_concurrency": None, "duration": float(np.nanmax(times.done_s)), "completed": n,
        "total_input_tokens": int(inputs.sum()), "total_output_tokens": int(outputs.sum()),
        "request_throughput": 0.0, "output_throughput": times.output_tokens_per_s,
        "mean_ttft_ms": float(np.mean(times.ttft_s) * 1e3), "median_ttft_ms": float(np.median(times.ttft_s) * 1e3),
        "p99_ttft_ms": float(np.percentile(times.ttft_s, 99) * 1e3),
        "mean_tpot_ms": float(np.mean(times.tpot_s) * 1e3), "mean_itl_ms": float(np.mean(times.tpot_s) * 1e3),
        "mean_e2el_ms": float(np.mean(times.done_s - times.arrival_s) * 1e3),
        "input_lens": inputs.tolist(), "output_lens": outputs.tolist(), "ttfts": times.ttft_s.tolist(),
        "itls": [[] for _ in range(n)], "generated_texts": [""] * n, "errors": [""] * n,
    }
    doc.update(overrides)
    return doc


def override_for(gpu: str, profile: dict[str, float]) -> dict:
    return {"engines": {"vllm": {"gpus": {gpu: profile}}}}


def test_vllm_json_parses_reproduces_and_gets_a_ks_distance(tmp_path: Path) -> None:
    """A vLLM result made by the simulator with a known profile: three points (TTFT with 120
    samples, TPOT, output throughput) as a Poisson stream at 3 req/s; with that profile in the
    catalog every point is reproduced to 1e-9 and the KS distance is 0; with a much slower
    profile the TTFT is over 30% high and the KS distance above 0.3."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(vllm_result(TRUE)), encoding="utf-8")
    points = read_measurements(path, gpu="l40s", precision="bf16")
    assert [m.metric for m in points] == ["ttft", "tpot", "output_throughput"]
    ttft = points[0]
    assert (ttft.model, ttft.setup, ttft.rate, ttft.requests) == ("llama-3.1-8b", "poisson", 3.0, 120)
    assert ttft.samples is not None and len(ttft.samples) == 120
    exact = fidelity(points, load_catalog(override_for("l40s", TRUE)))
    assert exact.mape < 1e-9
    assert exact.points[0].ks_distance == 0.0
    slower = {"bandwidth": 0.45, "kv_bandwidth": 0.3, "gemm": 0.3, "overhead_s": 0.008, "frontend_s": 0.03}
    off = fidelity(points, load_catalog(override_for("l40s", slower)))
    assert off.points[0].ks_distance is not None and off.points[0].ks_distance > 0.3
    assert off.points[0].relative_error > 0.3
    assert all(p.ks_distance is None for p in off.points[1:])


def test_vllm_json_setups(tmp_path: Path) -> None:
    """request_rate "inf" with max_concurrency is a closed loop; "inf" alone sends every request
    at t=0 (a static batch of all of them); failed requests (errors) are left out."""
    base = vllm_result(TRUE)
    closed = tmp_path / "closed.json"
    closed.write_text(json.dumps({**base, "request_rate": "inf", "max_concurrency": 8}), encoding="utf-8")
    (m,) = [p for p in read_measurements(closed, gpu="l40s") if p.metric == "ttft"]
    assert (m.setup, m.batch_or_concurrency) == ("closed", 8)
    burst = tmp_path / "burst.json"
    errors = [""] * 119 + ["timeout"]
    burst.write_text(json.dumps({**base, "request_rate": "inf", "errors": errors}), encoding="utf-8")
    (m,) = [p for p in read_measurements(burst, gpu="l40s") if p.metric == "ttft"]
    assert (m.setup, m.batch_or_concurrency, len(m.samples)) == ("static", 119, 119)
    assert math.isfinite(predict_measurement(m))


@pytest.mark.parametrize("change, gpu, key, message", [
    ({}, None, "--gpu", "does not say which GPU"),
    ({"request_rate": "fast"}, "l40s", "request_rate", "not a number"),
    ({"mean_ttft_ms": -3.0}, "l40s", "mean_ttft_ms", "must be positive"),
    ({"model_id": "acme/Llama-2-7c"}, "l40s", "model_id", "did you mean 'llama-2-7b'"),
    ({"ttfts": [-1.0] * 120}, "l40s", "ttfts", "negative"),
])
def test_bad_vllm_json(tmp_path: Path, change: dict, gpu: str | None, key: str, message: str) -> None:
    """Broken vLLM results name the file and the key."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**vllm_result(TRUE), **change}), encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        read_measurements(path, gpu=gpu)
    assert caught.value.source == str(path)
    assert key in [i.path for i in caught.value.issues]
    assert message in caught.value.render()


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{ not json", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid JSON at line 1"):
        read_measurements(path, gpu="l40s")


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def test_fidelity_report_files(tmp_path: Path) -> None:
    """The report folder has points.csv, scatter.png, ttft_cdf.png (a point has samples),
    report.md with the MAPE table, and a self-contained index.html (inline PNG, no external
    links) that escapes the text it shows."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(vllm_result(TRUE, backend="<script>alert(1)</script>")), encoding="utf-8")
    points = read_measurements([PUBLISHED, path], gpu="l40s", precision="bf16")
    out = write_fidelity_report(fidelity(points), tmp_path / "report")
    for name in ("points.csv", "scatter.png", "ttft_cdf.png", "report.md", "index.html"):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| TTFT |" in md and "Kolmogorov-Smirnov distance" in md
    table = (out / "points.csv").read_text(encoding="utf-8").splitlines()
    assert len(table) == 1 + 12 + 3
