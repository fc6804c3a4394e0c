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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim.streams import stream
from sim.workload.lengths import sample_lengths
from sim.workload.limits import spec_error
from sim.workload.prefixes import assign_prefixes, no_prefixes
from sim.workload.trace import INT32_MAX

if TYPE_CHECKING:  # the scenario is built from this package's families; never import it back
    from sim.spec.scenario import Workload

_COLUMNS = {
    "arrival_s": np.float64,
    "prompt_tokens": np.int32,
    "output_tokens": np.int32,
    "prefix_group": np.int32,
    "prefix_tokens": np.int32,
}


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

    def __post_init__(self) -> None:
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

    @property
    def count(self) -> int:
        """Number of requests."""
        return len(self.arrival_s)

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
    times, trace_prompt, trace_output = drawn.times, drawn.prompt_tokens, drawn.output_tokens
    n = len(times)

    prompt = trace_prompt if trace_prompt is not None else sample_lengths(
        workload.prompt_tokens, n, stream(seed, replication, "prompt_tokens"), "prompt")
    output = trace_output if trace_output is not None else sample_lengths(
        workload.output_tokens, n, stream(seed, replication, "output_tokens"), "output")
    if workload.prefixes is None:
        prefix_group, prefix_tokens = no_prefixes(n)
    else:
        prefix_group, prefix_tokens = assign_prefixes(workload.prefixes, n, stream(seed, replication, "prefixes"))
        if trace_prompt is None:
            prompt = _add_prefix(prompt, prefix_tokens)
        else:
            # a trace's prompt lengths already include any system prompt: the prefix is the
            # first tokens of the prompt (at most all but one of them), not extra tokens
            prefix_tokens = np.minimum(prefix_tokens, np.maximum(prompt.astype(np.int32) - 1, 0)).astype(np.int32)
            prefix_group = np.where(prefix_tokens > 0, prefix_group, -1).astype(np.int32)

    closed = spec.closed_loop()
    return Requests(
        arrival_s=times,
        prompt_tokens=prompt,
        output_tokens=output,
        prefix_group=prefix_group,
        prefix_tokens=prefix_tokens,
        clients=closed.clients if closed else 0,
        think_time_s=closed.think_time_s if closed else 0.0,
    )


def _add_prefix(prompt: np.ndarray, prefix_tokens: np.ndarray) -> np.ndarray:
    total = prompt.astype(np.int64) + prefix_tokens
    if len(total) and int(total.max()) > INT32_MAX:
        raise spec_error("workload.prefixes.prefix_tokens",
                         f"prompt plus prefix exceeds {INT32_MAX} tokens")
    return total.astype(np.int32)


def _with_absolute_paths(workload: Workload, base_dir: Path | None) -> Workload:
    """The workload with relative file paths joined to `base_dir` (unchanged without one)."""
    if base_dir is None:
        return workload
    update = {}
    for key in ("arrivals", "prompt_tokens", "output_tokens"):
        part = getattr(workload, key)
        named = {name: getattr(part, name) for name in part.file_fields}
        paths = {name: str((Path(base_dir) / file).resolve()) for name, file in named.items()
                 if file is not None and not Path(file).is_absolute()}
        if paths:
            update[key] = part.model_copy(update=paths)
    return workload.model_copy(update=update) if update else workload
