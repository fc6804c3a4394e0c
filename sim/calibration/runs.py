"""Benchmark runs under load: a real server, a load generator, and what the clients measured.

A run (one row of the layout of `shared/data/vllm-v0.15-benchmarks/runs.csv`) is one
deployment of a serving engine (model, GPU, tensor parallelism, the server's knobs) driven by
a load generator through constant-rate stages, with the client-side TTFT, E2E and derived
TPOT per stage and over the whole run (means, and p50/p90/p99 where kept). Unlike a single
published number, a run shows how latency grows with load, so it pins down the engine's
per-sequence costs and its scheduling, not only its peak speeds.

Reproducing a run (`simulate_run`) rebuilds its workload exactly and serves it with the very
replica a scenario would build (`sim.kernels.replica`):

- **Arrivals**: constant rate within each stage, t = stage start + k / rate, stages back to
  back (the load generator's deterministic spacing, not Poisson).
- **Prompts**: the shared-prefix generator (inference-perf `shared_prefix`) draws
  `num_unique_system_prompts` x `num_users_per_system_prompt` distinct prompts once (a
  system prompt per group plus one question per user) and cycles through them, so after the
  first cycle every prompt has been seen before and hits vLLM's prefix cache in whole KV
  blocks: request i sends prompt i mod D, and prefix group g = i mod D caches
  floor((P - 1) / block) x block of its P tokens (the last token is always recomputed).
  Why not a fresh question per request: on the A100 runs the measured TTFT is below what a
  fresh 490-token prefill could take even at 100% of the dense peak (CodeLlama-34B on 2 x A100:
  3.3e13 FLOPs / 624 TFLOP/s = 53 ms of compute, against 82 ms of TTFT that also holds at
  least a step and a half of waiting), so the prompts must have been cached.
- **Lengths**: the tokenised prompt length (`all_prompt_len_mean_tok` where measured, else
  system + question + CHAT_TEMPLATE_TOKENS) and exactly `output_len_tok` output tokens.
- **Server**: the row's `max_num_seqs`, `max_num_batched_tokens`, `max_model_len`,
  `gpu_memory_utilization`, chunked prefill and prefix caching; KV blocks of 16 tokens.

Not modelled: the CPU KV-cache offload (it matters only when the GPU cache runs short, which
these loads do not reach), and the API server as a queue of its own (its time is the engine
profile's front-end delay).

Metrics use the file's definitions: per request, TTFT = first token - send, E2E = last token
- send; a stage's TPOT is (mean E2E - mean TTFT) / (output tokens - 1); a stage's requests
are those *sent* during it.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration.measurements import (
    PRECISIONS,
    Supplied,
    _read_text,
    _unknown,
    resolve_engine,
    resolve_gpu,
    resolve_model,
    resolve_precision,
)
from sim.catalog import Catalog, shipped_catalog
from sim.kernels.batching import DONE
from sim.kernels.replica import build_pool, replica_setup
from sim.spec.errors import SpecError, SpecIssue
from sim.spec.scenario import Serving

RUN_METRICS = ("e2e", "ttft", "tpot")
STATS = ("mean", "p50", "p90", "p99")
# Tokens a chat template adds to system prompt + question where the run did not measure the
# tokenised length (the data's README: about 25-35; the measured rows show 24-27).
CHAT_TEMPLATE_TOKENS = 30
KV_BLOCK_TOKENS = 16
_REQUIRED = ("exp_id", "model_hf", "gpu_type", "tensor_parallel", "max_num_seqs", "max_num_batched_tokens",
             "max_model_len", "gpu_memory_utilization", "num_stages", "num_unique_system_prompts",
             "num_users_per_system_prompt", "output_len_tok")


def run_key(part: str, metric: str, stat: str = "mean") -> str:
    """The key of one measured number: part ('all' or 's<k>' for stage k), metric, statistic."""
    return f"{part}.{metric}.{stat}"


@dataclass(frozen=True, eq=False)
class BenchmarkRun:
    """One measured run under load; `measured` maps `run_key(...)` to seconds."""

    id: str
    source: str
    engine: str
    engine_id: str
    model: str
    gpu: str
    gpus: int
    precision: str
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    gpu_memory_utilization: float
    chunked_prefill: bool
    prefix_caching: bool
    stages: tuple[tuple[float, float], ...]  # (rate per second, duration in seconds)
    prompt_tokens: int
    output_tokens: int
    distinct_prompts: int
    measured: Mapping[str, float] = field(repr=False)
    notes: str = ""

    @property
    def parts(self) -> tuple[str, ...]:
        return ("all", *(f"s{k}" for k in range(len(self.stages))))

    @property
    def describe_setup(self) -> str:
        rates = "/".join(f"{rate:g}" for rate, _ in self.stages)
        return (f"constant {rates} req/s x {self.stages[0][1]:g} s, TP{self.gpus}, {self.prompt_tokens} in / "
                f"{self.output_tokens} out, {self.distinct_prompts} prompts")

    @property
    def cached_prefix_tokens(self) -> int:
        """What a repeated prompt finds in the prefix cache: its whole KV blocks but the last token's."""
        return (self.prompt_tokens - 1) // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS


def is_runs_layout(text: str) -> bool:
    """Whether a CSV's header is the benchmark-runs layout."""
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    return "stage0_rate_req_per_s" in header and "exp_id" in header


def read_runs_csv(path: str | Path, supplied: Supplied | None = None, catalog: Catalog | None = None, *,
                  text: str | None = None) -> list[BenchmarkRun]:
    """The runs of a CSV in the benchmark-runs layout (see the module docstring)."""
    path = Path(path)
    supplied = supplied or Supplied()
    catalog = catalog or shipped_catalog()
    text = _read_text(path) if text is None else text
    reader = csv.DictReader(text.lstrip("\ufeff").splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise SpecError([SpecIssue("header", f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                                   has_value=False, allowed=", ".join(_REQUIRED))], str(path))
    issues: list[SpecIssue] = []
    runs = []
    for line, raw in enumerate(reader, start=2):
        if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
            continue
        run = _RunRow(raw, line, issues, path, supplied, catalog).read()
        if run is not None:
            runs.append(run)
    if issues:
        raise SpecError(issues, str(path))
    if not runs:
        raise SpecError([SpecIssue("", "no runs in the file", has_value=False, allowed="one run per row")], str(path))
    return runs


class _RunRow:
    """One CSV row being read into a BenchmarkRun; problems name the line, run id and column."""

    def __init__(self, raw: dict[str, Any], line: int, issues: list[SpecIssue], path: Path, supplied: Supplied,
                 catalog: Catalog) -> None:
        self.raw, self.line, self.issues = raw, line, issues
        self.path, self.supplied, self.catalog = path, supplied, catalog
        self.id = self.text("exp_id") or f"line{line}"

    def text(self, name: str) -> str:
        value = self.raw.get(name)
        return value.strip() if isinstance(value, str) else ""

    def problem(self, name: str, message: str, value: Any = None, allowed: str = "", has_value: bool = True) -> None:
        self.issues.append(SpecIssue(f"line {self.line} (run {self.id}).{name}", message, value, allowed, has_value))

    def number(self, name: str, *, low: float = 0.0, high: float = 1e12, whole: bool = False,
               optional: bool = False) -> float | None:
        text = self.text(name)
        if not text:
            if not optional:
                self.problem(name, "missing", has_value=False, allowed="a number")
            return None
        try:
            value = float(text)
        except ValueError:
            self.problem(name, "not a number", text, "a number")
            return None
        if not math.isfinite(value) or not low <= value <= high or (whole and value != int(value)):
            self.problem(name, "out of range", text, f"{'a whole number' if whole else 'a number'} in [{low:g}, {high:g}]")
            return None
        return value

    def switch(self, name: str) -> bool:
        """'on (vLLM V1 default)' / 'True' / '1' -> True."""
        return bool(re.match(r"^(on|true|yes|1)\b", self.text(name).lower())) if self.text(name) else True

    def read(self) -> BenchmarkRun | None:
        before = len(self.issues)
        model = resolve_model(self.supplied.model or self.text("model_hf"), self.catalog)
        if model is None:
            self.issues.append(_unknown(f"line {self.line} (run {self.id}).model_hf", self.text("model_hf"),
                                        self.catalog.models, "model"))
        described = re.sub(r"[()]", " ", self.text("gpu_desc"))  # 'H100 80GB HBM3 (SXM)': the board counts
        gpu = resolve_gpu(self.supplied.gpu or described or self.text("gpu_type"), self.catalog)
        if gpu is None:
            gpu = resolve_gpu(self.text("gpu_type"), self.catalog)
        if gpu is None:
            self.issues.append(_unknown(f"line {self.line} (run {self.id}).gpu_type", self.text("gpu_type"),
                                        self.catalog.gpus, "GPU"))
        engine_text = self.text("vllm_version") and f"vllm {self.text('vllm_version')}"
        engine_id = resolve_engine(self.supplied.engine or engine_text or "vllm", self.catalog)
        if engine_id is None:
            self.problem("vllm_version", "no catalog engine named", self.supplied.engine or engine_text,
                         ", ".join(sorted(self.catalog.engines)))
        precision_text = self.supplied.precision or self.text("precision") or "bf16"
        precision = resolve_precision(precision_text)
        if precision not in PRECISIONS:
            self.problem("precision", "unknown precision", precision_text, ", ".join(PRECISIONS))
        tp = self.number("tensor_parallel", low=1, high=64, whole=True)
        seqs = self.number("max_num_seqs", low=1, high=1e6, whole=True)
        budget = self.number("max_num_batched_tokens", low=1, high=1e7, whole=True)
        length = self.number("max_model_len", low=16, high=1e7, whole=True)
        utilisation = self.number("gpu_memory_utilization", low=0.01, high=1.0)
        stages = self._stages()
        prompt, distinct = self._prompts()
        output = self.number("output_len_tok", low=1, high=1e6, whole=True)
        measured = self._measured(stages)
        if len(self.issues) > before:
            return None
        assert model and gpu and engine_id and precision and tp and seqs and budget and length and utilisation
        assert prompt is not None and distinct is not None and output is not None
        notes = []
        if not self.text("all_prompt_len_mean_tok"):
            notes.append(f"tokenised prompt length taken as system + question + {CHAT_TEMPLATE_TOKENS} template tokens")
        if self.text("cpu_kv_offload").lower() == "true":
            notes.append("CPU KV offload not modelled")
        return BenchmarkRun(
            id=self.id, source=str(self.path), engine=engine_text or "vllm", engine_id=engine_id, model=model,
            gpu=gpu, gpus=int(tp), precision=precision, max_num_seqs=int(seqs), max_num_batched_tokens=int(budget),
            max_model_len=int(length), gpu_memory_utilization=utilisation,
            chunked_prefill=self.switch("chunked_prefill"), prefix_caching=self.switch("prefix_caching"),
            stages=tuple(stages), prompt_tokens=int(prompt), output_tokens=int(output), distinct_prompts=int(distinct),
            measured=measured, notes="; ".join(notes),
        )

    def _stages(self) -> list[tuple[float, float]]:
        count = self.number("num_stages", low=1, high=64, whole=True)
        stages = []
        for k in range(int(count or 0)):
            rate = self.number(f"stage{k}_rate_req_per_s", low=1e-6, high=1e6)
            duration = self.number(f"stage{k}_duration_s", low=1e-3, high=1e7)
            if rate is not None and duration is not None:
                stages.append((rate, duration))
        if stages and sum(rate * duration for rate, duration in stages) > 5e6:
            self.problem("num_stages", "more than 5 million requests in all", count,
                         "shorter stages or lower rates")
        return stages

    def _prompts(self) -> tuple[float | None, float | None]:
        groups = self.number("num_unique_system_prompts", low=1, high=1e5, whole=True)
        users = self.number("num_users_per_system_prompt", low=1, high=1e5, whole=True)
        measured = self.number("all_prompt_len_mean_tok", low=1, high=1e6, optional=True)
        if measured is not None:
            prompt: float | None = round(measured)
        else:
            system = self.number("system_prompt_len_tok", low=0, high=1e6, whole=True)
            question = self.number("question_len_tok", low=0, high=1e6, whole=True)
            prompt = None if system is None or question is None else system + question + CHAT_TEMPLATE_TOKENS
        distinct = None if groups is None or users is None else groups * users
        return prompt, distinct

    def _measured(self, stages: list[tuple[float, float]]) -> dict[str, float]:
        measured: dict[str, float] = {}
        for part in ("all", *(f"s{k}" for k in range(len(stages)))):
            for metric in ("e2e", "ttft"):
                for stat in STATS:
                    value = self.number(f"{part}_{metric}_{stat}_ms", low=1e-6, high=1e9, optional=True)
                    if value is not None:
                        measured[run_key(part, metric, stat)] = value * 1e-3
            tpot = self.number(f"{part}_tpot_mean_ms_derived", low=1e-6, high=1e9, optional=True)
            if tpot is not None:
                measured[run_key(part, "tpot")] = tpot * 1e-3
        if run_key("all", "e2e") not in measured or run_key("all", "ttft") not in measured:
            self.problem("all_e2e_mean_ms", "a run needs its measured mean E2E and TTFT", has_value=False,
                         allowed="all_e2e_mean_ms and all_ttft_mean_ms in milliseconds")
        return measured


@dataclass(frozen=True, eq=False)
class RunPrediction:
    """The simulator's numbers for a run, under the same keys as `BenchmarkRun.measured`."""

    values: dict[str, float]
    requests: int
    completed: int


def run_requests(run: BenchmarkRun, cap_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(send times, stage of each request, prompt of each request): the run's load generator.

    `cap_s` shortens every stage to at most that many seconds (fitting runs many variants).
    """
    times, stage = [], []
    start = 0.0
    for k, (rate, duration) in enumerate(run.stages):
        duration = min(duration, cap_s) if cap_s else duration
        n = math.ceil(rate * duration - 1e-9)
        times.append(start + np.arange(n) / rate)
        stage.append(np.full(n, k))
        start += duration
    arrival = np.concatenate(times)
    prompt = np.arange(len(arrival)) % run.distinct_prompts
    return arrival, np.concatenate(stage), prompt


def _full_run_weights(run: BenchmarkRun, stage: np.ndarray, cap_s: float | None) -> np.ndarray:
    """Weights that make a shortened run's means estimate the whole run's.

    The first cycle of distinct prompts finds a cold prefix cache: it is as long in a shortened
    run as in the whole one, so its requests weigh 1 and each stage's other requests weigh
    (whole stage's other requests) / (shortened stage's other requests). Percentiles are
    taken unweighted.
    """
    weight = np.ones(len(stage))
    if not cap_s:
        return weight
    cold = np.arange(len(stage)) < run.distinct_prompts
    for k, (rate, duration) in enumerate(run.stages):
        here = stage == k
        warm_short = int((here & ~cold).sum())
        warm_full = math.ceil(rate * duration - 1e-9) - int((here & cold).sum())
        if warm_short > 0:
            weight[here & ~cold] = warm_full / warm_short
    return weight


def simulate_run(run: BenchmarkRun, catalog: Catalog | None = None,
                 overrides: Mapping[str, float | None] | None = None, cap_s: float | None = None,
                 percentiles: bool = True) -> RunPrediction:
    """Serve the run's workload on its replica and measure it as its clients did (means only
    with `percentiles` False: what a fit compares)."""
    catalog = catalog or shipped_catalog()
    setup = replica_setup(
        catalog, run.model, run.gpu, run.precision, run.gpus, run.engine_id,
        gpu_memory_utilization=run.gpu_memory_utilization, max_model_len=run.max_model_len,
        max_num_batched_tokens=run.max_num_batched_tokens, block_size=KV_BLOCK_TOKENS, overrides=overrides,
    )
    if not setup.memory.fits:
        raise SpecError([SpecIssue(f"run {run.id}.tensor_parallel", f"{run.model} does not fit {run.gpus}x {run.gpu} "
                                   f"with room for {run.max_model_len} tokens of KV cache", run.gpus,
                                   "a configuration that fits")], run.source)
    arrival, stage, prompt = run_requests(run, cap_s)
    n = len(arrival)
    knobs = Serving(max_num_seqs=run.max_num_seqs, max_num_batched_tokens=run.max_num_batched_tokens,
                    chunked_prefill=run.chunked_prefill, prefix_caching=run.prefix_caching,
                    gpu_memory_utilization=run.gpu_memory_utilization, max_model_len=run.max_model_len,
                    block_size=KV_BLOCK_TOKENS)
    kernel = build_pool(knobs, setup.kernel_options(), arrival, np.full(n, run.prompt_tokens, dtype=np.int64),
                        np.full(n, run.output_tokens, dtype=np.int64), replicas=1, prefix_group=prompt,
                        prefix_tokens=np.full(n, run.cached_prefix_tokens, dtype=np.int64))
    kernel.advance_to(math.inf)
    done = kernel.status == DONE
    ttft = kernel.first_token_s - kernel.arrival_s
    e2e = kernel.done_s - kernel.arrival_s
    weight = _full_run_weights(run, stage, cap_s)
    values: dict[str, float] = {}
    for part in run.parts:
        chosen = done if part == "all" else done & (stage == int(part[1:]))
        if not chosen.any():
            continue
        for metric, times in (("ttft", ttft[chosen]), ("e2e", e2e[chosen])):
            values[run_key(part, metric)] = float(np.average(times, weights=weight[chosen]))
            if percentiles:
                for stat, q in zip(("p50", "p90", "p99"), np.percentile(times, (50, 90, 99)), strict=True):
                    values[run_key(part, metric, stat)] = float(q)
        values[run_key(part, "tpot")] = ((values[run_key(part, "e2e")] - values[run_key(part, "ttft")])
                                         / max(run.output_tokens - 1, 1))
    return RunPrediction(values, n, int(done.sum()))
