"""Calibration: fit a GPU's efficiency factors to benchmarks its owner already has.

The roofline (`sim.kernels.roofline`) says how long an engine iteration takes from a model's
FLOPs and bytes and a GPU's datasheet peaks; what it cannot know is how close a real engine
gets to those peaks. That is four numbers per GPU: the MFU of compute-bound phases, the
bandwidth utilisation (MBU) of memory-bound ones, a fixed cost per iteration, and (for tensor
parallelism) the all-reduce efficiency; fine-tuning adds a training MFU. Calibration finds
them from a handful of measured points, in seconds, without profiling a GPU:

1. **Read** the points (`read_measurements`): the CSV layout of the published table
   (`tests/data/calibration/measurements.csv`) or the JSON that vLLM's serving benchmark
   saves (`vllm bench serve --save-result`). Every point becomes a `Measurement`: the setup
   that produced it (a static batch, a closed loop of clients, a Poisson stream, or a
   training run), one metric, its value in SI units and, when the benchmark kept them, the
   per-request TTFTs.
2. **Reproduce** each point through the simulator itself (`predict_measurement`): the same
   serving kernel as full scenarios, run with the point's setup and candidate factors.
3. **Fit** (`fit`, `fit_all`): bounded least squares on the relative error
   predicted / measured - 1, one GPU at a time. The leave-one-out error (refit without point
   i, predict point i) is the honest number; the in-sample error flatters.
4. **Write** a catalog override (`write_catalog_override`) that a scenario names with
   `catalog: my_hw.yaml`; the loader merges it over the shipped catalog.

`fidelity` does step 2 alone, with the catalog's factors, and measures how far off the
simulator is (per point, per metric, and as a Kolmogorov-Smirnov distance between predicted
and measured TTFT distributions when the benchmark kept per-request samples);
`sim.report.fidelity` writes that up.

    >>> from sim.calibration import Measurement, predict_measurement
    >>> point = Measurement(id="p1", source="example", model="llama-2-7b", gpu="a100-80gb",
    ...                     gpus=1, precision="fp16", setup="static", input_tokens=128,
    ...                     output_tokens=128, batch_or_concurrency=1, rate=None,
    ...                     metric="tpot", value=0.010)
    >>> 0.005 < predict_measurement(point) < 0.05
    True
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.catalog import Catalog, shipped_catalog
from sim.catalog.sizing import replica_memory
from sim.kernels.batching import DONE, PoolKernel
from sim.kernels.roofline import EngineEfficiency, pack_params
from sim.kernels.training import training_time_s
from sim.predict import PRECISIONS, predict
from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.files import MAX_MEASUREMENT_BYTES, read_text
from sim.spec.scenario import MAX_TENSOR_PARALLEL, Serving
from sim.workload.limits import BYTES_PER_PREDICTED_REQUEST, check_memory

METRICS = ("ttft", "tpot", "output_throughput", "prefill_throughput", "decode_throughput",
           "training_throughput")
TIME_METRICS = ("ttft", "tpot")
SETUPS = ("static", "closed", "poisson", "training")
SERVING_FACTORS = ("mfu", "mbu", "iteration_overhead_s", "allreduce_efficiency")
ALL_FACTORS = (*SERVING_FACTORS, "training_mfu")
DEFAULT_FIT = ("mfu", "mbu", "iteration_overhead_s")

# Bounds of the fitted factors: fractions of a peak, and an iteration overhead up to 50 ms.
# Engines do not reach datasheet peaks: fits above ~95% of peak FLOP/s or bandwidth would be
# absorbing some other error (engine differences, measurement setup), so the bounds stop there.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "mfu": (0.02, 0.95),
    "mbu": (0.02, 0.95),
    "iteration_overhead_s": (0.0, 0.05),
    "allreduce_efficiency": (0.05, 1.0),
    "training_mfu": (0.01, 1.0),
}
# Typical magnitudes: the optimiser works on factor / typical, so all variables are O(1).
_TYPICAL = {"mfu": 0.5, "mbu": 0.75, "iteration_overhead_s": 0.003, "allreduce_efficiency": 0.7,
            "training_mfu": 0.4}

# A saturated "max (offline)" throughput (every request sent at once to an engine tuned for
# throughput) is reproduced as a static batch of OFFLINE_REQUESTS identical requests: the
# running batch is then limited by the KV cache alone, not by a max_num_seqs of 256. Enough
# requests that the ramp-up and the drain at the end weigh little (4096 to 30000 requests
# give throughputs within 3% of each other for Llama-3.1-8B on an H100).
OFFLINE_REQUESTS = 8192
CLOSED_REQUESTS_PER_CLIENT = 10  # a closed loop runs ten requests per client
POISSON_REQUESTS = 1000
TRAINING_SCALING_EFFICIENCY = 0.9  # sim.spec.scenario.Training's default, for multi-GPU rows
# Counts a measurement file may give (token counts, batch sizes, clients, requests): past any
# model's context and any benchmark's size, so a typo (1e30) is an error, not an allocation.
MAX_COUNT = 10_000_000

TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
THROUGHPUT_UNITS = {"tokens/s": 1.0, "token/s": 1.0, "tok/s": 1.0, "tokens/sec": 1.0, "tps": 1.0}

# Models published under another name with a catalog model's architecture.
MODEL_ALIASES = {
    # CodeLlama-7B is Llama-2-7B's architecture (32 layers, hidden 4096, 32 heads, FFN 11008)
    # trained further on code; only its vocabulary differs (32016 vs 32000 tokens).
    "codellama-7b": "llama-2-7b",
}
PRECISION_WORDS = {
    "fp8": "fp8", "f8": "fp8", "e4m3": "fp8", "fp16": "fp16", "f16": "fp16", "float16": "fp16",
    "half": "fp16", "bf16": "bf16", "bfloat16": "bf16", "int8": "int8", "w8a8": "int8",
    "int4": "int4", "w4a16": "int4", "awq": "int4", "gptq": "int4",
}


# ------------------------------------------------------------------------------------------
# Measured points
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Measurement:
    """One measured number and the setup that produced it, in SI units.

    setup: `static` (batch_or_concurrency identical requests sent together), `closed`
    (batch_or_concurrency clients, `requests` requests in all), `poisson` (`requests` requests
    at `rate` per second) or `training` (a fine-tuning run with micro-batches of
    batch_or_concurrency sequences of input_tokens; `method` lora or full).
    value: seconds for ttft / tpot, tokens per second for the throughputs.
    samples: measured per-request TTFTs in seconds, when the benchmark kept them.
    input_lens / output_lens: per-request token counts (vLLM detailed results); when set, the
    point is reproduced request by request instead of with identical requests.
    """

    id: str
    source: str
    model: str
    gpu: str
    gpus: int
    precision: str
    setup: str
    input_tokens: int
    output_tokens: int | None
    batch_or_concurrency: int
    rate: float | None
    metric: str
    value: float
    samples: np.ndarray | None = field(default=None, repr=False)
    requests: int | None = None
    method: str | None = None
    input_lens: np.ndarray | None = field(default=None, repr=False)
    output_lens: np.ndarray | None = field(default=None, repr=False)
    engine: str = ""
    reference: str = ""
    notes: str = ""

    @property
    def unit(self) -> str:
        return "s" if self.metric in TIME_METRICS else "tokens/s"

    @property
    def describe_setup(self) -> str:
        if self.setup == "static":
            return f"static batch {self.batch_or_concurrency}"
        if self.setup == "closed":
            return f"closed loop {self.batch_or_concurrency} clients, {self.requests} requests"
        if self.setup == "poisson":
            return f"Poisson {self.rate:g} req/s, {self.requests} requests"
        return f"{self.method or 'full'} training, micro-batch {self.batch_or_concurrency}"


@dataclass(frozen=True)
class Supplied:
    """Values a file may leave out, given by flags instead (`--model --gpu --gpus --precision`)."""

    model: str | None = None
    gpu: str | None = None
    gpus: int | None = None
    precision: str | None = None


def read_measurements(
    paths: Sequence[str | Path] | str | Path, *, model: str | None = None, gpu: str | None = None,
    gpus: int | None = None, precision: str | None = None, catalog: Catalog | None = None,
) -> list[Measurement]:
    """Every measured point of the files: CSV in the published layout, or vLLM benchmark JSON.

    Model, GPU, GPU count and precision come from the file; the keyword arguments fill what a
    file leaves out (a vLLM JSON never names the GPU). Any problem raises a `SpecError`
    naming the file, the row and the field.
    """
    catalog = catalog or shipped_catalog()
    supplied = Supplied(model, gpu, gpus, precision)
    _check_supplied(supplied, catalog)
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise SpecError([SpecIssue("MEASUREMENTS", "no measurement files given", has_value=False,
                                   allowed="CSV files in the published layout or vLLM benchmark JSON files")])
    points: list[Measurement] = []
    for path in map(Path, paths):
        text = _read_text(path)
        if path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv" and text.lstrip().startswith("{")):
            found = read_vllm_json(path, supplied, catalog, text=text)
        else:
            found = read_csv(path, supplied, catalog, text=text)
        if not found:  # a header-only CSV would otherwise fit nothing and write `gpus: {}`
            raise SpecError([SpecIssue("", "no measured points in the file (a header but no rows)", has_value=False,
                                       allowed="at least one row of measurements")], str(path))
        points += found
    return points


def _read_text(path: Path) -> str:
    """A measurement file's text: a regular UTF-8 file within MAX_MEASUREMENT_BYTES."""
    return read_text(path, MAX_MEASUREMENT_BYTES, "CSV or JSON measurement file")


def _check_supplied(supplied: Supplied, catalog: Catalog) -> None:
    issues = []
    if supplied.model is not None and resolve_model(supplied.model, catalog) is None:
        issues.append(_unknown("--model", supplied.model, catalog.models, "model"))
    if supplied.gpu is not None and resolve_gpu(supplied.gpu, catalog) is None:
        issues.append(_unknown("--gpu", supplied.gpu, catalog.gpus, "GPU"))
    if supplied.precision is not None and resolve_precision(supplied.precision) is None:
        issues.append(SpecIssue("--precision", "unknown precision", supplied.precision, ", ".join(PRECISIONS)))
    if supplied.gpus is not None and not 1 <= supplied.gpus <= MAX_TENSOR_PARALLEL:
        issues.append(SpecIssue("--gpus", "out of range", supplied.gpus, f"a whole number from 1 to {MAX_TENSOR_PARALLEL}"))
    if issues:
        raise SpecError(issues, "flags")


# ---- free text to catalog ids ------------------------------------------------------------


def _tokens(text: str) -> set[str]:
    tokens = set(re.findall(r"[a-z0-9]+", text.lower()))
    return {re.sub(r"^sxm\d$", "sxm", t) for t in tokens}  # "SXM4" / "SXM5" are SXM boards


def _strip_notes(text: str) -> str:
    """'Llama-2-7B (LLaMA 7B)' -> 'Llama-2-7B'; 'meta-llama/Llama-2-7b-hf' -> 'Llama-2-7b-hf'."""
    return re.sub(r"\([^)]*\)", " ", text).strip().rsplit("/", 1)[-1].strip()


def _best_match(text: str, names: Mapping[str, str]) -> str | None:
    """The target whose name's words all occur in `text`, preferring the most specific name.

    `names` maps a name (an id, or an alias) to the id it stands for. None when nothing
    matches, or when two different ids match equally well.
    """
    words = _tokens(text)
    scored = []
    for name, target in names.items():
        needed = _tokens(name)
        if needed and needed <= words:
            scored.append((len(needed), target))
    if not scored:
        return None
    best = max(score for score, _ in scored)
    winners = {target for score, target in scored if score == best}
    return winners.pop() if len(winners) == 1 else None


def resolve_gpu(text: str, catalog: Catalog | None = None) -> str | None:
    """'H100 SXM 80GB' -> 'h100-sxm', 'A100 80GB' -> 'a100-80gb', 'RTX 4090' -> 'rtx-4090'."""
    catalog = catalog or shipped_catalog()
    text = str(text).strip()
    if text in catalog.gpus:
        return text
    return _best_match(_strip_notes(text) or text, {g: g for g in catalog.gpus})


def resolve_model(text: str, catalog: Catalog | None = None) -> str | None:
    """'Llama-2-7B (LLaMA 7B)' -> 'llama-2-7b'; 'Llama-3.1-8B-Instruct (nvidia FP8 ckpt)' ->
    'llama-3.1-8b'; 'CodeLlama-7B' -> 'llama-2-7b' (the same architecture, see MODEL_ALIASES)."""
    catalog = catalog or shipped_catalog()
    text = str(text).strip()
    if text in catalog.models:
        return text
    names = {m: m for m in catalog.models}
    names.update({alias: target for alias, target in MODEL_ALIASES.items() if target in catalog.models})
    return _best_match(_strip_notes(text) or text, names)


def resolve_precision(text: str) -> str | None:
    """'FP8' -> 'fp8', 'F16 (12.55 GiB)' -> 'fp16', 'BF16 (LoRA)' -> 'bf16'."""
    for word in re.findall(r"[a-z0-9]+", str(text).lower()):
        if word in PRECISION_WORDS:
            return PRECISION_WORDS[word]
    return None


def _unknown(path: str, value: str, known: Iterable[str], what: str) -> SpecIssue:
    known = sorted(known)
    return SpecIssue(path, f"unknown {what}{suggest(_strip_notes(value).lower(), known)}", value,
                     f"a catalog id ({', '.join(known)}) or a name containing one's words")


# ---- the published CSV layout ------------------------------------------------------------

CSV_REQUIRED = ("id", "metric", "value", "unit", "input_tokens", "output_tokens", "batch_or_concurrency")
_LEADING_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")
_NOT_APPLICABLE = ("", "n/a", "na", "-", "none")


def metric_of(text: str) -> str | None:
    """The metric a free-text column names, e.g. 'decode throughput (tg128)' -> decode_throughput."""
    t = text.lower()
    if t.strip() in METRICS:
        return t.strip()
    if re.search(r"\btrain", t):
        return "training_throughput"
    if "prefill" in t or "prompt processing" in t or re.search(r"\bpp\d+", t):
        return "prefill_throughput"
    if "decode throughput" in t or "generation throughput" in t or re.search(r"\btg\d+", t):
        return "decode_throughput"
    if "ttft" in t or "first token" in t or "1st token" in t:
        return "ttft"
    if any(w in t for w in ("tpot", "per-output-token", "per output token", "inter-token")) or re.search(r"\bitl\b", t):
        return "tpot"
    if "throughput" in t:
        return "output_throughput"
    return None


class _Row:
    """One CSV row being read: collects issues with the file's row id and line in the path."""

    def __init__(self, raw: dict[str, str | None], line: int, issues: list[SpecIssue]) -> None:
        self.raw = raw
        self.line = line
        self.issues = issues
        self.id = (raw.get("id") or "").strip() or f"line{line}"

    def where(self, name: str) -> str:
        return f"line {self.line} (id {self.id}).{name}"

    def text(self, name: str) -> str:
        return (self.raw.get(name) or "").strip()

    def problem(self, name: str, message: str, value: Any = None, allowed: str = "", has_value: bool = True) -> None:
        self.issues.append(SpecIssue(self.where(name), message, value, allowed, has_value))

    def count(self, name: str, *, optional: bool = False, minimum: int = 0, maximum: int = MAX_COUNT) -> int | None:
        """A whole number at the start of the cell ('2048 (seq len)' -> 2048), at most `maximum`."""
        text = self.text(name)
        if text.lower() in _NOT_APPLICABLE:
            if not optional:
                self.problem(name, "missing", has_value=False, allowed="a whole number")
            return None
        match = _LEADING_NUMBER.match(text)
        if not match:
            self.problem(name, "not a number", text, "a whole number, optionally followed by a note")
            return None
        number = float(match.group(1))
        if not minimum <= number <= maximum or number != int(number):
            self.problem(name, "out of range" if number >= 0 else "must not be negative", text,
                         f"a whole number from {minimum} to {maximum:,}")
            return None
        return int(number)


def read_csv(path: str | Path, supplied: Supplied | None = None, catalog: Catalog | None = None, *,
             text: str | None = None) -> list[Measurement]:
    """Points of a CSV in the layout of the published `measurements.csv`.

    Columns: id, source, engine, model, gpu, n_gpus, precision, input_tokens, output_tokens,
    batch_or_concurrency, metric, value, unit, notes (source, engine, notes optional; model,
    gpu, n_gpus, precision may be left out when given as flags; optional `rate_per_s` turns a
    row into a Poisson stream, optional `method` says lora or full for training rows).

    How free-text cells are read: `batch_or_concurrency` '1 (static batch)' is a static batch,
    'max (offline)' a static batch of OFFLINE_REQUESTS requests (saturated), a cell naming
    'concurrency' or 'clients' a closed loop; `source` 'same as V01' repeats V01's source.
    TTFT rows measured with output_len=1 (TensorRT-LLM's "1st token latency") are reproduced
    as one request with one output token: the prefill iteration that produces it. The
    data's README describes them as prefill plus one decode step; the L40S row (14 ms) is
    below two weight reads at full bandwidth (2 x 7.8 ms), so they are taken as one.
    """
    path = Path(path)
    supplied = supplied or Supplied()
    catalog = catalog or shipped_catalog()
    text = _read_text(path) if text is None else text
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    issues: list[SpecIssue] = []
    missing = [c for c in CSV_REQUIRED if c not in columns]
    for name, flag in (("model", supplied.model), ("gpu", supplied.gpu), ("precision", supplied.precision)):
        if name not in columns and flag is None:
            missing.append(name)
    if missing:
        raise SpecError([SpecIssue("header", f"missing column{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(missing)}", columns,
                                   f"columns {', '.join(CSV_REQUIRED)}, model, gpu, n_gpus, precision "
                                   "(model, gpu, n_gpus, precision may come from --model, --gpu, --gpus, "
                                   "--precision instead)")], str(path))
    points: list[Measurement] = []
    sources: dict[str, str] = {}
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
            continue
        row = _Row(raw, line, issues)
        if row.id in seen:
            row.problem("id", "duplicate id", row.id, "ids unique within a file")
        seen.add(row.id)
        reference = row.text("source")
        same = re.match(r"^same as (\S+)$", reference, flags=re.IGNORECASE)
        if same and same.group(1) in sources:
            reference = sources[same.group(1)]
        sources[row.id] = reference
        point = _csv_point(row, path, supplied, catalog, reference)
        if point is not None:
            points.append(point)
    if issues:
        raise SpecError(issues, str(path))
    return points


def _csv_point(row: _Row, path: Path, supplied: Supplied, catalog: Catalog, reference: str) -> Measurement | None:
    before = len(row.issues)
    metric = metric_of(row.text("metric"))
    if metric is None:
        row.problem("metric", "unknown metric", row.text("metric"),
                    "TTFT, TPOT / per-output-token latency, output throughput, prefill throughput (ppN), "
                    "decode throughput (tgN), training throughput")
    value = _csv_value(row, metric)
    model = _csv_id(row, "model", supplied.model, catalog.models, lambda t: resolve_model(t, catalog), "model")
    gpu = _csv_id(row, "gpu", supplied.gpu, catalog.gpus, lambda t: resolve_gpu(t, catalog), "GPU")
    precision_text = row.text("precision") or supplied.precision or ""
    precision = resolve_precision(precision_text)
    if not precision_text:
        row.problem("precision", "missing", has_value=False, allowed=", ".join(PRECISIONS) + " (or pass --precision)")
    elif precision is None or precision not in PRECISIONS:
        row.problem("precision", "unknown precision", precision_text, ", ".join(PRECISIONS))
    elif gpu is not None and precision == "fp8" and "fp8" not in catalog.gpus[gpu].peak_flops:
        row.problem("precision", f"{gpu} has no fp8 tensor cores", precision_text, "bf16, fp16, int8, int4")
    gpus = _csv_gpus(row, supplied)
    training = metric == "training_throughput"
    input_tokens = row.count("input_tokens", minimum=1 if metric in ("prefill_throughput", "training_throughput")
                             else 0)
    output_tokens = row.count("output_tokens", optional=training,
                              minimum=2 if metric == "tpot" else 0 if metric == "prefill_throughput" else 1)
    batch_text = row.text("batch_or_concurrency")
    setup, batch, requests = _csv_setup(row, training)
    rate = None
    if row.text("rate_per_s"):
        try:
            rate = float(row.text("rate_per_s"))
        except ValueError:
            rate = None
        if rate is None or not math.isfinite(rate) or rate <= 0:
            row.problem("rate_per_s", "not a positive number", row.text("rate_per_s"), "requests per second > 0")
        elif not training:
            setup, requests = "poisson", POISSON_REQUESTS
    method = None
    if training:
        method_text = (row.text("method") or precision_text).lower()
        method = "lora" if "lora" in method_text else "full"
    if len(row.issues) > before:
        return None
    assert metric is not None and value is not None and model is not None and gpu is not None
    assert precision is not None and gpus is not None and input_tokens is not None and batch is not None
    notes = row.text("notes")
    if batch_text.lower().startswith("max"):
        notes = (notes + "; " if notes else "") + (f"saturated throughput reproduced as a static batch of "
                                                   f"{batch} requests (the KV cache limits the running batch)")
    return Measurement(
        id=row.id, source=str(path), model=model, gpu=gpu, gpus=gpus, precision=precision, setup=setup,
        input_tokens=input_tokens, output_tokens=output_tokens, batch_or_concurrency=batch, rate=rate,
        metric=metric, value=value, requests=requests, method=method, engine=row.text("engine"),
        reference=reference, notes=notes,
    )


def _csv_value(row: _Row, metric: str | None) -> float | None:
    text, unit = row.text("value"), row.text("unit")
    if not text:
        row.problem("value", "missing", has_value=False, allowed="a positive number")
        return None
    try:
        value = float(text)
    except ValueError:
        row.problem("value", "not a number", text, "a positive number, its unit in the unit column")
        return None
    if not math.isfinite(value) or value <= 0:
        row.problem("value", "must be positive" if math.isfinite(value) else "not finite", text, "a positive number")
        return None
    if metric is None:
        return None
    units = TIME_UNITS if metric in TIME_METRICS else THROUGHPUT_UNITS
    if not unit:
        row.problem("unit", "missing", has_value=False, allowed=", ".join(units))
        return None
    if unit not in units:
        row.problem("unit", f"unknown unit for {metric}", unit, ", ".join(units))
        return None
    return value * units[unit]


def _csv_id(row: _Row, name: str, flag: str | None, known: Iterable[str],
            resolve: Callable[[str], str | None], what: str) -> str | None:
    text = row.text(name) or flag or ""
    if not text:
        row.problem(name, "missing", has_value=False, allowed=f"a catalog {what} id (or pass --{name})")
        return None
    found = resolve(text)
    if found is None:
        issue = _unknown(row.where(name), text, known, what)
        row.issues.append(issue)
    return found


def _csv_gpus(row: _Row, supplied: Supplied) -> int | None:
    name = "n_gpus" if "n_gpus" in row.raw else "gpus"
    if not row.text(name):
        return supplied.gpus or 1
    return row.count(name, minimum=1, maximum=MAX_TENSOR_PARALLEL)


def _csv_setup(row: _Row, training: bool) -> tuple[str, int | None, int | None]:
    text = row.text("batch_or_concurrency").lower()
    if training:
        return "training", row.count("batch_or_concurrency", minimum=1), None
    if text.startswith("max"):
        return "static", OFFLINE_REQUESTS, None
    count = row.count("batch_or_concurrency", minimum=1)
    if count is not None and ("concurr" in text or "client" in text):
        return "closed", count, count * CLOSED_REQUESTS_PER_CLIENT
    return "static", count, None


# ---- vLLM's serving benchmark JSON -------------------------------------------------------


def read_vllm_json(path: str | Path, supplied: Supplied | None = None, catalog: Catalog | None = None, *,
                   text: str | None = None) -> list[Measurement]:
    """Points of the JSON `vllm bench serve --save-result` (benchmark_serving.py) writes.

    Read: `mean_ttft_ms` (with the per-request `ttfts`, in seconds, as samples),
    `mean_tpot_ms` and `output_throughput` (tokens/s), each a point; `request_rate` ("inf" or
    a number), `max_concurrency`, `completed` / `num_prompts`, and the per-request
    `input_lens` / `output_lens` (else `total_input_tokens` / `total_output_tokens` spread
    evenly). The setup is reproduced as the benchmark ran it: a finite rate is a Poisson
    stream (a concurrency cap beside it is not modelled, and said so); otherwise
    `max_concurrency` is a closed loop of that many clients; otherwise every request is sent
    at t=0 into an engine with vLLM's default max_num_seqs. The model comes from `model_id`
    when it names a catalog model, else from --model; GPU from --gpu; precision from
    --precision (default bf16: vLLM's dtype "auto" serves bf16 checkpoints in bf16).
    """
    path = Path(path)
    supplied = supplied or Supplied()
    catalog = catalog or shipped_catalog()
    text = _read_text(path) if text is None else text
    source = str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([SpecIssue("", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                                   has_value=False)], source) from None
    except RecursionError:
        raise SpecError([SpecIssue("", "nested too deeply to be a benchmark result", has_value=False,
                                   allowed="the JSON vllm bench serve --save-result writes")], source) from None
    if not isinstance(doc, dict):
        raise SpecError([SpecIssue("", "a benchmark result must be a JSON object", type(doc).__name__)], source)
    issues: list[SpecIssue] = []

    def problem(key: str, message: str, value: Any = None, allowed: str = "", has_value: bool = True) -> None:
        issues.append(SpecIssue(key, message, value, allowed, has_value))

    def number(key: str, *, positive: bool = True, allow_inf: bool = False) -> float | None:
        value = doc.get(key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in ("inf", "infinity") and allow_inf:
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)
            except (TypeError, ValueError):
                problem(key, "not a number", value, "a number" + (' or "inf"' if allow_inf else ""))
                return None
        if math.isinf(value) and allow_inf and value > 0:
            return math.inf
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            problem(key, "must be positive" if math.isfinite(value) else "not finite", value, "a number > 0")
            return None
        return float(value)

    model_text = supplied.model or doc.get("model_id") or ""
    model = resolve_model(str(model_text), catalog) if model_text else None
    if not model_text:
        problem("model_id", "missing, and no --model given", has_value=False,
                allowed="--model with a catalog model id")
    elif model is None:
        issues.append(_unknown("--model" if supplied.model else "model_id", str(model_text), catalog.models, "model"))
    gpu = resolve_gpu(supplied.gpu, catalog) if supplied.gpu else None
    if supplied.gpu is None:
        problem("--gpu", "a vLLM benchmark result does not say which GPU ran it", has_value=False,
                allowed="--gpu with a catalog GPU id (" + ", ".join(sorted(catalog.gpus)) + ")")
    precision = resolve_precision(supplied.precision) if supplied.precision else "bf16"
    if gpu is not None and precision == "fp8" and "fp8" not in catalog.gpus[gpu].peak_flops:
        problem("--precision", f"{gpu} has no fp8 tensor cores", precision, "bf16, fp16, int8, int4")
    def whole(key: str) -> int | None:
        """A count: a whole number from 1 to MAX_COUNT."""
        value = number(key)
        if value is not None and (value != int(value) or value > MAX_COUNT):
            problem(key, "not a whole number" if value != int(value) else "out of range", value,
                    f"a whole number from 1 to {MAX_COUNT:,}")
            return None
        return None if value is None else int(value)

    rate = number("request_rate", allow_inf=True)
    concurrency = whole("max_concurrency")
    completed = whole("completed") if "completed" in doc else whole("num_prompts")
    input_lens, output_lens, keep = _vllm_lengths(doc, problem)
    if input_lens is None:
        total_in, total_out = number("total_input_tokens"), number("total_output_tokens")
        already = {"completed", "num_prompts", "input_lens", "output_lens", "total_input_tokens", "total_output_tokens"}
        if any(issue.path in already for issue in issues):
            pass  # the reason is reported already
        elif completed is None or total_in is None or total_out is None:
            problem("input_lens", "missing: need the per-request input_lens / output_lens, or completed, "
                    "total_input_tokens and total_output_tokens", has_value=False,
                    allowed="a result saved by vllm bench serve --save-result")
        elif max(total_in, total_out) / completed > MAX_COUNT:
            key, value = ("total_input_tokens", total_in) if total_in >= total_out else ("total_output_tokens", total_out)
            problem(key, f"is {value / completed:.3g} tokens per request, out of range", value,
                    f"at most {MAX_COUNT:,} tokens per request")
        else:
            input_lens = np.full(completed, max(1, round(total_in / completed)), dtype=np.int64)
            output_lens = np.full(completed, max(1, round(total_out / completed)), dtype=np.int64)
    if model is not None and input_lens is not None and output_lens is not None:
        _check_vllm_size(catalog.models[model], model, input_lens, output_lens, problem)
    samples = None
    if isinstance(doc.get("ttfts"), list):
        ttfts = doc["ttfts"]
        try:
            samples = np.asarray(ttfts, dtype=float)
        except (TypeError, ValueError):
            problem("ttfts", "not a list of numbers", ttfts[:3], "TTFTs in seconds")
        if samples is not None:
            if keep is not None and len(keep) == len(samples):
                samples = samples[keep]
            if np.any(~np.isfinite(samples)) or np.any(samples < 0):
                problem("ttfts", "negative or non-finite TTFTs", samples[:3].tolist(), "seconds >= 0")
                samples = None
    metrics = []
    for key, metric, scale in (("mean_ttft_ms", "ttft", 1e-3), ("mean_tpot_ms", "tpot", 1e-3),
                               ("output_throughput", "output_throughput", 1.0)):
        value = number(key)
        if value is not None:
            metrics.append((key, metric, value * scale))
    if not metrics and not any(k in doc for k in ("mean_ttft_ms", "mean_tpot_ms", "output_throughput")):
        problem("mean_ttft_ms", "no metric found", has_value=False,
                allowed="mean_ttft_ms, mean_tpot_ms or output_throughput")
    if issues:
        raise SpecError(issues, source)
    assert model is not None and gpu is not None and precision is not None
    assert input_lens is not None and output_lens is not None
    n = len(input_lens)
    notes = []
    if rate is not None and math.isfinite(rate):
        setup, batch = "poisson", 1
        burstiness = doc.get("burstiness")
        if burstiness not in (None, 1, 1.0):
            notes.append(f"burstiness {burstiness} simulated as Poisson (burstiness 1)")
        if concurrency is not None:
            notes.append(f"max_concurrency {int(concurrency)} beside a finite rate is not modelled")
    elif concurrency is not None:
        setup, batch, rate = "closed", int(concurrency), None
    else:
        setup, batch, rate = "static", n, None
        notes.append(f"all requests sent at t=0 into max_num_seqs={Serving().max_num_seqs}")
    if supplied.precision is None:
        notes.append("precision bf16 assumed (vLLM dtype auto); pass --precision otherwise")
    stem = path.stem
    return [
        Measurement(
            id=f"{stem}:{metric}", source=source, model=model, gpu=gpu, gpus=supplied.gpus or 1,
            precision=precision, setup=setup, input_tokens=int(round(float(np.mean(input_lens)))),
            output_tokens=int(round(float(np.mean(output_lens)))), batch_or_concurrency=batch, rate=rate,
            metric=metric, value=value, samples=samples if metric == "ttft" else None, requests=n,
            input_lens=input_lens, output_lens=output_lens, engine=str(doc.get("backend") or "vllm"),
            reference=f"{key} of {path.name}" + (f" ({doc['date']})" if doc.get("date") else ""),
            notes="; ".join(notes),
        )
        for key, metric, value in metrics
    ]


def _check_vllm_size(card: Any, model: str, input_lens: np.ndarray, output_lens: np.ndarray,
                     problem: Callable[..., None]) -> None:
    """Requests must fit the model's context (vLLM enforces it, so a real result does) and the
    benchmark must fit in memory to be reproduced."""
    longest = int((input_lens + output_lens).max()) if len(input_lens) else 0
    if card.max_context is not None and longest > card.max_context:
        problem("input_lens", f"a request of {longest:,} tokens is longer than {model}'s context", longest,
                f"input + output tokens <= {card.max_context:,}")
    try:
        check_memory([(f"{len(input_lens):,} requests x {BYTES_PER_PREDICTED_REQUEST} B",
                       float(len(input_lens)) * BYTES_PER_PREDICTED_REQUEST)], "completed", "fewer requests")
    except SpecError as exc:
        problem(exc.issues[0].path, exc.issues[0].message, has_value=False, allowed=exc.issues[0].allowed)


def _vllm_lengths(doc: dict, problem: Callable[..., None]
                  ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Per-request input and output lengths of the successful requests, and which those are."""
    if not isinstance(doc.get("input_lens"), list) or not isinstance(doc.get("output_lens"), list):
        return None, None, None
    try:
        inputs = np.asarray(doc["input_lens"], dtype=float)
        outputs = np.asarray(doc["output_lens"], dtype=float)
    except (TypeError, ValueError, OverflowError):
        problem("input_lens", "not lists of whole numbers", has_value=False, allowed="token counts")
        return None, None, None
    if inputs.ndim != 1 or outputs.ndim != 1 or len(inputs) != len(outputs):
        problem("output_lens", f"has {len(outputs)} entries, input_lens {len(inputs)}", has_value=False,
                allowed="one entry per request in both, each a whole number")
        return None, None, None
    counts = np.concatenate([inputs, outputs])
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(counts) | (counts < 0) | (counts > MAX_COUNT) | (counts != np.floor(counts))
    if bad.any():
        problem("input_lens" if int(np.argmax(bad)) < len(inputs) else "output_lens",
                "a token count that is negative, fractional, not finite or too large", float(counts[np.argmax(bad)]),
                f"whole numbers from 0 to {MAX_COUNT:,}")
        return None, None, None
    errors = doc.get("errors")
    if isinstance(errors, list) and len(errors) == len(inputs):
        keep = np.array([not e for e in errors], dtype=bool)
    else:
        keep = outputs > 0  # vLLM records 0 output tokens for a failed request
    if not keep.any():
        problem("output_lens", "no successful request", has_value=False, allowed="at least one completed request")
        return None, None, None
    return (np.maximum(inputs[keep], 1).astype(np.int64), np.maximum(outputs[keep], 1).astype(np.int64), keep)


# ------------------------------------------------------------------------------------------
# Reproducing a point through the simulator
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factors:
    """All efficiency factors of one GPU: the four of the serving roofline and training MFU."""

    mfu: float
    mbu: float
    iteration_overhead_s: float
    allreduce_efficiency: float
    training_mfu: float

    @classmethod
    def of(cls, gpu_id: str, catalog: Catalog | None = None) -> Factors:
        e = (catalog or shipped_catalog()).gpus[gpu_id].efficiency
        return cls(e.mfu, e.mbu, e.iteration_overhead_s, e.allreduce_efficiency, e.training_mfu)

    @property
    def engine(self) -> EngineEfficiency:
        return EngineEfficiency(self.mfu, self.mbu, self.iteration_overhead_s, self.allreduce_efficiency)

    def with_values(self, values: Mapping[str, float]) -> Factors:
        return replace(self, **{k: float(v) for k, v in values.items()})

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in ALL_FACTORS}


def _factors(m: Measurement, efficiency: Factors | EngineEfficiency | None, catalog: Catalog) -> Factors:
    if isinstance(efficiency, Factors):
        return efficiency
    base = Factors.of(m.gpu, catalog)
    if efficiency is None:
        return base
    return Factors(efficiency.mfu, efficiency.mbu, efficiency.iteration_overhead_s,
                   efficiency.allreduce_efficiency, base.training_mfu)


def predict_measurement(m: Measurement, efficiency: Factors | EngineEfficiency | None = None,
                        catalog: Catalog | None = None) -> float:
    """The simulator's value for a measured point, in the point's SI unit.

    Serving points run `sim.predict.predict` (identical requests: a static batch, a closed
    loop or a Poisson stream) or, with per-request lengths, the same kernel request by
    request (`simulate_requests`); training points run `training_time_s`. `efficiency` None
    takes the catalog's factors; an `EngineEfficiency` keeps the catalog's training MFU.
    """
    catalog = catalog or shipped_catalog()
    try:
        return _predict(m, _factors(m, efficiency, catalog), catalog)
    except SpecError as exc:  # name the point, not predict's flags
        raise SpecError([replace(i, path=f"{m.id}: {i.path.lstrip('-')}") for i in exc.issues], m.source) from None


def _predict(m: Measurement, factors: Factors, catalog: Catalog) -> float:
    if m.setup == "training":
        return _training_throughput(m, factors, catalog)
    if m.input_lens is not None:
        return simulate_requests(m, factors, catalog).metric(m.metric)
    output = max(m.output_tokens or 1, 1)
    if m.metric == "decode_throughput":
        output += 1  # the first token comes from the prefill; then `output` timed decode steps
    if m.metric == "prefill_throughput":
        output = 1
    kwargs: dict[str, Any] = {}
    if m.setup == "closed":
        kwargs.update(concurrency=m.batch_or_concurrency,
                      requests=m.requests or m.batch_or_concurrency * CLOSED_REQUESTS_PER_CLIENT)
    elif m.setup == "poisson":
        kwargs.update(rate_per_s=m.rate, requests=m.requests or POISSON_REQUESTS)
    else:
        kwargs.update(batch=m.batch_or_concurrency)
    answer = predict(model=m.model, gpu=m.gpu, gpus=m.gpus, precision=m.precision,
                     input_tokens=max(m.input_tokens, 1), output_tokens=output, efficiency=factors.engine,
                     catalog=catalog, **kwargs)
    if m.metric == "ttft":
        return float(answer["ttft_s"])
    if m.metric == "tpot":
        return float(answer["tpot_s"])
    if m.metric == "output_throughput":
        return float(answer["output_tokens_per_s"])
    if m.metric == "prefill_throughput":
        return max(m.input_tokens, 1) * (1 if m.setup != "static" else m.batch_or_concurrency) / answer["ttft_s"]
    if m.metric == "decode_throughput":
        return (1 if m.setup != "static" else m.batch_or_concurrency) / answer["tpot_s"]
    raise ValueError(f"metric {m.metric!r} is not a serving metric")


def _training_throughput(m: Measurement, factors: Factors, catalog: Catalog) -> float:
    tokens = float(max(m.input_tokens, 1) * m.batch_or_concurrency)  # one optimiser step
    seconds = training_time_s(catalog.models[m.model], catalog.gpus[m.gpu], m.method or "full", tokens, m.gpus,
                              factors.training_mfu, TRAINING_SCALING_EFFICIENCY)
    return tokens / seconds


@dataclass(frozen=True, eq=False)
class RequestTimes:
    """Per-request times of one simulated benchmark run (seconds; NaN where not reached)."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    done_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    done: np.ndarray

    @property
    def ttft_s(self) -> np.ndarray:
        return (self.first_token_s - self.arrival_s)[self.done]

    @property
    def tpot_s(self) -> np.ndarray:
        several = self.done & (self.output_tokens > 1)
        return (self.done_s - self.first_token_s)[several] / (self.output_tokens[several] - 1)

    @property
    def output_tokens_per_s(self) -> float:
        span = float(np.nanmax(self.done_s) - np.nanmin(self.arrival_s))
        return float(self.output_tokens[self.done].sum() / span) if span > 0 else 0.0

    def metric(self, metric: str) -> float:
        if metric == "ttft":
            return float(np.mean(self.ttft_s))
        if metric == "tpot":
            return float(np.mean(self.tpot_s))
        if metric == "output_throughput":
            return self.output_tokens_per_s
        raise ValueError(f"metric {metric!r} is not reproduced request by request")


def simulate_requests(m: Measurement, efficiency: Factors | EngineEfficiency | None = None,
                      catalog: Catalog | None = None) -> RequestTimes:
    """Run a serving point request by request and keep every request's times.

    Built as `sim.predict.predict` builds its kernel (engine defaults of
    `sim.spec.scenario.Serving`, the same seeded Poisson arrivals), but with per-request token
    counts (`m.input_lens` / `m.output_lens`, else identical requests) and vLLM's
    max_num_seqs, not the batch size, as the cap on running sequences.
    """
    catalog = catalog or shipped_catalog()
    factors = _factors(m, efficiency, catalog)
    card, device = catalog.models[m.model], catalog.gpus[m.gpu]
    if m.input_lens is not None and m.output_lens is not None:
        inputs = np.asarray(m.input_lens, dtype=np.int64)
        outputs = np.asarray(m.output_lens, dtype=np.int64)
    else:
        n = (m.batch_or_concurrency if m.setup == "static"
             else m.requests or (POISSON_REQUESTS if m.setup == "poisson"
                                 else m.batch_or_concurrency * CLOSED_REQUESTS_PER_CLIENT))
        inputs = np.full(n, max(m.input_tokens, 1), dtype=np.int64)
        outputs = np.full(n, max(m.output_tokens or 1, 1), dtype=np.int64)
    n = len(inputs)
    engine = Serving()
    length = max(engine.max_model_len, int((inputs + outputs).max()))
    memory = replica_memory(card, device, m.precision, m.gpus, engine.gpu_memory_utilization, length,
                            engine.kv_cache_precision)
    if not memory.fits:
        raise SpecError([SpecIssue(f"{m.id}.gpus", f"{m.model} at {m.precision} does not fit {m.gpus}x {m.gpu} with "
                                   f"room for {length} tokens of KV cache", m.gpus, "more GPUs or a smaller precision")],
                        m.source)
    if m.setup == "poisson":
        assert m.rate is not None
        arrivals = np.cumsum(np.random.default_rng(0).exponential(1.0 / m.rate, n))
    else:
        arrivals = np.zeros(n)
    kernel = PoolKernel(
        arrivals, inputs, outputs, replicas=1, max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=max(engine.max_num_batched_tokens, 1 if engine.chunked_prefill else int(inputs.max())),
        chunked_prefill=engine.chunked_prefill, kv_capacity_tokens=memory.kv_tokens, max_model_len=length,
        params=pack_params(card, device, m.precision, m.gpus, factors.engine),
        clients=m.batch_or_concurrency if m.setup == "closed" else 0,
    )
    kernel.advance_to(np.inf)
    return RequestTimes(kernel.arrival_s.copy(), kernel.first_token_s.copy(), kernel.done_s.copy(),
                        inputs, outputs, kernel.status == DONE)


# ------------------------------------------------------------------------------------------
# Fitting
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PointFit:
    """A point, the fitted model's value for it, and its value from a fit that left it out."""

    measurement: Measurement
    predicted: float
    loo_predicted: float

    @property
    def relative_error(self) -> float:
        return self.predicted / self.measurement.value - 1.0

    @property
    def loo_relative_error(self) -> float:
        return self.loo_predicted / self.measurement.value - 1.0


@dataclass(frozen=True, eq=False)
class FitResult:
    """Fitted factors of one GPU, with the in-sample and the leave-one-out error.

    `factors` holds all five factors: the fitted ones and the catalog values of the rest
    (`held`, with the reason in `notes`). Errors are fractions (0.05 = 5%): `mape` and
    `loo_mape` over the serving points, `training_mape` / `training_loo_mape` over the
    training points (training MFU is fitted separately, from those alone).
    """

    gpu: str
    factors: Factors
    defaults: Factors
    fitted: tuple[str, ...]
    held: tuple[str, ...]
    notes: tuple[str, ...]
    points: tuple[PointFit, ...]

    def _serving(self) -> list[PointFit]:
        return [p for p in self.points if p.measurement.setup != "training"]

    def _training(self) -> list[PointFit]:
        return [p for p in self.points if p.measurement.setup == "training"]

    @property
    def mape(self) -> float | None:
        return _mape([p.relative_error for p in self._serving()])

    @property
    def loo_mape(self) -> float | None:
        return _mape([p.loo_relative_error for p in self._serving()])

    @property
    def training_mape(self) -> float | None:
        return _mape([p.relative_error for p in self._training()])

    @property
    def training_loo_mape(self) -> float | None:
        return _mape([p.loo_relative_error for p in self._training()])

    @property
    def efficiency(self) -> EngineEfficiency:
        return self.factors.engine

    def table(self) -> pd.DataFrame:
        """One row per point: measured, fitted and leave-one-out predictions (SI units)."""
        return pd.DataFrame([{
            "id": p.measurement.id, "gpu": self.gpu, "model": p.measurement.model,
            "precision": p.measurement.precision, "setup": p.measurement.describe_setup,
            "metric": p.measurement.metric, "unit": p.measurement.unit, "measured": p.measurement.value,
            "predicted": p.predicted, "relative_error": p.relative_error, "loo_predicted": p.loo_predicted,
            "loo_relative_error": p.loo_relative_error,
        } for p in self.points])

    def fitted_to(self, date: dt.date | None = None) -> str:
        """The catalog's `fitted_to` text: files, points, engines, date, fit and LOO error."""
        date = date or dt.date.today()
        files = sorted({Path(p.measurement.source).name for p in self.points})
        ids = " ".join(p.measurement.id for p in self.points)
        engines = sorted({_strip_notes(p.measurement.engine) for p in self.points if p.measurement.engine})
        text = f"{', '.join(files)} ({ids}"
        text += f"; {'; '.join(engines)})" if engines else ")"
        text += f", {date.isoformat()}"
        if self.mape is not None:
            text += f": serving MAPE {self.mape:.1%}, LOO {_loo_text(self.loo_mape, len(self._serving()))}"
        if self.training_mape is not None:
            text += (f"; training MAPE {self.training_mape:.1%}, "
                     f"LOO {_loo_text(self.training_loo_mape, len(self._training()))}")
        if self.held:
            text += f"; catalog values kept for {', '.join(self.held)}"
        return text

    def summary(self) -> str:
        lines = [f"{self.gpu}: " + ", ".join(f"{k} {_fmt_factor(k, v)}" for k, v in self.factors.as_dict().items()
                                              if k in self.fitted)]
        if self.mape is not None:
            lines.append(f"  serving ({_count(len(self._serving()))}): fit MAPE {self.mape:.1%}, "
                         f"leave-one-out MAPE {_loo_text(self.loo_mape, len(self._serving()))}")
        if self.training_mape is not None:
            lines.append(f"  training ({_count(len(self._training()))}): fit MAPE {self.training_mape:.1%}, "
                         f"leave-one-out MAPE {_loo_text(self.training_loo_mape, len(self._training()))}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _count(points: int) -> str:
    return f"{points} point{'s' if points != 1 else ''}"


def display_value(metric: str, value: float) -> tuple[float, str]:
    """A value in the unit people read it in: milliseconds for latencies, tokens/s otherwise."""
    return (value * 1e3, "ms") if metric in TIME_METRICS else (value, "tokens/s")


def _loo_text(loo: float | None, points: int) -> str:
    """A one-point group has no out-of-sample check: its 'LOO' is the catalog values' error."""
    if loo is None:
        return "n/a"
    return f"n/a (1 point; catalog values were {loo:.1%} off)" if points == 1 else f"{loo:.1%}"


def _fmt_factor(name: str, value: float) -> str:
    return f"{value * 1e3:.3g} ms" if name == "iteration_overhead_s" else f"{value:.3g}"


def _mape(errors: Sequence[float]) -> float | None:
    return float(np.mean(np.abs(errors))) if len(errors) else None


@dataclass(frozen=True)
class _Solution:
    factors: Factors
    fitted: tuple[str, ...]
    held: tuple[str, ...]
    notes: tuple[str, ...]


def _residuals(points: Sequence[Measurement], factors: Factors, catalog: Catalog) -> np.ndarray:
    return np.array([predict_measurement(m, factors, catalog) / m.value - 1.0 for m in points])


def _identifiable(points: Sequence[Measurement], names: Sequence[str], start: Factors,
                  catalog: Catalog) -> tuple[list[str], list[str]]:
    """Which factors the points can pin down, most identifiable first; and the rest.

    The sensitivity of each point's relative error to a 1% change of each factor, at the
    starting factors, ranked by QR with column pivoting: each pivot is the factor that
    explains most of what the ones before it leave unexplained. At most one factor per point;
    a factor whose remaining column is below 1% of the first's is held: either no point
    depends on it, or its effect is a combination of the others' (batch-1 TTFT, TPOT and
    output throughput are each "work / efficiency + overhead", and the throughput is a mix of
    the other two, so three such points pin down only two factors).
    """
    from scipy.linalg import qr

    base = _residuals(points, start, catalog)
    step = 0.01
    columns = []
    for name in names:
        value = getattr(start, name)
        delta = step * max(abs(value), _TYPICAL[name])
        columns.append((_residuals(points, start.with_values({name: value + delta}), catalog) - base) / step)
    jac = np.column_stack(columns)
    _, r, pivots = qr(jac, pivoting=True, mode="economic")
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > 0.01 * diag[0])) if diag.size and diag[0] > 0 else 0
    keep = min(rank, len(points))
    chosen = [names[i] for i in pivots[:keep]]
    return [n for n in names if n in chosen], [n for n in names if n not in chosen]


def _solve(points: Sequence[Measurement], names: Sequence[str], start: Factors,
           bounds: Mapping[str, tuple[float, float]], catalog: Catalog) -> _Solution:
    """Bounded least squares on predicted / measured - 1 over `points`, for the factors `names`.

    Factors the points cannot pin down stay at `start` (the catalog's values); the notes say
    which and why.
    """
    from scipy.optimize import least_squares

    if not points:
        return _Solution(start, (), tuple(names), ("no points: catalog values kept",))
    chosen, held = _identifiable(points, names, start, catalog)
    notes = []
    if held:
        why = (f"{len(points)} point{'s' if len(points) != 1 else ''} for {len(names)} factors"
               if len(points) < len(names) else "the points cannot tell their effect from the fitted factors'")
        notes.append(f"{', '.join(held)} held at the catalog value ({why})")
    if not chosen:
        return _Solution(start, (), tuple(held), tuple(notes))
    typical = np.array([_TYPICAL[n] for n in chosen])
    lower = np.array([bounds[n][0] for n in chosen]) / typical
    upper = np.array([bounds[n][1] for n in chosen]) / typical
    x0 = np.clip(np.array([getattr(start, n) for n in chosen]) / typical, lower, upper)

    def residuals(z: np.ndarray) -> np.ndarray:
        return _residuals(points, start.with_values(dict(zip(chosen, z * typical, strict=True))), catalog)

    solution = least_squares(residuals, x0, bounds=(lower, upper), diff_step=1e-4, xtol=1e-10, ftol=1e-10,
                             gtol=1e-10, max_nfev=200)
    values = dict(zip(chosen, solution.x * typical, strict=True))
    at_bound = [n for n, v in values.items() if np.isclose(v, bounds[n][0]) or np.isclose(v, bounds[n][1])]
    if at_bound:
        notes.append(f"{', '.join(at_bound)} at the edge of its bounds")
    return _Solution(start.with_values(values), tuple(chosen), tuple(held), tuple(notes))


def _serving_names(points: Sequence[Measurement], fit: Sequence[str] | None) -> tuple[str, ...]:
    if fit is None:
        names = list(DEFAULT_FIT)
        if any(m.gpus > 1 for m in points):
            names.append("allreduce_efficiency")
        return tuple(names)
    unknown = [n for n in fit if n not in SERVING_FACTORS]
    if unknown:
        raise SpecError([SpecIssue("fit", f"unknown factor{suggest(unknown[0], SERVING_FACTORS)}", unknown[0],
                                   ", ".join(SERVING_FACTORS))])
    return tuple(dict.fromkeys(fit))


def fit(measurements: Sequence[Measurement], gpu: str | None = None, fit: Sequence[str] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None, catalog: Catalog | None = None,
        prior: Factors | None = None) -> FitResult:
    """Fit one GPU's efficiency factors to its measured points, with leave-one-out errors.

    Serving points fit `fit` (default mfu, mbu, iteration_overhead_s, plus
    allreduce_efficiency when a point uses more than one GPU); training points fit
    training_mfu on their own. Each point's leave-one-out value comes from the same fit run
    on the other points of its group (serving or training) alone.

    `prior` (default: the catalog's factors for the GPU) is where the fit starts and what
    the factors the points cannot pin down are held at. The leave-one-out error is honest
    only if the prior was not itself fitted to these points: refitting the shipped catalog's
    own points against the factors fitted to them would hold a factor at a value that saw
    the left-out point. A note says so when the catalog's `fitted_to` names these points.

        >>> from sim.calibration import read_measurements, fit  # doctest: +SKIP
        >>> result = fit(read_measurements("bench.json", gpu="l40s"))  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
    """
    catalog = catalog or shipped_catalog()
    gpus = sorted({m.gpu for m in measurements})
    if gpu is None:
        if len(gpus) != 1:
            raise SpecError([SpecIssue("gpu", "the points are from several GPUs; fit one at a time", gpus,
                                       "fit(points, gpu=...) or fit_all(points)")])
        gpu = gpus[0]
    if gpu not in catalog.gpus:
        raise SpecError([_unknown("gpu", gpu, catalog.gpus, "GPU")])
    points = [m for m in measurements if m.gpu == gpu]
    if not points:
        raise SpecError([SpecIssue("gpu", "no measured point is from this GPU", gpu, ", ".join(gpus))])
    bounds = {**DEFAULT_BOUNDS, **(bounds or {})}
    defaults = prior or Factors.of(gpu, catalog)
    serving = [m for m in points if m.setup != "training"]
    training = [m for m in points if m.setup == "training"]
    names = _serving_names(serving, fit)
    solved = _solve(serving, names, defaults, bounds, catalog) if serving else None
    factors = solved.factors if solved else defaults
    trained = _solve(training, ("training_mfu",), factors, bounds, catalog) if training else None
    factors = trained.factors if trained else factors
    loo = {}
    for group, group_names in ((serving, names), (training, ("training_mfu",))):
        for i, m in enumerate(group):
            rest = group[:i] + group[i + 1:]
            loo[id(m)] = predict_measurement(m, _solve(rest, group_names, defaults, bounds, catalog).factors, catalog)
    fitted = (solved.fitted if solved else ()) + (trained.fitted if trained else ())
    held = tuple(n for n in ALL_FACTORS if n not in fitted)
    notes = []
    if solved:
        notes += [f"serving: {n}" for n in solved.notes]
    if trained:
        notes += [f"training: {n}" for n in trained.notes]
    if not training:
        notes.append("no training points: training_mfu is the catalog value")
    if prior is None and _fitted_to_these(catalog.gpus[gpu].efficiency.fitted_to, points):
        notes.append("the catalog's factors for this GPU were fitted to some of these points (its fitted_to "
                     "says so): held factors and the leave-one-out error are not independent of them; pass "
                     "independent prior factors for an honest leave-one-out error")
    for label, group in (("serving", serving), ("training", training)):
        if len(group) == 1:
            notes.append(f"{label}: one point, so no out-of-sample check: its leave-one-out value is the "
                         "catalog's own")
    return FitResult(
        gpu=gpu, factors=factors, defaults=defaults, fitted=fitted, held=held, notes=tuple(notes),
        points=tuple(PointFit(m, predict_measurement(m, factors, catalog), loo[id(m)]) for m in points),
    )


def _fitted_to_these(fitted_to: str, points: Sequence[Measurement]) -> bool:
    """Whether a catalog `fitted_to` text names one of the points (its file and its id)."""
    words = set(re.findall(r"[\w.:-]+", fitted_to))
    return any(Path(m.source).name in fitted_to and m.id in words for m in points)


_fit_one = fit  # `fit_all` takes a parameter named `fit`, as `fit` does


def fit_all(measurements: Sequence[Measurement], fit: Sequence[str] | None = None,
            bounds: Mapping[str, tuple[float, float]] | None = None, catalog: Catalog | None = None,
            priors: Mapping[str, Factors] | None = None) -> dict[str, FitResult]:
    """`fit` for every GPU that has points, by GPU id (`priors` by GPU id, default the catalog's)."""
    priors = priors or {}
    return {gpu: _fit_one(measurements, gpu, fit, bounds, catalog, priors.get(gpu))
            for gpu in sorted({m.gpu for m in measurements})}


def _round(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def catalog_override(fits: FitResult | Iterable[FitResult] | Mapping[str, FitResult],
                     date: dt.date | None = None) -> dict[str, Any]:
    """The catalog document of the fitted factors: {"gpus": {id: {"efficiency": {...}}}}."""
    if isinstance(fits, FitResult):
        fits = [fits]
    elif isinstance(fits, Mapping):
        fits = list(fits.values())
    gpus: dict[str, Any] = {}
    for result in fits:
        efficiency: dict[str, Any] = {name: _round(value) for name, value in result.factors.as_dict().items()}
        efficiency["fitted_to"] = result.fitted_to(date)
        gpus[result.gpu] = {"efficiency": efficiency}
    return {"gpus": gpus}


def write_catalog_override(fits: FitResult | Iterable[FitResult] | Mapping[str, FitResult], path: str | Path,
                           date: dt.date | None = None) -> Path:
    """Write the fitted factors as a catalog file that a scenario names with `catalog: <path>`.

    The loader merges it over the shipped catalog, GPU by GPU and field by field, so only the
    efficiency factors of the fitted GPUs change.
    """
    path = Path(path)
    doc = catalog_override(fits, date)
    header = ("# deploysim calibration: efficiency factors fitted to measured points.\n"
              "# Name this file in a scenario with `catalog: " + path.name + "`; it is merged over the\n"
              "# shipped catalog. iteration_overhead_s is in seconds.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return path


def load_catalog_file(path: str | Path | None) -> Catalog:
    """The shipped catalog with a user's catalog file merged over it (None: the shipped one)."""
    from sim.spec.loader import load_catalog_file as load

    return load(path)


# ------------------------------------------------------------------------------------------
# Fidelity: predictions against measurements, without fitting
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FidelityPoint:
    """A point and the simulator's value; for TTFT with samples, the predicted samples and KS."""

    measurement: Measurement
    predicted: float
    predicted_samples: np.ndarray | None = field(default=None, repr=False)
    ks_distance: float | None = None
    ks_pvalue: float | None = None

    @property
    def relative_error(self) -> float:
        return self.predicted / self.measurement.value - 1.0


@dataclass(frozen=True, eq=False)
class FidelityResult:
    """How far the simulator is from measured points, with the catalog it used.

    Errors are fractions (0.05 = 5%). `mape_by_metric` averages |relative error| per metric;
    `mape` over all points.
    """

    points: tuple[FidelityPoint, ...]
    catalog_label: str = "shipped catalog"

    @property
    def mape(self) -> float:
        return float(np.mean([abs(p.relative_error) for p in self.points]))

    @property
    def mape_by_metric(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in METRICS:
            errors = [abs(p.relative_error) for p in self.points if p.measurement.metric == metric]
            if errors:
                out[metric] = float(np.mean(errors))
        return out

    def mape_where(self, keep: Callable[[Measurement], bool]) -> float | None:
        return _mape([p.relative_error for p in self.points if keep(p.measurement)])

    def table(self) -> pd.DataFrame:
        """One row per point (values in SI: `unit` says s or tokens/s)."""
        return pd.DataFrame([{
            "id": p.measurement.id, "source": Path(p.measurement.source).name, "engine": p.measurement.engine,
            "model": p.measurement.model, "gpu": p.measurement.gpu, "gpus": p.measurement.gpus,
            "precision": p.measurement.precision, "setup": p.measurement.describe_setup,
            "input_tokens": p.measurement.input_tokens, "output_tokens": p.measurement.output_tokens,
            "metric": p.measurement.metric, "unit": p.measurement.unit, "measured": p.measurement.value,
            "predicted": p.predicted, "relative_error": p.relative_error, "ks_distance": p.ks_distance,
            "ks_pvalue": p.ks_pvalue, "samples": 0 if p.measurement.samples is None else len(p.measurement.samples),
        } for p in self.points])


def fidelity(measurements: Sequence[Measurement], catalog: Catalog | str | Path | None = None) -> FidelityResult:
    """Predicted against measured for every point, with the catalog's factors (no fitting).

    `catalog` is a Catalog, a catalog file merged over the shipped one (what `calibrate`
    writes), or None for the shipped catalog. TTFT points with per-request samples also get
    the KS distance between the measured TTFTs and the simulator's per-request TTFTs for the
    same setup (scipy.stats.ks_2samp: the largest gap between the two empirical CDFs).
    """
    from scipy.stats import ks_2samp

    label = "shipped catalog"
    if not isinstance(catalog, Catalog):
        if catalog is not None:
            label = f"shipped catalog + {Path(catalog).name}"
        catalog = load_catalog_file(catalog)
    elif catalog is not shipped_catalog():
        label = "given catalog"
    points = []
    for m in measurements:
        predicted = predict_measurement(m, None, catalog)
        samples = ks = p_value = None
        if m.metric == "ttft" and m.samples is not None and len(m.samples) and m.setup != "training":
            samples = simulate_requests(m, None, catalog).ttft_s
            test = ks_2samp(m.samples, samples)
            ks, p_value = float(test.statistic), float(test.pvalue)
        points.append(FidelityPoint(m, predicted, samples, ks, p_value))
    return FidelityResult(tuple(points), label)
