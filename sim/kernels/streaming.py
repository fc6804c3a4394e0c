"""A serving cluster fed in chunks, whose ended requests leave it: bounded memory for long runs.

`ClusterKernel` holds one row per request for the whole run (about 280 bytes each), so a day
at 1,000 req/s (86M requests) cannot fit. `StreamingCluster` is the same kernel, driven by the
same `advance` function, that holds only a *window* of requests: those sent or about to be
sent and not yet ended. The world gives it the requests as an iterator of `RequestChunk`s in
send order (the cluster draws each chunk and writes its kernel rows one ahead, on a thread of
its own: `ReadAhead`); it takes in the next chunk just before the first of its sends is due,
and, when it does (and whenever `collect_ended` asks), hands every request that ended since
(done, rejected or failed) to `on_ended` and drops the rows nothing refers to any more. A
caller that still needs an ended row (the world carries responses back over their path in
time order, so it waits for the payloads sent before them) `holds` it until it does.

**Why results are bit-identical to the whole kernel.** The kernel breaks ties between equal
event times by request index, so a row's index must keep the order of the requests. A
compaction keeps the live rows in their order and puts the new chunk's rows after them (its
requests were sent later, so their numbers are larger): indices are renumbered by an
order-preserving map, and every array that holds a request index (queues and their links,
running and prefilling sequences, the replicas' admission heaps, the arrival heap and FIFO,
the resend heap, the send and deadline orders, the API rate windows) is rewritten through
it. Heaps stay heaps, since neither a key nor the order of two indices changes. The kernel
never sees a send before its chunk is in: it is advanced to just before the next chunk's
first send, which the kernel allows (advancing to t1 and then t2 is advancing to t2).

**What stays.** A row leaves only when its request has ended *and* nothing refers to it: a
request that gave up on its way sits in the arrival heap until its arrival time, one waiting
for a path in the resend heap, and one answered by a managed API in that API's rate-limit
window for a minute. Its deadline entry, a no-op once it has ended, is dropped with it.

Not streamed (the constructor refuses them): closed loops (a client's next request is
released by the kernel), and per-request deadlines and service times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numba import njit

from sim.kernels.batching import (
    C_DEADLINES,
    C_GROUPS,
    DONE,
    FAILED,
    G_ARRIVING,
    G_FIFO_HEAD,
    G_FIFO_TAIL,
    G_NEXT_DEADLINE,
    G_NEXT_SEND,
    G_RESENDING,
    G_SENDS,
    K_SIZE,
    PI_HEAP,
    PI_PREFILLING,
    PI_RUNNING,
    Q_API,
    Q_WINDOW_HEAD,
    Q_WINDOW_TAIL,
    QU_HEAD,
    QU_TAIL,
    REJECTED,
    RF_DEADLINE,
    RF_LINK_SEND,
    RF_SEND,
    RF_SIZE,
    RI_NEXT,
    RI_POOL,
    RI_SIZE,
    RI_STATUS,
    ClusterKernel,
    PoolConfig,
)

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")


@dataclass(frozen=True, eq=False)
class RequestChunk:
    """Consecutive requests in send order, numbered `first`, `first + 1`, ...: the kernel's
    inputs (as `ClusterKernel` takes them) and `columns`, per-request values the caller wants
    back with each ended request (payload sizes, outcome draws)."""

    first: int
    send_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    request_class: np.ndarray
    prefix_group: np.ndarray
    prefix_tokens: np.ndarray
    request_bytes: np.ndarray
    router_u: np.ndarray
    route_u: np.ndarray | None = None
    api_z: np.ndarray | None = None
    jitter_z: np.ndarray | None = None
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.send_s)


@dataclass(frozen=True, eq=False)
class EndedRows:
    """Requests that left the kernel: their numbers (`request`), kernel rows and columns."""

    request: np.ndarray
    req_i: np.ndarray
    req_f: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.request)


@dataclass(frozen=True, eq=False)
class Fed:
    """A chunk on its way in, with its kernel rows (`ClusterKernel.request_rows`)."""

    chunk: RequestChunk
    req_i: np.ndarray
    req_f: np.ndarray


@njit(cache=True, nogil=True)
def _columns_of(req_i, req_f, index):
    """Rows `index` of req_i and req_f, column by column (`[c, k]` is row index[k]'s field c):
    one pass over the rows, where numpy's gather and then a copy per column read each row
    once per column."""
    n = index.shape[0]
    columns_i = np.empty((req_i.shape[1], n), dtype=req_i.dtype)
    columns_f = np.empty((req_f.shape[1], n), dtype=req_f.dtype)
    for k in range(n):
        j = index[k]
        for c in range(req_i.shape[1]):
            columns_i[c, k] = req_i[j, c]
        for c in range(req_f.shape[1]):
            columns_f[c, k] = req_f[j, c]
    return columns_i, columns_f


@njit(cache=True, nogil=True)
def _remap_sequences(remap, rep_i, running, prefilling, heap_req):
    """Every replica's running and prefilling sequences and admission heap, through `remap`."""
    for r in range(running.shape[0]):
        for k in range(rep_i[r, PI_RUNNING]):
            running[r, k] = remap[running[r, k]]
        for k in range(rep_i[r, PI_PREFILLING]):
            prefilling[r, k] = remap[prefilling[r, k]]
        for k in range(rep_i[r, PI_HEAP]):
            heap_req[r, k] = remap[heap_req[r, k]]


@njit(cache=True, nogil=True)
def due_back(status, first, done, first_back, done_back, frontier):
    """The rows whose first token (`first`), and those whose whole response (`done`, of a
    request DONE), is to go back to its client now: not back yet and sent by `frontier`.
    Returns both, in row order, and which rows still wait for either (a streamed world's
    `_carry_back`, in one pass over the window)."""
    n = status.shape[0]
    due_first = np.empty(n, dtype=np.int64)
    due_done = np.empty(n, dtype=np.int64)
    held = np.zeros(n, dtype=np.bool_)
    n_first = n_done = 0
    for j in range(n):
        if not first_back[j] and not np.isnan(first[j]):
            if first[j] <= frontier:
                due_first[n_first] = j
                n_first += 1
            else:
                held[j] = True
        if status[j] == DONE and not done_back[j] and not np.isnan(done[j]):
            if done[j] <= frontier:
                due_done[n_done] = j
                n_done += 1
            else:
                held[j] = True
    return due_first[:n_first], due_done[:n_done], held


class ReadAhead(Iterator[Prepared]):
    """`prepare(item)` for each item of `items`, each made on a thread of its own while the
    caller works on the one before: a streamed run's next chunk is drawn and its kernel rows
    written on the second core while the kernel, which releases the GIL, runs the requests
    before it. The same items are prepared in the same order: results do not change. `close`
    stops it early (it stops by itself when `items` ends or raises)."""

    def __init__(self, items: Iterator[Item], prepare: Callable[[Item], Prepared]) -> None:
        self._items = items
        self._prepare = prepare
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._next: Future[tuple[Prepared] | None] = self._pool.submit(self._make)

    def _make(self) -> tuple[Prepared] | None:
        for item in self._items:
            return (self._prepare(item),)
        return None

    def __next__(self) -> Prepared:
        if self._pool is None:
            raise StopIteration
        try:
            made = self._next.result()
        except BaseException:
            self.close()
            raise
        if made is None:
            self.close()
            raise StopIteration
        self._next = self._pool.submit(self._make)
        return made[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class StreamingCluster(ClusterKernel):
    """A `ClusterKernel` over a window of requests (see the module docstring).

    `chunks` yields the requests (at least one chunk, possibly empty); `prefix_tokens_of_group`
    the shared prefix of every prefix group the workload can draw (known from the spec, since
    the first chunk need not hold every group); `on_ended(rows)` receives each request once,
    when it ended, or at `finish()` for those that never did. The other keywords are
    `ClusterKernel`'s, less the per-request ones a chunk carries.
    """

    def __init__(self, pools: Sequence[PoolConfig], chunks: Iterator[RequestChunk], *,
                 prefix_tokens_of_group: np.ndarray, on_ended: Callable[[EndedRows], None],
                 holds: Callable[[StreamingCluster, bool], np.ndarray] | None = None,
                 timeout_s: float = math.inf, **cluster: Any) -> None:
        for name in ("clients", "deadline_s", "service_s"):
            if cluster.get(name) not in (None, 0):
                raise ValueError(f"a streaming cluster cannot take {name}: it needs every request up front")
        self._on_ended = on_ended
        self._holds = holds
        self._timeout_s = float(timeout_s)
        first = next(chunks)
        super().__init__(pools, first.send_s, first.prompt_tokens, first.output_tokens,
                         timeout_s=timeout_s, **cluster, **self._kernel_inputs(first))
        groups = max(len(prefix_tokens_of_group), 1)
        if int(self.cfg[C_GROUPS]) > groups:
            raise ValueError("prefix_tokens_of_group must cover every prefix group the requests use")
        self.prefix_tokens_of_group = np.zeros(groups, dtype=np.int64)
        self.prefix_tokens_of_group[:len(prefix_tokens_of_group)] = prefix_tokens_of_group
        self.cache_i = np.zeros((max(self.replicas, 1), groups, K_SIZE), dtype=np.int64)
        self.cfg[C_GROUPS] = groups
        self.request = first.first + np.arange(len(first), dtype=np.int64)  # each row's request number
        self.columns = {name: np.asarray(values) for name, values in first.columns.items()}
        self.reported = np.zeros(len(first), dtype=bool)  # handed to on_ended already
        self.fed = first.first + len(first)  # requests taken in so far
        self.capacity_max = len(first)  # the most rows held at once (memory stays bounded)
        self._ended_in_pool = np.zeros(self.n_pools, dtype=np.int64)  # counted as rows are reported
        self._chunks = ReadAhead(chunks, self._with_rows)
        self._pending: Fed | None = None
        self._next_chunk()

    @staticmethod
    def _kernel_inputs(chunk: RequestChunk) -> dict[str, Any]:
        return {"request_class": chunk.request_class, "prefix_group": chunk.prefix_group,
                "prefix_tokens": chunk.prefix_tokens, "request_bytes": chunk.request_bytes,
                "router_u": chunk.router_u, "route_u": chunk.route_u, "api_z": chunk.api_z,
                "jitter_z": chunk.jitter_z}

    def _with_rows(self, chunk: RequestChunk) -> Fed:
        """A chunk and its kernel rows (made on the read-ahead thread: they depend on the
        cluster's configuration only)."""
        req_i, req_f = self.request_rows(chunk.send_s, chunk.prompt_tokens, chunk.output_tokens,
                                         **self._kernel_inputs(chunk))
        req_f[:, RF_DEADLINE] = req_f[:, RF_SEND] + self._timeout_s
        return Fed(chunk, req_i, req_f)

    def _next_chunk(self) -> None:
        """Hold the next non-empty chunk, if any, until its first send is due."""
        self._pending = None
        for fed in self._chunks:
            if len(fed.chunk):
                self._pending = fed
                return

    @property
    def next_send_s(self) -> float:
        """The send time of the first request not taken in yet (inf: all are in)."""
        return float(self._pending.chunk.send_s[0]) if self._pending is not None else math.inf

    # -- the clock ---------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        """Run every event up to and including time t, taking in chunks as their sends come due."""
        while self._pending is not None and self.next_send_s <= t:
            just_before = float(np.nextafter(self.next_send_s, -math.inf))
            super().advance_to(max(just_before, self.now))
            fed = self._pending
            self._next_chunk()
            self._compact(fed)
        super().advance_to(t)

    def next_event_time(self) -> float:
        return min(super().next_event_time(), self.next_send_s)

    def requests_ended(self, p: int) -> int:
        """Requests that ended in pool p so far, counted as their rows were handed over (every
        ended one is, at the latest by the next `collect_ended` or `finish`)."""
        self.collect_ended()
        return int(self._ended_in_pool[p])

    def fail(self, r: int) -> np.ndarray:
        """As `ClusterKernel.fail`, with the failed requests by number, not row."""
        return self.request[super().fail(r)]

    def collect_ended(self) -> None:
        """Hand the requests that ended since the last call to `on_ended` and free their rows."""
        self._compact(None)

    def finish(self) -> None:
        """At the end of the run: hand over every request still held, ended or not."""
        self._compact(None, final=True)
        keep = ~self.reported
        if keep.any():
            self._on_ended(self._rows(np.flatnonzero(keep)))
        self.reported[:] = True
        self._chunks.close()

    # -- compaction --------------------------------------------------------------------------

    def _rows(self, index: np.ndarray) -> EndedRows:
        req_i, req_f = _columns_of(self.req_i, self.req_f, index)
        return EndedRows(self.request[index], req_i.T, req_f.T,
                         {name: values[index] for name, values in self.columns.items()})

    def _referenced(self) -> np.ndarray:
        """Rows something in the kernel still points at, though their request may have ended."""
        glob = self.glob
        n = len(self.req_i)
        held = np.zeros(n, dtype=bool)
        base = len(self.aheap_i) // 2
        held[self.aheap_i[:glob[G_ARRIVING]]] = True
        held[self.aheap_i[base + glob[G_FIFO_HEAD]:base + glob[G_FIFO_TAIL]]] = True
        held[self.rheap_i[:glob[G_RESENDING]]] = True
        # an API's rate window is a list in send order from its head: every request sent to
        # that API since the head was sent holds (those over the limit too, which is harmless)
        for p in np.flatnonzero(self.pool_i[:, Q_API] == 1):
            head = int(self.pool_i[p, Q_WINDOW_HEAD])
            if head >= 0:
                with np.errstate(invalid="ignore"):
                    held |= (self.req_i[:, RI_POOL] == p) & (self.req_f[:, RF_LINK_SEND] >= self.req_f[head, RF_LINK_SEND])
        return held

    def _compact(self, fed: Fed | None, final: bool = False) -> None:
        """Report newly ended rows, drop those nothing refers to, renumber the rest in order
        and append the rows of the chunk `fed` (see the module docstring). Rows the caller still `holds`
        (given this cluster and whether the run is over) wait."""
        status = self.req_i[:, RI_STATUS]
        ended = (status == DONE) | (status == REJECTED) | (status == FAILED)
        if self._holds is not None:
            ended &= ~self._holds(self, final)
        fresh = np.flatnonzero(ended & ~self.reported)
        if len(fresh):
            pools = self.req_i[fresh, RI_POOL]
            self._ended_in_pool += np.bincount(pools[pools >= 0], minlength=self.n_pools)
            self._on_ended(self._rows(fresh))
            self.reported[fresh] = True
        keep = ~ended | self._referenced()
        if fed is None and keep.all():
            return
        kept = np.flatnonzero(keep)
        remap = np.full(len(keep) + 1, -1, dtype=np.int64)  # remap[-1] (no request) stays -1
        remap[kept] = np.arange(len(kept), dtype=np.int64)
        self._renumber(kept, remap, fed)

    def _renumber(self, kept: np.ndarray, remap: np.ndarray, fed: Fed | None) -> None:
        glob = self.glob
        n_kept = len(kept)
        added = len(fed.chunk) if fed is not None else 0
        rows = n_kept + added
        # every array of request indices, rewritten through `remap` (-1 maps to -1)
        unsent = remap[self.sorder[glob[G_NEXT_SEND]:glob[G_SENDS]]]
        separate_deadlines = self.deadline_order is not self.sorder
        if separate_deadlines:
            due = remap[self.deadline_order[glob[G_NEXT_DEADLINE]:]]
            due = due[due >= 0]  # an ended request's deadline changes nothing
        base = len(self.aheap_i) // 2
        heap = slice(0, int(glob[G_ARRIVING]))
        fifo = slice(base + int(glob[G_FIFO_HEAD]), base + int(glob[G_FIFO_TAIL]))
        heap_t, heap_i = self.aheap_t[heap].copy(), remap[self.aheap_i[heap]]
        fifo_t, fifo_i = self.aheap_t[fifo].copy(), remap[self.aheap_i[fifo]]
        resend = slice(0, int(glob[G_RESENDING]))
        resend_t, resend_i = self.rheap_t[resend].copy(), remap[self.rheap_i[resend]]
        self.queues[:, QU_HEAD] = remap[self.queues[:, QU_HEAD]]
        self.queues[:, QU_TAIL] = remap[self.queues[:, QU_TAIL]]
        self.pool_i[:, Q_WINDOW_HEAD] = remap[self.pool_i[:, Q_WINDOW_HEAD]]
        self.pool_i[:, Q_WINDOW_TAIL] = remap[self.pool_i[:, Q_WINDOW_TAIL]]
        _remap_sequences(remap, self.rep_i, self.running, self.prefilling, self.heap_req)
        # the kept rows, then the chunk's, written once into the new window
        req_i = np.empty((rows, RI_SIZE), dtype=self.req_i.dtype)
        req_f = np.empty((rows, RF_SIZE), dtype=self.req_f.dtype)
        np.take(self.req_i, kept, axis=0, out=req_i[:n_kept])
        np.take(self.req_f, kept, axis=0, out=req_f[:n_kept])
        req_i[:n_kept, RI_NEXT] = remap[req_i[:n_kept, RI_NEXT]]
        request = self.request[kept]
        columns = {name: values[kept] for name, values in self.columns.items()}
        reported = self.reported[kept]
        new_sends = np.empty(0, dtype=np.int64)
        if fed is not None:
            chunk = fed.chunk
            req_i[n_kept:] = fed.req_i
            req_f[n_kept:] = fed.req_f
            request = np.concatenate([request, chunk.first + np.arange(added, dtype=np.int64)])
            columns = {name: np.concatenate([values, np.asarray(chunk.columns[name])])
                       for name, values in columns.items()}
            reported = np.concatenate([reported, np.zeros(added, dtype=bool)])
            new_sends = n_kept + np.argsort(chunk.send_s, kind="stable").astype(np.int64)
            self.fed = chunk.first + added
        self.req_i, self.req_f, self.request, self.columns, self.reported = req_i, req_f, request, columns, reported
        self.sorder = np.concatenate([unsent, new_sends]).astype(np.int64)
        glob[G_NEXT_SEND] = 0
        glob[G_SENDS] = len(self.sorder)
        if separate_deadlines:
            order = np.concatenate([due, new_sends])
            deadline = req_f[order, RF_DEADLINE]
            self.deadline_order = order[np.lexsort((order, deadline))].astype(np.int64)
            glob[G_NEXT_DEADLINE] = 0
        elif self.cfg[C_DEADLINES] == 0:
            self.deadline_order = self.sorder
        self.aheap_t = np.zeros(2 * max(rows, 1), dtype=np.float64)
        self.aheap_i = np.zeros(2 * max(rows, 1), dtype=np.int64)
        self.aheap_t[:len(heap_t)], self.aheap_i[:len(heap_i)] = heap_t, heap_i
        base = len(self.aheap_i) // 2
        self.aheap_t[base:base + len(fifo_t)], self.aheap_i[base:base + len(fifo_i)] = fifo_t, fifo_i
        glob[G_FIFO_HEAD], glob[G_FIFO_TAIL] = 0, len(fifo_t)
        if self.path_n.sum():
            self.rheap_t = np.zeros(max(rows, 1), dtype=np.float64)
            self.rheap_i = np.zeros(max(rows, 1), dtype=np.int64)
        self.rheap_t[:len(resend_t)], self.rheap_i[:len(resend_i)] = resend_t, resend_i
        self.n = rows
        self.capacity_max = max(self.capacity_max, rows)
