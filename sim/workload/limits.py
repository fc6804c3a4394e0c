"""Will it fit? Memory estimates checked before anything large is allocated.

A typo in a rate or a horizon (`rate_per_s: 40000` over a year), a pool of a billion GPUs, a
sweep grid of 10^10 points or `predict --batch 1000000000` would otherwise grow until the
machine runs out of memory (or hang on the way). Every such size is estimated first, from
constants measured by `benchmarks/memory.py`, and compared with the memory this process can
still use (`available_memory_bytes`: the least of the RAM the system calls available, the
cgroup's limit and the address-space limit). Above `HEADROOM` of it, the work is refused with
the estimate, what is available and what to change.

What is estimated (each constant is a marginal cost: the interpreter, numba and pandas are
paid once):

- a run: expected requests x `BYTES_PER_REQUEST` (workload, kernel arrays, request table,
  metrics and Parquet files) + serving replicas x max_num_seqs x `BYTES_PER_REPLICA_SEQ`;
  a streamed run (`sim.runner.results_mode`) holds a bit per request and a window of
  `STREAM_WINDOW_REQUESTS` instead of every request;
  `compare` holds one run per worker process at once. The expected requests of a workload
  (`expected_requests`) are its main stream's plus those of every traffic class with arrivals
  of its own; its mean rate (`mean_rate_per_s`) adds up the same way;
- a sweep: points x replications x bases x `BYTES_PER_SWEEP_POINT` before any point runs;
- `predict` and calibration points: requests x `BYTES_PER_PREDICTED_REQUEST`.

Request generators also call `check_request_count` as they go, where the count is known
exactly (a trace's rows, a looped trace's copies).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from sim.spec.errors import SpecError, SpecIssue
from sim.spec.files import format_size

# Measured by benchmarks/memory.py on 2026-11-29 (x86_64, 2 CPUs, Python 3.11.7): S2 at 250k and
# 1M requests, 908 B per request by peak RSS and 900 B by traced allocations (S1 and S3: 893-900).
BYTES_PER_REQUEST = 908
STREAM_MAX_REQUESTS = 10**10
"""The most requests a streamed run takes: its memory stays small, but 1e10 requests take
hours at the serving kernel's rate (about 1M a second, issue 19), and a rate that high is
more likely a typo than a plan (a run past its pools' capacity holds its backlog besides)."""
STREAM_WINDOW_REQUESTS = 1 << 17
"""A streamed run's window, estimated as two chunks (`sim.world.world.CHUNK_REQUESTS`) of
requests held at `BYTES_PER_REQUEST`; the requests in flight of a stable run add few."""
# Same benchmark and date: 4,961 B per serving replica at max_num_seqs 128 (traced allocations
# between pools of 2,000 and 8,000 GPUs; numpy's zeros are not resident, but still allocated).
BYTES_PER_REPLICA_SEQ = 39
# Same benchmark and date: SweepSpec.tasks() for 20k and 80k grid points (tracemalloc).
BYTES_PER_SWEEP_POINT = 676
# Same benchmark and date: predict --batch 50k and 400k (traced allocations; RSS did not move).
BYTES_PER_PREDICTED_REQUEST = 227
# How often one periodic process (an autoscaler, the drift monitor, scheduled retraining, vendor
# releases, the development workload) or one random-fault entry may fire over the horizon.
# Measured with `deploysim run` on 2026-11-29 (x86_64, 2 shared CPUs): an autoscaler evaluation
# costs about 0.6 ms, a monitor evaluation 0.3 ms, a replica failure 0.2 ms and 1.1 kB, so a
# process at the cap runs for minutes and holds about 1 GB; a typo such as `interval: 1e-6`
# (billions of firings, a run that never ends) is refused instead. A 30 s autoscaler or a 5 min
# monitor stays below it over 340 days of horizon.
MAX_PERIODIC_EVENTS = 1_000_000
# The share of available memory an estimate may take: estimates are marginal costs, and the
# process needs the rest for its own working set and for fragmentation.
HEADROOM = 0.8


def _cgroup_room() -> int | None:
    """Memory left under this process's cgroup limit (v2 or v1), if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text.isdigit() and int(limit_text) < 2**60:  # "max" or a huge sentinel: no limit
            return max(int(limit_text) - usage, 0)
    return None


def _address_space_room() -> int | None:
    """Address space left under RLIMIT_AS (ulimit -v), if one is set."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        import psutil

        used = psutil.Process().memory_info().vms
    except Exception:  # psutil missing or refused: count the limit alone
        used = 0
    return max(soft - used, 0)


def _system_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # without psutil, the kernel's own estimate
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def available_memory_bytes() -> tuple[int, str]:
    """What this process can still use, and what limits it ("this machine", "the cgroup", ...)."""
    options = [(_system_available(), "this machine")]
    cgroup = _cgroup_room()
    if cgroup is not None:
        options.append((cgroup, "this container's memory limit"))
    address_space = _address_space_room()
    if address_space is not None:
        options.append((address_space, "the address-space limit (ulimit -v)"))
    return min(options)


def check_memory(parts: list[tuple[str, float]], where: str, advice: str, runs_at_once: int = 1) -> None:
    """Raise a SpecError when the estimated bytes of `parts` (label, bytes) would not fit.

    `runs_at_once`: how many such runs are held at the same time (compare's workers).
    """
    needed = sum(size for _, size in parts) * runs_at_once
    available, limited_by = available_memory_bytes()
    if needed <= HEADROOM * available:
        return
    breakdown = " + ".join(f"{label} ({format_size(size)})" for label, size in parts if size)
    if runs_at_once > 1:
        breakdown = f"{runs_at_once} runs at once x [{breakdown}]"
    raise SpecError([SpecIssue(
        where, f"would need about {format_size(needed)} of memory: {breakdown}; {limited_by} has "
        f"{format_size(available)} available", has_value=False, allowed=advice)])


def request_bytes(requests: float) -> tuple[str, float]:
    count = f"{requests:,.0f}" if requests < 1e15 else f"{requests:.3g}"
    return f"{count} requests x {BYTES_PER_REQUEST} B", requests * BYTES_PER_REQUEST


def replica_bytes(replicas: float, max_num_seqs: int) -> tuple[str, float]:
    return (f"{replicas:,.0f} serving replicas x {max_num_seqs} sequences x {BYTES_PER_REPLICA_SEQ} B",
            replicas * max_num_seqs * BYTES_PER_REPLICA_SEQ)


def check_request_count(expected: float, where: str) -> None:
    """Raise a SpecError when about `expected` requests would not fit in memory."""
    check_memory([request_bytes(expected)], where,
                 "a lower rate, a shorter horizon or fewer requests (each takes about "
                 f"{BYTES_PER_REQUEST} B while a run holds it)")


def _own_arrivals(workload: Any) -> list[Any]:
    """The arrival processes of the traffic classes that have their own (not a share)."""
    return [c.arrivals for c in getattr(workload, "classes", ()) if c.arrivals is not None]


def expected_requests(workload: Any, horizon_s: float) -> float:
    """About how many requests `workload` generates over the horizon: the main stream's
    (`workload.arrivals.expected_requests`) plus each own-arrival class's. Share classes split
    the main stream and add nothing."""
    return workload.arrivals.expected_requests(horizon_s) + sum(
        arrivals.expected_requests(horizon_s) for arrivals in _own_arrivals(workload))


def mean_rate_per_s(workload: Any, horizon_s: float) -> float | None:
    """The workload's long-run mean request rate over the horizon: the main stream's plus each
    own-arrival class's; None when the main stream is a closed loop (its pace is the servers')."""
    main = workload.arrivals.mean_rate_per_s(horizon_s)
    if main is None:
        return None
    return float(main) + sum(float(arrivals.mean_rate_per_s(horizon_s) or 0.0)
                             for arrivals in _own_arrivals(workload))


def streamed_request_bytes(requests: float) -> list[tuple[str, float]]:
    """A streamed run's memory for `requests`: a bit each (the tally's mark that it ended
    once) and a window of `STREAM_WINDOW_REQUESTS` held at full size (an estimate: a stable
    run holds its chunks and the requests in flight)."""
    count = f"{requests:,.0f}" if requests < 1e15 else f"{requests:.3g}"
    return [(f"{count} requests x 1 bit", requests / 8),
            (f"a window of about {STREAM_WINDOW_REQUESTS:,} requests x {BYTES_PER_REQUEST} B",
             STREAM_WINDOW_REQUESTS * BYTES_PER_REQUEST)]


def check_run_fits(scenario: Any, runs_at_once: int = 1, streamed: bool = False) -> None:
    """Raise a SpecError when one run of the scenario (times `runs_at_once`) would not fit,
    keeping every request or, `streamed`, summarising them as they end."""
    requests = expected_requests(scenario.workload, scenario.horizon)
    replicas = sum(pool.autoscale.max_replicas if pool.autoscale is not None
                   else max(pool.capacity // pool.tp(scenario.model), 1)
                   for site in scenario.sites.values() for pool in site.pools
                   if "serving" in pool.roles and pool.capacity > 0)
    held = streamed_request_bytes(requests) if streamed else [request_bytes(requests)]
    replica_part = replica_bytes(replicas, scenario.model.serving.max_num_seqs)
    parts = [*held, replica_part]
    advice = ("a lower rate or a shorter horizon (each request takes about "
              f"{BYTES_PER_REQUEST} B), fewer GPUs or a smaller max_num_seqs")
    if runs_at_once > 1:
        advice += ", or fewer workers (--workers)"
    by_requests = sum(size for _, size in held) >= replica_part[1]
    where = _busiest_source(scenario.workload, scenario.horizon) if by_requests else "sites"
    check_memory(parts, where, advice, runs_at_once)
    if streamed and requests > STREAM_MAX_REQUESTS:
        raise spec_error(_busiest_source(scenario.workload, scenario.horizon),
                         f"would simulate about {requests:,.3g} requests, more than a streamed run takes "
                         f"({STREAM_MAX_REQUESTS:.0e}: hours at the serving kernel's rate of about 1M a second, "
                         "and an overloaded run holds its backlog)",
                         allowed="a lower rate or a shorter horizon")


def _busiest_source(workload: Any, horizon_s: float) -> str:
    """The arrivals field that generates the most requests: the main stream's or a class's own."""
    sources = [("workload.arrivals", workload.arrivals.expected_requests(horizon_s))]
    sources += [(f"workload.classes[{k}].arrivals", c.arrivals.expected_requests(horizon_s))
                for k, c in enumerate(getattr(workload, "classes", ())) if c.arrivals is not None]
    return max(sources, key=lambda source: source[1])[0]  # the first of equals: the main stream


def spec_error(where: str, message: str, allowed: str = "") -> SpecError:
    """A SpecError with one issue that has no single offending value to show."""
    return SpecError([SpecIssue(where, message, allowed=allowed, has_value=False)])
