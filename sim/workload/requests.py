"""All requests of one replication, generated up front as arrays.

Requests are never Python objects: a workload becomes one `Requests` record of parallel arrays
(structure of arrays), sorted by send time, that the serving kernels read directly. Request i is
row i of every array.

`generate_requests` turns a `Workload` spec into these arrays. Each purpose draws from its own
named stream of `sim.streams` ("arrivals", "prompt_tokens", "output_tokens", "prefixes"), and
lengths and prefixes are drawn by request index, so scenarios compared under common random
numbers differ only where their specs differ: raising the arrival rate changes the send
times, but request i keeps its prompt and output lengths.

A closed-loop workload (`concurrency`) has `clients` > 0: its first `clients` requests are
sent at 0.0 and the others have a NaN send time until the serving kernel releases them, each
when a client's previous request completes plus `think_time_s`.

**Traffic classes** (`workload.classes`). Every request belongs to one class:
`Requests.traffic_class[i]` indexes `Requests.class_names` (`Workload.class_names()`, in
declaration order; a workload without classes has one, `default`, and every request is 0).
Requests come from *sources*: the main stream (`workload.arrivals`) and each class with
arrivals of its own. Within a source, requests are numbered in send order, and every draw
is by that number, from streams of the source's own, so that changing one source (its rate,
its lengths) changes nothing of the others' requests:

- main stream: send times, lengths and prefixes exactly as without classes (streams
  "arrivals", "prompt_tokens", "output_tokens", "prefixes"). Its request j belongs to the
  share class picked by the j-th uniform of the "classes" stream: the shares, in declaration
  order, cut [0, 1) into intervals. A share class with lengths (prefixes) of its own replaces
  its requests' values by the j-th draws of "prompt_tokens:<name>" ("output_tokens:<name>",
  "prefixes:<name>"), drawn for every main-stream request so that request j's value does
  not depend on which other requests are in the class.
- a class with its own `arrivals`: send times from "arrivals:<name>"; lengths from the
  class's distributions (its own, else the workload's) drawn from "prompt_tokens:<name>" and
  "output_tokens:<name>", prefixes (its own, else the workload's) from "prefixes:<name>". A
  trace's token counts are used unless the class has lengths of its own.

Sources are merged by send time, stably: on equal times the main stream's request comes
first, then the classes' in declaration order; within a source the order is kept. Lengths of
its own win over a trace's token counts, for share classes too. Prefix groups of a class with
prefixes of its own are numbered after the workload's groups and the groups of the classes
declared before it, so that two classes never share a group id (and hence a cached prefix);
classes without prefixes of their own use the workload's groups, ids 0..groups-1. A closed
loop takes share classes only (the spec checks refuse own arrivals beside it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim.spec.errors import SpecError
from sim.streams import stream
from sim.workload.arrivals import ArrivalSample
from sim.workload.lengths import LengthDistribution, sample_lengths
from sim.workload.limits import spec_error
from sim.workload.prefixes import PrefixGroups, assign_prefixes, no_prefixes
from sim.workload.trace import INT32_MAX

if TYPE_CHECKING:  # the scenario is built from this package's families; never import it back
    from sim.spec.scenario import TrafficClass, Workload

DEFAULT_CLASS = "default"  # the one class of a workload without classes (as `Workload.class_names`)
SHARE_TOLERANCE = 1e-9  # how far from 1 the shares of the share classes may sum

_COLUMNS = {
    "arrival_s": np.float64,
    "prompt_tokens": np.int32,
    "output_tokens": np.int32,
    "prefix_group": np.int32,
    "prefix_tokens": np.int32,
    "traffic_class": np.int32,
}
# Stands for "not given": every request is of class 0.
_EVERY_REQUEST_DEFAULT = np.empty(0, dtype=np.int32)


@dataclass(frozen=True, eq=False)
class Requests:
    """Requests as parallel read-only arrays, sorted by send time.

    - `arrival_s` (float64): when the client sends it, in seconds from 0 (NaN in a closed
      loop for requests not yet released).
    - `prompt_tokens` (int32 >= 1): prompt length, including the shared prefix if any.
    - `output_tokens` (int32 >= 1): tokens the model generates.
    - `prefix_group` (int32): shared-prefix group, -1 for none.
    - `prefix_tokens` (int32): length of that shared prefix, 0 for none.
    - `clients`: 0 for an open loop, else the number of closed-loop clients.
    - `think_time_s`: closed loop only, a client's pause between a response and its next request.
    - `traffic_class` (int32): the request's traffic class, an index into `class_names`
      (every request 0 when not given).
    - `class_names`: the workload's class names in declaration order (`Workload.class_names()`);
      `("default",)` for a workload without classes.

    The arrays are private read-only copies, so one `Requests` can be shared safely; copy an
    array to change it.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_group: np.ndarray
    prefix_tokens: np.ndarray
    clients: int = 0
    think_time_s: float = 0.0
    traffic_class: np.ndarray = field(default_factory=lambda: _EVERY_REQUEST_DEFAULT)
    class_names: tuple[str, ...] = (DEFAULT_CLASS,)

    def __post_init__(self) -> None:
        names = tuple(self.class_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"class_names must be distinct and at least one, got {names}")
        object.__setattr__(self, "class_names", names)
        if self.traffic_class is _EVERY_REQUEST_DEFAULT:
            object.__setattr__(self, "traffic_class", np.zeros(len(self.arrival_s), dtype=np.int32))
        lengths = set()
        for name, dtype in _COLUMNS.items():
            # A private copy (a few ms for a million requests), so that freezing it never
            # freezes, and later edits never reach, the caller's own array.
            array = np.array(getattr(self, name), dtype=dtype, copy=True, order="C")
            if array.ndim != 1:
                raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
            array.flags.writeable = False
            object.__setattr__(self, name, array)
            lengths.add(len(array))
        if len(lengths) > 1:
            sizes = ", ".join(f"{name}={len(getattr(self, name))}" for name in _COLUMNS)
            raise ValueError(f"request arrays differ in length: {sizes}")
        classes = self.traffic_class
        if len(classes) and not (int(classes.min()) >= 0 and int(classes.max()) < len(names)):
            raise ValueError(f"traffic_class must index class_names (0..{len(names) - 1}), "
                             f"got values {int(classes.min())}..{int(classes.max())}")

    @property
    def count(self) -> int:
        """Number of requests."""
        return len(self.arrival_s)

    def class_index(self, name: str) -> int:
        """The index of class `name` in `class_names` (the value `traffic_class` holds)."""
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"no traffic class {name!r}; classes: {', '.join(self.class_names)}") from None

    def __len__(self) -> int:
        return self.count

    def payload_bytes(self, bytes_per_token: float, overhead: float) -> np.ndarray:
        """Request size on the wire (float64 bytes): prompt_tokens x bytes_per_token + overhead."""
        return self.prompt_tokens * float(bytes_per_token) + float(overhead)


def generate_requests(
    workload: Workload,
    horizon_s: float,
    seed: int,
    replication: int,
    base_dir: Path | None = None,
) -> Requests:
    """Generate every request of one replication of `workload` over [0, horizon_s).

    Relative file paths in the spec (traces, empirical lengths) are taken from `base_dir` when
    given; a loaded scenario has absolute paths already. Raises SpecError for problems only
    visible now, such as an unreadable trace file.

    Example:
        >>> from sim.spec.scenario import Workload
        >>> workload = Workload.model_validate({
        ...     "origin": "edge",
        ...     "arrivals": {"process": "poisson", "rate_per_s": 5},
        ...     "prompt_tokens": {"dist": "lognormal", "mean": 500},
        ...     "output_tokens": {"dist": "fixed", "value": 100},
        ... })
        >>> requests = generate_requests(workload, horizon_s=60.0, seed=1, replication=0)
        >>> bool(requests.arrival_s[-1] < 60.0)
        True
    """
    if not (math.isfinite(horizon_s) and horizon_s > 0):
        raise ValueError(f"horizon_s must be a positive finite number of seconds, got {horizon_s}")
    workload = _with_absolute_paths(workload, base_dir)
    spec = workload.arrivals
    drawn = spec.sample(horizon_s, stream(seed, replication, "arrivals"))
    sources = [_main_stream(workload, drawn, _Streams(seed, replication))]
    offsets = _prefix_group_offsets(workload)
    for k, traffic_class in enumerate(workload.classes):
        if traffic_class.arrivals is not None:
            sources.append(_own_arrivals(workload, k, traffic_class, offsets[k], horizon_s, seed, replication))
    merged = _merge(sources)

    closed = spec.closed_loop()
    return Requests(
        arrival_s=merged.times,
        prompt_tokens=merged.prompt,
        output_tokens=merged.output,
        prefix_group=merged.prefix_group,
        prefix_tokens=merged.prefix_tokens,
        clients=closed.clients if closed else 0,
        think_time_s=closed.think_time_s if closed else 0.0,
        traffic_class=merged.traffic_class,
        class_names=tuple(workload.class_names()),
    )


def stream_refusals(workload: Workload) -> list[tuple[str, str]]:
    """Why `request_chunks` cannot draw this workload in chunks (empty: it can): (field,
    reason) pairs."""
    reasons = []
    if workload.arrivals.closed_loop() is not None:
        reasons.append(("workload.arrivals", "a closed loop's sends depend on completions (concurrency)"))
    elif workload.arrivals.time_blocks(1.0, stream(0, 0, "arrivals"), 1) is None:
        reasons.append(("workload.arrivals", f"process {workload.arrivals.process!r} cannot be drawn in chunks "
                                             "(poisson and diurnal can)"))
    reasons += [(f"workload.classes[{k}].arrivals", "a class with arrivals of its own is merged by send time")
                for k, c in enumerate(workload.classes) if c.arrivals is not None]
    return reasons


def request_chunks(workload: Workload, horizon_s: float, seed: int, replication: int,
                   block: int = 1 << 16) -> Iterator[Requests]:
    """`generate_requests`' requests in consecutive chunks of about `block` exponential gaps
    of the arrival process each, in send order, with the same values (a streamed run's
    workload; `stream_refusals` says which workloads can). The first chunk is always
    yielded, possibly empty."""
    refusals = stream_refusals(workload)
    if refusals:
        raise ValueError("; ".join(f"{path}: {why}" for path, why in refusals))
    blocks = workload.arrivals.time_blocks(horizon_s, stream(seed, replication, "arrivals"), block)
    assert blocks is not None
    streams = _Streams(seed, replication)
    names = tuple(workload.class_names())
    yielded = False
    for times in blocks:
        if len(times) == 0 and yielded:
            continue
        source = _main_stream(workload, ArrivalSample(times), streams)
        yielded = True
        yield Requests(arrival_s=source.times, prompt_tokens=source.prompt, output_tokens=source.output,
                       prefix_group=source.prefix_group, prefix_tokens=source.prefix_tokens,
                       traffic_class=source.traffic_class, class_names=names)
    if not yielded:
        empty = np.empty(0)
        yield Requests(empty, empty, empty, empty, empty, class_names=names)


def prefix_tokens_by_group(workload: Workload) -> np.ndarray:
    """The shared prefix of every prefix group the workload can draw, by group id (a
    sampled prompt's; a trace's prompts can cut it shorter)."""
    tokens = [workload.prefixes.prefix_tokens] * workload.prefixes.groups if workload.prefixes is not None else []
    for spec in workload.classes:
        if spec.prefixes is not None:
            tokens += [spec.prefixes.prefix_tokens] * spec.prefixes.groups
    return np.array(tokens, dtype=np.int64)


@dataclass(frozen=True)
class _Source:
    """The requests of one source (the main stream, or one class's own arrivals), in send order."""

    times: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    prefix_group: np.ndarray
    prefix_tokens: np.ndarray
    traffic_class: np.ndarray


class _Streams(dict[str, np.random.Generator]):
    """The main stream's generators by name, each made on first use: one set draws a whole
    replication, or, kept across calls, its chunks in turn (the same values: every draw here
    is by request, in request order)."""

    def __init__(self, seed: int, replication: int) -> None:
        super().__init__()
        self.seed, self.replication = seed, replication

    def __missing__(self, name: str) -> np.random.Generator:
        self[name] = stream(self.seed, self.replication, name)
        return self[name]


def _main_stream(workload: Workload, drawn: ArrivalSample, streams: _Streams) -> _Source:
    """The main stream's requests: as without classes, then each share class's overrides."""
    times, trace_prompt, trace_output = drawn.times, drawn.prompt_tokens, drawn.output_tokens
    n = len(times)

    prompt = trace_prompt if trace_prompt is not None else sample_lengths(
        workload.prompt_tokens, n, streams["prompt_tokens"], "prompt")
    output = trace_output if trace_output is not None else sample_lengths(
        workload.output_tokens, n, streams["output_tokens"], "output")
    if workload.prefixes is None:
        prefix_group, prefix_tokens = no_prefixes(n)
    else:
        prefix_group, prefix_tokens = assign_prefixes(workload.prefixes, n, streams["prefixes"])
    counted = np.full(n, trace_prompt is not None)  # prompt lengths that include the prefix already

    traffic_class = _draw_share_classes(workload, n, streams["classes"])
    offsets = _prefix_group_offsets(workload)
    for k, spec in enumerate(workload.classes):
        if spec.share is None:
            continue
        mine = traffic_class == k
        where = f"workload.classes[{k}]"
        if spec.prompt_tokens is not None:
            own = _lengths(spec.prompt_tokens, n, streams[f"prompt_tokens:{spec.name}"], "prompt", where)
            prompt = np.where(mine, own, prompt)
            counted &= ~mine
        if spec.output_tokens is not None:
            own = _lengths(spec.output_tokens, n, streams[f"output_tokens:{spec.name}"], "output", where)
            output = np.where(mine, own, output)
        if spec.prefixes is not None:
            group, tokens = _prefixes(spec.prefixes, n, streams[f"prefixes:{spec.name}"], offsets[k])
            prefix_group = np.where(mine, group, prefix_group)
            prefix_tokens = np.where(mine, tokens, prefix_tokens)
    return _with_prefixes(times, prompt, output, prefix_group, prefix_tokens, counted, traffic_class,
                          "workload.prefixes.prefix_tokens")


def _own_arrivals(workload: Workload, k: int, spec: TrafficClass, group_offset: int, horizon_s: float,
                  seed: int, replication: int) -> _Source:
    """The requests of class k, which has arrivals of its own, from its own streams."""
    where = f"workload.classes[{k}]"
    assert spec.arrivals is not None
    with _reported_at("workload.arrivals", f"{where}.arrivals"):
        drawn = spec.arrivals.sample(horizon_s, stream(seed, replication, f"arrivals:{spec.name}"))
    n = len(drawn.times)
    counted = np.full(n, False)
    if spec.prompt_tokens is not None:
        prompt = _lengths(spec.prompt_tokens, n, stream(seed, replication, f"prompt_tokens:{spec.name}"),
                          "prompt", where)
    elif drawn.prompt_tokens is not None:
        prompt, counted = drawn.prompt_tokens, np.full(n, True)
    else:
        prompt = sample_lengths(workload.prompt_tokens, n, stream(seed, replication, f"prompt_tokens:{spec.name}"),
                                "prompt")
    if spec.output_tokens is not None:
        output = _lengths(spec.output_tokens, n, stream(seed, replication, f"output_tokens:{spec.name}"),
                          "output", where)
    elif drawn.output_tokens is not None:
        output = drawn.output_tokens
    else:
        output = sample_lengths(workload.output_tokens, n, stream(seed, replication, f"output_tokens:{spec.name}"),
                                "output")
    prefixes, offset = (spec.prefixes, group_offset) if spec.prefixes is not None else (workload.prefixes, 0)
    if prefixes is None:
        prefix_group, prefix_tokens = no_prefixes(n)
    else:
        prefix_group, prefix_tokens = _prefixes(prefixes, n, stream(seed, replication, f"prefixes:{spec.name}"),
                                                offset)
    prefix_where = f"{where}.prefixes.prefix_tokens" if spec.prefixes is not None else "workload.prefixes.prefix_tokens"
    return _with_prefixes(drawn.times, prompt, output, prefix_group, prefix_tokens, counted,
                          np.full(n, k, dtype=np.int32), prefix_where)


def _draw_share_classes(workload: Workload, n: int, rng: np.random.Generator) -> np.ndarray:
    """The class of each main-stream request (int32): the j-th uniform picks request j's share
    class; the shares cut [0, 1) into intervals in declaration order. No draw without classes."""
    if not workload.classes:
        return np.zeros(n, dtype=np.int32)
    indices = np.array([k for k, c in enumerate(workload.classes) if c.share is not None], dtype=np.int32)
    shares = np.array([c.share for c in workload.classes if c.share is not None], dtype=np.float64)
    if len(indices) == 0 or abs(float(shares.sum()) - 1.0) > SHARE_TOLERANCE:
        # the spec checks say this in more words; a workload built without them gets it here
        raise spec_error("workload.classes", "every request of workload.arrivals needs a class: the classes "
                         f"with a share must exist and their shares sum to 1 (they sum to {shares.sum():g})",
                         allowed="shares that sum to 1")
    bounds = np.cumsum(shares)
    bounds /= bounds[-1]  # the last interval ends at exactly 1
    picked = np.searchsorted(bounds, rng.random(n), side="right")
    return indices[np.minimum(picked, len(indices) - 1)]


def _prefix_group_offsets(workload: Workload) -> list[int]:
    """For each class, the first group id of its own prefixes: after the workload's groups and
    those of the classes before it (0 for a class without prefixes of its own)."""
    offsets, next_id = [], workload.prefixes.groups if workload.prefixes is not None else 0
    for spec in workload.classes:
        offsets.append(next_id if spec.prefixes is not None else 0)
        next_id += spec.prefixes.groups if spec.prefixes is not None else 0
    return offsets


def _lengths(spec: LengthDistribution, n: int, rng: np.random.Generator, role: str, where: str) -> np.ndarray:
    """A class's own lengths, with any error reported at the class's field."""
    with _reported_at(f"workload.{role}_tokens", f"{where}.{role}_tokens"):
        return sample_lengths(spec, n, rng, "prompt" if role == "prompt" else "output")


def _prefixes(spec: PrefixGroups, n: int, rng: np.random.Generator, offset: int) -> tuple[np.ndarray, np.ndarray]:
    group, tokens = assign_prefixes(spec, n, rng)
    if offset:
        group = np.where(group >= 0, group.astype(np.int64) + offset, -1).astype(np.int32)
    return group, tokens


def _with_prefixes(times: np.ndarray, prompt: np.ndarray, output: np.ndarray, prefix_group: np.ndarray,
                   prefix_tokens: np.ndarray, counted: np.ndarray, traffic_class: np.ndarray,
                   where: str) -> _Source:
    """A source with prompts that include their prefix.

    A sampled prompt is the request's own text: its prefix is added. A trace's prompt length
    (`counted`) already includes any system prompt: the prefix is its first tokens (at most
    all but one of them), not extra tokens, and a request left with none has no group.
    """
    prompt = np.asarray(prompt)
    clipped = np.minimum(prefix_tokens, np.maximum(prompt.astype(np.int32) - 1, 0)).astype(np.int32)
    prefix_tokens = np.where(counted, clipped, prefix_tokens).astype(np.int32)
    prefix_group = np.where(counted & (prefix_tokens <= 0), -1, prefix_group).astype(np.int32)
    added = _add_prefix(prompt, np.where(counted, 0, prefix_tokens), where)
    return _Source(times, added, output, prefix_group, prefix_tokens, traffic_class)


def _merge(sources: Sequence[_Source]) -> _Source:
    """One source of all requests by send time, stably: on a tie the earlier source first."""
    if len(sources) == 1:
        return sources[0]
    times = np.concatenate([source.times for source in sources])
    order = np.argsort(times, kind="stable")
    return _Source(*(np.concatenate([getattr(source, name) for source in sources])[order]
                     for name in ("times", "prompt", "output", "prefix_group", "prefix_tokens", "traffic_class")))


@contextmanager
def _reported_at(path: str, at: str) -> Iterator[None]:
    """Report a SpecError raised for `path` (and the fields below it) at `at` instead: a
    class's own process or lengths raise errors at the workload's field."""
    try:
        yield
    except SpecError as exc:
        issues = [replace(issue, path=at + issue.path[len(path):])
                  if issue.path == path or issue.path.startswith(path + ".") else issue for issue in exc.issues]
        raise SpecError(issues, exc.source) from None


def _add_prefix(prompt: np.ndarray, prefix_tokens: np.ndarray, where: str) -> np.ndarray:
    total = prompt.astype(np.int64) + prefix_tokens
    if len(total) and int(total.max()) > INT32_MAX:
        raise spec_error(where, f"prompt plus prefix exceeds {INT32_MAX} tokens")
    return total.astype(np.int32)


def _with_absolute_paths(workload: Workload, base_dir: Path | None) -> Workload:
    """The workload with relative file paths joined to `base_dir` (unchanged without one),
    its classes' included."""
    if base_dir is None:
        return workload
    update: dict[str, object] = _absolute_parts(workload, ("arrivals", "prompt_tokens", "output_tokens"), base_dir)
    parts = [_absolute_parts(spec, ("arrivals", "prompt_tokens", "output_tokens"), base_dir)
             for spec in workload.classes]
    if any(parts):
        update["classes"] = [spec.model_copy(update=part) if part else spec
                             for spec, part in zip(workload.classes, parts, strict=True)]
    return workload.model_copy(update=update) if update else workload


def _absolute_parts(owner: Workload | TrafficClass, keys: tuple[str, ...], base_dir: Path) -> dict[str, object]:
    """The parts of `owner` (a workload or a class) with a relative file path, made absolute."""
    update: dict[str, object] = {}
    for key in keys:
        part = getattr(owner, key)
        if part is None:
            continue
        named = {name: getattr(part, name) for name in part.file_fields}
        paths = {name: str((Path(base_dir) / file).resolve()) for name, file in named.items()
                 if file is not None and not Path(file).is_absolute()}
        if paths:
            update[key] = part.model_copy(update=paths)
    return update
