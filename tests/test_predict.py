"""`sim.predict.predict` and `deploysim predict`: the quick answer without a scenario."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.catalog import BYTES_PER_PARAM, shipped_catalog
from sim.kernels.replica import replica_setup
from sim.kernels.roofline import step_time
from sim.predict import predict
from sim.spec import SpecError

MODEL, GPU = "llama-3.1-8b", "h100-sxm"


def _deploysim() -> list[str]:
    """The installed console script (beside this Python), else `python -m sim.cli`."""
    beside = Path(sys.executable).parent / "deploysim"
    found = str(beside) if beside.is_file() else shutil.which("deploysim")
    return [found] if found else [sys.executable, "-m", "sim.cli"]


def _ask(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"model": MODEL, "gpu": GPU, "input_tokens": 1000, "output_tokens": 100}
    args.update(kwargs)
    return predict(**args)


@pytest.mark.parametrize("prompt", [128, 1000, 4000])
def test_tpot_is_one_decode_step_by_hand(prompt: int) -> None:
    """With batch 1 and 2 output tokens, TPOT is one decode step of context prompt + 1.

    By hand from the catalog and the vllm profile: memory-bound, so the streamed weights (all
    but the embedding) at the weight-streaming bandwidth, the KV cache (context read plus the
    token written) at the KV-read bandwidth, plus the host's fixed and per-sequence time. The
    front end's lag per iteration is set to 0 here, so that the two tokens' delivery delays
    cancel exactly. The kernel's `step_time` with the same arguments agrees.
    """
    answer = predict(model=MODEL, gpu=GPU, input_tokens=prompt, output_tokens=2, batch=1,
                     overrides={"frontend_per_step": 0.0})
    catalog = shipped_catalog()
    replica = replica_setup(catalog, MODEL, GPU, "bf16", 1)
    model, gpu, p = replica.model, replica.gpu, replica.profile
    context = prompt + 1  # the prompt and the first token
    weights = (model.params - model.hidden * model.vocab) * BYTES_PER_PARAM["bf16"]
    kv = (context + 1) * model.kv_bytes_per_token("bf16")
    memory_s = weights / (gpu.memory_bandwidth * p.bandwidth) + kv / (gpu.memory_bandwidth * p.kv_bandwidth)
    compute_s = 2 * model.params / (gpu.peak("bf16") * p.gemm)
    assert compute_s < memory_s / 5  # decode at batch 1 is far from the compute roof
    by_hand = memory_s + p.overhead_s + p.overhead_per_seq_s
    assert answer["tpot_s"] == pytest.approx(by_hand, rel=1e-9)
    assert answer["tpot_s"] == pytest.approx(step_time(replica.params, 0, 0, 0, 0, 1, context, 1), rel=1e-9)
    assert answer["completed"] == 1
    assert answer["e2e_s"] == pytest.approx(answer["ttft_s"] + answer["tpot_s"], rel=1e-9)


def test_the_engine_changes_the_answer() -> None:
    """The same request under two engine profiles: a different step time and front end."""
    vllm = _ask(engine="vllm")
    trt = _ask(engine="tensorrt-llm")
    assert vllm["engine"] == "vllm" and trt["engine"] == "tensorrt-llm"
    assert vllm["ttft_s"] != trt["ttft_s"] and vllm["tpot_s"] != trt["tpot_s"]


def test_bigger_batch_more_throughput_slower_tokens() -> None:
    """A bigger static batch raises output tokens/s and TPOT (each step carries more tokens)."""
    answers = [_ask(batch=b) for b in (1, 8, 32)]
    for small, big in zip(answers, answers[1:], strict=False):
        assert big["output_tokens_per_s"] > small["output_tokens_per_s"]
        assert big["tpot_s"] > small["tpot_s"]
    assert [a["completed"] for a in answers] == [1, 8, 32]


def test_fp8_is_faster_than_bf16_on_h100() -> None:
    """fp8 halves the weight bytes and uses fp8 tensor cores: lower TTFT and TPOT on h100-sxm."""
    bf16, fp8 = _ask(precision="bf16"), _ask(precision="fp8")
    assert fp8["tpot_s"] < bf16["tpot_s"]
    assert fp8["ttft_s"] < bf16["ttft_s"]
    assert fp8["output_tokens_per_s"] > bf16["output_tokens_per_s"]


def test_tensor_parallel_changes_the_answer() -> None:
    """TP=2 splits the weight reads over two GPUs: a different (faster) TPOT than TP=1."""
    one, two = _ask(gpus=1), _ask(gpus=2)
    assert two["gpus"] == 2
    assert two["tpot_s"] != one["tpot_s"]
    assert two["tpot_s"] < one["tpot_s"]


def test_closed_loop_completes_all_requests() -> None:
    """With concurrency C and requests N, the closed loop serves and completes all N requests."""
    answer = _ask(concurrency=4, requests=20, input_tokens=500, output_tokens=50)
    assert answer["requests"] == 20
    assert answer["completed"] == 20
    assert "closed loop" in answer["mode"]
    assert answer["output_tokens_per_s"] > 0
    default = _ask(concurrency=3, input_tokens=200, output_tokens=20)
    assert default["requests"] == default["completed"] == 30  # 10 per client by default


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"model": "llama-9b"}, "--model"),
    ({"gpu": "h100"}, "--gpu"),
    ({"precision": "fp7"}, "--precision"),
    ({"engine": "vlm"}, "--engine"),
    ({"batch": 0}, "--batch"),
    ({"gpus": 0}, "--gpus"),
    ({"input_tokens": 0}, "--input-tokens"),
    ({"output_tokens": -5}, "--output-tokens"),
    ({"concurrency": 0}, "--concurrency"),
    ({"concurrency": 2, "requests": 0}, "--requests"),
    ({"model": "bert-base"}, "--model"),
    ({"gpu": "a100-80gb", "precision": "fp8"}, "--precision"),
    ({"model": "llama-3.1-70b", "gpu": "l4"}, "--gpus"),
])
def test_bad_arguments_raise_spec_error_naming_flag(kwargs: dict[str, Any], flag: str) -> None:
    """Unknown ids, precisions, non-positive numbers and impossible fits raise SpecError
    whose issue names the command-line flag."""
    with pytest.raises(SpecError) as info:
        _ask(**kwargs)
    assert [issue.path for issue in info.value.issues] == [flag]
    assert flag in str(info.value)


def test_cli_predict_json() -> None:
    """`deploysim predict --json` prints valid JSON with the latency and throughput fields."""
    proc = subprocess.run(
        [*_deploysim(), "predict", "--model", MODEL, "--gpu", GPU, "--input-tokens", "500",
         "--output-tokens", "50", "--batch", "4", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    for key in ("ttft_s", "tpot_s", "e2e_s", "output_tokens_per_s"):
        assert isinstance(answer[key], float) and answer[key] > 0, key
    assert answer["completed"] == 4
    expected = _ask(input_tokens=500, output_tokens=50, batch=4)
    assert answer["tpot_s"] == pytest.approx(expected["tpot_s"], rel=1e-12)


def test_cli_predict_bad_gpu_exits_2() -> None:
    """A bad --gpu exits 2 and names --gpu, without a traceback."""
    proc = subprocess.run(
        [*_deploysim(), "predict", "--model", MODEL, "--gpu", "h100"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "--gpu" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
