"""Measured points: what a benchmark measured, and the setup that produced it.

Three layouts are read, each into plain records the rest of `sim.calibration` reproduces:

- the CSV layout of the published table (`tests/data/calibration/measurements.csv`): one
  number per row (a TTFT, a TPOT, a throughput) with its model, GPU, precision, token counts,
  batch or concurrency, and the engine that measured it;
- the JSON that vLLM's serving benchmark saves (`vllm bench serve --save-result`);
- benchmark runs under load (`sim.calibration.runs`: the layout of
  `shared/data/vllm-v0.15-benchmarks/runs.csv`), several numbers per run.

Free text is mapped to catalog ids (`resolve_gpu`, `resolve_model`, `resolve_precision`,
`resolve_engine`); anything that cannot be read is a `SpecError` naming the file, the row and
the field.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.catalog import Catalog, shipped_catalog
from sim.spec.errors import SpecError, SpecIssue, suggest
from sim.spec.files import MAX_MEASUREMENT_BYTES, read_text
from sim.spec.scenario import MAX_TENSOR_PARALLEL, Serving
from sim.workload.limits import BYTES_PER_PREDICTED_REQUEST, check_memory

PRECISIONS = ("bf16", "fp16", "fp8", "int8", "int4")
METRICS = ("ttft", "tpot", "output_throughput", "prefill_throughput", "decode_throughput",
           "training_throughput")
TIME_METRICS = ("ttft", "tpot")
SETUPS = ("static", "closed", "poisson", "training")

# A saturated "max (offline)" throughput (every request sent at once to an engine tuned for
# throughput) is reproduced as a static batch of OFFLINE_REQUESTS identical requests: the
# running batch is then limited by the KV cache alone, not by a max_num_seqs of 256. Enough
# requests that the ramp-up and the drain at the end weigh little (4096 to 30000 requests
# give throughputs within 3% of each other for Llama-3.1-8B on an H100).
OFFLINE_REQUESTS = 8192
CLOSED_REQUESTS_PER_CLIENT = 10  # a closed loop runs ten requests per client
POISSON_REQUESTS = 1000
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
DEFAULT_ENGINE = "vllm"  # what a point that names no engine was measured with

@dataclass(frozen=True, eq=False)
class Measurement:
    """One measured number and the setup that produced it, in SI units.

    engine_id: the catalog engine that served it (None for training points); `engine` is the
    file's own text.

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
    engine_id: str | None = None
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
    """Values a file may leave out, given by flags instead (`--model --gpu --gpus --precision
    --engine`)."""

    model: str | None = None
    gpu: str | None = None
    gpus: int | None = None
    precision: str | None = None
    engine: str | None = None


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
    if supplied.engine is not None and resolve_engine(supplied.engine, catalog) is None:
        issues.append(_unknown("--engine", supplied.engine, catalog.engines, "engine"))
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


def resolve_engine(text: str, catalog: Catalog | None = None) -> str | None:
    """'TensorRT-LLM v0.5 (gptSessionBenchmark)' -> 'tensorrt-llm'; 'lmdeploy TurboMind' ->
    'lmdeploy'; 'vllm' -> 'vllm'. None for text that names no catalog engine."""
    catalog = catalog or shipped_catalog()
    text = str(text).strip()
    if text in catalog.engines:
        return text
    squashed = re.sub(r"[^a-z0-9]", "", text.lower())
    for engine_id in sorted(catalog.engines, key=len, reverse=True):
        if re.sub(r"[^a-z0-9]", "", engine_id.lower()) in squashed:
            return engine_id
    return None


def _engine_of(text: str, supplied: Supplied, catalog: Catalog, training: bool) -> str | None:
    """The catalog engine of a point: the --engine flag, else the file's text; training points
    have none (a fine-tuning framework is not a serving engine)."""
    if training:
        return None
    if supplied.engine is not None:
        return resolve_engine(supplied.engine, catalog)
    return resolve_engine(text, catalog) if text else None


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
    engine_text = row.text("engine")
    engine_id = _engine_of(engine_text or DEFAULT_ENGINE, supplied, catalog, training)
    if not training and engine_id is None:
        row.problem("engine", "no catalog engine named", engine_text,
                    f"text naming one of {', '.join(sorted(catalog.engines))} (or pass --engine)")
    if len(row.issues) > before:
        return None
    assert metric is not None and value is not None and model is not None and gpu is not None
    assert precision is not None and gpus is not None and input_tokens is not None and batch is not None
    notes = row.text("notes")
    if not training and not engine_text and supplied.engine is None:
        notes = (notes + "; " if notes else "") + f"no engine given: {DEFAULT_ENGINE} assumed"
    if batch_text.lower().startswith("max"):
        notes = (notes + "; " if notes else "") + (f"saturated throughput reproduced as a static batch of "
                                                   f"{batch} requests (the KV cache limits the running batch)")
    return Measurement(
        id=row.id, source=str(path), model=model, gpu=gpu, gpus=gpus, precision=precision, setup=setup,
        input_tokens=input_tokens, output_tokens=output_tokens, batch_or_concurrency=batch, rate=rate,
        metric=metric, value=value, requests=requests, method=method, engine=engine_text,
        engine_id=engine_id, reference=reference, notes=notes,
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
        measured = number(key)
        if measured is not None:
            metrics.append((key, metric, measured * scale))
    if not metrics and not any(k in doc for k in ("mean_ttft_ms", "mean_tpot_ms", "output_throughput")):
        problem("mean_ttft_ms", "no metric found", has_value=False,
                allowed="mean_ttft_ms, mean_tpot_ms or output_throughput")
    # `backend` names the benchmark's HTTP client ("vllm", "openai", ...), not always the
    # server: the engine is vllm unless --engine says otherwise
    engine_id = resolve_engine(supplied.engine, catalog) if supplied.engine else DEFAULT_ENGINE
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
            engine_id=engine_id,
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

