"""Continuous batching: the serving pool's data plane, as a numba kernel.

A serving pool is a router in front of R replicas. Requests are not objects: they are rows of
a few arrays, and the pool's whole state (queues, running batches, KV-cache use, prefix
caches) is arrays too, so `advance(state, t)` can stop at any time t and resume exactly where
it stopped. Advancing to t1 and then to t2 gives bit-identical results to advancing to t2.

Semantics (the pure-SimPy oracle in tests/ implements exactly these; keep them in step):

Events. Two kinds: a request *arrives* at the pool (time `arrival`, already including the
network), and a replica's *iteration ends*. Events are taken in time order; at equal times
arrivals go first (lowest request index first), then iteration ends (lowest replica first).
`advance(t)` takes every event with time <= t.

Dispatch (at arrival). A request whose prompt + output exceeds `max_model_len` or the
replica's KV capacity is *rejected* (status REJECTED, done = arrival). Otherwise the router
picks a queue: an active replica's own queue, or the shared queue all replicas pull from.
Routers are a family (`sim.routers`: shared_queue, round_robin, least_outstanding, random,
...); the pool is given the chosen router's numba function and calls it here, at one place
(`_route`), with the active replicas, their outstanding (dispatched-but-unfinished)
requests, the request's uniform u drawn up front and the router's own memory. With no
active replica the request waits in the shared queue. Then the chosen replica, if idle,
tries to start an iteration at that time; for the shared queue, idle active replicas try in
index order until the queue is empty.

Iteration composition (when a replica is idle and woken, or when its iteration ends), with
token budget B = max_num_batched_tokens and at most S = max_num_seqs running sequences:
 1. KV for decoding: every decoding sequence writes one KV token this iteration. While the
    decoding count d does not fit (kv_used + d > capacity), evict the least recently used
    unreferenced cached prefix; if none, preempt the newest running sequence (recompute: it
    frees its KV, keeps the tokens it generated, and goes back to the head of its replica's
    own queue, even if it came from the shared queue). The d tokens are then taken.
 2. Chunked prefill on: the decoding sequences take d tokens of the budget; sequences already
    in prefill continue in admission order, each taking min(remaining prompt, budget left);
    then new sequences are admitted (own queue first, then the shared queue; FIFO) while
    fewer than S run, budget is left, and KV holds their whole prompt (after evicting
    unreferenced cached prefixes if needed); each takes min(prompt, budget left).
    Every decoding sequence decodes even if d exceeds the budget.
    Chunked prefill off (prefill first): if the queue head can be admitted (S, KV, and its
    whole prompt within the budget, or it is alone), the iteration is prefill only: admit
    FIFO while they fit, whole prompts; otherwise it decodes every decoding sequence. The
    budget check counts the whole prompt; only the tokens computed (not a cached prefix)
    use the budget up.
 3. An empty batch leaves the replica idle. Otherwise the iteration ends after the time the
    service model gives it: `step_time(...)` (sim.kernels.roofline) for the roofline, or,
    in service-time mode, the service time of its single request.
A draining or offline replica admits nothing; a draining one finishes what it runs.

Async scheduling (`async_scheduling`, as vLLM V1 does by default since late 2025): the engine
schedules iteration k+1 while iteration k runs, so the iteration composed when iteration k
ends admits only requests that had arrived when iteration k *started*; later arrivals wait
for the next one (about one more iteration of TTFT). If that leaves nothing to run, the
scheduler looks again at once, with every arrival so far. An idle replica schedules a new
arrival immediately.

Prefix caching. A request in prefix group g whose prefix is cached on the replica skips the
prefix's prefill and holds no KV for it (it references the cached copy). A request that
computes the prefix hands those KV tokens to the cache when its prefill completes (unless the
prefix was cached meanwhile, or the prefix is not shorter than what was prefilled; hand-offs
in one iteration go in admission order). The last prompt token is always computed, even when
the whole prompt is a cached prefix. Cached prefixes count against KV capacity; only
unreferenced ones are evicted, least recently used first (a use is a hand-off or the
admission of a request that hits it).

Iteration end. Chunks advance; a sequence whose prefill completes produces its first token
and starts decoding; every sequence that was decoding produced one token. Tokens reach the
client through the engine's front end (API server: detokenising, streaming) a delay
`frontend_s + frontend_per_step x (the iteration's duration)` after the iteration ends: that
is first_token, and done for the last token (the replica frees its KV at the iteration end). A sequence with G generated tokens after decode step D (an iteration in which
the decoding sequences advance; prefill-only iterations are not decode steps) finishes at
step D + (output - G); sequences finishing at the same iteration complete in request
order. KV accounting is per token (paged blocks are not modelled; vLLM wastes fewer than
block_size tokens per sequence).

Service models (`sim.kernels.service_models`). Besides the roofline (LLMs, continuous
batching), two simpler ones run on the same queues: *service-time* mode (batch size 1, each
request's service time drawn up front; how queueing theory checks the engine) and *dynamic
batching* for classic models (CNN/BERT classifiers): an idle replica starts a batch of up to
S queued requests when S are waiting or when the head of its queue (its own, else the shared
one) has waited `max_queue_delay` since arriving at the pool, and the batch takes a + c x b
seconds; all its requests complete (first token = done) at its end. A service model is a
row of that module's table: how a replica composes an iteration (continuous or dynamic
batching: the one branch in `_compose` and the one at an iteration's end in `advance`) and
a numba function, passed in like the router, for how long an iteration takes.

Closed loop (clients > 0): requests beyond the first `clients` have no arrival time; when a
request completes (done, or rejected) at time t, the next unreleased request arrives at
t + loop_delay; pending arrivals are kept in time order.

Per request the kernel records the replica, the time it was first scheduled (dispatch), the
first token, completion, the model version of the replica when it was last admitted, its
status, the number of preemptions and the number of attempts.

Faults (none of this happens in a run without faults: with no `fail` call and an infinite
client timeout, everything above is unchanged, and the oracle need not model it).
 - *Client timeout.* Each request has a deadline: its arrival at the pool plus its patience
   (`timeout_s`, or per request `patience_s`, e.g. what is left of the client's timeout after
   the network). A request still WAITING at its deadline that has not been admitted in its
   current attempt fails there: status FAILED, done = deadline; it leaves its queue (and its
   replica's outstanding count). This is a third kind of event, taken after arrivals and
   iteration ends at the same time (a request admitted exactly at its deadline is served),
   in deadline order (lowest request index on ties). A preempted request was admitted, so it
   does not time out; a retried one (below) was not, in its new attempt.
 - `fail(r)` (a control call, after `advance_to(now)`): replica r goes DOWN at once. Its
   iteration in flight is lost (busy time counts only up to now). Every request admitted to r
   in its current attempt (running, or preempted and queued on r) loses its progress: its KV
   is freed, prefill and generated tokens, first token and dispatch are reset, and it makes
   another attempt, unless it has used `max_attempts` attempts or its deadline has passed, in
   which case it fails now (FAILED, done = now). A new attempt is routed again as a new
   arrival would be (to the tail of the queue the router picks among the active replicas, or
   the shared queue), oldest arrival first; then the requests queued on r but never admitted
   are routed the same way, in their queue order, unchanged. (Unlike a drain, which moves its
   queue to the shared queue: there they would wait behind every replica's own queue.)
   r's prefix cache is lost. Idle active replicas are then woken in index order. Failing a
   DOWN replica does nothing.
 - While DOWN, a replica admits and runs nothing; `drain`, `activate` and `deactivate` only
   record the state it returns to; `restore(r)` brings it back in that state (waking it if
   ACTIVE).
 - `withdraw(index, done_s)`, before the first advance in an open loop: requests that never
   reach the pool (cut off on the way, or sent to another pool). With `done_s` they are
   FAILED at those times; without, they stay PENDING (another pool answers them).
Every request ends exactly once: DONE, REJECTED or FAILED, or it is still PENDING, WAITING or
RUNNING at the end of the run (unfinished).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import njit, types
from numba.core.typing.typeof import typeof_impl

from sim.kernels.service_models import (
    DYNAMIC,
    ITERATION_SIGNATURE,
    ITERATION_TYPE,
    SERVICE_MODELS,
    default_service_model,
)
from sim.routers import ROUTER_SIGNATURE, ROUTER_TYPE, ROUTERS, SHARED_QUEUE, new_router_memory

INF = np.inf

# Request status.
PENDING = 0  # not arrived yet (or not released, in a closed loop)
WAITING = 1
RUNNING = 2
DONE = 3
REJECTED = 4
FAILED = 5  # timed out waiting, out of attempts after replica failures, or cut off on the way

# Replica state.
OFFLINE = 0
ACTIVE = 1
DRAINING = 2
DOWN = 3  # failed; PI_WANTED holds the state it returns to when restored

# In-flight states of a replica.
IDLE = 0
BUSY = 1
TIMER = 2  # waiting for a dynamic batch to fill or its oldest request to wait long enough

# Integer request fields (req_i[:, F]).
RI_PROMPT = 0
RI_OUTPUT = 1
RI_GROUP = 2
RI_PREFIX = 3
RI_STATUS = 4
RI_REPLICA = 5
RI_VERSION = 6
RI_PREEMPTIONS = 7
RI_TARGET = 8  # prompt tokens to prefill in the current admission (prompt + generated)
RI_PREFILLED = 9
RI_GEN0 = 10  # tokens generated before the current admission
RI_FINISH_STEP = 11  # decode step at which the request produces its last token
RI_KV_BASE = 12  # KV tokens held after prefill (target minus a shared prefix)
RI_CHUNK = 13  # prefill tokens in the iteration in flight
RI_NEXT = 14  # next request in the same queue (linked list), -1 = none
RI_USES_PREFIX = 15  # 1 when it references a cached prefix
RI_RUN_POS = 16  # position in its replica's running array
RI_ADMITTED = 17  # admission stamp: the newest running sequence has the largest
RI_RETRIES = 18  # attempts lost to replica failures (attempts = retries + 1)
RI_QUEUE = 19  # the queue it waits in (valid while WAITING)
RI_SIZE = 20

# Float request fields (req_f[:, F]).
RF_ARRIVAL = 0
RF_DISPATCH = 1
RF_FIRST_TOKEN = 2
RF_DONE = 3
RF_SERVICE = 4
RF_RANDOM = 5
RF_PATIENCE = 6  # how long it may wait at the pool without being admitted (client timeout)
RF_SIZE = 7

# Integer replica fields (rep_i[:, F]).
PI_STATE = 0
PI_VERSION = 1
PI_IN_FLIGHT = 2
PI_ITERATIONS = 3
PI_RUNNING = 4
PI_PREFILLING = 5
PI_DECODING = 6
PI_DECODE_CONTEXT = 7
PI_KV_USED = 8
PI_OUTSTANDING = 9
PI_HEAP = 10
PI_ITER_DECODES = 11  # decoding sequences in the iteration in flight
PI_DECODE_STEPS = 12  # iterations in which the decoding sequences advanced
PI_WANTED = 13  # a DOWN replica's state when restored
PI_SIZE = 14

# Float replica fields (rep_f[:, F]).
PF_BUSY_UNTIL = 0
PF_BUSY_TIME = 1  # seconds spent in iterations (for utilisation)
PF_ITER_START = 2
PF_LONGEST = 3  # the longest iteration so far (bounds how late the front end delivers)
PF_SIZE = 4

# Configuration (cfg[F]).
C_REPLICAS = 0
C_MAX_SEQS = 1
C_BUDGET = 2
C_CHUNKED = 3
C_PREFIX_CACHING = 4
C_BATCHING = 5  # how replicas compose iterations: service_models.CONTINUOUS or DYNAMIC
C_KV_CAPACITY = 6
C_MAX_MODEL_LEN = 7
C_CLIENTS = 8
C_GROUPS = 9
C_DEADLINES = 10  # 1 when some request has a finite patience (client timeouts are events)
C_ASYNC = 11  # 1: async scheduling (an iteration is scheduled when the previous one starts)
C_SIZE = 12

# Float configuration (fcfg[F]).
F_LOOP_DELAY = 0  # closed loop: from a response reaching its client to the client's next request
F_FRONTEND_S = 1  # the front end's fixed delay from a token's iteration end to its client
F_FRONTEND_PER_STEP = 2  # ... plus this fraction of that iteration's duration
F_SIZE = 3

# Global counters (glob[F]).
G_NEXT_ARRIVAL = 0  # index into `order` of the next arrival to take
G_RELEASED = 1  # requests in `order` (all of them in open loop)
G_NEXT_UNRELEASED = 2  # next request a closed-loop client sends
G_USE_CLOCK = 3  # strictly increasing stamp for LRU order of cached prefixes
G_NEXT_DEADLINE = 4  # index into `deadline_order` of the next deadline to take
G_SIZE = 5

# Prefix cache fields (cache_i[r, g, F]).
K_CACHED = 0
K_REFS = 1
K_LAST_USE = 2
K_SIZE = 3


# ------------------------------------------------------------------------------------------
# Queues: singly linked lists of request ids; queue R is the shared queue.
# ------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _queue_push(queues, req_i, q, i):
    req_i[i, RI_NEXT] = -1
    req_i[i, RI_QUEUE] = q
    if queues[q, 1] < 0:
        queues[q, 0] = i
    else:
        req_i[queues[q, 1], RI_NEXT] = i
    queues[q, 1] = i


@njit(cache=True, inline="always")
def _queue_push_front(queues, req_i, q, i):
    req_i[i, RI_NEXT] = queues[q, 0]
    req_i[i, RI_QUEUE] = q
    queues[q, 0] = i
    if queues[q, 1] < 0:
        queues[q, 1] = i


@njit(cache=True, inline="always")
def _queue_pop(queues, req_i, q):
    i = queues[q, 0]
    nxt = req_i[i, RI_NEXT]
    queues[q, 0] = nxt
    if nxt < 0:
        queues[q, 1] = -1
    req_i[i, RI_NEXT] = -1
    return i


@njit(cache=True)
def _queue_remove(queues, req_i, q, i):
    """Take request i out of queue q wherever it is (a timeout); O(position), usually the head."""
    prev = -1
    k = queues[q, 0]
    while k >= 0 and k != i:
        prev = k
        k = req_i[k, RI_NEXT]
    if k < 0:
        return False
    nxt = req_i[i, RI_NEXT]
    if prev < 0:
        queues[q, 0] = nxt
    else:
        req_i[prev, RI_NEXT] = nxt
    if queues[q, 1] == i:
        queues[q, 1] = prev
    req_i[i, RI_NEXT] = -1
    return True


# ------------------------------------------------------------------------------------------
# Completion heap per replica, keyed by (finish iteration, request id).
# ------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _heap_less(hk, hr, r, a, b):
    return hk[r, a] < hk[r, b] or (hk[r, a] == hk[r, b] and hr[r, a] < hr[r, b])


@njit(cache=True, inline="always")
def _heap_push(rep_i, hk, hr, r, key, req):
    n = rep_i[r, PI_HEAP]
    hk[r, n] = key
    hr[r, n] = req
    rep_i[r, PI_HEAP] = n + 1
    while n > 0:
        parent = (n - 1) // 2
        if _heap_less(hk, hr, r, n, parent):
            hk[r, n], hk[r, parent] = hk[r, parent], hk[r, n]
            hr[r, n], hr[r, parent] = hr[r, parent], hr[r, n]
            n = parent
        else:
            break


@njit(cache=True, inline="always")
def _heap_pop(rep_i, hk, hr, r):
    top = hr[r, 0]
    n = rep_i[r, PI_HEAP] - 1
    rep_i[r, PI_HEAP] = n
    hk[r, 0] = hk[r, n]
    hr[r, 0] = hr[r, n]
    i = 0
    while True:
        left = 2 * i + 1
        right = left + 1
        smallest = i
        if left < n and _heap_less(hk, hr, r, left, smallest):
            smallest = left
        if right < n and _heap_less(hk, hr, r, right, smallest):
            smallest = right
        if smallest == i:
            break
        hk[r, i], hk[r, smallest] = hk[r, smallest], hk[r, i]
        hr[r, i], hr[r, smallest] = hr[r, smallest], hr[r, i]
        i = smallest
    return top


@njit(cache=True)
def _heap_remove(rep_i, hk, hr, r, req):
    """Remove a request from the heap (preemption); O(n), preemptions are rare."""
    n = rep_i[r, PI_HEAP]
    pos = -1
    for k in range(n):
        if hr[r, k] == req:
            pos = k
            break
    if pos < 0:
        return
    # Rebuild without it: simple and correct for the small heaps of one replica.
    keys = np.empty(n - 1, dtype=np.int64)
    reqs = np.empty(n - 1, dtype=np.int64)
    m = 0
    for k in range(n):
        if k != pos:
            keys[m] = hk[r, k]
            reqs[m] = hr[r, k]
            m += 1
    rep_i[r, PI_HEAP] = 0
    for k in range(m):
        _heap_push(rep_i, hk, hr, r, keys[k], reqs[k])


# ------------------------------------------------------------------------------------------
# KV cache and prefix cache
# ------------------------------------------------------------------------------------------


@njit(cache=True)
def _evict_one(rep_i, cache_i, r, prefix_tokens_of_group, groups):
    """Evict the least recently used unreferenced cached prefix; False when there is none."""
    best = -1
    for g in range(groups):
        if cache_i[r, g, K_CACHED] == 1 and cache_i[r, g, K_REFS] == 0 and (
            best < 0 or cache_i[r, g, K_LAST_USE] < cache_i[r, best, K_LAST_USE]
        ):
            best = g
    if best < 0:
        return False
    cache_i[r, best, K_CACHED] = 0
    rep_i[r, PI_KV_USED] -= prefix_tokens_of_group[best]
    return True


@njit(cache=True, inline="always")
def _generated(req_i, rep_i, i, r):
    """Tokens generated so far by a running, decoding request, after the last ended iteration."""
    return req_i[i, RI_OUTPUT] - (req_i[i, RI_FINISH_STEP] - rep_i[r, PI_DECODE_STEPS])


@njit(cache=True, inline="always")
def _kv_held(req_i, rep_i, i, r):
    if req_i[i, RI_PREFILLED] < req_i[i, RI_TARGET]:
        return req_i[i, RI_KV_BASE]
    g = _generated(req_i, rep_i, i, r)
    return req_i[i, RI_KV_BASE] + (g - req_i[i, RI_GEN0] - 1)


@njit(cache=True, inline="always")
def _remove_at(arr, r, count, pos):
    for k in range(pos, count - 1):
        arr[r, k] = arr[r, k + 1]


@njit(cache=True, inline="always")
def _remove_value(arr, r, count, value):
    for k in range(count):
        if arr[r, k] == value:
            _remove_at(arr, r, count, k)
            return True
    return False


@njit(cache=True, inline="always")
def _drop_running(req_i, rep_i, running, r, i):
    """Remove request i from replica r's running set (unordered: the last fills its slot)."""
    last = rep_i[r, PI_RUNNING] - 1
    pos = req_i[i, RI_RUN_POS]
    moved = running[r, last]
    running[r, pos] = moved
    req_i[moved, RI_RUN_POS] = pos
    rep_i[r, PI_RUNNING] = last


@njit(cache=True, inline="always")
def _release_prefix(req_i, cache_i, r, i):
    if req_i[i, RI_USES_PREFIX] == 1:
        cache_i[r, req_i[i, RI_GROUP], K_REFS] -= 1
        req_i[i, RI_USES_PREFIX] = 0


@njit(cache=True)
def _preempt_newest(req_i, rep_i, running, prefilling, hk, hr, cache_i, queues, r):
    n = rep_i[r, PI_RUNNING]
    newest = 0
    for k in range(1, n):
        if req_i[running[r, k], RI_ADMITTED] > req_i[running[r, newest], RI_ADMITTED]:
            newest = k
    i = running[r, newest]
    _drop_running(req_i, rep_i, running, r, i)
    held = _kv_held(req_i, rep_i, i, r)
    if req_i[i, RI_PREFILLED] < req_i[i, RI_TARGET]:
        _remove_value(prefilling, r, rep_i[r, PI_PREFILLING], i)
        rep_i[r, PI_PREFILLING] -= 1
        generated = req_i[i, RI_GEN0]
    else:
        generated = _generated(req_i, rep_i, i, r)
        rep_i[r, PI_DECODING] -= 1
        rep_i[r, PI_DECODE_CONTEXT] -= req_i[i, RI_PROMPT] + generated
        _heap_remove(rep_i, hk, hr, r, i)
    rep_i[r, PI_KV_USED] -= held
    _release_prefix(req_i, cache_i, r, i)
    req_i[i, RI_GEN0] = generated
    req_i[i, RI_TARGET] = req_i[i, RI_PROMPT] + generated
    req_i[i, RI_PREFILLED] = 0
    req_i[i, RI_STATUS] = WAITING
    req_i[i, RI_PREEMPTIONS] += 1
    _queue_push_front(queues, req_i, r, i)


@njit(cache=True)
def _try_admit(req_i, req_f, rep_i, running, prefilling, cache_i, prefix_tokens_of_group, glob, cfg, r, i, t,
               kv_cap, from_shared):
    """Admit request i to replica r if KV holds its prompt; returns the tokens it must prefill."""
    shared = 0
    group = req_i[i, RI_GROUP]
    caching = cfg[C_PREFIX_CACHING] == 1 and group >= 0
    if caching and cache_i[r, group, K_CACHED] == 1:
        shared = min(req_i[i, RI_PREFIX], req_i[i, RI_TARGET] - 1)  # recompute at least the last token
    need = req_i[i, RI_TARGET] - shared
    while rep_i[r, PI_KV_USED] + need > kv_cap:
        if not _evict_one(rep_i, cache_i, r, prefix_tokens_of_group, cfg[C_GROUPS]):
            return -1
        if caching and cache_i[r, group, K_CACHED] == 0 and shared > 0:
            shared = 0  # evicted our own prefix: compute it after all
            need = req_i[i, RI_TARGET]
    if shared > 0:
        cache_i[r, group, K_REFS] += 1
        cache_i[r, group, K_LAST_USE] = glob[G_USE_CLOCK]
        glob[G_USE_CLOCK] += 1
        req_i[i, RI_USES_PREFIX] = 1
    rep_i[r, PI_KV_USED] += need
    req_i[i, RI_KV_BASE] = need
    req_i[i, RI_PREFILLED] = shared
    req_i[i, RI_STATUS] = RUNNING
    req_i[i, RI_REPLICA] = r
    req_i[i, RI_VERSION] = rep_i[r, PI_VERSION]
    if np.isnan(req_f[i, RF_DISPATCH]):
        req_f[i, RF_DISPATCH] = t
    if from_shared:
        rep_i[r, PI_OUTSTANDING] += 1
    running[r, rep_i[r, PI_RUNNING]] = i
    req_i[i, RI_RUN_POS] = rep_i[r, PI_RUNNING]
    req_i[i, RI_ADMITTED] = glob[G_USE_CLOCK]
    glob[G_USE_CLOCK] += 1
    rep_i[r, PI_RUNNING] += 1
    prefilling[r, rep_i[r, PI_PREFILLING]] = i
    rep_i[r, PI_PREFILLING] += 1
    return req_i[i, RI_TARGET] - shared


@njit(cache=True, inline="always")
def _queue_head(queues, rep_i, r, shared_q):
    """The next request replica r would admit: its own queue first, then the shared one."""
    if queues[r, 0] >= 0:
        return r
    if rep_i[r, PI_STATE] == ACTIVE and queues[shared_q, 0] >= 0:
        return shared_q
    return -1


@njit(cache=True)
def _compose_dynamic_batch(req_i, req_f, rep_i, rep_f, running, prefilling, queues, glob, cfg, params, r, t,
                           iteration_s):
    """Classic models: run a batch when it is full or its oldest request waited long enough.

    latency(b) = a + c x b (params[0], params[1]); the oldest queued request waits at most
    params[2] seconds after arriving at the pool before a partial batch starts.
    """
    shared_q = cfg[C_REPLICAS]
    max_batch = cfg[C_MAX_SEQS]
    own = queues[r, 0]
    pull_shared = rep_i[r, PI_STATE] == ACTIVE
    waiting = 0
    k = own
    while k >= 0 and waiting < max_batch:
        waiting += 1
        k = req_i[k, RI_NEXT]
    if pull_shared:
        k = queues[shared_q, 0]
        while k >= 0 and waiting < max_batch:
            waiting += 1
            k = req_i[k, RI_NEXT]
    if waiting == 0:
        rep_i[r, PI_IN_FLIGHT] = IDLE
        rep_f[r, PF_BUSY_UNTIL] = INF
        return False
    head = own if own >= 0 else queues[shared_q, 0]
    deadline = req_f[head, RF_ARRIVAL] + params[2]
    if waiting < max_batch and t < deadline:
        rep_i[r, PI_IN_FLIGHT] = TIMER
        rep_f[r, PF_BUSY_UNTIL] = deadline
        return False
    for _ in range(waiting):
        q = r if queues[r, 0] >= 0 else shared_q
        i = _queue_pop(queues, req_i, q)
        if q == shared_q:
            rep_i[r, PI_OUTSTANDING] += 1
        req_i[i, RI_STATUS] = RUNNING
        req_i[i, RI_REPLICA] = r
        req_i[i, RI_VERSION] = rep_i[r, PI_VERSION]
        req_f[i, RF_DISPATCH] = t
        running[r, rep_i[r, PI_RUNNING]] = i
        req_i[i, RI_RUN_POS] = rep_i[r, PI_RUNNING]
        rep_i[r, PI_RUNNING] += 1
    dt = iteration_s(params, 0.0, 0, 0, 0, waiting, 0, 0, 0)
    rep_i[r, PI_IN_FLIGHT] = BUSY
    rep_i[r, PI_ITER_DECODES] = 0
    rep_f[r, PF_ITER_START] = t
    rep_f[r, PF_BUSY_UNTIL] = t + dt
    rep_f[r, PF_BUSY_TIME] += dt
    if dt > rep_f[r, PF_LONGEST]:
        rep_f[r, PF_LONGEST] = dt
    return True


@njit(cache=True)
def _end_dynamic_batch(req_i, req_f, rep_i, rep_f, running, cache_i, order, glob, cfg, r, fcfg):
    t = rep_f[r, PF_BUSY_UNTIL]
    seen = t + _frontend_delay(fcfg, t - rep_f[r, PF_ITER_START])
    rep_i[r, PI_ITERATIONS] += 1
    batch = np.sort(running[r, :rep_i[r, PI_RUNNING]].copy())  # complete in request order
    for i in batch:
        req_f[i, RF_FIRST_TOKEN] = seen
        req_i[i, RI_KV_BASE] = 0
        req_i[i, RI_GEN0] = req_i[i, RI_OUTPUT] - 1  # holds no KV: _complete frees nothing
        _complete(req_i, req_f, rep_i, running, cache_i, order, glob, cfg, r, i, seen, fcfg)
    rep_i[r, PI_IN_FLIGHT] = IDLE
    rep_f[r, PF_BUSY_UNTIL] = INF


@njit(cache=True)
def _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
             prefix_tokens_of_group, glob, cfg, params, r, t, cutoff, iteration_s):
    """Decide replica r's next iteration at time t and start it; returns False if idle.

    Only requests that arrived by `cutoff` are admitted (async scheduling: the iteration was
    scheduled when the previous one started). `iteration_s` is the service model's duration
    function (`sim.kernels.service_models`)."""
    if rep_i[r, PI_STATE] == OFFLINE or rep_i[r, PI_STATE] == DOWN:
        return False
    if cfg[C_BATCHING] == DYNAMIC:
        return _compose_dynamic_batch(req_i, req_f, rep_i, rep_f, running, prefilling, queues, glob, cfg,
                                      params, r, t, iteration_s)
    kv_cap = cfg[C_KV_CAPACITY]
    shared_q = cfg[C_REPLICAS]
    budget = cfg[C_BUDGET]
    max_seqs = cfg[C_MAX_SEQS]
    # 1. room for the decoding sequences' next KV token
    while rep_i[r, PI_DECODING] > 0 and rep_i[r, PI_KV_USED] + rep_i[r, PI_DECODING] > kv_cap:
        if not _evict_one(rep_i, cache_i, r, prefix_tokens_of_group, cfg[C_GROUPS]):
            _preempt_newest(req_i, rep_i, running, prefilling, hk, hr, cache_i, queues, r)
    prefill_tokens = 0
    prefill_pairs = 0
    prefill_context = 0
    prefill_seqs = 0
    logit_tokens = 0
    decodes = rep_i[r, PI_DECODING]
    admitting = rep_i[r, PI_STATE] == ACTIVE or queues[r, 0] >= 0
    if cfg[C_CHUNKED] == 1:
        # the decoding sequences' KV tokens are taken before any prompt is admitted
        rep_i[r, PI_KV_USED] += decodes
        left = budget - decodes
        # 2a. continuing prefills, in admission order
        for k in range(rep_i[r, PI_PREFILLING]):
            i = prefilling[r, k]
            req_i[i, RI_CHUNK] = 0
            if left <= 0:
                continue
            chunk = min(req_i[i, RI_TARGET] - req_i[i, RI_PREFILLED], left)
            req_i[i, RI_CHUNK] = chunk
            left -= chunk
        # 2b. admissions
        while admitting and left > 0 and rep_i[r, PI_RUNNING] < max_seqs:
            q = _queue_head(queues, rep_i, r, shared_q)
            if q < 0:
                break
            i = queues[q, 0]
            if rep_i[r, PI_STATE] == DRAINING and q != r:
                break
            if req_f[i, RF_ARRIVAL] > cutoff:
                break
            todo = _try_admit(req_i, req_f, rep_i, running, prefilling, cache_i,
                              prefix_tokens_of_group, glob, cfg, r, i, t, kv_cap, q != r)
            if todo < 0:
                break
            _queue_pop(queues, req_i, q)
            chunk = min(todo, left)
            req_i[i, RI_CHUNK] = chunk
            left -= chunk
        for k in range(rep_i[r, PI_PREFILLING]):
            i = prefilling[r, k]
            chunk = req_i[i, RI_CHUNK]
            if chunk > 0:
                done = req_i[i, RI_PREFILLED]
                prefill_seqs += 1
                prefill_tokens += chunk
                prefill_pairs += chunk * done + chunk * (chunk + 1) // 2
                prefill_context += done
                if done + chunk == req_i[i, RI_TARGET]:
                    logit_tokens += 1
    else:
        # prefill first: a prefill-only iteration when the queue head can be admitted
        left = budget
        admitted = 0
        while admitting and rep_i[r, PI_RUNNING] < max_seqs:
            q = _queue_head(queues, rep_i, r, shared_q)
            if q < 0:
                break
            i = queues[q, 0]
            need = req_i[i, RI_TARGET]
            if admitted > 0 and need > left:
                break
            if req_f[i, RF_ARRIVAL] > cutoff:
                break
            todo = _try_admit(req_i, req_f, rep_i, running, prefilling, cache_i,
                              prefix_tokens_of_group, glob, cfg, r, i, t, kv_cap, q != r)
            if todo < 0:
                break
            _queue_pop(queues, req_i, q)
            req_i[i, RI_CHUNK] = todo
            left -= todo
            admitted += 1
            prefill_seqs += 1
            done = req_i[i, RI_PREFILLED]
            prefill_tokens += todo
            prefill_pairs += todo * done + todo * (todo + 1) // 2
            prefill_context += done
            logit_tokens += 1
        if admitted > 0:
            decodes = 0
    if prefill_tokens == 0 and decodes == 0:
        rep_i[r, PI_IN_FLIGHT] = 0
        rep_f[r, PF_BUSY_UNTIL] = INF
        return False
    logit_tokens += decodes
    if cfg[C_CHUNKED] == 0:
        rep_i[r, PI_KV_USED] += decodes
    rep_i[r, PI_ITER_DECODES] = decodes
    service_s = req_f[prefilling[r, 0], RF_SERVICE] if rep_i[r, PI_PREFILLING] > 0 else 0.0
    dt = iteration_s(params, service_s, prefill_tokens, prefill_pairs, prefill_context, prefill_seqs, decodes,
                     rep_i[r, PI_DECODE_CONTEXT] if decodes > 0 else 0, logit_tokens)
    rep_i[r, PI_IN_FLIGHT] = 1
    rep_f[r, PF_ITER_START] = t
    rep_f[r, PF_BUSY_UNTIL] = t + dt
    rep_f[r, PF_BUSY_TIME] += dt
    if dt > rep_f[r, PF_LONGEST]:
        rep_f[r, PF_LONGEST] = dt
    return True


@njit(cache=True)
def _release_next(req_f, order, glob, t):
    """Closed loop: the next unreleased request arrives at t; pending arrivals stay in time order."""
    if glob[G_NEXT_UNRELEASED] >= order.shape[0]:
        return
    nxt = glob[G_NEXT_UNRELEASED]
    glob[G_NEXT_UNRELEASED] = nxt + 1
    req_f[nxt, RF_ARRIVAL] = t
    pos = glob[G_RELEASED]
    while pos > glob[G_NEXT_ARRIVAL] and req_f[order[pos - 1], RF_ARRIVAL] > t:
        order[pos] = order[pos - 1]
        pos -= 1
    order[pos] = nxt
    glob[G_RELEASED] += 1


@njit(cache=True, inline="always")
def _frontend_delay(fcfg, step_s):
    """How long after its iteration ends a token reaches the client (the engine's front end)."""
    return fcfg[F_FRONTEND_S] + fcfg[F_FRONTEND_PER_STEP] * step_s


@njit(cache=True, inline="always")
def _complete(req_i, req_f, rep_i, running, cache_i, order, glob, cfg, r, i, t, fcfg):
    """Request i's last token reaches its client at t; its replica frees what it held."""
    req_i[i, RI_STATUS] = DONE
    req_f[i, RF_DONE] = t
    rep_i[r, PI_KV_USED] -= req_i[i, RI_KV_BASE] + (req_i[i, RI_OUTPUT] - req_i[i, RI_GEN0] - 1)
    _release_prefix(req_i, cache_i, r, i)
    _drop_running(req_i, rep_i, running, r, i)
    rep_i[r, PI_OUTSTANDING] -= 1
    if cfg[C_CLIENTS] > 0:
        _release_next(req_f, order, glob, t + fcfg[F_LOOP_DELAY])


@njit(cache=True)
def _end_iteration(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i,
                   prefix_tokens_of_group, order, glob, cfg, r, fcfg):
    t = rep_f[r, PF_BUSY_UNTIL]
    seen = t + _frontend_delay(fcfg, t - rep_f[r, PF_ITER_START])  # when its tokens reach clients
    rep_i[r, PI_ITERATIONS] += 1
    if rep_i[r, PI_ITER_DECODES] > 0:
        rep_i[r, PI_DECODE_STEPS] += 1
        rep_i[r, PI_DECODE_CONTEXT] += rep_i[r, PI_ITER_DECODES]
    step = rep_i[r, PI_DECODE_STEPS]
    # prefill chunks advance; completed prefills produce their first token
    k = 0
    while k < rep_i[r, PI_PREFILLING]:
        i = prefilling[r, k]
        chunk = req_i[i, RI_CHUNK]
        req_i[i, RI_CHUNK] = 0
        if chunk == 0:
            k += 1
            continue
        req_i[i, RI_PREFILLED] += chunk
        if req_i[i, RI_PREFILLED] < req_i[i, RI_TARGET]:
            k += 1
            continue
        _remove_at(prefilling, r, rep_i[r, PI_PREFILLING], k)
        rep_i[r, PI_PREFILLING] -= 1
        if np.isnan(req_f[i, RF_FIRST_TOKEN]):
            req_f[i, RF_FIRST_TOKEN] = seen
        group = req_i[i, RI_GROUP]
        if (cfg[C_PREFIX_CACHING] == 1 and group >= 0 and req_i[i, RI_USES_PREFIX] == 0
                and cache_i[r, group, K_CACHED] == 0 and req_i[i, RI_PREFIX] < req_i[i, RI_TARGET]):
            # hand the computed prefix to the cache; the request now references it
            cache_i[r, group, K_CACHED] = 1
            cache_i[r, group, K_REFS] += 1
            cache_i[r, group, K_LAST_USE] = glob[G_USE_CLOCK]
            glob[G_USE_CLOCK] += 1
            req_i[i, RI_USES_PREFIX] = 1
            req_i[i, RI_KV_BASE] -= req_i[i, RI_PREFIX]
        generated = req_i[i, RI_GEN0] + 1
        req_i[i, RI_FINISH_STEP] = step + (req_i[i, RI_OUTPUT] - generated)
        if generated >= req_i[i, RI_OUTPUT]:
            req_i[i, RI_FINISH_STEP] = step
            _complete(req_i, req_f, rep_i, running, cache_i, order, glob, cfg, r, i, seen, fcfg)
            continue
        rep_i[r, PI_DECODING] += 1
        rep_i[r, PI_DECODE_CONTEXT] += req_i[i, RI_PROMPT] + generated
        _heap_push(rep_i, hk, hr, r, req_i[i, RI_FINISH_STEP], i)
    # decoding sequences that produced their last token
    while rep_i[r, PI_HEAP] > 0 and hk[r, 0] <= step:
        i = _heap_pop(rep_i, hk, hr, r)
        rep_i[r, PI_DECODING] -= 1
        rep_i[r, PI_DECODE_CONTEXT] -= req_i[i, RI_PROMPT] + req_i[i, RI_OUTPUT]
        _complete(req_i, req_f, rep_i, running, cache_i, order, glob, cfg, r, i, seen, fcfg)
    rep_i[r, PI_IN_FLIGHT] = 0
    rep_f[r, PF_BUSY_UNTIL] = INF
    return t


@njit(cache=True, inline="always")
def _route(req_f, rep_i, cfg, i, route, router_memory, active):
    """The queue a new request joins (a replica index, or R for the shared queue): the
    router's choice among the active replicas (`sim.routers`). `active` is scratch space."""
    n_rep = cfg[C_REPLICAS]
    n_active = 0
    for r in range(n_rep):
        if rep_i[r, PI_STATE] == ACTIVE:
            active[n_active] = r
            n_active += 1
    if n_active == 0:
        return n_rep
    q = route(active, n_active, rep_i[:, PI_OUTSTANDING], req_f[i, RF_RANDOM], router_memory)
    if q == SHARED_QUEUE:
        return n_rep
    if q < 0 or q >= n_rep or rep_i[q, PI_STATE] != ACTIVE:
        raise ValueError("the router chose a replica that is not active")
    return q


@njit(cache=True)
def _run_ahead(rep_i, rep_f, hk, queues, cfg, params, r, t_end, next_arrival, iteration_s):
    """Fast-forward replica r through decode-only iterations that change nothing but itself.

    While r's in-flight iteration is decode only, completes no sequence, ends before the next
    arrival and before t_end, r's queues are empty and KV holds the next token of every
    decoding sequence, the next iteration is the same batch one token longer: apply the end
    of the iteration and start the next one in place. No other replica or request can see the
    difference, so the result is bit-identical to taking each iteration end as an event; it
    only skips the event machinery. (Closed loops are excluded: another replica's completion
    may release an arrival earlier than r's next iteration end.)
    """
    if cfg[C_CLIENTS] > 0:
        return
    shared_q = cfg[C_REPLICAS]
    kv_cap = cfg[C_KV_CAPACITY]
    decodes = rep_i[r, PI_ITER_DECODES]
    if decodes == 0 or rep_i[r, PI_PREFILLING] > 0 or rep_i[r, PI_IN_FLIGHT] == 0:
        return
    end = rep_f[r, PF_BUSY_UNTIL]
    while True:
        if end > t_end or end >= next_arrival:
            return
        if rep_i[r, PI_HEAP] > 0 and hk[r, 0] <= rep_i[r, PI_DECODE_STEPS] + 1:
            return
        if queues[r, 0] >= 0 or (rep_i[r, PI_STATE] == ACTIVE and queues[shared_q, 0] >= 0):
            return
        if rep_i[r, PI_KV_USED] + decodes > kv_cap:
            return
        # the iteration ending at `end`: every decoding sequence produced one token
        rep_i[r, PI_ITERATIONS] += 1
        rep_i[r, PI_DECODE_STEPS] += 1
        rep_i[r, PI_DECODE_CONTEXT] += decodes
        # the next one: the same sequences, one token further
        rep_i[r, PI_KV_USED] += decodes
        dt = iteration_s(params, 0.0, 0, 0, 0, 0, decodes, rep_i[r, PI_DECODE_CONTEXT], decodes)
        rep_f[r, PF_ITER_START] = end
        end = end + dt
        rep_f[r, PF_BUSY_UNTIL] = end
        rep_f[r, PF_BUSY_TIME] += dt
        if dt > rep_f[r, PF_LONGEST]:
            rep_f[r, PF_LONGEST] = dt


@njit(cache=True)
def _expire(req_i, req_f, rep_i, queues, order, glob, cfg, i, t, fcfg):
    """Request i's deadline has come: if it still waits unadmitted, it fails (client timeout)."""
    if req_i[i, RI_STATUS] != WAITING or not np.isnan(req_f[i, RF_DISPATCH]):
        return False
    q = req_i[i, RI_QUEUE]
    _queue_remove(queues, req_i, q, i)
    if q < cfg[C_REPLICAS]:
        rep_i[q, PI_OUTSTANDING] -= 1
    req_i[i, RI_STATUS] = FAILED
    req_f[i, RF_DONE] = t
    if cfg[C_CLIENTS] > 0:
        _release_next(req_f, order, glob, t + fcfg[F_LOOP_DELAY])
    return True


# The entry points that take the router and the service model's duration are compiled for
# exactly one signature, with both as first-class functions (`sim.routers.ROUTER_TYPE`,
# `sim.kernels.service_models.ITERATION_TYPE`), the first time a pool is built
# (`_compile_entry_points`). Left to specialise on their arguments, they would be
# compiled once per router function, and such a specialisation is not found in the cache by
# the next process (measured with numba 0.68: every run would compile again).
_I32_2D = types.int32[:, ::1]
_I64_1D, _I64_2D, _I64_3D = types.int64[::1], types.int64[:, ::1], types.int64[:, :, ::1]
_F64_1D, _F64_2D = types.float64[::1], types.float64[:, ::1]
ADVANCE_SIGNATURE = types.int64(
    _I32_2D, _F64_2D, _I64_2D, _F64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_3D, _I64_2D,
    _I64_1D, _I64_1D, _I64_1D, _I64_1D, _I64_1D, _F64_1D, types.float64, _F64_1D, ROUTER_TYPE, _I64_1D,
    ITERATION_TYPE)
COMPOSE_SIGNATURE = types.boolean(
    _I32_2D, _F64_2D, _I64_2D, _F64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_3D, _I64_2D,
    _I64_1D, _I64_1D, _I64_1D, _F64_1D, types.int64, types.float64, types.float64, ITERATION_TYPE)
FAIL_SIGNATURE = types.int64[:](
    _I32_2D, _F64_2D, _I64_2D, _F64_2D, _I64_2D, _I64_3D, _I64_2D, _I64_1D, _I64_1D, _I64_1D,
    types.int64, types.float64, types.int64, _F64_1D, ROUTER_TYPE, _I64_1D)


@njit(cache=True)
def advance(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
            prefix_tokens_of_group, order, deadline_order, glob, cfg, params, t_end, fcfg,
            route, router_memory, iteration_s):
    """Run every arrival, iteration end and deadline with time <= t_end; returns events processed.

    `route` is the router's numba function (`sim.routers`), `router_memory` its state, and
    `iteration_s` the service model's duration function (`sim.kernels.service_models`)."""
    n_rep = cfg[C_REPLICAS]
    shared_q = n_rep
    kv_cap = cfg[C_KV_CAPACITY]
    closed = cfg[C_CLIENTS] > 0
    active = np.empty(n_rep, dtype=np.int64)  # the router's scratch: indices of active replicas
    events = 0
    while True:
        ta = INF
        if glob[G_NEXT_ARRIVAL] < glob[G_RELEASED]:
            ta = req_f[order[glob[G_NEXT_ARRIVAL]], RF_ARRIVAL]
        te = INF
        rmin = -1
        for r in range(n_rep):
            if rep_i[r, PI_IN_FLIGHT] != IDLE and rep_f[r, PF_BUSY_UNTIL] < te:
                te = rep_f[r, PF_BUSY_UNTIL]
                rmin = r
        # deadlines (client timeouts): INF without a timeout, so nothing below changes then
        td = INF
        j = -1
        if cfg[C_DEADLINES] == 1:
            deadlines = glob[G_RELEASED] if closed else deadline_order.shape[0]
            if glob[G_NEXT_DEADLINE] < deadlines:
                j = deadline_order[glob[G_NEXT_DEADLINE]]
                td = req_f[j, RF_ARRIVAL] + req_f[j, RF_PATIENCE]
        if ta == INF and te == INF and td == INF:
            break
        if td < ta and td < te:
            if td > t_end:
                break
            glob[G_NEXT_DEADLINE] += 1
            if _expire(req_i, req_f, rep_i, queues, order, glob, cfg, j, td, fcfg):
                events += 1
            continue
        if ta <= te:
            if ta > t_end:
                break
            i = order[glob[G_NEXT_ARRIVAL]]
            glob[G_NEXT_ARRIVAL] += 1
            events += 1
            total = req_i[i, RI_PROMPT] + req_i[i, RI_OUTPUT]
            if total > cfg[C_MAX_MODEL_LEN] or total > kv_cap:
                req_i[i, RI_STATUS] = REJECTED
                req_f[i, RF_DONE] = ta
                if cfg[C_CLIENTS] > 0:
                    _release_next(req_f, order, glob, ta + fcfg[F_LOOP_DELAY])
                continue
            q = _route(req_f, rep_i, cfg, i, route, router_memory, active)
            req_i[i, RI_STATUS] = WAITING
            req_i[i, RI_TARGET] = req_i[i, RI_PROMPT]
            _queue_push(queues, req_i, q, i)
            if q < n_rep:
                rep_i[q, PI_OUTSTANDING] += 1
                if rep_i[q, PI_IN_FLIGHT] != BUSY:
                    _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i,
                             queues, prefix_tokens_of_group, glob, cfg, params, q, ta, ta, iteration_s)
            else:
                for r in range(n_rep):
                    if rep_i[r, PI_IN_FLIGHT] != BUSY and rep_i[r, PI_STATE] == ACTIVE:
                        _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i,
                                 queues, prefix_tokens_of_group, glob, cfg, params, r, ta, ta, iteration_s)
                        if queues[shared_q, 0] < 0:
                            break
        else:
            if te > t_end:
                break
            events += 1
            if rep_i[rmin, PI_IN_FLIGHT] == TIMER:
                rep_i[rmin, PI_IN_FLIGHT] = IDLE
            elif cfg[C_BATCHING] == DYNAMIC:
                _end_dynamic_batch(req_i, req_f, rep_i, rep_f, running, cache_i, order, glob, cfg, rmin,
                                   fcfg)
            else:
                _end_iteration(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i,
                               prefix_tokens_of_group, order, glob, cfg, rmin, fcfg)
            # async scheduling: the next iteration was scheduled when the one ending now
            # started, so it admits only what had arrived by then; with nothing to run, the
            # scheduler looks again at once
            cutoff = rep_f[rmin, PF_ITER_START] if cfg[C_ASYNC] == 1 else te
            if not _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                            prefix_tokens_of_group, glob, cfg, params, rmin, te, cutoff, iteration_s) and cutoff < te:
                _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                         prefix_tokens_of_group, glob, cfg, params, rmin, te, te, iteration_s)
            next_arrival = INF
            if glob[G_NEXT_ARRIVAL] < glob[G_RELEASED]:
                next_arrival = req_f[order[glob[G_NEXT_ARRIVAL]], RF_ARRIVAL]
            _run_ahead(rep_i, rep_f, hk, queues, cfg, params, rmin, t_end, next_arrival, iteration_s)
    return events


@njit(cache=True)
def _reroute(req_i, req_f, rep_i, queues, cfg, i, route, router_memory, active):
    q = _route(req_f, rep_i, cfg, i, route, router_memory, active)
    _queue_push(queues, req_i, q, i)
    if q < cfg[C_REPLICAS]:
        rep_i[q, PI_OUTSTANDING] += 1


@njit(cache=True)
def _fail_replica(req_i, req_f, rep_i, rep_f, running, cache_i, queues, order, glob, cfg, r, t,
                  max_attempts, fcfg, route, router_memory):
    """Replica r fails at t (see the module docstring); returns the requests that failed for good."""
    lost = np.empty(rep_i[r, PI_RUNNING], dtype=np.int64)
    for k in range(rep_i[r, PI_RUNNING]):
        lost[k] = running[r, k]
    # r's own queue: preempted requests were admitted in this attempt, the others were not
    untouched = np.empty(0, dtype=np.int64)
    own = 0
    k = queues[r, 0]
    while k >= 0:
        own += 1
        k = req_i[k, RI_NEXT]
    if own > 0:
        keep = np.empty(own, dtype=np.int64)
        kept = 0
        extra = np.empty(own, dtype=np.int64)
        lost_queued = 0
        while queues[r, 0] >= 0:
            i = _queue_pop(queues, req_i, r)
            if np.isnan(req_f[i, RF_DISPATCH]):
                keep[kept] = i
                kept += 1
            else:
                extra[lost_queued] = i
                lost_queued += 1
        untouched = keep[:kept]
        lost = np.concatenate((lost, extra[:lost_queued]))
    # the replica: nothing runs, nothing is cached, the iteration in flight is lost
    if rep_i[r, PI_IN_FLIGHT] == BUSY and rep_f[r, PF_BUSY_UNTIL] > t:
        rep_f[r, PF_BUSY_TIME] -= rep_f[r, PF_BUSY_UNTIL] - t
    rep_i[r, PI_IN_FLIGHT] = IDLE
    rep_f[r, PF_BUSY_UNTIL] = INF
    rep_i[r, PI_RUNNING] = 0
    rep_i[r, PI_PREFILLING] = 0
    rep_i[r, PI_DECODING] = 0
    rep_i[r, PI_DECODE_CONTEXT] = 0
    rep_i[r, PI_ITER_DECODES] = 0
    rep_i[r, PI_KV_USED] = 0
    rep_i[r, PI_HEAP] = 0
    rep_i[r, PI_OUTSTANDING] = 0
    cache_i[r, :, :] = 0
    rep_i[r, PI_WANTED] = rep_i[r, PI_STATE]
    rep_i[r, PI_STATE] = DOWN
    # oldest arrival first (then request index): the order they go back to the shared queue
    keys = np.empty(lost.shape[0], dtype=np.float64)
    for k in range(lost.shape[0]):
        keys[k] = req_f[lost[k], RF_ARRIVAL]
    by_age = lost[np.argsort(keys, kind="mergesort")]
    failed = np.empty(lost.shape[0], dtype=np.int64)
    n_failed = 0
    retry = np.empty(lost.shape[0], dtype=np.int64)
    n_retry = 0
    for i in by_age:
        req_i[i, RI_PREFILLED] = 0
        req_i[i, RI_GEN0] = 0
        req_i[i, RI_TARGET] = req_i[i, RI_PROMPT]
        req_i[i, RI_KV_BASE] = 0
        req_i[i, RI_CHUNK] = 0
        req_i[i, RI_USES_PREFIX] = 0
        req_i[i, RI_FINISH_STEP] = 0
        req_f[i, RF_FIRST_TOKEN] = np.nan
        req_f[i, RF_DISPATCH] = np.nan
        out_of_attempts = max_attempts > 0 and req_i[i, RI_RETRIES] + 1 >= max_attempts
        timed_out = t >= req_f[i, RF_ARRIVAL] + req_f[i, RF_PATIENCE]
        if out_of_attempts or timed_out:
            req_i[i, RI_STATUS] = FAILED
            req_f[i, RF_DONE] = t
            failed[n_failed] = i
            n_failed += 1
            if cfg[C_CLIENTS] > 0:
                _release_next(req_f, order, glob, t + fcfg[F_LOOP_DELAY])
        else:
            req_i[i, RI_RETRIES] += 1
            req_i[i, RI_STATUS] = WAITING
            retry[n_retry] = i
            n_retry += 1
    # the router places them again, as new arrivals: retried ones first, oldest first
    active = np.empty(cfg[C_REPLICAS], dtype=np.int64)
    for k in range(n_retry):
        _reroute(req_i, req_f, rep_i, queues, cfg, retry[k], route, router_memory, active)
    for i in untouched:
        _reroute(req_i, req_f, rep_i, queues, cfg, i, route, router_memory, active)
    return failed[:n_failed]


class CompiledFunction(types.WrapperAddressProtocol):
    """A numba function handed to the kernel as a first-class function, by address.

    Numba converts a jit function passed as a `FunctionType` argument at every call (looking
    up its compiled version and its address: about 0.2 ms per `advance_to`, which the control
    plane calls thousands of times). This wrapper implements numba's wrapper-address protocol
    with the address looked up once."""

    def __init__(self, function: Any, signature: Any) -> None:
        from numba.experimental.function_type import _get_wrapper_address

        self.function = function
        self._signature = signature
        self._address = _get_wrapper_address(function, signature)
        self.function_type = types.FunctionType(signature)

    def __wrapper_address__(self) -> int:
        return self._address

    def signature(self) -> Any:
        return self._signature


@typeof_impl.register(CompiledFunction)
def _typeof_compiled_function(value: CompiledFunction, context: Any) -> Any:
    return value.function_type  # built once: numba would build a new FunctionType per call


@functools.cache
def compiled(function: Any, signature: Any) -> CompiledFunction:
    """The one CompiledFunction of a numba function (looked up once per process)."""
    return CompiledFunction(function, signature)


@functools.cache
def _compile_entry_points() -> None:
    """Compile (or load from the cache) the entry points that take a router or a duration
    function, for their one signature each, and allow no other: a call with any router or
    service model then converts it to the first-class function type instead of specialising."""
    for kernel, signature in ((_compose, COMPOSE_SIGNATURE), (advance, ADVANCE_SIGNATURE),
                              (_fail_replica, FAIL_SIGNATURE)):
        kernel.compile(signature)
        kernel.disable_compile()


# ------------------------------------------------------------------------------------------
# The Python face of the kernel: owns the arrays, exposes a handful of calls.
# ------------------------------------------------------------------------------------------


class PoolKernel:
    """The arrays of one serving pool and the calls that change them.

    Build it with the requests (arrival times at the pool, token counts, prefix groups) and
    the engine settings; then call `advance_to(t)` as often as you like, and the control
    calls (`drain`, `activate`, `deactivate`, `set_version`, and for faults `fail`,
    `restore`) between advances. Results are read from the request arrays (`arrival_s`,
    `dispatch_s`, `first_token_s`, `done_s`, `replica`, `version`, `status`, `preemptions`,
    `attempts`).

    Faults: `timeout_s` is the client timeout (how long a request may wait at the pool
    without being admitted), `patience_s` the same per request (open loop only), and
    `max_attempts` the most attempts a request makes when replicas fail (0: no limit).

    `router` names a member of `sim.routers.ROUTERS`; `service_model` one of
    `sim.kernels.service_models.SERVICE_MODELS` (by default `service_time` when `service_s`
    is given, `dynamic_batching` when `batch_latency` is, else `roofline`).
    """

    def __init__(
        self,
        arrival_s: np.ndarray,
        prompt_tokens: np.ndarray,
        output_tokens: np.ndarray,
        *,
        replicas: int,
        active_replicas: int | None = None,
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
        batch_latency: tuple[float, float] | None = None,
        max_queue_delay_s: float = 0.0,
        router_u: np.ndarray | None = None,
        clients: int = 0,
        loop_delay_s: float = 0.0,
        frontend_s: float = 0.0,
        frontend_per_step: float = 0.0,
        timeout_s: float = np.inf,
        patience_s: np.ndarray | None = None,
        max_attempts: int = 0,
        async_scheduling: bool = False,
        service_model: str | None = None,
    ) -> None:
        n = len(arrival_s)
        if not (len(prompt_tokens) == len(output_tokens) == n):
            raise ValueError("request arrays differ in length")
        if router not in ROUTERS:
            raise ValueError(f"unknown router {router!r}; allowed: {', '.join(ROUTERS)}")
        model = SERVICE_MODELS[service_model or default_service_model(service_s, batch_latency)]
        if service_s is not None and batch_latency is not None:
            raise ValueError("service_s and batch_latency are two different service models; pick one")
        if model.unit_requests and service_s is None:
            raise ValueError(f"service model {model.name!r} needs service_s: each request's service time")
        dynamic = model.batching == DYNAMIC
        if dynamic and batch_latency is None:
            raise ValueError(f"service model {model.name!r} needs batch_latency: (a, c) of a + c x b")
        _compile_entry_points()
        self.route = compiled(ROUTERS[router].choose, ROUTER_SIGNATURE)
        self.router_memory = new_router_memory()
        self.iteration_s = compiled(model.iteration_s, ITERATION_SIGNATURE)
        self.service_model = model.name
        self.n = n
        self.replicas = replicas
        self.req_i = np.zeros((n, RI_SIZE), dtype=np.int32)
        self.req_f = np.full((n, RF_SIZE), np.nan, dtype=np.float64)
        # a service-time request is one unit of service: one "token" in, one out
        self.req_i[:, RI_PROMPT] = 1 if model.unit_requests else prompt_tokens
        self.req_i[:, RI_OUTPUT] = 1 if model.unit_requests else output_tokens
        self.req_i[:, RI_GROUP] = -1 if prefix_group is None else prefix_group
        self.req_i[:, RI_PREFIX] = 0 if prefix_tokens is None else prefix_tokens
        self.req_i[:, RI_REPLICA] = -1
        self.req_i[:, RI_VERSION] = -1
        self.req_i[:, RI_NEXT] = -1
        self.req_f[:, RF_ARRIVAL] = arrival_s
        self.req_f[:, RF_SERVICE] = 0.0 if service_s is None else service_s
        self.req_f[:, RF_RANDOM] = 0.0 if router_u is None else router_u
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if patience_s is not None and clients > 0:
            raise ValueError("per-request patience_s needs an open loop; use timeout_s")
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0 (0: no limit), got {max_attempts}")
        self.req_f[:, RF_PATIENCE] = timeout_s if patience_s is None else patience_s
        if n and np.any(self.req_f[:, RF_PATIENCE] < 0):
            raise ValueError("patience_s must be >= 0 (a request with none left never reaches the pool)")
        self.max_attempts = int(max_attempts)
        max_seqs = 1 if model.unit_requests else max_num_seqs
        self.rep_i = np.zeros((replicas, PI_SIZE), dtype=np.int64)
        self.rep_f = np.zeros((replicas, PF_SIZE), dtype=np.float64)
        self.rep_f[:, PF_BUSY_UNTIL] = np.inf
        active = replicas if active_replicas is None else active_replicas
        self.rep_i[:active, PI_STATE] = ACTIVE
        self.running = np.zeros((replicas, max_seqs), dtype=np.int64)
        self.prefilling = np.zeros((replicas, max_seqs), dtype=np.int64)
        self.heap_key = np.zeros((replicas, max_seqs), dtype=np.int64)
        self.heap_req = np.zeros((replicas, max_seqs), dtype=np.int64)
        groups = int(self.req_i[:, RI_GROUP].max()) + 1 if n else 0
        groups = max(groups, 1)
        self.prefix_tokens_of_group = np.zeros(groups, dtype=np.int64)
        grouped = self.req_i[:, RI_GROUP] >= 0
        self.prefix_tokens_of_group[self.req_i[grouped, RI_GROUP]] = self.req_i[grouped, RI_PREFIX]
        self.cache_i = np.zeros((replicas, groups, K_SIZE), dtype=np.int64)
        self.queues = np.full((replicas + 1, 2), -1, dtype=np.int64)
        self.glob = np.zeros(G_SIZE, dtype=np.int64)
        if clients > 0:
            self.order = np.full(n, -1, dtype=np.int64)
            first = min(clients, n)
            self.order[:first] = np.argsort(arrival_s[:first], kind="stable")
            self.glob[G_RELEASED] = first
            self.glob[G_NEXT_UNRELEASED] = first
        else:
            self.order = np.argsort(arrival_s, kind="stable").astype(np.int64)
            self.glob[G_RELEASED] = n
            self.glob[G_NEXT_UNRELEASED] = n
        self.cfg = np.zeros(C_SIZE, dtype=np.int64)
        self.cfg[C_REPLICAS] = replicas
        self.cfg[C_MAX_SEQS] = max_seqs
        self.cfg[C_BUDGET] = max_num_batched_tokens
        self.cfg[C_CHUNKED] = 1 if chunked_prefill and not model.unit_requests and not dynamic else 0
        self.cfg[C_PREFIX_CACHING] = 1 if prefix_caching else 0
        self.cfg[C_BATCHING] = model.batching
        self.cfg[C_KV_CAPACITY] = kv_capacity_tokens
        self.cfg[C_MAX_MODEL_LEN] = max_model_len
        self.cfg[C_CLIENTS] = clients
        self.cfg[C_GROUPS] = groups
        # an engine's scheduler runs ahead; a service-time server or a batching server does not
        self.cfg[C_ASYNC] = 1 if async_scheduling and not model.unit_requests and not dynamic else 0
        if batch_latency is not None:
            params = np.array([batch_latency[0], batch_latency[1], max_queue_delay_s], dtype=np.float64)
        self.params = np.zeros(1) if params is None else np.ascontiguousarray(params, dtype=np.float64)
        self.cfg[C_DEADLINES] = int(bool(np.isfinite(self.req_f[:, RF_PATIENCE]).any()))
        self._order_deadlines()
        self.fcfg = np.zeros(F_SIZE, dtype=np.float64)
        self.fcfg[F_LOOP_DELAY] = loop_delay_s
        self.fcfg[F_FRONTEND_S] = frontend_s
        self.fcfg[F_FRONTEND_PER_STEP] = frontend_per_step
        self.now = 0.0
        self.events = 0
        self.advanced = False

    def _order_deadlines(self) -> None:
        """Requests in deadline order (then index); a closed loop's is its arrival order."""
        if self.cfg[C_CLIENTS] > 0 or self.cfg[C_DEADLINES] == 0:
            self.deadline_order = self.order  # no deadline is ever due: nothing reads it
            return
        index = self.order
        deadline = self.req_f[index, RF_ARRIVAL] + self.req_f[index, RF_PATIENCE]
        self.deadline_order = index[np.lexsort((index, deadline))].astype(np.int64)

    # -- the clock --------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        """Run every arrival and iteration end up to and including time t."""
        if t < self.now:
            raise ValueError(f"cannot advance backwards from {self.now} to {t}")
        self.events += advance(
            self.req_i, self.req_f, self.rep_i, self.rep_f, self.running, self.prefilling,
            self.heap_key, self.heap_req, self.cache_i, self.queues, self.prefix_tokens_of_group,
            self.order, self.deadline_order, self.glob, self.cfg, self.params, float(t),
            self.fcfg, self.route, self.router_memory, self.iteration_s,
        )
        self.advanced = True
        self.now = float(t)

    def _wake(self, r: int) -> None:
        if self.rep_i[r, PI_IN_FLIGHT] != BUSY:
            _compose(self.req_i, self.req_f, self.rep_i, self.rep_f, self.running, self.prefilling,
                     self.heap_key, self.heap_req, self.cache_i, self.queues,
                     self.prefix_tokens_of_group, self.glob, self.cfg, self.params, r, self.now, self.now,
                     self.iteration_s)

    # -- control calls (made by the SimPy world, after advance_to(env.now)) -----------------

    def drain(self, r: int) -> None:
        """Stop admitting on replica r; its queued requests move to the shared queue."""
        if self.rep_i[r, PI_STATE] == DOWN:
            self.rep_i[r, PI_WANTED] = DRAINING
            return
        self.rep_i[r, PI_STATE] = DRAINING
        shared = self.replicas
        moved = 0
        while self.queues[r, 0] >= 0:
            i = _queue_pop(self.queues, self.req_i, r)
            _queue_push(self.queues, self.req_i, shared, i)
            moved += 1
        self.rep_i[r, PI_OUTSTANDING] -= moved
        for other in range(self.replicas):
            if self.rep_i[other, PI_STATE] == ACTIVE:
                self._wake(other)

    def busy_until(self, r: int) -> float:
        """When replica r's iteration in flight ends (inf when it runs none)."""
        return float(self.rep_f[r, PF_BUSY_UNTIL])

    def next_event_time(self) -> float:
        """The time of the next event `advance_to` would take (an arrival, an iteration or
        batching timer ending, a client deadline); inf when none is left. Nothing in the pool
        changes before it."""
        glob, cfg = self.glob, self.cfg
        soonest = INF
        if glob[G_NEXT_ARRIVAL] < glob[G_RELEASED]:
            soonest = float(self.req_f[self.order[glob[G_NEXT_ARRIVAL]], RF_ARRIVAL])
        busy = self.rep_i[:, PI_IN_FLIGHT] != IDLE
        if busy.any():
            soonest = min(soonest, float(self.rep_f[busy, PF_BUSY_UNTIL].min()))
        if cfg[C_DEADLINES] == 1:
            deadlines = glob[G_RELEASED] if cfg[C_CLIENTS] > 0 else self.deadline_order.shape[0]
            if glob[G_NEXT_DEADLINE] < deadlines:
                j = self.deadline_order[glob[G_NEXT_DEADLINE]]
                soonest = min(soonest, float(self.req_f[j, RF_ARRIVAL] + self.req_f[j, RF_PATIENCE]))
        return soonest

    @property
    def frontend_min_lag_s(self) -> float:
        """The least time from an iteration's end to its tokens reaching the client."""
        return float(self.fcfg[F_FRONTEND_S])

    def has_queued(self, r: int) -> bool:
        """Requests wait in replica r's own queue (not yet admitted)."""
        return bool(self.queues[r, 0] >= 0)

    def is_idle(self, r: int) -> bool:
        """No running sequence and no iteration in flight."""
        return self.rep_i[r, PI_RUNNING] == 0 and self.rep_i[r, PI_IN_FLIGHT] != BUSY

    def deactivate(self, r: int) -> None:
        """Take an idle replica offline (its GPUs are released)."""
        if not self.is_idle(r):
            raise RuntimeError(f"replica {r} still runs requests; drain it first")
        if self.rep_i[r, PI_STATE] == DOWN:
            self.rep_i[r, PI_WANTED] = OFFLINE
            return
        self.rep_i[r, PI_STATE] = OFFLINE
        self.cache_i[r, :, :] = 0
        self.rep_i[r, PI_KV_USED] = 0

    def activate(self, r: int) -> None:
        """Bring replica r into service; it starts taking requests at once."""
        if self.rep_i[r, PI_STATE] == DOWN:
            self.rep_i[r, PI_WANTED] = ACTIVE
            return
        self.rep_i[r, PI_STATE] = ACTIVE
        self._wake(r)

    # -- faults (control calls too) ---------------------------------------------------------

    def fail(self, r: int) -> np.ndarray:
        """Replica r fails now: its admitted requests are retried or fail; it goes DOWN.

        Returns the requests that failed for good (out of attempts, or past their deadline).
        """
        if self.rep_i[r, PI_STATE] == DOWN:
            return np.empty(0, dtype=np.int64)
        failed = _fail_replica(self.req_i, self.req_f, self.rep_i, self.rep_f, self.running, self.cache_i,
                               self.queues, self.order, self.glob, self.cfg, r, self.now, self.max_attempts,
                               self.fcfg, self.route, self.router_memory)
        for other in range(self.replicas):
            if self.rep_i[other, PI_STATE] == ACTIVE:
                self._wake(other)
        return failed

    def restore(self, r: int) -> None:
        """Replica r is repaired: it returns to the state the control plane last asked for."""
        if self.rep_i[r, PI_STATE] != DOWN:
            return
        self.rep_i[r, PI_STATE] = self.rep_i[r, PI_WANTED]
        if self.rep_i[r, PI_STATE] == ACTIVE:
            self._wake(r)

    def is_down(self, r: int) -> bool:
        return bool(self.rep_i[r, PI_STATE] == DOWN)

    def wanted_state(self, r: int) -> int:
        """The state replica r is in, or, while DOWN, the one it returns to."""
        return int(self.rep_i[r, PI_WANTED] if self.rep_i[r, PI_STATE] == DOWN else self.rep_i[r, PI_STATE])

    def set_request_path(self, arrival_s: np.ndarray | None = None, patience_s: np.ndarray | float | None = None,
                         max_attempts: int | None = None) -> None:
        """Arrival times at the pool, patience and the retry limit, set after building the
        kernel and before its first advance (a closed loop takes one patience for all)."""
        if self.advanced:
            raise RuntimeError("the request path is set before the first advance")
        closed = self.cfg[C_CLIENTS] > 0
        if arrival_s is not None:
            if closed:
                raise RuntimeError("a closed loop releases its own arrivals")
            self.req_f[:, RF_ARRIVAL] = arrival_s
            self.order = self.order[np.lexsort((self.order, self.req_f[self.order, RF_ARRIVAL]))]
        if patience_s is not None:
            if closed and np.ndim(patience_s) > 0:
                raise RuntimeError("a closed loop takes one patience for every request")
            patience = np.broadcast_to(np.asarray(patience_s, dtype=np.float64), (self.n,))
            if self.n and not np.all(patience >= 0):
                raise ValueError("patience_s must be >= 0 (a request with none left never reaches the pool)")
            self.req_f[:, RF_PATIENCE] = patience
            self.cfg[C_DEADLINES] = int(bool(np.isfinite(patience).any()))
        if max_attempts is not None:
            self.max_attempts = int(max_attempts)
        self._order_deadlines()

    def withdraw(self, index: np.ndarray, done_s: np.ndarray | None = None) -> None:
        """Requests that never reach this pool (before the first advance, open loop only).

        With `done_s`, they are FAILED at those times (cut off on the way); without, they
        stay PENDING (another pool serves them).
        """
        if self.advanced or self.cfg[C_CLIENTS] > 0:
            raise RuntimeError("withdraw works before the first advance, in an open loop")
        index = np.asarray(index, dtype=np.int64)
        if done_s is not None:
            self.req_i[index, RI_STATUS] = FAILED
            self.req_f[index, RF_DONE] = done_s
        keep = np.ones(self.n, dtype=bool)
        keep[index] = False
        self.order = self.order[keep[self.order]]
        self.glob[G_RELEASED] = len(self.order)
        self.glob[G_NEXT_UNRELEASED] = self.n
        self._order_deadlines()

    def set_version(self, r: int, version: int) -> None:
        self.rep_i[r, PI_VERSION] = version

    def state(self, r: int) -> int:
        return int(self.rep_i[r, PI_STATE])

    # -- results ----------------------------------------------------------------------------

    @property
    def arrival_s(self) -> np.ndarray:
        return self.req_f[:, RF_ARRIVAL]

    @property
    def dispatch_s(self) -> np.ndarray:
        return self.req_f[:, RF_DISPATCH]

    @property
    def first_token_s(self) -> np.ndarray:
        return self.req_f[:, RF_FIRST_TOKEN]

    @property
    def done_s(self) -> np.ndarray:
        return self.req_f[:, RF_DONE]

    @property
    def status(self) -> np.ndarray:
        return self.req_i[:, RI_STATUS]

    @property
    def replica(self) -> np.ndarray:
        return self.req_i[:, RI_REPLICA]

    @property
    def version(self) -> np.ndarray:
        return self.req_i[:, RI_VERSION]

    @property
    def preemptions(self) -> np.ndarray:
        return self.req_i[:, RI_PREEMPTIONS]

    @property
    def attempts(self) -> np.ndarray:
        """Attempts each request made: 1, plus one per replica failure that cost it its progress."""
        return self.req_i[:, RI_RETRIES] + 1

    @property
    def patience_s(self) -> np.ndarray:
        return self.req_f[:, RF_PATIENCE]

    @property
    def busy_s(self) -> np.ndarray:
        """Seconds each replica spent in iterations (started ones count in full)."""
        return self.rep_f[:, PF_BUSY_TIME]

    @property
    def iterations(self) -> np.ndarray:
        return self.rep_i[:, PI_ITERATIONS]

    @property
    def frontend_lag_bound_s(self) -> float:
        """The longest a token waits in the front end after its iteration ends, in this run so far
        (a request done by the horizon at the engine may reach its client up to this much later)."""
        longest = float(self.rep_f[:, PF_LONGEST].max()) if self.replicas else 0.0
        return float(self.fcfg[F_FRONTEND_S] + self.fcfg[F_FRONTEND_PER_STEP] * longest)
