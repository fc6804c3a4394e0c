"""End-to-end runs: `deploysim run`, `sim.simulate`, and what a run writes and reports.

Scenarios are shortened (20 min horizon, 2 min warm-up) so that every run takes well under a
second once the numba kernels are cached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import sim
from sim.spec import spec_hash

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"
S1 = SCENARIOS_DIR / "s1_local.yaml"
S2 = SCENARIOS_DIR / "s2_cloud_training.yaml"
SHORT = ["horizon=20min", "warmup=2min"]

DESIGN_FIELDS = [
    "requests_total", "requests_completed", "requests_failed", "requests_unfinished",
    *(f"{stem}_{q}_s" for stem in ("ttft", "tpot", "e2e") for q in ("p50", "p90", "p99", "mean")),
    "slo_attainment", "throughput_rps", "output_tokens_per_s", "gpu_utilisation",
]


def _deploysim() -> list[str]:
    """The installed console script (beside this Python), else `python -m sim.cli`."""
    beside = Path(sys.executable).parent / "deploysim"
    found = str(beside) if beside.is_file() else shutil.which("deploysim")
    return [found] if found else [sys.executable, "-m", "sim.cli"]


def _short(path: Path, *overrides: str) -> sim.Scenario:
    return sim.load_scenario(path, [*SHORT, *overrides])


# --------------------------------------------------------------------------------------------
# `deploysim run` through a real subprocess
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `deploysim run` of a shortened S1, shared by the tests that inspect it."""
    out = tmp_path_factory.mktemp("run") / "out"
    proc = subprocess.run(
        [*_deploysim(), "run", str(S1), *(a for o in SHORT for a in ("--set", o)), "--out", str(out), "-q"],
        capture_output=True, text=True, timeout=120,
    )
    return proc, out


def test_cli_run_exits_0_and_prints_summary(cli_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """`deploysim run` exits 0, prints TTFT/TPOT/E2E rows and the GPU busy line, no traceback."""
    proc, _ = cli_run
    assert proc.returncode == 0, proc.stderr
    for word in ("TTFT", "TPOT", "E2E", "GPU busy"):
        assert word in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cli_run_writes_the_three_files(cli_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """--out DIR receives requests.parquet, summary.json and scenario.yaml."""
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    for name in ("requests.parquet", "summary.json", "scenario.yaml"):
        assert (out / name).is_file(), name


def test_summary_json_has_design_field_names(cli_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """summary.json uses the DESIGN §2 names; gpu_utilisation is a nested object of fractions."""
    _, out = cli_run
    summary = json.loads((out / "summary.json").read_text())
    missing = [f for f in DESIGN_FIELDS if f not in summary]
    assert not missing
    for field in DESIGN_FIELDS:
        if field.startswith("requests_"):
            assert isinstance(summary[field], int)
        elif field != "gpu_utilisation":
            assert isinstance(summary[field], float), field
    assert summary["requests_total"] > 0
    assert summary["requests_completed"] + summary["requests_failed"] + summary["requests_unfinished"] \
        + summary.get("requests_rejected", 0) == summary["requests_total"]
    utilisation = summary["gpu_utilisation"]
    assert isinstance(utilisation, dict) and utilisation
    assert all(0.0 <= v <= 1.0 for v in utilisation.values())
    assert 0.0 <= summary["slo_attainment"] <= 1.0
    for stem in ("ttft", "tpot", "e2e"):
        assert summary[f"{stem}_p50_s"] <= summary[f"{stem}_p90_s"] <= summary[f"{stem}_p99_s"]


def test_requests_parquet_reads_back(cli_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """requests.parquet reads with pandas and has one row per generated request."""
    _, out = cli_run
    frame = pd.read_parquet(out / "requests.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert len(frame) == summary["requests_total"]
    assert (frame["status"] == "completed").sum() == summary["requests_completed"]
    for column in ("arrival_s", "ttft_s", "tpot_s", "e2e_s", "network_s", "queueing_s", "prefill_s", "decode_s"):
        assert column in frame.columns


def test_scenario_yaml_reloads_with_same_hash(cli_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The written scenario.yaml loads again and hashes like the original plus the overrides."""
    _, out = cli_run
    expected = spec_hash(_short(S1))
    assert spec_hash(sim.load_scenario(out / "scenario.yaml")) == expected
    assert json.loads((out / "summary.json").read_text())["meta"]["spec_hash"] == expected


def test_cli_run_bad_override_exits_2(tmp_path: Path) -> None:
    """A malformed --set value exits 2, names the field, and prints no traceback."""
    proc = subprocess.run(
        [*_deploysim(), "run", str(S1), "--set", "horizon=20min",
         "--set", "model.serving.max_num_seqs=lots", "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "model.serving.max_num_seqs" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# sim.simulate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s1_result() -> sim.Result:
    return sim.simulate(_short(S1))


@pytest.fixture(scope="module")
def s2_result() -> sim.Result:
    return sim.simulate(_short(S2))


def test_same_seed_is_bit_identical(s1_result: sim.Result) -> None:
    """Same scenario and seed give a bit-identical requests frame; replication 1 differs."""
    again = sim.simulate(_short(S1))
    pdt.assert_frame_equal(s1_result.requests, again.requests, check_exact=True)
    assert s1_result.summary == again.summary
    other = sim.simulate(_short(S1), replication=1)
    assert other.replication == 1
    first, second = s1_result.requests, other.requests
    assert len(first) != len(second) or not np.array_equal(first["arrival_s"], second["arrival_s"])


def test_cloud_inference_pays_the_wan(s1_result: sim.Result, s2_result: sim.Result) -> None:
    """S2 serves the same requests as S1 but every one crosses the WAN (rtt 20 ms) both ways.

    S2's mean TTFT network part exceeds S1's by the WAN RTT minus the LAN RTT (within 2 ms),
    every S2 first token takes at least the WAN RTT, and S1's network part stays below 1 ms.
    """
    a, b = s1_result.requests, s2_result.requests
    for column in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy())
    s2 = s2_result.scenario
    wan_rtt = s2.links["wan"].rtt
    lan_rtt = s1_result.scenario.sites["premises"].lan.rtt
    assert wan_rtt == pytest.approx(0.020)
    net1 = s1_result.summary["ttft_parts_mean_s"]["network"]
    net2 = s2_result.summary["ttft_parts_mean_s"]["network"]
    assert net1 < 1e-3
    assert net2 - net1 == pytest.approx(wan_rtt - lan_rtt, abs=2e-3)
    assert net2 == pytest.approx(wan_rtt, abs=2e-3)
    ttft = b["ttft_s"].dropna()
    assert len(ttft) > 0
    assert (ttft >= wan_rtt).all()
    done = b[b["status"] == "completed"]
    assert done["network_s"].mean() == pytest.approx(wan_rtt, abs=2e-3)


@pytest.mark.parametrize("which", ["s1", "s2"])
def test_latency_decomposes(which: str, s1_result: sim.Result, s2_result: sim.Result) -> None:
    """For completed requests e2e = network + queueing + prefill + decode, every part >= 0."""
    result = s1_result if which == "s1" else s2_result
    done = result.requests[result.requests["status"] == "completed"]
    assert len(done) > 0
    parts = done[["network_s", "queueing_s", "prefill_s", "decode_s"]]
    assert (parts >= 0).all().all()
    np.testing.assert_allclose(done["e2e_s"], parts.sum(axis=1), rtol=0, atol=1e-9)
    assert (done["ttft_s"] <= done["e2e_s"]).all()


def test_overload_leaves_requests_unfinished() -> None:
    """Far above capacity the run still ends at the horizon, with unfinished requests (NaN done_s)
    and SLO attainment below 1."""
    scenario = sim.load_scenario(S1, ["horizon=10min", "warmup=1min", "workload.arrivals.rate_per_s=200"])
    result = sim.simulate(scenario)
    s = result.summary
    assert s["requests_unfinished"] > 0
    assert s["slo_attainment"] < 1.0
    assert s["requests_completed"] + s["requests_unfinished"] + s["requests_rejected"] \
        + s["requests_failed"] == s["requests_total"]
    unfinished = result.requests[result.requests["status"] == "unfinished"]
    assert len(unfinished) == s["requests_unfinished"]
    assert unfinished["done_s"].isna().all()
    assert unfinished["e2e_s"].isna().all()
    done = result.requests[result.requests["status"] == "completed"]
    assert done["done_s"].notna().all()


def test_too_long_requests_are_rejected() -> None:
    """Requests longer than serving.max_model_len are rejected at the pool and counted as such.

    checks.py only needs the KV cache to hold one max_model_len sequence, so a 2048-token limit
    is valid on an L40S while 3000-token prompts exceed it.
    """
    scenario = _short(S1, "model.serving.max_model_len=2048", "workload.prompt_tokens={dist: fixed, value: 3000}")
    result = sim.simulate(scenario)
    s = result.summary
    assert s["requests_total"] > 0
    assert s["requests_rejected"] == s["requests_total"]
    assert s["requests_completed"] == 0 and s["requests_unfinished"] == 0
    assert s["throughput_rps"] == 0.0
    assert s["slo_attainment"] == 0.0
    frame = result.requests
    assert (frame["status"] == "rejected").all()
    assert frame["replica"].eq(-1).all()
    assert frame["e2e_s"].isna().all() and frame["dispatch_s"].isna().all()


# --------------------------------------------------------------------------------------------
# Trace replay
# --------------------------------------------------------------------------------------------


def _azure_trace(path: Path, rows: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An Azure-format trace with 100 ns timestamps; returns (seconds, prompt, output)."""
    rng = np.random.default_rng(7)
    ticks = np.concatenate([[0], np.cumsum(rng.integers(1_000_000, 20_000_000, rows - 1))])  # 100 ns
    start = pd.Timestamp("2023-11-16 18:17:03.9799600")
    stamps = [(start + pd.Timedelta(int(t) * 100, "ns")) for t in ticks]
    text = [s.strftime("%Y-%m-%d %H:%M:%S.") + f"{s.microsecond:06d}{s.nanosecond // 100}" for s in stamps]
    prompt = rng.integers(1, 4000, rows)
    output = rng.integers(1, 600, rows)
    pd.DataFrame({"TIMESTAMP": text, "ContextTokens": prompt, "GeneratedTokens": output}).to_csv(path, index=False)
    return ticks * 1e-7, prompt, output


def test_trace_replay_uses_trace_tokens(tmp_path: Path, minimal_doc: dict[str, Any], write_yaml) -> None:
    """A trace workload sends the trace's requests at its times with its token counts."""
    trace = tmp_path / "azure.csv"
    seconds, prompt, output = _azure_trace(trace)
    assert trace.read_text().splitlines()[1].startswith("2023-11-16 18:17:03.9799600,")
    minimal_doc["horizon"] = "10min"
    minimal_doc["workload"]["arrivals"] = {"process": "trace", "path": str(trace.resolve())}
    result = sim.simulate(sim.load_scenario(write_yaml(minimal_doc)))
    frame = result.requests
    assert len(frame) == len(seconds)
    np.testing.assert_array_equal(frame["prompt_tokens"].to_numpy(), prompt)
    np.testing.assert_array_equal(frame["output_tokens"].to_numpy(), output)
    np.testing.assert_allclose(frame["arrival_s"].to_numpy(), seconds, rtol=0, atol=1e-6)
    assert result.summary["requests_completed"] == len(seconds)
