"""The serving pool written the slow, obvious way: a pure-SimPy reference model (the oracle).

`sim.kernels.batching` runs a serving pool as a numba kernel over arrays, with O(1)
bookkeeping (a decode-step counter, a completion heap, decode run-ahead) that is fast but easy
to get subtly wrong. This module implements the same semantics, as stated in that module's
docstring, with nothing clever in it: every request is a SimPy process that arrives at its
time, is dispatched by the router, waits to be admitted and waits for its completion; every
replica is a SimPy process that composes an iteration, `yield`s for the iteration's duration
and applies its effects. Each sequence counts its own generated tokens, one per iteration in
which it decodes, and its own KV tokens, one per token written. For identical inputs the
kernel and the oracle must give identical per-request times, to 1e-9 s: the kernel sums a
decode stretch in closed form, the oracle iteration by iteration (tests/test_serving_oracle.py).
All three service models are here: the roofline (continuous batching), service time and
dynamic batching.

Only the status codes are imported from the kernel module; the iteration time comes from the
very same `sim.kernels.roofline.step_time` (or from the request's service time, or from
a + c x b), so that any difference is a difference in the batching semantics. Routing uses
each router's Python `reference` from the family registry (`sim.routers`), the obvious
reading of the rule the kernel runs as a numba function.

How the event order of the docstring is reproduced. SimPy processes events in the order
(time, priority, insertion), and code after a `yield` runs while the awaited event is
processed. The oracle gives every event that matters an explicit priority:

    WAKE           (-1)  an idle replica woken by an arrival (or by its batching timer)
                         composes before anything else happens at that time, so it is as if
                         the arrival itself had started the iteration: the next arrival at the
                         same time already sees the replica busy;
    ARRIVAL        (0)   arrivals; SimPy's process start (Initialize) has this priority too.
                         Open-loop request processes are started in index order at time 0 and
                         at once schedule their arrival, so equal-time arrivals are taken in
                         request-index order; a closed-loop request released later is started
                         then, after every arrival already scheduled (release order, which is
                         also index order);
    NOTICE         (1)   admitted / first token / completed notices to request processes
                         (they only record times and, in a closed loop, release the next
                         request; they come before any other replica's iteration end);
    ITERATION_END  (2 + r)  replica r's iteration end or batching timer: at equal times after
                         every arrival, lowest replica first.

A replica applies its iteration's effects and composes its next iteration in the same step,
as the kernel does. Within an iteration end, prefills complete in admission order (which
decides who hands a prefix to the cache), and sequences that finish complete in request order.
An arrival wakes the replica the router chose if it is idle; one that joins the shared queue
wakes the idle replicas in index order, each after the first only if requests still wait.
A batching timer is dropped when its replica composes again before it fires. Events at a
time the kernel computed are scheduled at exactly that time (`AtTime`).

Choices where the kernel's docstring is silent, taken from the kernel and flagged here so that
they stay visible (see the report that came with this file):
 - a preempted sequence goes back to the head of its replica's own queue, also when it was
   first taken from the shared queue (it stays on that replica);
 - prefill-first (chunking off) checks the budget against a request's whole prompt
   (prompt + generated), but only the tokens it actually computes (not a cached prefix)
   use up the budget;
 - handing a prefix to the cache counts as a use of it for LRU order; a prefix is handed over
   only when it is shorter than what the request prefilled, and only by a request that holds
   its group's whole prefix (the longest of the group's requests): one whose prompt holds only
   part of it (a trace's short prompt) can hit the cached prefix for its part, never cache it;
 - as in `PoolKernel`, service-time mode means one request per replica (max_num_seqs = 1,
   chunking off) of one token in and one out, so that its single iteration takes the
   request's service time;
 - a rejected request counts as completed at its arrival for the closed loop (it releases the
   next request);
 - dynamic batching waits for the head of the replica's own queue, or else of the shared one.

One reading is the oracle's own: the tokens that the decoding sequences write in an iteration
(step 1) are taken before any prompt is admitted (step 2), so KV use never exceeds capacity;
the oracle checks that after every iteration.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import simpy
from simpy.events import Event

from sim.kernels.batching import DONE, PENDING, REJECTED, RUNNING, WAITING
from sim.kernels.roofline import chunk_pairs, step_time
from sim.routers import ROUTERS, SHARED_QUEUE, new_router_memory

SEND = -2
WAKE = -1
ARRIVAL = 0
NOTICE = 1
ITERATION_END = 2


def ordered(base: int, index: int, n: int) -> float:
    """A priority just above `base` that orders equal-time events of one kind by request index
    (SimPy compares priorities as numbers: base < base + index / (n + 1) < base + 1)."""
    return base + index / (n + 1)


class At(Event):
    """An event that fires `delay` from now with an explicit priority.

    SimPy's `Timeout` and `Event.succeed` always use NORMAL priority; this is the same two
    lines with the priority as a parameter.
    """

    def __init__(self, env: simpy.Environment, delay: float, priority: int) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, priority, delay)


class Notice(Event):
    """A one-shot notice that is fired now with a chosen priority (and value)."""

    def fire(self, priority: int = NOTICE, value: object = None) -> None:
        self._ok = True
        self._value = value
        self.env.schedule(self, priority)


class AtTime(Event):
    """An event that fires at the absolute time `t` (not now + (t - now), which floating
    point cannot always make equal to t) with an explicit priority; the same push onto the
    event queue as SimPy's `Environment.schedule`."""

    def __init__(self, env: simpy.Environment, t: float, priority: float) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        heapq.heappush(env._queue, (max(t, env.now), priority, next(env._eid), self))  # type: ignore[attr-defined]


@dataclass
class CachedPrefix:
    tokens: int
    refs: int
    last_use: int


@dataclass(eq=False)
class Request:
    index: int
    prompt: int
    output: int
    group: int
    prefix: int  # how many of its first tokens are its group's shared prefix (fewer than the group's
    # when a trace's prompt is shorter than the group's prefix: it holds only part of it)
    service_s: float
    router_u: float
    env: simpy.Environment
    send_s: float = np.nan
    whole_prefix: bool = True  # it holds its group's whole prefix (only such a request caches it)
    request_class: int = 0
    priority: int = 0
    size_bytes: float = 0.0
    jitter_z: float = 0.0
    route_u: float = 0.0
    ttft_z: float = 0.0  # standard normal draws for an API pool's latency profile
    tpot_z: float = 0.0
    limited: bool = False  # sent to an API over its rate limit: answered 429 on arrival
    pool: int = -1  # the pool it was sent to
    reason: int = -1  # why that pool (sim.kernels.batching PREFERRED, OVERFLOW, FAILOVER, WEIGHTED)
    link_send_s: float = np.nan
    arrival_s: float = np.nan
    dispatch_s: float = np.nan
    first_token_s: float = np.nan
    done_s: float = np.nan
    status: int = PENDING
    replica: int = -1  # where it was last admitted
    version: int = -1
    preemptions: int = 0
    owner: int = -1  # replica it counts as outstanding on (-1: not yet dispatched to one)
    # the sequence, while it is admitted
    generated: int = 0  # output tokens produced so far (kept across preemptions)
    target: int = 0  # tokens to prefill in this admission: prompt + generated
    prefilled: int = 0  # of those, how many are in the KV cache
    kv: int = 0  # KV tokens this sequence holds itself (not counting a cached prefix)
    uses_prefix: bool = False  # references a cached prefix
    decoding: bool = False  # prefill done, producing one token per decode iteration
    chunk: int = 0  # prefill tokens in the iteration in flight
    decodes_now: bool = False  # decodes in the iteration in flight
    admitted: Notice = field(init=False)
    first_token: Notice = field(init=False)
    completed: Notice = field(init=False)

    def __post_init__(self) -> None:
        self.admitted = Notice(self.env)
        self.first_token = Notice(self.env)
        self.completed = Notice(self.env)

    @property
    def total(self) -> int:
        return self.prompt + self.output


@dataclass
class OracleResult:
    send_s: np.ndarray
    link_send_s: np.ndarray
    pool: np.ndarray
    reason: np.ndarray
    arrival_s: np.ndarray
    dispatch_s: np.ndarray
    first_token_s: np.ndarray
    done_s: np.ndarray
    replica: np.ndarray
    status: np.ndarray
    preemptions: np.ndarray
    version: np.ndarray
    stats: dict[str, int]


class Replica:
    """One engine: its own queue, its running sequences, its KV cache and prefix cache."""

    def __init__(self, pool: Pool, index: int) -> None:
        self.pool = pool
        self.env = pool.env
        self.index = index  # across the cluster
        self.queue: deque[Request] = deque()
        self.running: list[Request] = []  # admission order
        self.cache: dict[int, CachedPrefix] = {}
        self.outstanding: set[int] = set()
        self.busy = False
        self.wake: Notice = Notice(self.env)
        self.decisions = 0  # compositions so far; a batching timer is valid until the next one
        self.deadline: float | None = None  # dynamic batching: when a partial batch may start
        self.batch: list[Request] = []
        self.env.process(self.run())

    # -- the process ------------------------------------------------------------------------

    def run(self):
        cutoff = self.env.now  # woken: everything that has arrived may be admitted
        while True:
            self.decisions += 1
            duration = self.compose(cutoff)
            if duration is None and cutoff < self.env.now:
                duration = self.compose(self.env.now)  # async: nothing to run, look again at once
            if duration is None:
                self.busy = False
                if self.deadline is not None:
                    self.start_timer()
                compose_now = False
                while not compose_now:
                    self.wake = Notice(self.env)
                    # a replica later in a shared-queue wake-up composes only if work is left
                    compose_now = (yield self.wake) or bool(self.pool.shared_queue)
                cutoff = self.env.now
                continue
            self.busy = True
            started = self.env.now
            yield At(self.env, duration, ITERATION_END + self.index)
            # async scheduling: the next iteration was scheduled when this one started
            cutoff = started if self.pool.async_scheduling else self.env.now
            seen = self.env.now + self.pool.frontend_delay(self.env.now - started)
            if self.pool.batch_latency is not None:
                self.end_batch(seen)
            else:
                self.end_iteration(seen)

    @property
    def idle(self) -> bool:
        return not self.busy and not self.wake.triggered

    def wake_up(self, first: bool) -> None:
        self.wake.fire(WAKE, first)

    def start_timer(self) -> None:
        """The partial batch starts at the deadline, as if an iteration ended then."""
        assert self.deadline is not None
        decision = self.decisions
        timer = AtTime(self.env, self.deadline, ITERATION_END + self.index)
        timer.callbacks.append(lambda _: self.timer_fired(decision))

    def timer_fired(self, decision: int) -> None:
        if decision == self.decisions and self.idle:
            self.wake.fire(WAKE, True)

    # -- KV ---------------------------------------------------------------------------------

    def kv_used(self) -> int:
        return sum(s.kv for s in self.running) + sum(c.tokens for c in self.cache.values())

    def evict_lru(self) -> bool:
        free = [(c.last_use, g) for g, c in self.cache.items() if c.refs == 0]
        if not free:
            return False
        _, group = min(free)
        del self.cache[group]
        self.pool.stats["evictions"] += 1
        return True

    def cached_prefix_for(self, s: Request) -> int:
        if self.pool.prefix_caching and s.group >= 0 and s.group in self.cache:
            return s.prefix
        return 0

    def release_prefix(self, s: Request) -> None:
        if s.uses_prefix:
            self.cache[s.group].refs -= 1
            s.uses_prefix = False

    # -- composing an iteration -------------------------------------------------------------

    def decoding(self) -> list[Request]:
        return [s for s in self.running if s.decoding]

    def prefilling(self) -> list[Request]:
        return [s for s in self.running if not s.decoding]

    def preempt(self, s: Request) -> None:
        self.running.remove(s)
        self.release_prefix(s)
        s.kv = 0
        s.decoding = False
        s.target = s.prompt + s.generated
        s.prefilled = 0
        s.chunk = 0
        s.status = WAITING
        s.preemptions += 1
        self.queue.appendleft(s)
        self.pool.stats["preemptions"] += 1

    def queue_head(self) -> tuple[Request, deque[Request]] | None:
        if self.queue:
            return self.queue[0], self.queue
        if self.pool.shared_queue:
            return self.pool.shared_queue[0], self.pool.shared_queue
        return None

    def try_admit(self, s: Request, queue: deque[Request]) -> bool:
        """Admit s if the KV cache holds its whole prompt, evicting cached prefixes if needed."""
        cap = self.pool.kv_capacity
        while self.kv_used() + s.target - self.cached_prefix_for(s) > cap:
            if not self.evict_lru():
                return False
        queue.popleft()
        shared = self.cached_prefix_for(s)
        if shared > 0:
            cached = self.cache[s.group]
            cached.refs += 1
            cached.last_use = self.pool.use_clock()
            s.uses_prefix = True
            self.pool.stats["prefix_hits"] += 1
        s.kv = s.target - shared
        s.prefilled = shared
        s.decoding = False
        s.chunk = 0
        s.status = RUNNING
        s.replica = self.index
        s.version = 0
        if queue is self.pool.shared_queue:
            s.owner = self.index
            self.outstanding.add(s.index)
        self.running.append(s)
        if not s.admitted.triggered:
            s.admitted.fire()
        return True

    def make_room_for_decodes(self) -> None:
        """Step 1: every decoding sequence writes one KV token this iteration."""
        while True:
            decoding = self.decoding()
            if not decoding or self.kv_used() + len(decoding) <= self.pool.kv_capacity:
                return
            if not self.evict_lru():
                self.preempt(self.running[-1])

    def write_decode_kv(self, decoding: list[Request]) -> None:
        for s in decoding:
            s.decodes_now = True
            s.kv += 1

    def compose_chunked(self, decoding: list[Request], cutoff: float) -> None:
        pool = self.pool
        left = pool.budget - len(decoding)
        for s in self.prefilling():
            s.chunk = min(s.target - s.prefilled, left) if left > 0 else 0
            left -= s.chunk
        while left > 0 and len(self.running) < pool.max_num_seqs:
            head = self.queue_head()
            if head is None or head[0].arrival_s > cutoff or not self.try_admit(*head):
                break
            s = head[0]
            s.chunk = min(s.target - s.prefilled, left)
            left -= s.chunk

    def compose_prefill_first(self, cutoff: float) -> bool:
        """Admit whole prompts FIFO while they fit; True if the iteration is prefill-only."""
        pool = self.pool
        left = pool.budget
        admitted = 0
        while len(self.running) < pool.max_num_seqs:
            head = self.queue_head()
            if head is None:
                break
            s = head[0]
            if admitted > 0 and s.target > left:
                break
            if s.arrival_s > cutoff:
                break
            if not self.try_admit(*head):
                break
            s.chunk = s.target - s.prefilled
            left -= s.chunk
            admitted += 1
        return admitted > 0

    def compose(self, cutoff: float) -> float | None:
        """Decide and start the next iteration; its duration, or None when idle."""
        pool = self.pool
        if pool.batch_latency is not None:
            return self.compose_batch()
        self.make_room_for_decodes()
        decoding = self.decoding()
        for s in self.running:
            s.chunk = 0
            s.decodes_now = False
        if pool.chunked:
            # the decoding sequences' KV tokens are taken before any prompt is admitted
            self.write_decode_kv(decoding)
            self.compose_chunked(decoding, cutoff)
        elif self.compose_prefill_first(cutoff):
            decoding = []
        else:
            self.write_decode_kv(decoding)
        chunks = [s for s in self.running if s.chunk > 0]
        if not chunks and not decoding:
            return None
        prefill_tokens = sum(s.chunk for s in chunks)
        prefill_pairs = sum(chunk_pairs(s.chunk, s.prefilled) for s in chunks)
        prefill_context = sum(s.prefilled for s in chunks)
        logits = sum(1 for s in chunks if s.prefilled + s.chunk == s.target) + len(decoding)
        decode_context = sum(s.prompt + s.generated for s in decoding)
        pool.stats["iterations"] += 1
        if any(s.prefilled + s.chunk < s.target for s in chunks):
            pool.stats["partial_chunks"] += 1
        if chunks and decoding:
            pool.stats["mixed_iterations"] += 1
        if pool.service_mode:
            prefilling = self.prefilling()
            return prefilling[0].service_s if prefilling else 0.0
        return float(step_time(pool.params, prefill_tokens, prefill_pairs, prefill_context,
                               len(chunks), len(decoding), decode_context, logits))

    def compose_batch(self) -> float | None:
        """Dynamic batching: S waiting, or the head has waited max_queue_delay: run them all."""
        pool = self.pool
        self.deadline = None
        waiting = list(self.queue) + (list(pool.shared_queue) if pool.shared_queue else [])
        waiting = waiting[: pool.max_num_seqs]
        if not waiting:
            return None
        deadline = waiting[0].arrival_s + pool.max_queue_delay_s
        if len(waiting) < pool.max_num_seqs and self.env.now < deadline:
            self.deadline = deadline
            return None
        self.batch = []
        for s in waiting:
            queue = self.queue if self.queue else pool.shared_queue
            assert queue.popleft() is s
            s.status = RUNNING
            s.replica = self.index
            s.version = 0
            if queue is pool.shared_queue:
                s.owner = self.index
                self.outstanding.add(s.index)
            s.admitted.fire()
            self.batch.append(s)
        pool.stats["iterations"] += 1
        a_s, c_s = pool.batch_latency  # type: ignore[misc]
        return a_s + c_s * len(self.batch)

    def end_batch(self, seen: float) -> None:
        """Every request of the batch completes, first token and all, in request order."""
        for s in sorted(self.batch, key=lambda s: s.index):
            s.first_token.fire(value=seen)
            s.status = DONE
            self.pool.cluster.replicas[s.owner].outstanding.discard(s.index)
            s.completed.fire(value=seen)
        self.batch = []

    # -- ending an iteration ----------------------------------------------------------------

    def end_iteration(self, seen: float) -> None:
        """Tokens of this iteration reach their clients at `seen` (after the front end)."""
        pool = self.pool
        finished: list[Request] = []
        for s in list(self.running):
            if s.chunk == 0:
                continue
            s.prefilled += s.chunk
            s.chunk = 0
            if s.prefilled < s.target:
                continue
            if not s.first_token.triggered:
                s.first_token.fire(value=seen)
            self.hand_prefix_to_cache(s)
            s.decoding = True
            s.generated += 1
            if s.generated >= s.output:
                finished.append(s)
        for s in self.running:
            if s.decodes_now:
                s.decodes_now = False
                s.generated += 1
                if s.generated >= s.output:
                    finished.append(s)
        for s in sorted(finished, key=lambda s: s.index):
            self.complete(s, seen)
        pool.check_kv(self)

    def hand_prefix_to_cache(self, s: Request) -> None:
        pool = self.pool
        if (pool.prefix_caching and s.group >= 0 and not s.uses_prefix and s.whole_prefix
                and s.group not in self.cache and s.prefix < s.target):
            self.cache[s.group] = CachedPrefix(s.prefix, 1, pool.use_clock())
            s.uses_prefix = True
            s.kv -= s.prefix
            pool.stats["prefixes_cached"] += 1

    def complete(self, s: Request, seen: float) -> None:
        self.running.remove(s)
        self.release_prefix(s)
        s.kv = 0
        s.decoding = False
        s.status = DONE
        self.pool.cluster.replicas[s.owner].outstanding.discard(s.index)
        s.completed.fire(value=seen)


def enqueue(queue: deque[Request], s: Request) -> None:
    """Join a queue behind every waiting request of the same or a higher priority (FIFO
    within a priority; ahead of lower ones)."""
    for k, other in enumerate(queue):
        if other.priority < s.priority:
            queue.insert(k, s)
            return
    queue.append(s)


class Pool:
    """One pool: its engine settings, its router and shared queue, and its replicas."""

    def __init__(self, cluster: Cluster, index: int, first: int, *, replicas: int, max_num_seqs: int,
                 max_num_batched_tokens: int, chunked_prefill: bool, kv_capacity_tokens: int, max_model_len: int,
                 params: np.ndarray | None, prefix_caching: bool = True, async_scheduling: bool = False,
                 frontend_s: float = 0.0, frontend_per_step: float = 0.0,
                 batch_latency: tuple[float, float] | None = None, max_queue_delay_s: float = 0.0,
                 path: int = 0, loop_delay_s: float = 0.0) -> None:
        service_mode = cluster.service_mode
        self.cluster = cluster
        self.env = cluster.env
        self.index = index
        self.max_num_seqs = 1 if service_mode else max_num_seqs
        self.budget = max_num_batched_tokens
        self.chunked = chunked_prefill and not service_mode and batch_latency is None
        self.kv_capacity = kv_capacity_tokens
        self.max_model_len = max_model_len
        self.params = params
        self.router = cluster.router
        self.prefix_caching = prefix_caching
        self.service_mode = service_mode
        self.batch_latency = batch_latency
        self.max_queue_delay_s = max_queue_delay_s
        self.async_scheduling = async_scheduling and not service_mode and batch_latency is None
        self.frontend_s = frontend_s
        self.frontend_per_step = frontend_per_step
        self.path = path
        self.loop_delay_s = loop_delay_s
        self.shared_queue: deque[Request] = deque()
        self.router_memory = new_router_memory()
        self.stats = cluster.stats
        self.replicas = [Replica(self, first + r) for r in range(replicas)]

    def frontend_delay(self, step_s: float) -> float:
        """From an iteration's end to its tokens reaching the clients (as the kernel computes it)."""
        return self.frontend_s + self.frontend_per_step * step_s

    def use_clock(self) -> int:
        return self.cluster.use_clock()

    def queued(self) -> list[Request]:
        return [s for replica in self.replicas for s in replica.queue] + list(self.shared_queue)

    def oldest_queued_arrival(self) -> float:
        """The earliest arrival among the heads of the pool's queues (inf: nothing waits)."""
        heads = [q[0].arrival_s for q in [*(r.queue for r in self.replicas), self.shared_queue] if q]
        return min(heads, default=math.inf)

    def dispatch(self, s: Request) -> bool:
        """Reject, or put s in a queue and wake idle replicas; False when rejected."""
        if s.total > self.max_model_len or s.total > self.kv_capacity:
            s.status = REJECTED
            self.stats["rejections"] += 1
            return False
        s.status = WAITING
        s.target = s.prompt
        r = self.route(s)
        if r is not None:
            replica = self.cluster.replicas[r]
            enqueue(replica.queue, s)
            s.owner = r
            replica.outstanding.add(s.index)
            if replica.idle:
                replica.wake_up(first=True)
            return True
        enqueue(self.shared_queue, s)
        idle = [replica for replica in self.replicas if replica.idle]
        for k, replica in enumerate(idle):
            replica.wake_up(first=k == 0)
        return True

    def route(self, s: Request) -> int | None:
        """The replica whose queue s joins, or None for the shared queue (every replica is active)."""
        everyone = self.cluster.replicas
        outstanding = [len(replica.outstanding) for replica in everyone]
        cached = [int(s.group >= 0 and s.group in replica.cache) for replica in everyone]
        active = [replica.index for replica in self.replicas]
        if not active:
            return None
        r = ROUTERS[self.router].reference(active, outstanding, s.router_u, self.router_memory, s.group, cached)
        return None if r == SHARED_QUEUE else r

    def check_kv(self, replica: Replica) -> None:
        used = replica.kv_used()
        if used > self.kv_capacity or any(s.kv < 0 for s in replica.running):
            raise AssertionError(f"replica {replica.index}: KV {used} over {self.kv_capacity}")


class ApiPool:
    """A managed model API: no replicas; every request it admits starts on arrival, its first
    token after its TTFT draw and its last (output - 1) per-token draws later; its rate limit
    is the list of every request it admitted, with its send time and tokens, read afresh at
    each send (those sent less than 60 s before count)."""

    WINDOW_S = 60.0

    def __init__(self, index: int, *, api: object, path: int = 0, loop_delay_s: float = 0.0, **_: object) -> None:
        self.index = index
        self.api = api
        self.path = path
        self.loop_delay_s = loop_delay_s
        self.replicas: list[Replica] = []
        self.admitted: list[tuple[float, int]] = []  # (send time, prompt + output tokens)

    def within_limit(self, s: Request, now: float) -> bool:
        recent = [tokens for sent, tokens in self.admitted if now - sent < self.WINDOW_S]
        rpm, tpm = self.api.requests_per_minute, self.api.tokens_per_minute  # type: ignore[attr-defined]
        return ((rpm is None or len(recent) + 1 <= rpm)
                and (tpm is None or sum(recent) + s.total <= tpm))

    def admit(self, s: Request, now: float) -> None:
        self.admitted.append((now, s.total))

    def ttft(self, s: Request) -> float:
        api = self.api
        return api.ttft_median_s * math.exp(api.ttft_sigma * s.ttft_z)  # type: ignore[attr-defined]

    def tpot(self, s: Request) -> float:
        api = self.api
        return api.tpot_median_s * math.exp(api.tpot_sigma * s.tpot_z)  # type: ignore[attr-defined]


@dataclass
class OraclePath:
    one_way_s: float = 0.0
    bandwidth_bytes_per_s: float = math.inf
    jitter_s: float = 0.0
    windows: list[tuple[float, float]] = field(default_factory=list)
    free_at: float = -math.inf

    def back_at(self, t: float) -> float | None:
        """When the path comes back if it is cut at t, else None."""
        for start, end in self.windows:
            if start <= t < end:
                return end
        return None


@dataclass
class OracleRoute:
    pools: list[int]
    policy: str = "overflow"
    queue_per_replica: float = math.inf
    wait_s: float = math.inf
    weights: list[float] = field(default_factory=list)


PREFERRED, OVERFLOW, FAILOVER, WEIGHTED = 0, 1, 2, 3


class Cluster:
    """The pools, the paths to them and the routes; starts one process per request."""

    def __init__(self, env: simpy.Environment, requests: list[Request], pools: list[dict], *,
                 paths: list[OraclePath], routes: list[OracleRoute], class_route: list[int], router: str,
                 service_mode: bool, clients: int) -> None:
        if router not in ROUTERS:
            raise ValueError(f"unknown router {router!r}")
        self.env = env
        self.requests = requests
        self.router = router
        self.service_mode = service_mode
        self.clients = clients
        self.paths = paths
        self.routes = routes
        self.class_route = class_route
        self.uses = 0
        self.stats = {k: 0 for k in ("iterations", "preemptions", "rejections", "evictions",
                                     "prefix_hits", "prefixes_cached", "partial_chunks",
                                     "mixed_iterations", "overflows", "failovers", "resends", "rate_limited")}
        self.pools: list[Pool | ApiPool] = []
        self.replicas: list[Replica] = []
        for p, options in enumerate(pools):
            if options.get("api") is not None:
                self.pools.append(ApiPool(p, **options))
                continue
            pool = Pool(self, p, len(self.replicas), **{k: v for k, v in options.items() if k != "api"})
            self.pools.append(pool)
            self.replicas += pool.replicas
        self.next_unreleased = len(requests)
        if clients > 0:
            self.next_unreleased = min(clients, len(requests))
        for s in requests[: self.next_unreleased]:
            env.process(self.request_life(s, s.send_s))

    def use_clock(self) -> int:
        self.uses += 1
        return self.uses

    # -- a request's life -------------------------------------------------------------------

    def request_life(self, s: Request, send_at: float):
        n = len(self.requests)
        yield AtTime(self.env, send_at, ordered(SEND, s.index, n))
        s.send_s = self.env.now
        while True:
            choice = self.choose_pool(s)
            if isinstance(choice, tuple):
                break
            self.stats["resends"] += 1  # every path is cut: send again when one comes back
            yield AtTime(self.env, choice, ordered(SEND, s.index, n))
        p, s.reason = choice
        s.pool = p
        pool = self.pools[p]
        s.link_send_s = self.env.now
        if isinstance(pool, ApiPool):
            if pool.within_limit(s, self.env.now):
                pool.admit(s, self.env.now)
            else:
                s.limited = True
                self.stats["rate_limited"] += 1
        path = self.paths[pool.path]
        start = self.env.now if self.env.now > path.free_at else path.free_at
        path.free_at = start + s.size_bytes / path.bandwidth_bytes_per_s
        delay = max(path.one_way_s + path.jitter_s * s.jitter_z, 0.0)
        yield AtTime(self.env, path.free_at + delay, ordered(ARRIVAL, s.index, n))
        s.arrival_s = self.env.now
        if isinstance(pool, ApiPool):
            yield from self.api_life(s, pool)
            return
        if not pool.dispatch(s):
            s.done_s = self.env.now
            self.release_next(s)
            return
        yield s.admitted
        s.dispatch_s = self.env.now
        s.first_token_s = yield s.first_token
        s.done_s = yield s.completed
        self.release_next(s, s.done_s)

    def api_life(self, s: Request, pool: ApiPool):
        """At an API: 429 if it was over the limit when sent, else tokens after its draws."""
        n = len(self.requests)
        if s.limited:
            s.status = REJECTED
            s.done_s = self.env.now
            self.release_next(s)
            return
        s.status = RUNNING
        s.dispatch_s = self.env.now
        s.version = 0
        yield AtTime(self.env, self.env.now + pool.ttft(s), ordered(ARRIVAL, s.index, n))
        s.first_token_s = self.env.now
        if s.output > 1:
            yield AtTime(self.env, s.first_token_s + (s.output - 1) * pool.tpot(s), ordered(ARRIVAL, s.index, n))
        s.status = DONE
        s.done_s = self.env.now
        self.release_next(s, s.done_s)

    def choose_pool(self, s: Request) -> tuple[int, int] | float:
        """(pool, why) by the request's route, or the time the first candidate's path comes
        back when every candidate's path is cut (every replica of the oracle is active). An
        API over its rate limit is loaded: skipped, never the end of the chain, left out of
        a weighted draw, and taken (to answer 429) only when no pool with replicas is reachable."""
        route = self.routes[self.class_route[s.request_class]]
        now = self.env.now
        pools = [self.pools[p] for p in route.pools]
        up = [j for j, pool in enumerate(pools) if self.paths[pool.path].back_at(now) is None]
        if not up:
            return min(self.paths[pool.path].back_at(now) for pool in pools)  # type: ignore[type-var]

        def is_api(j: int) -> bool:
            return isinstance(pools[j], ApiPool)

        def serves(j: int) -> bool:
            pool = pools[j]
            return pool.within_limit(s, now) if isinstance(pool, ApiPool) else bool(pool.replicas)

        def fallback() -> tuple[int, int]:
            """Nothing can serve: queue at the first reachable pool with replicas, else 429 at
            the first reachable API."""
            queues = [j for j in up if not is_api(j)]
            j = queues[0] if queues else up[0]
            return route.pools[j], PREFERRED if j == 0 else FAILOVER

        available = [j for j in up if is_api(j) or pools[j].replicas]  # an API over its limit too

        def why(j: int) -> int:
            if j == 0:
                return PREFERRED
            return FAILOVER if any(k not in available for k in range(j)) else OVERFLOW

        if route.policy == "weighted":
            candidates = [j for j in up if serves(j)]
            total = sum(route.weights[j] for j in candidates)
            if total <= 0:  # no weight on any pool that can serve
                return fallback()
            acc, last = 0.0, None
            for j in candidates:
                if route.weights[j] <= 0:
                    continue
                last = route.pools[j]
                acc += route.weights[j]
                if s.route_u * total < acc:
                    return last, WEIGHTED
            return last, WEIGHTED  # type: ignore[return-value]
        for j in available:
            pool = pools[j]
            if isinstance(pool, ApiPool):
                if pool.within_limit(s, now):  # no queue of ours: no thresholds
                    return route.pools[j], why(j)
                continue
            in_pool = len(pool.queued()) + sum(len(r.running) + len(r.batch) for r in pool.replicas)
            loaded = (in_pool > route.queue_per_replica * len(pool.replicas)
                      or now - pool.oldest_queued_arrival() > route.wait_s)
            if not loaded:
                return route.pools[j], why(j)
        with_replicas = [j for j in available if not is_api(j)]
        if with_replicas:  # all loaded: the end of the chain
            return route.pools[with_replicas[-1]], why(with_replicas[-1])
        return fallback()

    def release_next(self, finished: Request, done_s: float | None = None) -> None:
        """Closed loop: a finished request lets its client send the next unreleased one after
        its pool's loop delay."""
        if self.clients > 0 and self.next_unreleased < len(self.requests):
            s = self.requests[self.next_unreleased]
            self.next_unreleased += 1
            at = (self.env.now if done_s is None else done_s) + self.pools[finished.pool].loop_delay_s
            self.env.process(self.request_life(s, at))


def run_cluster_oracle(
    pools: list[dict],
    send_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    paths: list[OraclePath] | None = None,
    routes: list[OracleRoute] | None = None,
    request_class: np.ndarray | None = None,
    class_route: list[int] | None = None,
    class_priority: list[int] | None = None,
    request_bytes: np.ndarray | None = None,
    jitter_z: np.ndarray | None = None,
    route_u: np.ndarray | None = None,
    router: str = "least_outstanding",
    router_u: np.ndarray | None = None,
    prefix_group: np.ndarray | None = None,
    prefix_tokens: np.ndarray | None = None,
    service_s: np.ndarray | None = None,
    clients: int = 0,
    api_z: np.ndarray | None = None,
) -> OracleResult:
    """Run the cluster to the end on the same inputs as `ClusterKernel` (every replica active;
    no client timeout, no replica failure). `pools` are `PoolConfig` fields as keywords (a
    managed API's with `api`, as `sim.kernels.batching.api_pool` makes them)."""
    n = len(send_s)
    env = simpy.Environment()
    if service_s is not None:  # one unit of service: one token in, one out
        prompt_tokens = output_tokens = np.ones(n, dtype=np.int64)
    classes = np.zeros(n, dtype=np.int64) if request_class is None else np.asarray(request_class)
    n_classes = int(classes.max()) + 1 if n else 1
    priorities = class_priority or [0] * n_classes
    requests = [
        Request(
            index=i,
            prompt=int(prompt_tokens[i]),
            output=int(output_tokens[i]),
            group=-1 if prefix_group is None else int(prefix_group[i]),
            prefix=0 if prefix_tokens is None else int(prefix_tokens[i]),
            service_s=0.0 if service_s is None else float(service_s[i]),
            router_u=0.0 if router_u is None else float(router_u[i]),
            env=env,
            send_s=float(send_s[i]),
            request_class=int(classes[i]),
            priority=int(priorities[int(classes[i])]),
            size_bytes=0.0 if request_bytes is None else float(request_bytes[i]),
            jitter_z=0.0 if jitter_z is None else float(jitter_z[i]),
            route_u=0.0 if route_u is None else float(route_u[i]),
            ttft_z=0.0 if api_z is None else float(api_z[i][0]),
            tpot_z=0.0 if api_z is None else float(api_z[i][1]),
        )
        for i in range(n)
    ]
    whole: dict[int, int] = {}
    for s in requests:
        if s.group >= 0:
            whole[s.group] = max(whole.get(s.group, 0), s.prefix)
    for s in requests:
        s.whole_prefix = s.group < 0 or s.prefix == whole[s.group]
    paths = [replace_path(p) for p in paths] if paths else [OraclePath()]
    routes = routes or [OracleRoute(pools=list(range(len(pools))))]
    cluster = Cluster(env, requests, pools, paths=paths, routes=routes,
                      class_route=class_route or [0] * n_classes, router=router,
                      service_mode=service_s is not None, clients=clients)
    env.run()

    def column(name: str, dtype: type) -> np.ndarray:
        return np.array([getattr(s, name) for s in requests], dtype=dtype)

    return OracleResult(
        send_s=column("send_s", float),
        link_send_s=column("link_send_s", float),
        pool=column("pool", np.int64),
        reason=column("reason", np.int64),
        arrival_s=column("arrival_s", float),
        dispatch_s=column("dispatch_s", float),
        first_token_s=column("first_token_s", float),
        done_s=column("done_s", float),
        replica=column("replica", np.int64),
        status=column("status", np.int64),
        preemptions=column("preemptions", np.int64),
        version=column("version", np.int64),
        stats=dict(cluster.stats),
    )


def replace_path(path: OraclePath) -> OraclePath:
    """A fresh copy (the oracle writes `free_at`)."""
    return OraclePath(path.one_way_s, path.bandwidth_bytes_per_s, path.jitter_s, list(path.windows))


def run_oracle(
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    replicas: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    chunked_prefill: bool,
    kv_capacity_tokens: int,
    max_model_len: int,
    params: np.ndarray | None = None,
    router: str = "least_outstanding",
    prefix_group: np.ndarray | None = None,
    prefix_tokens: np.ndarray | None = None,
    prefix_caching: bool = True,
    service_s: np.ndarray | None = None,
    router_u: np.ndarray | None = None,
    clients: int = 0,
    loop_delay_s: float = 0.0,
    batch_latency: tuple[float, float] | None = None,
    max_queue_delay_s: float = 0.0,
    async_scheduling: bool = False,
    frontend_s: float = 0.0,
    frontend_per_step: float = 0.0,
) -> OracleResult:
    """Run one pool to the end on the same inputs as `PoolKernel` (every replica active;
    requests arrive at `arrival_s`: a path of zero delay)."""
    pool = dict(replicas=replicas, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                chunked_prefill=chunked_prefill, kv_capacity_tokens=kv_capacity_tokens, max_model_len=max_model_len,
                params=params, prefix_caching=prefix_caching, async_scheduling=async_scheduling,
                frontend_s=frontend_s, frontend_per_step=frontend_per_step, batch_latency=batch_latency,
                max_queue_delay_s=max_queue_delay_s, loop_delay_s=loop_delay_s)
    return run_cluster_oracle([pool], arrival_s, prompt_tokens, output_tokens, router=router,
                              prefix_group=prefix_group, prefix_tokens=prefix_tokens, service_s=service_s,
                              router_u=router_u, clients=clients)
