"""A streamed run's requests, summarised as they end: exact counts and sums, sketches, bins.

A streamed run (`sim.world.World(streamed=True)`) hands each chunk of ended requests, as a
`RequestTable` of just those requests, to `RequestTally.add`, and keeps nothing else of them.
The tally keeps what the summary is made of, in the same definitions as an exact run's
(`sim.metrics.latency.request_latencies`, `verdict_window`, `within_slo`; the ledger's
per-minute payload rows; the lifecycle's degraded requests):

- **exact counts**: requests by traffic class, pool, status and route; steady-state requests;
  the SLO's verdict window and the requests in it that met every per-request target, per
  class; throughput; preemptions; what availability counts; served, erroneous and degraded
  requests; per model version, the requests it served (for staleness);
- **exact sums**: output tokens of completed requests (in the window, overall, and per
  managed API pool with their prompt tokens); the parts of TTFT and E2E; per minute of
  service, the excess error; per minute, payload bytes and records crossing each link;
- **sketches** (`sim.metrics.sketch.LatencySketch`) of TTFT, TPOT and E2E per class over the
  completed steady-state requests, and per class and SLO target over the verdict window, with
  the window's misses counted apart (the verdict's percentile counts them as infinite);
- **bins**: routed requests per `ROUTING_BIN_S` of send time, pool and route.

Everything here adds up chunk by chunk, and so two tallies of one run's parts add up to the
tally of the whole (`merge`), whatever the chunks: a streamed run's counts and sums equal an
exact run's, and its percentiles are within the sketch's relative accuracy.

Per-request invariants (`sim.metrics.invariants`) are checked on every chunk as it passes;
the laws over the whole run are checked at its end on these counts (`check_streamed`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.kernels.batching import DONE, FAILED, REJECTED
from sim.metrics.latency import (
    STEMS,
    class_slo_targets,
    request_latencies,
    verdict_window,
    within_slo,
)
from sim.metrics.sketch import RELATIVE_ACCURACY, LatencySketch
from sim.record import RequestTable

if TYPE_CHECKING:
    from sim.spec.scenario import Scenario

STATUS_CODES = (DONE, REJECTED, FAILED)  # categories 0, 1, 2; 3 is unfinished
ROUTING_BIN_S = 300.0  # the `routing` table's bins of send time (as sim.result's)
MINUTE_S = 60.0
TTFT_PARTS = ("network", "queueing", "prefill")
E2E_PARTS = ("network", "queueing", "prefill", "decode")
AVAILABILITY_COUNTS = ("ended", "judged", "good", "completed", "retried", "retries", "failed_after_retries",
                       "fallback", "delayed", "cut_off")


def status_category(status: np.ndarray) -> np.ndarray:
    """0 completed, 1 rejected, 2 failed, 3 unfinished (sim.result.STATUS_CATEGORIES order)."""
    category = np.full(len(status), 3, dtype=np.int64)
    for k, code in enumerate(STATUS_CODES):
        category[status == code] = k
    return category


class RequestTally:
    """What a streamed run keeps of its requests (see the module docstring)."""

    def __init__(self, scenario: Scenario, pool_names: Sequence[str], pool_sites: Sequence[str] | None = None,
                 relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.scenario = scenario
        self.pool_names = list(pool_names)
        self.pool_sites = list(pool_sites) if pool_sites is not None else [n.split("/", 1)[0] for n in pool_names]
        self.relative_accuracy = relative_accuracy
        classes = scenario.workload.class_specs()
        self.class_names = [c.name for c in classes]
        self.targets = [class_slo_targets(scenario, c) for c in classes]
        n_classes, n_pools = len(classes), len(self.pool_names)
        self.requests = 0  # requests taken in
        self.seen = np.zeros(0, dtype=np.uint8)  # a bit per request number: taken in already
        # requests by class, pool (n_pools: none), status category and route (0 none, 1 + reason)
        self.counts = np.zeros((n_classes, n_pools + 1, 4, 5), dtype=np.int64)
        self.steady = np.zeros(n_classes, dtype=np.int64)
        self.latency = [{stem: self._sketch() for stem in STEMS} for _ in classes]
        self.parts_sum = {f"ttft_{p}": 0.0 for p in TTFT_PARTS} | {f"e2e_{p}": 0.0 for p in E2E_PARTS}
        self.parts_count = dict.fromkeys(self.parts_sum, 0)
        self.window = np.zeros(n_classes, dtype=np.int64)
        self.window_ok = np.zeros(n_classes, dtype=np.int64)
        self.verdict = [{name: self._sketch() for name in targets} for targets in self.targets]
        self.verdict_misses = [dict.fromkeys(targets, 0) for targets in self.targets]
        self.finished_in_window = 0
        self.finished_output_tokens = 0
        self.preemptions = 0
        self.completed = 0
        self.completed_output_tokens = 0
        self.pool_prompt_tokens = np.zeros(n_pools, dtype=np.int64)  # completed requests' tokens per pool
        self.pool_output_tokens = np.zeros(n_pools, dtype=np.int64)
        # completed requests by ROUTING_BIN_S bin of send time: count, sums of ttft_s, e2e_s,
        # error_rate and errors; and per bin, sketches of TTFT and E2E (a comparison's timeline)
        bins = int(math.ceil(scenario.horizon / ROUTING_BIN_S)) + 1
        self.timeline = np.zeros((bins, 5))
        self.timeline_sketches: dict[int, tuple[LatencySketch, LatencySketch]] = {}
        # routed requests by ROUTING_BIN_S bin of send time, pool and reason
        self.routing = np.zeros((int(math.ceil(scenario.horizon / ROUTING_BIN_S)) + 1, max(n_pools, 1), 4),
                                dtype=np.int64)
        self.availability = dict.fromkeys(AVAILABILITY_COUNTS, 0)
        self.served = 0
        self.errors = 0
        self.degraded = 0
        minutes = int(math.ceil(scenario.horizon / MINUTE_S)) + 2
        self.excess_by_minute = np.zeros(minutes)  # sum of excess error rates of requests served in it
        self.served_by_minute = np.zeros(minutes, dtype=np.int64)
        self.versions: dict[int, list[float]] = {}  # version -> [requests, sum of first tokens, latest]
        # (class, site, 0 up / 1 down) -> per minute: [bytes, records, bytes x time, time]
        self.payloads: dict[tuple[int, str, int], np.ndarray] = {}
        # for the end-of-run invariants
        self.ended_by_pool = np.zeros(n_pools, dtype=np.int64)
        self.latest_done_by_pool = np.full(n_pools + 1, -math.inf)  # ended ones; completed are checked with lag
        self.latest_other_end = -math.inf
        self.ended_without_end = 0
        self.most_attempts = 0
        self.link_bytes: dict[tuple[str, str], float] = {}

    def _sketch(self) -> LatencySketch:
        return LatencySketch(self.relative_accuracy)

    # -- taking chunks in ---------------------------------------------------------------------

    def add(self, req: RequestTable, request: np.ndarray) -> None:
        """Take in the requests numbered `request`, ended (or unfinished at the end of the run)."""
        from sim.metrics.invariants import check_rows

        check_rows(req, request, len(self.pool_names))
        n = len(req)
        if n == 0:
            return
        self._see(request)
        lat = request_latencies(req)
        status = status_category(req.status)
        pool = np.where(req.pool >= 0, req.pool, len(self.pool_names)).astype(np.int64)
        route = np.where(req.reason >= 0, req.reason.astype(np.int64) + 1, 0)
        classes = req.traffic_class.astype(np.int64)
        flat = np.ravel_multi_index((classes, pool, status, route), self.counts.shape)
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        self._latency(req, lat, classes)
        windows = [verdict_window(req.send_s, self.scenario, targets) & (classes == k)
                   for k, targets in enumerate(self.targets)]
        within = [within_slo(lat, req.status, self.scenario, targets) for targets in self.targets]
        self._slo(req, lat, windows, within)
        self._availability(req, windows, within)
        self._work(req, pool)
        self._routing(req, pool)
        self._timeline(req, lat)
        self._lifecycle(req)
        self._payloads(req, classes)
        self._ends(req, pool)

    def _see(self, request: np.ndarray) -> None:
        """Mark requests as taken in; one taken in twice breaks the first conservation law."""
        from sim.metrics.invariants import InvariantError

        if len(request) > 1 and not (np.diff(request) > 0).all():
            raise InvariantError("a chunk of ended requests is not in request order, or names one twice")
        byte, bit = request >> 3, (1 << (request & 7)).astype(np.uint8)
        if int(byte[-1]) >= len(self.seen):
            self.seen = np.concatenate([self.seen, np.zeros(max(int(byte[-1]) + 1 - len(self.seen),
                                                                 len(self.seen)), dtype=np.uint8)])
        again = (self.seen[byte] & bit) != 0
        if again.any():
            raise InvariantError(f"requests ended twice (requests {request[again][:5].tolist()})")
        starts = np.flatnonzero(np.diff(byte, prepend=-1))  # ascending: each byte's bits are adjacent
        self.seen[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)
        self.requests += len(request)

    def all_seen(self, count: int) -> bool:
        """Were requests 0 .. count - 1 each taken in (and no other)?"""
        bits = np.unpackbits(self.seen, bitorder="little")
        return self.requests == count and bool(bits[:count].all()) and not bits[count:].any()

    def _latency(self, req: RequestTable, lat: dict[str, np.ndarray], classes: np.ndarray) -> None:
        steady = req.send_s >= self.scenario.warmup
        done = steady & (req.status == DONE)
        self.steady += np.bincount(classes[steady], minlength=len(self.steady))
        for k, sketches in enumerate(self.latency):
            mine = done & (classes == k)
            for stem, sketch in sketches.items():
                sketch.add(lat[f"{stem}_s"][mine])
        # the parts of latency_summary, over every class's completed steady-state requests
        ttft_network = (req.pool_arrival_s - req.send_s) + (req.client_first_s - (req.dispatch_s + lat["prefill_s"]))
        parts = {"ttft_network": ttft_network, "ttft_queueing": lat["queueing_s"], "ttft_prefill": lat["prefill_s"],
                 "e2e_network": lat["network_s"], "e2e_queueing": lat["queueing_s"], "e2e_prefill": lat["prefill_s"],
                 "e2e_decode": lat["decode_s"]}
        for name, values in parts.items():
            chosen = values[done]
            chosen = chosen[~np.isnan(chosen)]
            self.parts_sum[name] += float(chosen.sum())
            self.parts_count[name] += len(chosen)

    def _slo(self, req: RequestTable, lat: dict[str, np.ndarray], windows: list[np.ndarray],
             within: list[np.ndarray]) -> None:
        completed = req.status == DONE
        for k, targets in enumerate(self.targets):
            window = windows[k]
            self.window[k] += int(window.sum())
            self.window_ok[k] += int((window & within[k]).sum())
            for name in targets:
                values = lat[f"{name.partition('_p')[0]}_s"]
                self.verdict[k][name].add(values[window & completed])  # NaN (a one-token TPOT) is left out
                self.verdict_misses[k][name] += int((window & ~completed).sum())
        horizon, warmup = self.scenario.horizon, self.scenario.warmup
        with np.errstate(invalid="ignore"):
            finished = completed & (req.client_done_s >= warmup) & (req.client_done_s <= horizon)
        self.finished_in_window += int(finished.sum())
        self.finished_output_tokens += int(req.output_tokens[finished].astype(np.int64).sum())
        self.preemptions += int(req.preemptions.astype(np.int64).sum())

    def _availability(self, req: RequestTable, windows: list[np.ndarray], within: list[np.ndarray]) -> None:
        """The counts of `sim.metrics.availability.availability`, each class against its SLO."""
        status = req.status
        a = self.availability
        for k, targets in enumerate(self.targets):
            window = windows[k]
            ended = window & np.isin(status, STATUS_CODES)
            judged = window if targets else ended
            a["ended"] += int(ended.sum())
            a["judged"] += int(judged.sum())
            a["good"] += int((judged & within[k]).sum())
            a["completed"] += int((judged & (status == DONE)).sum())
        retried = req.attempts > 1
        a["retried"] += int(retried.sum())
        a["retries"] += int((req.attempts.astype(np.int64) - 1).sum())
        a["failed_after_retries"] += int((retried & (status == FAILED)).sum())
        a["fallback"] += int(req.diverted.sum())
        a["delayed"] += int(req.delayed.sum())
        a["cut_off"] += int((req.cut_off & (status == FAILED)).sum())

    def _work(self, req: RequestTable, pool: np.ndarray) -> None:
        done = req.status == DONE
        self.completed += int(done.sum())
        self.completed_output_tokens += int(req.output_tokens[done].astype(np.int64).sum())
        n_pools = len(self.pool_names)
        mine = done & (pool < n_pools)
        self.pool_prompt_tokens += np.bincount(pool[mine], weights=req.prompt_tokens[mine],
                                               minlength=n_pools).astype(np.int64)
        self.pool_output_tokens += np.bincount(pool[mine], weights=req.output_tokens[mine],
                                               minlength=n_pools).astype(np.int64)

    def _routing(self, req: RequestTable, pool: np.ndarray) -> None:
        routed = (req.reason >= 0) & ~np.isnan(req.send_s)
        if not routed.any():
            return
        bins = np.floor(req.send_s[routed] / ROUTING_BIN_S).astype(np.int64)
        shape = self.routing.shape
        flat = np.ravel_multi_index((bins, pool[routed], req.reason[routed].astype(np.int64)), shape)
        self.routing += np.bincount(flat, minlength=self.routing.size).reshape(shape)

    def _timeline(self, req: RequestTable, lat: dict[str, np.ndarray]) -> None:
        """Per bin of send time, the completed requests' latency and errors (as
        `sim.experiment.digest` bins an exact run's)."""
        done = np.flatnonzero(req.status == DONE)
        if not len(done):
            return
        bins = np.floor(req.send_s[done] / ROUTING_BIN_S).astype(np.int64)
        columns = (np.ones(len(done)), lat["ttft_s"][done], lat["e2e_s"][done], req.error_rate[done],
                   req.error[done].astype(np.float64))
        for c, values in enumerate(columns):
            self.timeline[:, c] += np.bincount(bins, weights=values, minlength=len(self.timeline))
        for b in np.unique(bins).tolist():
            mine = done[bins == b]
            ttft, e2e = self.timeline_sketches.setdefault(b, (self._sketch(), self._sketch()))
            ttft.add(lat["ttft_s"][mine])
            e2e.add(lat["e2e_s"][mine])

    def timeline_frame(self) -> Any:
        """`sim.experiment.digest`'s timeline, from the bins: requests, TTFT and E2E mean and
        p99 (from sketches), the served model's error rate and the observed one."""
        import pandas as pd

        used = np.flatnonzero(self.timeline[:, 0] > 0)
        count, ttft, e2e, error_rate, errors = (self.timeline[used, c] for c in range(5))
        sketches = [self.timeline_sketches[int(b)] for b in used]
        return pd.DataFrame({
            "start_s": used * ROUTING_BIN_S, "requests": count.astype(np.int64),
            "ttft_mean_s": ttft / count, "ttft_p99_s": [t.quantile(0.99) for t, _ in sketches],
            "e2e_mean_s": e2e / count, "e2e_p99_s": [e.quantile(0.99) for _, e in sketches],
            "error_rate": error_rate / count, "observed_error_rate": errors / count,
        })

    def _lifecycle(self, req: RequestTable) -> None:
        from sim.metrics.lifecycle import degraded

        served = ~np.isnan(req.first_token_s)
        if not served.any():
            return
        scenario = self.scenario
        base = scenario.lifecycle.base_error_rate
        first = req.first_token_s[served]
        self.served += int(served.sum())
        self.errors += int(req.error[served].sum())
        self.degraded += int(degraded(req.error_rate[served], req.stale_error_rate[served], base,
                                      scenario.lifecycle.recovery_tolerance).sum())
        minute = np.floor(first / MINUTE_S).astype(np.int64)
        excess = np.clip(req.error_rate[served] - base, 0.0, None)
        self.excess_by_minute += np.bincount(minute, weights=excess, minlength=len(self.excess_by_minute))
        self.served_by_minute += np.bincount(minute, minlength=len(self.served_by_minute))
        version = req.version[served].astype(np.int64)
        for v in np.unique(version).tolist():
            mine = first[version == v]
            entry = self.versions.setdefault(v, [0.0, 0.0, -math.inf])
            entry[0] += len(mine)
            entry[1] += float(mine.sum())
            entry[2] = max(entry[2], float(mine.max()))

    def _payloads(self, req: RequestTable, classes: np.ndarray) -> None:
        """Per minute, the payloads crossing a link (the ledger's rows; `sim.metrics.ledger`)."""
        from sim.metrics.ledger import minute_sums

        origin = self.scenario.workload.origin
        sites = np.array([*self.pool_sites, ""], dtype=object)[np.where(req.pool >= 0, req.pool, len(self.pool_sites))]
        for site in sorted(set(sites.tolist()) - {origin, ""}):
            here = sites == site
            for k in np.unique(classes[here]).tolist():
                mine = here & (classes == k)
                for direction, send, size in ((0, req.uplink_send_s, req.request_bytes),
                                              (1, req.downlink_send_s, req.response_bytes)):
                    minute, sums = minute_sums(send[mine], size[mine])
                    if not len(minute):
                        continue
                    key = (k, site, direction)
                    table = self.payloads.get(key, np.zeros((len(self.served_by_minute), 4)))
                    if minute[-1] >= len(table):  # a payload held past the horizon by a cut path
                        table = np.concatenate([table, np.zeros((int(minute[-1]) + 1 - len(table), 4))])
                    np.add.at(table, minute, sums)
                    self.payloads[key] = table
                    link = (origin, site) if direction == 0 else (site, origin)
                    moved = size[mine] if direction == 0 else size[mine & (req.status == DONE)]
                    sent = ~np.isnan(send[mine]) if direction == 0 else np.ones(len(moved), dtype=bool)
                    self.link_bytes[link] = self.link_bytes.get(link, 0.0) + float(moved[sent].sum())

    def _ends(self, req: RequestTable, pool: np.ndarray) -> None:
        """What the end-of-run invariants need: per pool, ended requests and the latest end."""
        ended = np.isin(req.status, STATUS_CODES)
        n_pools = len(self.pool_names)
        routed = ended & (pool < n_pools)
        self.ended_by_pool += np.bincount(pool[routed], minlength=n_pools)
        done = req.status == DONE
        with np.errstate(invalid="ignore"):
            self.ended_without_end += int((ended & np.isnan(req.done_s)).sum())
        for p in np.unique(pool[done]).tolist():
            latest = float(req.done_s[done & (pool == p)].max())
            self.latest_done_by_pool[p] = max(self.latest_done_by_pool[p], latest)
        other = ended & ~done & ~np.isnan(req.done_s)
        if other.any():
            self.latest_other_end = max(self.latest_other_end, float(req.done_s[other].max()))
        self.most_attempts = max(self.most_attempts, int(req.attempts.max()))

    # -- reading ------------------------------------------------------------------------------

    def status_count(self, category: int) -> int:
        return int(self.counts[:, :, category, :].sum())

    def merged_latency(self, stem: str, classes: Sequence[int] | None = None) -> LatencySketch:
        """The sketch of a latency over the completed steady-state requests of these classes (all)."""
        out = self._sketch()
        for k in range(len(self.latency)) if classes is None else classes:
            out.merge(self.latency[k][stem])
        return out

    def percentiles(self, sketch: LatencySketch, stem: str) -> dict[str, float | None]:
        """`sim.metrics.latency.percentiles` from a sketch (the mean is exact)."""
        from sim.metrics.latency import PERCENTILES

        out: dict[str, float | None] = {f"{stem}_p{q}_s": sketch.quantile(q / 100) for q in PERCENTILES}
        out[f"{stem}_mean_s"] = sketch.mean
        return out

    def verdict_value(self, name: str, classes: Sequence[int]) -> float:
        """The SLO target `name`'s percentile over these classes' verdict windows, misses as
        infinite (`sim.metrics.latency.slo_percentiles`), from their sketches."""
        sketch = self._sketch()
        misses = 0
        for k in classes:
            sketch.merge(self.verdict[k][name])
            misses += self.verdict_misses[k][name]
        total = sketch.count + misses
        if total == 0:
            return math.nan
        position = (total - 1) * float(name.partition("_p")[2]) / 100.0
        if math.ceil(position) >= sketch.count:  # the order statistic reaches the misses
            if position == math.floor(position) and position < sketch.count:
                return sketch.max
            return math.inf
        value = sketch.quantile(position / (sketch.count - 1)) if sketch.count > 1 else sketch.max
        return math.nan if value is None else value

    def staleness(self, created_s: dict[int, float]) -> tuple[float | None, float | None]:
        """Mean and most time from a served request's model version's creation to its service."""
        count = sum(entry[0] for entry in self.versions.values())
        if not count:
            return None, None
        total = sum(entry[1] - entry[0] * created_s.get(v, 0.0) for v, entry in self.versions.items())
        most = max(entry[2] - created_s.get(v, 0.0) for v, entry in self.versions.items())
        return total / count, most

    def merge(self, other: RequestTally) -> None:
        """Take in the tally of another part of the same run (other requests, other chunks)."""
        for name in ("counts", "steady", "window", "window_ok", "pool_prompt_tokens", "pool_output_tokens",
                     "excess_by_minute", "served_by_minute", "ended_by_pool"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        seen = np.zeros(max(len(self.seen), len(other.seen)), dtype=np.uint8)
        seen[:len(self.seen)] = self.seen
        seen[:len(other.seen)] |= other.seen
        self.seen = seen
        for name in ("requests", "finished_in_window", "finished_output_tokens",
                     "preemptions", "completed", "completed_output_tokens", "served", "errors", "degraded",
                     "ended_without_end"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in zip(self.latency + self.verdict, other.latency + other.verdict, strict=True):
            for key, sketch in mine.items():
                sketch.merge(theirs[key])
        for k, misses in enumerate(other.verdict_misses):
            for key, count in misses.items():
                self.verdict_misses[k][key] += count
        for key in self.parts_sum:
            self.parts_sum[key] += other.parts_sum[key]
            self.parts_count[key] += other.parts_count[key]
        self.routing = self.routing + other.routing
        self.timeline = self.timeline + other.timeline
        for b, (ttft, e2e) in other.timeline_sketches.items():
            pair = self.timeline_sketches.setdefault(b, (self._sketch(), self._sketch()))
            pair[0].merge(ttft)
            pair[1].merge(e2e)
        for name, count in other.availability.items():
            self.availability[name] += count
        for v, entry in other.versions.items():
            mine_entry = self.versions.setdefault(v, [0.0, 0.0, -math.inf])
            mine_entry[0] += entry[0]
            mine_entry[1] += entry[1]
            mine_entry[2] = max(mine_entry[2], entry[2])
        for payload_key, table in other.payloads.items():
            self.payloads[payload_key] = self.payloads[payload_key] + table if payload_key in self.payloads else table
        for link, nbytes in other.link_bytes.items():
            self.link_bytes[link] = self.link_bytes.get(link, 0.0) + nbytes
        self.latest_done_by_pool = np.maximum(self.latest_done_by_pool, other.latest_done_by_pool)
        self.latest_other_end = max(self.latest_other_end, other.latest_other_end)
        self.most_attempts = max(self.most_attempts, other.most_attempts)


def tally_of(scenario: Scenario, pool_names: Sequence[str], req: RequestTable,
             request: np.ndarray | None = None) -> RequestTally:
    """The tally of a request table (an exact run's, or part of it: `request` numbers its
    rows, in ascending order; default 0, 1, ...)."""
    tally = RequestTally(scenario, pool_names)
    tally.add(req, np.arange(len(req), dtype=np.int64) if request is None else request)
    return tally


class TallyThread:
    """Hands chunks to a tally's `add` on a thread of its own, in order: measuring the requests
    that ended overlaps the kernel running the next ones (the kernel releases the GIL while it
    runs), on a second core. The tally takes the same chunks in the same order as it would
    without the thread, so what it measures is bit-identical. At most `backlog` chunks wait
    (memory stays bounded: the run waits for the tally rather than queue more); `join` waits
    for the rest and raises what `add` raised; `abandon` drops what waits (the run failed)."""

    def __init__(self, add: Callable[[RequestTable, np.ndarray], None], backlog: int = 2) -> None:
        self._add = add
        self._backlog = backlog
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tally")
        self._waiting: deque[Future[None]] = deque()

    def __call__(self, req: RequestTable, request: np.ndarray) -> None:
        while len(self._waiting) >= self._backlog:
            self._waiting.popleft().result()
        self._waiting.append(self._pool.submit(self._add, req, request))

    def join(self) -> None:
        try:
            while self._waiting:
                self._waiting.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        self._waiting.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["RequestTally", "TallyThread", "status_category", "tally_of"]
