"""Continuous batching across a cluster of serving pools: the data plane, as a numba kernel.

The serving cluster is P pools of replicas (each pool: one GPU type, tensor-parallel degree
and engine profile, at one site), a pool choice made when a request's client sends it, the
network path to the chosen pool's site, and a router in front of each pool's replicas.
Requests are not objects: they are rows of a few arrays, and the cluster's whole state
(paths, queues, running batches, KV-cache use, prefix caches) is arrays too, so
`advance(state, t)` can stop at any time t and resume exactly where it stopped. Advancing to
t1 and then to t2 gives bit-identical results to advancing to t2. A single pool behind a
path of zero delay (`PoolKernel`) is the special case `predict`, calibration and the
queueing-theory tests use.

Semantics (the pure-SimPy oracle in tests/ implements exactly these; keep them in step):

Events. Five kinds: a client *sends* a request (its send time; or again when the path it
waited for comes back), a request *arrives* at its pool (send time plus the path; a request at
a managed API's pool also has its token events taken as arrivals, below), a
replica's *iteration ends*, a request's client *deadline* passes (client timeouts only). They
are taken in time order; at equal times sends go first (lowest request index first), then
arrivals (lowest index first), then iteration ends (lowest replica first), then deadlines.
`advance(t)` takes every event with time <= t.

Pool choice (at send). The request's traffic class names a route: pools in preference order
and a policy. A pool is *available* when the path to its site is up (not inside one of the
path's outage windows) and it has an active replica. `overflow` takes the first available
pool whose load is within the route's thresholds (requests in the pool, waiting or running,
per active replica <= `queue_per_replica`, and the oldest waiting request's wait <= `wait_s`;
under continuous batching a queue of waiting requests forms only when a replica is full, so
the first test counts the running ones too), else the last
available one (the end of the overflow chain); `weighted` picks among the available pools by
their weights with the request's own uniform draw. A pool skipped because it was unavailable
is a *failover*, one skipped because it was loaded an *overflow*. With no pool available,
the request goes to the first pool in order whose path is up (it queues there, with no active
replica: a pool scaled to zero, or all its replicas down); if every path is cut, the client
waits and sends again when the first of them comes back. The route's first pool is the
request's *preferred* pool (why it went elsewhere is recorded: `RI_REASON`). Each pool
counts the requests whose choice reached it while it had no active replica (`sought`): the
demand an autoscaler of a pool scaled to zero must see, since no request can queue there
(`overflow`: the chain reached it; `weighted`: the request's draw over every pool whose path
is up, with a replica or not, picked it).

Path (at send). Each pool is reached over a path: the clients' site LAN, or the link between
the clients' site and the pool's. A path carries payloads first in, first out at its
bandwidth, then each travels the one-way delay plus its own jitter (a standard normal draw
per request times the path's jitter, never below zero delay): start = max(send, the path's
previous payload's end); end = start + bytes / bandwidth; arrival = end + one-way + jitter
(the same arithmetic as `sim.kernels.links.fifo_link`). Responses travel back after the run
(`sim.world`): they change nothing here.

Dispatch (at arrival). A request whose prompt + output exceeds its pool's `max_model_len` or
KV capacity is *rejected* (status REJECTED, done = arrival). Otherwise the pool's router picks
a queue: an active replica of the pool's own queue, or the pool's shared queue all its
replicas pull from. Routers are a family (`sim.routers`: shared_queue, round_robin,
least_outstanding, random, prefix_affinity, ...); the kernel is given the chosen router's
numba function and calls it here, at one place (`_route`), with the pool's active replicas,
their outstanding (dispatched-but-unfinished) requests, the request's uniform u drawn up
front, the router's own memory for the pool and the request's prefix group with the replicas'
prefix caches. With no active replica the request waits in the pool's shared queue. Then the
chosen replica, if idle, tries to start an iteration at that time; for the shared queue, the
pool's idle active replicas try in index order until the queue is empty. Queues are FIFO;
when traffic classes have different priorities, a request joins its queue ahead of every
waiting request of a lower priority (behind those of its own or higher).

Iteration composition (when a replica is idle and woken, or when its iteration ends), with
token budget B = max_num_batched_tokens and at most S = max_num_seqs running sequences (the
replica's pool's settings):
 1. KV for decoding: every decoding sequence writes one KV token this iteration. While the
    decoding count d does not fit (kv_used + d > capacity), evict the least recently used
    unreferenced cached prefix; if none, preempt the newest running sequence (recompute: it
    frees its KV, keeps the tokens it generated, and goes back to the head of its replica's
    own queue, even if it came from the shared queue). The d tokens are then taken.
 2. Chunked prefill on: the decoding sequences take d tokens of the budget; sequences already
    in prefill continue in admission order, each taking min(remaining prompt, budget left);
    then new sequences are admitted (own queue first, then the pool's shared queue; in queue
    order) while fewer than S run, budget is left, and KV holds their whole prompt (after
    evicting unreferenced cached prefixes if needed); each takes min(prompt, budget left).
    Every decoding sequence decodes even if d exceeds the budget.
    Chunked prefill off (prefill first): if the queue head can be admitted (S, KV, and its
    whole prompt within the budget, or it is alone), the iteration is prefill only: admit
    in queue order while they fit, whole prompts; otherwise it decodes every decoding
    sequence. The budget check counts the whole prompt; only the tokens computed (not a
    cached prefix) use the budget up.
 3. An empty batch leaves the replica idle. Otherwise the iteration ends after the time the
    service model gives it: `step_time(...)` (sim.kernels.roofline) with the pool's
    parameters for the roofline, or, in service-time mode, the service time of its single
    request. (Under the roofline a decode-only iteration's end is computed in closed form
    from the start of its stretch, see Speed: the same as summing `step_time` to the last
    bits, so the oracle, which sums, agrees to 1e-9 s rather than bit for bit.)
A draining or offline replica admits nothing; a draining one finishes what it runs.

Async scheduling (a pool whose engine has `async_scheduling`, as vLLM V1 does by default
since late 2025): the engine schedules iteration k+1 while iteration k runs, so the iteration
composed when iteration k ends admits only requests that had arrived when iteration k
*started*; later arrivals wait for the next one (about one more iteration of TTFT). If that
leaves nothing to run, the scheduler looks again at once, with every arrival so far. An idle
replica schedules a new arrival immediately.

Prefix caching. A request in prefix group g whose prefix is cached on the replica skips the
prefix's prefill and holds no KV for it (it references the cached copy). A request that
computes the prefix hands those KV tokens to the cache when its prefill completes (unless the
prefix was cached meanwhile, or the prefix is not shorter than what was prefilled; hand-offs
in one iteration go in admission order). A group's prefix is as long as its longest request's;
a request holding only part of it (a trace's prompt shorter than the group's system prompt)
skips its part on a hit but never hands a prefix to the cache, whose entry is the whole
prefix. The last prompt token is always computed, even when
the whole prompt is a cached prefix. Cached prefixes count against KV capacity; only
unreferenced ones are evicted, least recently used first (a use is a hand-off or the
admission of a request that hits it).

Iteration end. Chunks advance; a sequence whose prefill completes produces its first token
and starts decoding; every sequence that was decoding produced one token. Tokens reach the
client through the engine's front end (API server: detokenising, streaming) a delay
`frontend_s + frontend_per_step x (the iteration's duration)` (the pool's engine) after the
iteration ends: that is first_token, and done for the last token (the replica frees its KV
at the iteration end). A sequence with G generated tokens after decode step D (an iteration
in which the decoding sequences advance; prefill-only iterations are not decode steps)
finishes at step D + (output - G); sequences finishing at the same iteration complete in
request order. KV accounting is per token (paged blocks are not modelled; vLLM wastes fewer
than block_size tokens per sequence).

Service models (`sim.kernels.service_models`). Besides the roofline (LLMs, continuous
batching), two simpler ones run on the same queues: *service-time* mode (batch size 1, each
request's service time drawn up front; how queueing theory checks the engine) and *dynamic
batching* for classic models (CNN/BERT classifiers): an idle replica starts a batch of up to
S queued requests when S are waiting or when the head of its queue (its own, else its pool's
shared one) has waited `max_queue_delay` since arriving at the pool, and the batch takes
a + c x b seconds (the pool's GPU); all its requests complete (first token = done) at its
end. A service model is a row of that module's table: how a replica composes an iteration
(continuous or dynamic batching: the one branch in `_compose` and the one at an iteration's
end in `advance`) and a numba function, passed in like the router, for how long an
iteration takes.

Closed loop (clients > 0): requests beyond the first `clients` have no send time; when a
request completes (done, rejected or failed) at time t at pool p, the next unreleased
request is sent at t + p's loop delay (the response's way back and the client's think time);
pending sends are kept in time order.

Managed model APIs. A pool may be a managed API (`ApiConfig`, `api_pool`): a provider's
endpoint with no replicas of ours, reached over its path like any pool. The provider's
capacity is not ours, so a request that reaches it starts at once (dispatch = arrival, no
queue, no batch); its first token comes its TTFT later and its last token (output - 1) times
its per-token time after the first, each a lognormal draw: median x exp(sigma x z), with z the
request's own standard normal drawn up front (one for TTFT, one for the per-token time). These
token events are taken with the arrivals, by (time, request index). The API's rate limit is a
sliding window of RATE_WINDOW_S: a request sent at t is *within the limit* when the requests
sent to the API and admitted in (t - 60 s, t], plus it, are at most `requests_per_minute`,
and their prompt + output tokens, plus its own, at most `tokens_per_minute`. The window is
counted at the send (the client's router tracks what it sent, as LiteLLM's router does per
deployment; the provider, counting arrivals, sees the same window shifted by the path's
delay). In the pool choice an API within its limit is available (the route's queue and wait
thresholds do not apply: there is no queue of ours); one over its limit is *loaded*: overflow
skips it (a later pool's reason is OVERFLOW) and it is never the end of the overflow chain,
and a weighted draw leaves it out. When nothing else can take the request (no pool with
replicas reachable either), it goes to the first reachable API over its limit, which answers
HTTP 429: REJECTED at its arrival (done = arrival; it counts in no window). A request served
by an API has no replica (-1) and model version 0: the provider's model, never one of ours.

Per request the kernel records the pool and replica, why it went to that pool, when its
payload entered the path, the time it reached the pool (arrival), was first scheduled
(dispatch), the first token, completion, the model version of the replica when it was last
admitted, its status, the number of preemptions and the number of attempts. Per pool it keeps
running counters the control plane reads (time to first token at the pool, first tokens).

Faults (none of this happens in a run without faults: with no `fail` call, no path outage
and no client timeout, everything above is unchanged, and the oracle need not model it).
 - *Client timeout.* Each request has a deadline: its send time plus the client timeout
   (`timeout_s`; `PoolKernel` also takes a per-request `patience_s` from the arrival). A
   request not admitted in its current attempt by its deadline fails there (status FAILED,
   done = deadline): still on its way, waiting for a path to come back, or WAITING in a
   queue (it leaves the queue and its replica's outstanding count). A preempted request was
   admitted, so it does not time out; a retried one (below) was not, in its new attempt.
   Deadlines are taken in deadline order (lowest request index on ties).
 - `fail(r)` (a control call, after `advance_to(now)`): replica r goes DOWN at once. Its
   iteration in flight is lost (busy time counts only up to now). Every request admitted to r
   in its current attempt (running, or preempted and queued on r) loses its progress: its KV
   is freed, prefill and generated tokens, first token and dispatch are reset, and it makes
   another attempt in the same pool, unless it has used `max_attempts` attempts or its
   deadline has passed, in which case it fails now (FAILED, done = now). A new attempt is
   routed again as a new arrival would be (to the tail of the queue the pool's router picks
   among its active replicas, or the pool's shared queue), oldest arrival first; then the
   requests queued on r but never admitted are routed the same way, in their queue order,
   unchanged. (Unlike a drain, which moves its queue to the shared queue: there they would
   wait behind every replica's own queue.) r's prefix cache is lost. The pool's idle active
   replicas are then woken in index order. Failing a DOWN replica does nothing.
 - While DOWN, a replica admits and runs nothing; `drain`, `activate` and `deactivate` only
   record the state it returns to; `restore(r)` brings it back in that state (waking it if
   ACTIVE).
 - Path outages (windows given up front): a request is never sent on a cut path (see the
   pool choice); a payload already on its way arrives.
Every request ends exactly once: DONE, REJECTED or FAILED, or it is still PENDING, WAITING or
RUNNING at the end of the run (unfinished).

Speed (`benchmarks/serving.py`: 1M requests, 4 replicas, 80% load; November 2026, on a
shared 2-core machine where absolute times move by up to 2x with load: compare paired runs).
The loop allocates nothing and runs without numba's reference counting (`sim.jit`): the
increments and decrements of every array view were three quarters of its time. A request
costs 3.5 events (its send, its arrival and 1.5 iteration ends) at 120-180 ns an event, for
2 engine iterations. The next iteration end comes from a tournament tree over the replicas
(walked once per iteration end, after its compose and run ahead), `least_outstanding` from a
second one, so an event costs O(log R): 280-330 ns at 400 replicas, where what grows is the
memory latency of rows no longer in cache. A decode-only iteration under the roofline takes
a + b (context + n) (`roofline.decode_line`), so a run of them (a *stretch*: the same n
sequences, one token further each time) is timed in closed form from its start, and a
replica runs ahead through its stretch past arrivals elsewhere in one jump, to the iteration
that completes a sequence or finds no KV, or until an arrival joins its queue and takes it
back (`_rewind`). Iterations without events are then nearly free: at 409 replicas and low
load (66 iterations per request) the kernel's time fell 2.6x. The limit of this design is
(events per request) x (cost of an event): a send, an arrival, the iteration in flight when
it arrives, its prefill and its completion are each an event that touches its request's
rows and its replica's; 3M requests per second would need about 100 ns per request, a
third of one event's cost. Taking a zero-delay send and its arrival as one step did not help
measurably (the look for the next event is cheap).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, types
from numba.core.typing.typeof import typeof_impl

from sim.jit import no_refcount_jit
from sim.kernels.roofline import decode_line, step_time
from sim.kernels.service_models import (
    DYNAMIC,
    ITERATION_SIGNATURE,
    ITERATION_TYPE,
    ROOFLINE,
    SERVICE_MODELS,
    default_service_model,
)
from sim.routers import (
    LEAST_OUTSTANDING,
    ROUTER_MEMORY_SLOTS,
    ROUTER_SIGNATURE,
    ROUTER_TYPE,
    ROUTERS,
    SHARED_QUEUE,
)

INF = np.inf

# Request status.
PENDING = 0  # not sent yet (or not released, in a closed loop), or on its way to its pool
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

# Why a request went to its pool (RI_REASON).
PREFERRED = 0  # the route's first pool
OVERFLOW = 1  # a pool before it in the route was loaded beyond the route's thresholds
FAILOVER = 2  # a pool before it was unavailable (path cut, or no active replica)
WEIGHTED = 3  # picked by the route's weights

# Route policies.
POLICY_OVERFLOW = 0
POLICY_WEIGHTED = 1

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
RI_POOL = 20  # the pool it was sent to (-1: not yet)
RI_CLASS = 21  # its traffic class
RI_REASON = 22  # why that pool (PREFERRED, OVERFLOW, FAILOVER, WEIGHTED)
RI_PRIORITY = 23  # its class's priority (higher is admitted first)
RI_LIMITED = 24  # 1: sent to an API pool over its rate limit, answered 429 on arrival (REJECTED)
RI_SIZE = 25

# Float request fields (req_f[:, F]).
RF_ARRIVAL = 0  # at its pool
RF_DISPATCH = 1
RF_FIRST_TOKEN = 2
RF_DONE = 3
RF_SERVICE = 4
RF_RANDOM = 5  # the router's uniform draw
RF_DEADLINE = 6  # when its client gives up (inf: never; a closed-loop request not sent yet: the timeout)
RF_SEND = 7  # when its client sent it (NaN: a closed-loop request not released yet)
RF_LINK_SEND = 8  # when its payload entered the path to its pool (after waiting for a cut path)
RF_BYTES = 9  # its payload on the wire
RF_JITTER = 10  # its standard normal draw for the path's jitter
RF_ROUTE_U = 11  # its uniform draw for a weighted pool choice
RF_TTFT_Z = 12  # its standard normal draw for an API pool's time to first token
RF_TPOT_Z = 13  # ... and for its time per output token
RF_SIZE = 14

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
PI_POOL = 14  # the pool it belongs to
PI_NEXT_REPLICA = 15  # tournament node k (row k): the replica whose iteration ends first below it
PI_LEAST_REPLICA = 16  # least-outstanding tree node k (row k): the active replica with the fewest below it
PI_LEAST_COUNT = 17  # ... and its outstanding requests (NOT_ACTIVE: none active below)
# A replica running ahead (`_run_ahead`): 1 while its iteration in flight is one it ran ahead
# to, and where that run started (so that an arrival can take it back: `_rewind`)
PI_AHEAD = 18
PI_CK_ITERATIONS, PI_CK_STEPS, PI_CK_CONTEXT, PI_CK_KV = 19, 20, 21, 22
# A decode stretch under the roofline (`_stretch_at`): its sequences (0: the iteration in flight
# is not in one), the in-flight iteration's index in it, that index where the current run
# ahead started, and at its iteration 0: the summed context, iterations and decode steps
# before it, KV used
PI_S_N, PI_S_K, PI_S_RUN_K, PI_S_CONTEXT, PI_S_ITERATIONS, PI_S_STEPS, PI_S_KV = 23, 24, 25, 26, 27, 28, 29
PI_SIZE = 30

# Float replica fields (rep_f[:, F]).
PF_BUSY_UNTIL = 0
PF_BUSY_TIME = 1  # seconds spent in iterations (for utilisation)
PF_ITER_START = 2
PF_LONGEST = 3  # the longest iteration so far (bounds how late the front end delivers)
# Work done, summed over the iterations started (for energy from work, `sim.metrics.energy`):
PF_WORK_TOKENS = 4  # tokens through the model (prefill + decode)
PF_WORK_PAIRS = 5  # attention (query, key) pairs: prefill pairs + decode contexts
PF_WORK_KV = 6  # KV-cache tokens read or written: prefill context + chunks, decode contexts + tokens
PF_WORK_LOGITS = 7  # tokens through the LM head
PF_NEXT_END = 8  # tournament node k (row k): when that replica's iteration (or timer) ends
PF_CK_START, PF_CK_UNTIL, PF_CK_BUSY, PF_CK_LONGEST = 9, 10, 11, 12  # the run-ahead's start (`_rewind`)
PF_CK_TOKENS, PF_CK_PAIRS, PF_CK_KV, PF_CK_LOGITS = 13, 14, 15, 16
# ... and the stretch's start time, its line (`roofline.decode_line`: an iteration takes
# a + b (context + n)), and busy time, longest iteration and work done before it
PF_S_START, PF_S_A, PF_S_B, PF_S_BUSY, PF_S_LONGEST = 17, 18, 19, 20, 21
PF_S_TOKENS, PF_S_PAIRS, PF_S_KV, PF_S_LOGITS = 22, 23, 24, 25
PF_SIZE = 26

# Cluster-wide configuration (cfg[F]).
C_REPLICAS = 0
C_POOLS = 1
C_CLIENTS = 2
C_GROUPS = 3
C_DEADLINES = 4  # 1 when some request has a finite deadline (client timeouts are events)
C_BATCHING = 5  # how replicas compose iterations: service_models.CONTINUOUS or DYNAMIC
C_PRIORITIES = 6  # 1: traffic classes have different priorities (queues insert by priority)
C_ROOFLINE = 7  # 1: the service model is the roofline (`_duration` calls it directly)
C_LEAST = 8  # 1: the router is least_outstanding (`_route` asks the least-outstanding tree)
C_SIZE = 9

# Integer configuration of each pool (pool_i[p, F]).
Q_FIRST = 0  # its first replica (its replicas are FIRST .. FIRST + COUNT - 1)
Q_COUNT = 1
Q_MAX_SEQS = 2
Q_BUDGET = 3
Q_CHUNKED = 4
Q_PREFIX_CACHING = 5
Q_KV_CAPACITY = 6
Q_MAX_MODEL_LEN = 7
Q_ASYNC = 8  # 1: async scheduling (an iteration is scheduled when the previous one starts)
Q_PATH = 9  # the path its requests take
Q_SOUGHT = 10  # requests whose route reached this pool while it had no active replica (demand it missed)
Q_API = 11  # 1: a managed model API (no replicas; see the module docstring)
Q_WINDOW_HEAD = 12  # an API pool's rate-limit window: requests admitted in the last RATE_WINDOW_S,
Q_WINDOW_TAIL = 13  # a list in send order linked through RI_NEXT (-1: empty)
Q_WINDOW_COUNT = 14
Q_WINDOW_TOKENS = 15  # their prompt + output tokens
Q_API_RPM = 16  # its rate limit: requests and tokens per RATE_WINDOW_S (NO_LIMIT: none)
Q_API_TPM = 17
Q_ACTIVE = 18  # its active replicas, listed in the kernel's `active` array from FIRST (see `_active_lists`)
Q_SIZE = 19

# Float configuration and counters of each pool (pool_f[p, F]).
F_LOOP_DELAY = 0  # closed loop: from a request completing here to its client's next send
F_FRONTEND_S = 1  # the front end's fixed delay from a token's iteration end to its client
F_FRONTEND_PER_STEP = 2  # ... plus this fraction of that iteration's duration
F_TTFT_SUM = 3  # running sum of (first token - arrival) at the pool, over first tokens
F_FIRST_TOKENS = 4  # running count of first tokens
F_API_TTFT_MEDIAN = 5  # an API pool's latency profile: lognormal time to first token (median, sigma)
F_API_TTFT_SIGMA = 6
F_API_TPOT_MEDIAN = 7  # ... and lognormal time per output token after the first (median, sigma)
F_API_TPOT_SIGMA = 8
F_SIZE = 9

RATE_WINDOW_S = 60.0  # an API's rate limits are per minute
NO_LIMIT = 2**62  # an API pool's Q_API_RPM / Q_API_TPM when it sets no such limit

# Paths (path_f[k, F]).
PA_ONE_WAY = 0
PA_BANDWIDTH = 1
PA_JITTER = 2  # standard deviation of the jitter added to each one-way delay
PA_FREE_AT = 3  # when its last payload finished going onto the wire
PA_SIZE = 4

# Routes (route_i[k, F]; pools from RT_POOLS on; route_f[k, F], weights from RTF_WEIGHTS on).
RT_POLICY = 0
RT_LEN = 1
RT_POOLS = 2
RTF_QUEUE = 0  # overflow when queued requests per active replica exceed this
RTF_WAIT = 1  # ... or when the oldest queued request has waited longer than this
RTF_WEIGHTS = 2

# Global counters (glob[F]).
G_NEXT_SEND = 0  # index into `sorder` of the next send to take
G_SENDS = 1  # sends in `sorder` (all of them in open loop; released ones in a closed loop)
G_NEXT_UNRELEASED = 2  # next request a closed-loop client sends
G_USE_CLOCK = 3  # strictly increasing stamp for LRU order of cached prefixes
G_NEXT_DEADLINE = 4  # index into `deadline_order` of the next deadline to take
G_ARRIVING = 5  # requests on their way out of order (size of the arrival heap)
G_RESENDING = 6  # requests waiting for a path (size of the resend heap)
G_FIFO_HEAD = 7  # requests on their way in order: the arrival FIFO's [head, tail)
G_FIFO_TAIL = 8
G_SIZE = 9

# Prefix cache fields (cache_i[r, g, F]).
K_CACHED = 0
K_REFS = 1
K_LAST_USE = 2
K_SIZE = 3

# Queue fields (queues[q, F]); queue R + p is pool p's shared queue.
QU_HEAD = 0
QU_TAIL = 1
QU_LENGTH = 2
QU_SIZE = 3


# ------------------------------------------------------------------------------------------
# Queues: singly linked lists of request ids, in priority then arrival order.
# ------------------------------------------------------------------------------------------


@no_refcount_jit(inline="always")
def _queue_push(queues, req_i, q, i, by_priority):
    req_i[i, RI_QUEUE] = q
    queues[q, QU_LENGTH] += 1
    tail = queues[q, QU_TAIL]
    if tail < 0:
        req_i[i, RI_NEXT] = -1
        queues[q, QU_HEAD] = i
        queues[q, QU_TAIL] = i
        return
    if by_priority == 0 or req_i[tail, RI_PRIORITY] >= req_i[i, RI_PRIORITY]:
        req_i[i, RI_NEXT] = -1
        req_i[tail, RI_NEXT] = i
        queues[q, QU_TAIL] = i
        return
    # ahead of every waiting request of a lower priority, behind its own and higher ones
    prev = -1
    k = queues[q, QU_HEAD]
    while k >= 0 and req_i[k, RI_PRIORITY] >= req_i[i, RI_PRIORITY]:
        prev = k
        k = req_i[k, RI_NEXT]
    req_i[i, RI_NEXT] = k
    if prev < 0:
        queues[q, QU_HEAD] = i
    else:
        req_i[prev, RI_NEXT] = i


@no_refcount_jit(inline="always")
def _queue_push_front(queues, req_i, q, i):
    req_i[i, RI_NEXT] = queues[q, QU_HEAD]
    req_i[i, RI_QUEUE] = q
    queues[q, QU_HEAD] = i
    queues[q, QU_LENGTH] += 1
    if queues[q, QU_TAIL] < 0:
        queues[q, QU_TAIL] = i


@no_refcount_jit(inline="always")
def _queue_pop(queues, req_i, q):
    i = queues[q, QU_HEAD]
    nxt = req_i[i, RI_NEXT]
    queues[q, QU_HEAD] = nxt
    queues[q, QU_LENGTH] -= 1
    if nxt < 0:
        queues[q, QU_TAIL] = -1
    req_i[i, RI_NEXT] = -1
    return i


@no_refcount_jit()
def _queue_remove(queues, req_i, q, i):
    """Take request i out of queue q wherever it is (a timeout); O(position), usually the head."""
    prev = -1
    k = queues[q, QU_HEAD]
    while k >= 0 and k != i:
        prev = k
        k = req_i[k, RI_NEXT]
    if k < 0:
        return False
    nxt = req_i[i, RI_NEXT]
    if prev < 0:
        queues[q, QU_HEAD] = nxt
    else:
        req_i[prev, RI_NEXT] = nxt
    if queues[q, QU_TAIL] == i:
        queues[q, QU_TAIL] = prev
    queues[q, QU_LENGTH] -= 1
    req_i[i, RI_NEXT] = -1
    return True


# ------------------------------------------------------------------------------------------
# Heaps. Per replica: completions keyed by (finish iteration, request id). Cluster-wide:
# requests on their way keyed by (arrival, request id), and requests waiting for a cut path
# keyed by (resend time, request id).
# ------------------------------------------------------------------------------------------


@no_refcount_jit(inline="always")
def _heap_less(hk, hr, r, a, b):
    return hk[r, a] < hk[r, b] or (hk[r, a] == hk[r, b] and hr[r, a] < hr[r, b])


@no_refcount_jit(inline="always")
def _heap_push(rep_i, hk, hr, r, key, req):
    n = rep_i[r, PI_HEAP]
    hk[r, n] = key
    hr[r, n] = req
    rep_i[r, PI_HEAP] = n + 1
    _sift_up(hk, hr, r, n)


@no_refcount_jit(inline="always")
def _heap_pop(rep_i, hk, hr, r):
    top = hr[r, 0]
    n = rep_i[r, PI_HEAP] - 1
    rep_i[r, PI_HEAP] = n
    hk[r, 0] = hk[r, n]
    hr[r, 0] = hr[r, n]
    _sift_down(hk, hr, r, 0, n)
    return top


@no_refcount_jit(inline="always")
def _sift_up(hk, hr, r, i):
    """Move entry i of replica r's heap up to its place; returns where it ended."""
    while i > 0:
        parent = (i - 1) // 2
        if not _heap_less(hk, hr, r, i, parent):
            break
        hk[r, i], hk[r, parent] = hk[r, parent], hk[r, i]
        hr[r, i], hr[r, parent] = hr[r, parent], hr[r, i]
        i = parent
    return i


@no_refcount_jit(inline="always")
def _sift_down(hk, hr, r, i, n):
    """Move entry i of replica r's heap of n entries down to its place."""
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


@no_refcount_jit()
def _heap_remove(rep_i, hk, hr, r, req):
    """Remove a request from the heap (preemption): the last entry takes its place and sifts
    up or down. Finding it is O(n); preemptions are rare. (Entries are unique, so the order of
    pops does not depend on the heap's shape.)"""
    n = rep_i[r, PI_HEAP]
    pos = -1
    for k in range(n):
        if hr[r, k] == req:
            pos = k
            break
    if pos < 0:
        return
    n -= 1
    rep_i[r, PI_HEAP] = n
    if pos == n:
        return
    hk[r, pos] = hk[r, n]
    hr[r, pos] = hr[r, n]
    _sift_down(hk, hr, r, _sift_up(hk, hr, r, pos), n)


# The next iteration end: a tournament tree over the replicas' end times, kept in two
# columns of the replica arrays (node k in row k, k = 1 .. R-1; node R + r is replica r
# itself; node k's children are 2k and 2k + 1). A node holds the earliest end below it and
# its replica, ties to the lower index, as a scan of the replicas in order would find it.
# Every change of a replica's iteration calls `_tree_update` (O(log R)); `_tree_build` makes
# the tree anew when the control plane may have changed replicas between advances.


@no_refcount_jit(inline="always")
def _end_key(rep_i, rep_f, r):
    """When replica r's iteration or timer ends (inf when idle)."""
    return rep_f[r, PF_BUSY_UNTIL] if rep_i[r, PI_IN_FLIGHT] != IDLE else INF


@no_refcount_jit(inline="always")
def _tree_node(rep_i, rep_f, n, k):
    if k >= n:
        return _end_key(rep_i, rep_f, k - n), k - n
    return rep_f[k, PF_NEXT_END], rep_i[k, PI_NEXT_REPLICA]


@no_refcount_jit(inline="always")
def _tree_play(rep_i, rep_f, n, k):
    """Node k's winner from its children; returns False if it did not change."""
    ta, ra = _tree_node(rep_i, rep_f, n, 2 * k)
    tb, rb = _tree_node(rep_i, rep_f, n, 2 * k + 1)
    if tb < ta or (tb == ta and rb < ra):
        ta, ra = tb, rb
    if rep_f[k, PF_NEXT_END] == ta and rep_i[k, PI_NEXT_REPLICA] == ra:
        return False
    rep_f[k, PF_NEXT_END] = ta
    rep_i[k, PI_NEXT_REPLICA] = ra
    return True


@no_refcount_jit(inline="always")
def _tree_update(rep_i, rep_f, cfg, r):
    """Replica r's end time changed: replay its path to the root (stops where nothing changes)."""
    n = cfg[C_REPLICAS]
    k = (n + r) >> 1
    while k >= 1 and _tree_play(rep_i, rep_f, n, k):
        k >>= 1


@no_refcount_jit()
def _tree_build(rep_i, rep_f, cfg):
    n = cfg[C_REPLICAS]
    for k in range(n - 1, 0, -1):
        rep_f[k, PF_NEXT_END] = np.nan  # differs from any winner: the play always writes
        _tree_play(rep_i, rep_f, n, k)


@no_refcount_jit(inline="always")
def _tree_next(rep_i, rep_f, cfg):
    """(time, replica) of the first iteration or timer to end; (inf, -1) when none is running."""
    n = cfg[C_REPLICAS]
    if n == 0:
        return INF, -1
    t, r = _tree_node(rep_i, rep_f, n, 1)
    if t == INF:
        return INF, -1
    return t, r


# The least-outstanding router over hundreds of replicas: instead of its scan of a pool's
# active replicas per request, a second tournament tree over (outstanding requests, index)
# of the active replicas (columns PI_LEAST_*, laid out as the tree above), kept when the
# router is least_outstanding (C_LEAST). A pool's choice is a range query over its replicas
# (O(log R)); it is the router's own answer, the lowest index among the fewest outstanding.
NOT_ACTIVE = 2**62
LEAST_TREE_REPLICAS = 16  # below this many replicas the router's scan is as fast (same answer either way)


@no_refcount_jit(inline="always")
def _least_node(rep_i, n, k):
    if k >= n:
        r = k - n
        return (rep_i[r, PI_OUTSTANDING] if rep_i[r, PI_STATE] == ACTIVE else NOT_ACTIVE), r
    return rep_i[k, PI_LEAST_COUNT], rep_i[k, PI_LEAST_REPLICA]


@no_refcount_jit(inline="always")
def _least_play(rep_i, n, k):
    ca, ra = _least_node(rep_i, n, 2 * k)
    cb, rb = _least_node(rep_i, n, 2 * k + 1)
    if cb < ca or (cb == ca and rb < ra):
        ca, ra = cb, rb
    if rep_i[k, PI_LEAST_COUNT] == ca and rep_i[k, PI_LEAST_REPLICA] == ra:
        return False
    rep_i[k, PI_LEAST_COUNT] = ca
    rep_i[k, PI_LEAST_REPLICA] = ra
    return True


@no_refcount_jit(inline="always")
def _least_update(rep_i, cfg, r):
    """Replica r's outstanding count changed: replay its path (only with the tree in use)."""
    if cfg[C_LEAST] == 0:
        return
    n = cfg[C_REPLICAS]
    k = (n + r) >> 1
    while k >= 1 and _least_play(rep_i, n, k):
        k >>= 1


@no_refcount_jit()
def _least_build(rep_i, cfg):
    if cfg[C_LEAST] == 0:
        return
    n = cfg[C_REPLICAS]
    for k in range(n - 1, 0, -1):
        rep_i[k, PI_LEAST_REPLICA] = -1  # differs from any winner: the play always writes
        _least_play(rep_i, n, k)


@no_refcount_jit(inline="always")
def _least_in(rep_i, cfg, lo, hi):
    """The active replica in [lo, hi) with the fewest outstanding requests (lowest index on a
    tie); -1 when none is active."""
    n = cfg[C_REPLICAS]
    best_c, best_r = NOT_ACTIVE, -1
    left, right = lo + n, hi + n
    while left < right:
        if left & 1:
            c, r = _least_node(rep_i, n, left)
            if c < best_c or (c == best_c and r < best_r):
                best_c, best_r = c, r
            left += 1
        if right & 1:
            right -= 1
            c, r = _least_node(rep_i, n, right)
            if c < best_c or (c == best_c and r < best_r):
                best_c, best_r = c, r
        left >>= 1
        right >>= 1
    return best_r if best_c < NOT_ACTIVE else -1


@no_refcount_jit(inline="always")
def _timed_less(ht, hi, a, b):
    return ht[a] < ht[b] or (ht[a] == ht[b] and hi[a] < hi[b])


@no_refcount_jit(inline="always")
def _timed_push(ht, hi, glob, size_field, t, i):
    n = glob[size_field]
    ht[n] = t
    hi[n] = i
    glob[size_field] = n + 1
    while n > 0:
        parent = (n - 1) // 2
        if _timed_less(ht, hi, n, parent):
            ht[n], ht[parent] = ht[parent], ht[n]
            hi[n], hi[parent] = hi[parent], hi[n]
            n = parent
        else:
            break


@no_refcount_jit(inline="always")
def _timed_pop(ht, hi, glob, size_field):
    top = hi[0]
    n = glob[size_field] - 1
    glob[size_field] = n
    ht[0] = ht[n]
    hi[0] = hi[n]
    k = 0
    while True:
        left = 2 * k + 1
        right = left + 1
        smallest = k
        if left < n and _timed_less(ht, hi, left, smallest):
            smallest = left
        if right < n and _timed_less(ht, hi, right, smallest):
            smallest = right
        if smallest == k:
            break
        ht[k], ht[smallest] = ht[smallest], ht[k]
        hi[k], hi[smallest] = hi[smallest], hi[k]
        k = smallest
    return top


# Requests on their way to their pools. Most arrive in the order they were sent (one path, or
# paths without jitter): those go to a FIFO, O(1); one that would arrive before the FIFO's
# last goes to a heap. The next arrival is the earlier of the two heads, by (time, index),
# which is exactly the heap's order over all of them. Both live in the arrival arrays: the
# heap in [0, n), the FIFO in [n, 2n) (each request is sent once).


@no_refcount_jit(inline="always")
def _arrival_push(ht, hi, glob, t, i):
    base = ht.shape[0] // 2
    tail = glob[G_FIFO_TAIL]
    last = base + tail - 1
    if tail == glob[G_FIFO_HEAD] or ht[last] < t or (ht[last] == t and hi[last] < i):
        ht[base + tail] = t
        hi[base + tail] = i
        glob[G_FIFO_TAIL] = tail + 1
    else:
        _timed_push(ht, hi, glob, G_ARRIVING, t, i)


@no_refcount_jit(inline="always")
def _arrival_next(ht, hi, glob):
    """(time, source) of the next arrival: source 1 the heap, 2 the FIFO, 0 none (time INF)."""
    if glob[G_FIFO_HEAD] < glob[G_FIFO_TAIL]:
        f = ht.shape[0] // 2 + glob[G_FIFO_HEAD]
        if glob[G_ARRIVING] > 0 and (ht[0] < ht[f] or (ht[0] == ht[f] and hi[0] < hi[f])):
            return ht[0], 1
        return ht[f], 2
    if glob[G_ARRIVING] > 0:
        return ht[0], 1
    return INF, 0


@no_refcount_jit(inline="always")
def _arrival_pop(ht, hi, glob, source):
    if source == 1:
        return _timed_pop(ht, hi, glob, G_ARRIVING)
    f = ht.shape[0] // 2 + glob[G_FIFO_HEAD]
    glob[G_FIFO_HEAD] += 1
    return hi[f]


# ------------------------------------------------------------------------------------------
# KV cache and prefix cache
# ------------------------------------------------------------------------------------------


@no_refcount_jit()
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


@no_refcount_jit(inline="always")
def _generated(req_i, rep_i, i, r):
    """Tokens generated so far by a running, decoding request, after the last ended iteration."""
    return req_i[i, RI_OUTPUT] - (req_i[i, RI_FINISH_STEP] - rep_i[r, PI_DECODE_STEPS])


@no_refcount_jit(inline="always")
def _kv_held(req_i, rep_i, i, r):
    if req_i[i, RI_PREFILLED] < req_i[i, RI_TARGET]:
        return req_i[i, RI_KV_BASE]
    g = _generated(req_i, rep_i, i, r)
    return req_i[i, RI_KV_BASE] + (g - req_i[i, RI_GEN0] - 1)


@no_refcount_jit(inline="always")
def _remove_at(arr, r, count, pos):
    for k in range(pos, count - 1):
        arr[r, k] = arr[r, k + 1]


@no_refcount_jit(inline="always")
def _remove_value(arr, r, count, value):
    for k in range(count):
        if arr[r, k] == value:
            _remove_at(arr, r, count, k)
            return True
    return False


@no_refcount_jit(inline="always")
def _drop_running(req_i, rep_i, running, r, i):
    """Remove request i from replica r's running set (unordered: the last fills its slot)."""
    last = rep_i[r, PI_RUNNING] - 1
    pos = req_i[i, RI_RUN_POS]
    moved = running[r, last]
    running[r, pos] = moved
    req_i[moved, RI_RUN_POS] = pos
    rep_i[r, PI_RUNNING] = last


@no_refcount_jit(inline="always")
def _release_prefix(req_i, cache_i, r, i):
    if req_i[i, RI_USES_PREFIX] == 1:
        cache_i[r, req_i[i, RI_GROUP], K_REFS] -= 1
        req_i[i, RI_USES_PREFIX] = 0


@no_refcount_jit()
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


@no_refcount_jit(inline="always")
def _try_admit(req_i, req_f, rep_i, running, prefilling, cache_i, prefix_tokens_of_group, glob, cfg, pool_i, r,
               i, t, kv_cap, from_shared):
    """Admit request i to replica r if KV holds its prompt; returns the tokens it must prefill."""
    shared = 0
    group = req_i[i, RI_GROUP]
    caching = pool_i[rep_i[r, PI_POOL], Q_PREFIX_CACHING] == 1 and group >= 0
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
        _least_update(rep_i, cfg, r)
    running[r, rep_i[r, PI_RUNNING]] = i
    req_i[i, RI_RUN_POS] = rep_i[r, PI_RUNNING]
    req_i[i, RI_ADMITTED] = glob[G_USE_CLOCK]
    glob[G_USE_CLOCK] += 1
    rep_i[r, PI_RUNNING] += 1
    prefilling[r, rep_i[r, PI_PREFILLING]] = i
    rep_i[r, PI_PREFILLING] += 1
    return req_i[i, RI_TARGET] - shared


@no_refcount_jit(inline="always")
def _queue_head(queues, rep_i, r, shared_q):
    """The next request replica r would admit: its own queue first, then its pool's shared one."""
    if queues[r, QU_HEAD] >= 0:
        return r
    if rep_i[r, PI_STATE] == ACTIVE and queues[shared_q, QU_HEAD] >= 0:
        return shared_q
    return -1


@no_refcount_jit(inline="always")
def _duration(iteration_s, cfg, params, p, service_s, prefill_tokens, prefill_pairs, prefill_context, prefill_seqs,
              decodes, decode_context, logit_tokens):
    """An iteration's duration on pool p from the service model's `iteration_s`. The roofline,
    the model of almost every run, is called directly: through numba's first-class function
    call it costs 48 ns instead of 21 (a tenth of the event loop's time)."""
    if cfg[C_ROOFLINE] == 1:
        return step_time(params[p], prefill_tokens, prefill_pairs, prefill_context, prefill_seqs, decodes,
                         decode_context, logit_tokens)
    return iteration_s(params[p], service_s, prefill_tokens, prefill_pairs, prefill_context, prefill_seqs, decodes,
                       decode_context, logit_tokens)


@no_refcount_jit()
def _compose_dynamic_batch(req_i, req_f, rep_i, rep_f, running, prefilling, queues, glob, cfg, pool_i, params,
                           r, t, iteration_s):
    """Classic models: run a batch when it is full or its oldest request waited long enough.

    latency(b) = a + c x b (the pool's params[0], params[1]); the oldest queued request waits
    at most params[2] seconds after arriving at the pool before a partial batch starts.
    """
    p = rep_i[r, PI_POOL]
    shared_q = cfg[C_REPLICAS] + p
    max_batch = pool_i[p, Q_MAX_SEQS]
    own = queues[r, QU_HEAD]
    pull_shared = rep_i[r, PI_STATE] == ACTIVE
    waiting = 0
    k = own
    while k >= 0 and waiting < max_batch:
        waiting += 1
        k = req_i[k, RI_NEXT]
    if pull_shared:
        k = queues[shared_q, QU_HEAD]
        while k >= 0 and waiting < max_batch:
            waiting += 1
            k = req_i[k, RI_NEXT]
    if waiting == 0:
        rep_i[r, PI_IN_FLIGHT] = IDLE
        rep_f[r, PF_BUSY_UNTIL] = INF
        return False
    head = own if own >= 0 else queues[shared_q, QU_HEAD]
    deadline = req_f[head, RF_ARRIVAL] + params[p, 2]
    if waiting < max_batch and t < deadline:
        rep_i[r, PI_IN_FLIGHT] = TIMER
        rep_f[r, PF_BUSY_UNTIL] = deadline
        _tree_update(rep_i, rep_f, cfg, r)
        return False
    for _ in range(waiting):
        q = r if queues[r, QU_HEAD] >= 0 else shared_q
        i = _queue_pop(queues, req_i, q)
        if q == shared_q:
            rep_i[r, PI_OUTSTANDING] += 1
            _least_update(rep_i, cfg, r)
        req_i[i, RI_STATUS] = RUNNING
        req_i[i, RI_REPLICA] = r
        req_i[i, RI_VERSION] = rep_i[r, PI_VERSION]
        req_f[i, RF_DISPATCH] = t
        running[r, rep_i[r, PI_RUNNING]] = i
        req_i[i, RI_RUN_POS] = rep_i[r, PI_RUNNING]
        rep_i[r, PI_RUNNING] += 1
    dt = _duration(iteration_s, cfg, params, p, 0.0, 0, 0, 0, waiting, 0, 0, 0)
    rep_i[r, PI_IN_FLIGHT] = BUSY
    rep_i[r, PI_ITER_DECODES] = 0
    rep_f[r, PF_ITER_START] = t
    rep_i[r, PI_AHEAD] = 0
    rep_f[r, PF_BUSY_UNTIL] = t + dt
    rep_f[r, PF_BUSY_TIME] += dt
    if dt > rep_f[r, PF_LONGEST]:
        rep_f[r, PF_LONGEST] = dt
    return True


@no_refcount_jit()
def _end_dynamic_batch(req_i, req_f, rep_i, rep_f, running, cache_i, sorder, glob, cfg, pool_f, r):
    t = rep_f[r, PF_BUSY_UNTIL]
    p = rep_i[r, PI_POOL]
    seen = t + _frontend_delay(pool_f, p, t - rep_f[r, PF_ITER_START])
    rep_i[r, PI_ITERATIONS] += 1
    while rep_i[r, PI_RUNNING] > 0:  # complete in request order (the smallest left, each time)
        i = running[r, 0]
        for k in range(1, rep_i[r, PI_RUNNING]):
            i = min(i, running[r, k])
        req_f[i, RF_FIRST_TOKEN] = seen
        pool_f[p, F_TTFT_SUM] += seen - req_f[i, RF_ARRIVAL]
        pool_f[p, F_FIRST_TOKENS] += 1.0
        req_i[i, RI_KV_BASE] = 0
        req_i[i, RI_GEN0] = req_i[i, RI_OUTPUT] - 1  # holds no KV: _complete frees nothing
        _complete(req_i, req_f, rep_i, running, cache_i, sorder, glob, cfg, pool_f, r, i, seen)
    rep_i[r, PI_IN_FLIGHT] = IDLE
    rep_f[r, PF_BUSY_UNTIL] = INF  # the caller tells the tournament tree


@no_refcount_jit()
def _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
             prefix_tokens_of_group, glob, cfg, pool_i, params, r, t, cutoff, iteration_s):
    """`_compose_untracked`, then the tournament tree learns r's new end."""
    started = _compose_untracked(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                                 prefix_tokens_of_group, glob, cfg, pool_i, params, r, t, cutoff, iteration_s)
    _tree_update(rep_i, rep_f, cfg, r)
    return started


@no_refcount_jit()
def _compose_untracked(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                       prefix_tokens_of_group, glob, cfg, pool_i, params, r, t, cutoff, iteration_s):
    """Decide replica r's next iteration at time t and start it; returns False if idle. The
    tournament tree is not told (`_compose` tells it; an iteration end tells it once, after
    its run ahead: each walk up the tree reads a dozen rows at hundreds of replicas).

    Only requests that arrived by `cutoff` are admitted (async scheduling: the iteration was
    scheduled when the previous one started). `iteration_s` is the service model's duration
    function (`sim.kernels.service_models`), `params[p]` its parameters for r's pool p."""
    if rep_i[r, PI_STATE] == OFFLINE or rep_i[r, PI_STATE] == DOWN:
        return False
    if cfg[C_BATCHING] == DYNAMIC:
        return _compose_dynamic_batch(req_i, req_f, rep_i, rep_f, running, prefilling, queues, glob, cfg, pool_i,
                                      params, r, t, iteration_s)
    p = rep_i[r, PI_POOL]
    kv_cap = pool_i[p, Q_KV_CAPACITY]
    shared_q = cfg[C_REPLICAS] + p
    budget = pool_i[p, Q_BUDGET]
    max_seqs = pool_i[p, Q_MAX_SEQS]
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
    admitting = rep_i[r, PI_STATE] == ACTIVE or queues[r, QU_HEAD] >= 0
    if pool_i[p, Q_CHUNKED] == 1:
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
            i = queues[q, QU_HEAD]
            if rep_i[r, PI_STATE] == DRAINING and q != r:
                break
            if req_f[i, RF_ARRIVAL] > cutoff:
                break
            todo = _try_admit(req_i, req_f, rep_i, running, prefilling, cache_i,
                              prefix_tokens_of_group, glob, cfg, pool_i, r, i, t, kv_cap, q != r)
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
            i = queues[q, QU_HEAD]
            need = req_i[i, RI_TARGET]
            if admitted > 0 and need > left:
                break
            if req_f[i, RF_ARRIVAL] > cutoff:
                break
            todo = _try_admit(req_i, req_f, rep_i, running, prefilling, cache_i,
                              prefix_tokens_of_group, glob, cfg, pool_i, r, i, t, kv_cap, q != r)
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
        rep_i[r, PI_S_N] = 0
        rep_f[r, PF_BUSY_UNTIL] = INF
        return False
    logit_tokens += decodes
    if pool_i[p, Q_CHUNKED] == 0:
        rep_i[r, PI_KV_USED] += decodes
    rep_i[r, PI_ITER_DECODES] = decodes
    rep_i[r, PI_IN_FLIGHT] = 1
    rep_i[r, PI_AHEAD] = 0
    if cfg[C_ROOFLINE] == 1 and prefill_tokens == 0:
        _stretch_compose(rep_i, rep_f, cfg, params, p, r, t, decodes)  # decode only: in closed form
        return True
    rep_i[r, PI_S_N] = 0
    service_s = req_f[prefilling[r, 0], RF_SERVICE] if rep_i[r, PI_PREFILLING] > 0 else 0.0
    dt = _duration(iteration_s, cfg, params, p, service_s, prefill_tokens, prefill_pairs, prefill_context, prefill_seqs,
                   decodes,
                     rep_i[r, PI_DECODE_CONTEXT] if decodes > 0 else 0, logit_tokens)
    rep_f[r, PF_ITER_START] = t
    rep_f[r, PF_BUSY_UNTIL] = t + dt
    rep_f[r, PF_BUSY_TIME] += dt
    if dt > rep_f[r, PF_LONGEST]:
        rep_f[r, PF_LONGEST] = dt
    context = rep_i[r, PI_DECODE_CONTEXT] if decodes > 0 else 0
    rep_f[r, PF_WORK_TOKENS] += prefill_tokens + decodes
    rep_f[r, PF_WORK_PAIRS] += prefill_pairs + context
    rep_f[r, PF_WORK_KV] += prefill_context + prefill_tokens + context + decodes
    rep_f[r, PF_WORK_LOGITS] += logit_tokens
    return True


@no_refcount_jit()
def _release_next(req_f, sorder, glob, t):
    """Closed loop: the next unreleased request is sent at t; pending sends stay in time order."""
    if glob[G_NEXT_UNRELEASED] >= sorder.shape[0]:
        return
    nxt = glob[G_NEXT_UNRELEASED]
    glob[G_NEXT_UNRELEASED] = nxt + 1
    req_f[nxt, RF_SEND] = t
    req_f[nxt, RF_DEADLINE] += t  # it held its client's timeout until now
    pos = glob[G_SENDS]
    while pos > glob[G_NEXT_SEND] and req_f[sorder[pos - 1], RF_SEND] > t:
        sorder[pos] = sorder[pos - 1]
        pos -= 1
    sorder[pos] = nxt
    glob[G_SENDS] += 1


@no_refcount_jit(inline="always")
def _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, t):
    """Closed loop: request i ended at t (done, rejected or failed); its client sends the next."""
    if cfg[C_CLIENTS] > 0:
        p = req_i[i, RI_POOL]
        _release_next(req_f, sorder, glob, t + pool_f[p if p >= 0 else 0, F_LOOP_DELAY])


@no_refcount_jit(inline="always")
def _frontend_delay(pool_f, p, step_s):
    """How long after its iteration ends a token reaches the client (the pool's front end)."""
    return pool_f[p, F_FRONTEND_S] + pool_f[p, F_FRONTEND_PER_STEP] * step_s


@no_refcount_jit(inline="always")
def _complete(req_i, req_f, rep_i, running, cache_i, sorder, glob, cfg, pool_f, r, i, t):
    """Request i's last token reaches its client at t; its replica frees what it held."""
    req_i[i, RI_STATUS] = DONE
    req_f[i, RF_DONE] = t
    rep_i[r, PI_KV_USED] -= req_i[i, RI_KV_BASE] + (req_i[i, RI_OUTPUT] - req_i[i, RI_GEN0] - 1)
    _release_prefix(req_i, cache_i, r, i)
    _drop_running(req_i, rep_i, running, r, i)
    rep_i[r, PI_OUTSTANDING] -= 1
    _least_update(rep_i, cfg, r)
    _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, t)


@no_refcount_jit(inline="always")
def _end_iteration(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i,
                   prefix_tokens_of_group, sorder, glob, cfg, pool_i, pool_f, r):
    t = rep_f[r, PF_BUSY_UNTIL]
    p = rep_i[r, PI_POOL]
    seen = t + _frontend_delay(pool_f, p, t - rep_f[r, PF_ITER_START])  # when its tokens reach clients
    rep_i[r, PI_AHEAD] = 0
    rep_i[r, PI_ITERATIONS] += 1
    if rep_i[r, PI_ITER_DECODES] > 0:
        rep_i[r, PI_DECODE_STEPS] += 1
        rep_i[r, PI_DECODE_CONTEXT] += rep_i[r, PI_ITER_DECODES]
    step = rep_i[r, PI_DECODE_STEPS]
    caching = pool_i[p, Q_PREFIX_CACHING] == 1
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
            pool_f[p, F_TTFT_SUM] += seen - req_f[i, RF_ARRIVAL]
            pool_f[p, F_FIRST_TOKENS] += 1.0
        group = req_i[i, RI_GROUP]
        if (caching and group >= 0 and req_i[i, RI_USES_PREFIX] == 0
                and cache_i[r, group, K_CACHED] == 0 and req_i[i, RI_PREFIX] < req_i[i, RI_TARGET]
                and req_i[i, RI_PREFIX] == prefix_tokens_of_group[group]):
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
            _complete(req_i, req_f, rep_i, running, cache_i, sorder, glob, cfg, pool_f, r, i, seen)
            continue
        rep_i[r, PI_DECODING] += 1
        rep_i[r, PI_DECODE_CONTEXT] += req_i[i, RI_PROMPT] + generated
        _heap_push(rep_i, hk, hr, r, req_i[i, RI_FINISH_STEP], i)
    # decoding sequences that produced their last token
    while rep_i[r, PI_HEAP] > 0 and hk[r, 0] <= step:
        i = _heap_pop(rep_i, hk, hr, r)
        rep_i[r, PI_DECODING] -= 1
        rep_i[r, PI_DECODE_CONTEXT] -= req_i[i, RI_PROMPT] + req_i[i, RI_OUTPUT]
        _complete(req_i, req_f, rep_i, running, cache_i, sorder, glob, cfg, pool_f, r, i, seen)
    rep_i[r, PI_IN_FLIGHT] = 0
    rep_f[r, PF_BUSY_UNTIL] = INF  # the caller tells the tournament tree
    return t


@no_refcount_jit(inline="always")
def _route(req_i, req_f, rep_i, cache_i, cfg, pool_i, i, p, route, router_memory, active):
    """The queue a request joins at its pool p (a replica index, or R + p for the pool's shared
    queue): the router's choice among p's active replicas (`sim.routers`), listed in `active`
    (`_active_lists`)."""
    shared_q = cfg[C_REPLICAS] + p
    first = pool_i[p, Q_FIRST]
    n_active = pool_i[p, Q_ACTIVE]
    if n_active == 0:
        return shared_q
    if cfg[C_LEAST] == 1:
        return _least_in(rep_i, cfg, first, first + pool_i[p, Q_COUNT])
    group = req_i[i, RI_GROUP]
    q = route(active[first:first + n_active], n_active, rep_i[:, PI_OUTSTANDING], req_f[i, RF_RANDOM],
              router_memory[p], group, cache_i[:, group if group >= 0 else 0, K_CACHED])
    if q == SHARED_QUEUE:
        return shared_q
    if q < first or q >= first + pool_i[p, Q_COUNT] or rep_i[q, PI_STATE] != ACTIVE:
        raise ValueError("the router chose a replica that is not active")
    return q


@no_refcount_jit(inline="always")
def _stretch_span(rep_i, rep_f, r, k):
    """Seconds from the start of replica r's decode stretch to the end of its iteration k: the
    sum over j = 0..k of a + b (c0 + j n + n), in closed form (keys read summed in integers)."""
    n = rep_i[r, PI_S_N]
    keys = (k + 1) * (rep_i[r, PI_S_CONTEXT] + n) + n * (k * (k + 1) // 2)
    return (k + 1) * rep_f[r, PF_S_A] + rep_f[r, PF_S_B] * keys


@no_refcount_jit(inline="always")
def _stretch_at(rep_i, rep_f, cfg, r, k):
    """Put replica r at iteration k of its decode stretch: the state k iteration ends after the
    stretch's first iteration started, every counter from the stretch's start in closed form
    (integers exact; times to the rounding of one product), so that iteration k's state is the
    same however it was reached (by events, a run ahead in one jump or several, a rewind).
    The caller tells the tournament tree."""
    n = rep_i[r, PI_S_N]
    c0 = rep_i[r, PI_S_CONTEXT]
    start = rep_f[r, PF_S_START]
    rep_i[r, PI_S_K] = k
    rep_i[r, PI_ITERATIONS] = rep_i[r, PI_S_ITERATIONS] + k
    rep_i[r, PI_DECODE_STEPS] = rep_i[r, PI_S_STEPS] + k
    rep_i[r, PI_DECODE_CONTEXT] = c0 + k * n
    rep_i[r, PI_KV_USED] = rep_i[r, PI_S_KV] + k * n
    span = _stretch_span(rep_i, rep_f, r, k)
    rep_f[r, PF_ITER_START] = start if k == 0 else start + _stretch_span(rep_i, rep_f, r, k - 1)
    rep_f[r, PF_BUSY_UNTIL] = start + span
    rep_f[r, PF_BUSY_TIME] = rep_f[r, PF_S_BUSY] + span
    # iterations lengthen along a stretch (each reads n more keys): its last is its longest
    rep_f[r, PF_LONGEST] = max(rep_f[r, PF_S_LONGEST], rep_f[r, PF_S_A] + rep_f[r, PF_S_B] * (c0 + n + k * n))
    pairs = (k + 1) * c0 + n * (k * (k + 1) // 2)  # the decode contexts read, summed
    rep_f[r, PF_WORK_TOKENS] = rep_f[r, PF_S_TOKENS] + (k + 1) * n
    rep_f[r, PF_WORK_PAIRS] = rep_f[r, PF_S_PAIRS] + pairs
    rep_f[r, PF_WORK_KV] = rep_f[r, PF_S_KV] + pairs + (k + 1) * n
    rep_f[r, PF_WORK_LOGITS] = rep_f[r, PF_S_LOGITS] + (k + 1) * n


@no_refcount_jit(inline="always")
def _stretch_compose(rep_i, rep_f, cfg, params, p, r, t, n):
    """Replica r starts a decode-only iteration of n sequences at t (roofline): the next
    iteration of its stretch if the one that just ended was the stretch's previous and nothing
    else changed (same sequences, one token further, ending at t), else the first of a new
    stretch."""
    k = rep_i[r, PI_S_K] + 1
    if not (rep_i[r, PI_S_N] == n and rep_i[r, PI_ITERATIONS] == rep_i[r, PI_S_ITERATIONS] + k
            and rep_i[r, PI_DECODE_STEPS] == rep_i[r, PI_S_STEPS] + k
            and rep_i[r, PI_DECODE_CONTEXT] == rep_i[r, PI_S_CONTEXT] + k * n
            and rep_i[r, PI_KV_USED] == rep_i[r, PI_S_KV] + k * n
            and t == rep_f[r, PF_S_START] + _stretch_span(rep_i, rep_f, r, k - 1)):
        k = 0
        rep_i[r, PI_S_N] = n
        rep_i[r, PI_S_CONTEXT] = rep_i[r, PI_DECODE_CONTEXT]
        rep_i[r, PI_S_ITERATIONS] = rep_i[r, PI_ITERATIONS]
        rep_i[r, PI_S_STEPS] = rep_i[r, PI_DECODE_STEPS]
        rep_i[r, PI_S_KV] = rep_i[r, PI_KV_USED]
        rep_f[r, PF_S_START] = t
        a, b = decode_line(params[p], n)
        rep_f[r, PF_S_A] = a
        rep_f[r, PF_S_B] = b
        rep_f[r, PF_S_BUSY] = rep_f[r, PF_BUSY_TIME]
        rep_f[r, PF_S_LONGEST] = rep_f[r, PF_LONGEST]
        rep_f[r, PF_S_TOKENS] = rep_f[r, PF_WORK_TOKENS]
        rep_f[r, PF_S_PAIRS] = rep_f[r, PF_WORK_PAIRS]
        rep_f[r, PF_S_KV] = rep_f[r, PF_WORK_KV]
        rep_f[r, PF_S_LOGITS] = rep_f[r, PF_WORK_LOGITS]
    _stretch_at(rep_i, rep_f, cfg, r, k)


@no_refcount_jit(inline="always")
def _stretch_first_end(rep_i, rep_f, r, lo, hi, t_end, at):
    """The first iteration k in [lo, hi] of replica r's stretch that ends after t_end or at or
    after `at` (hi if none before it does): a bisection, iteration ends increase along k."""
    start = rep_f[r, PF_S_START]
    end = start + _stretch_span(rep_i, rep_f, r, lo)
    if end > t_end or end >= at:
        return lo
    if hi - lo > 1:  # most often nothing before hi is: one look instead of the bisection
        end = start + _stretch_span(rep_i, rep_f, r, hi - 1)
        if not (end > t_end or end >= at):
            return hi
    while hi - lo > 1:  # lo does not end past the limits; hi is the answer if nothing before it is
        mid = lo + (hi - lo) // 2
        end = start + _stretch_span(rep_i, rep_f, r, mid)
        if end > t_end or end >= at:
            hi = mid
        else:
            lo = mid
    return hi


@no_refcount_jit(inline="always")
def _stretch_ahead(rep_i, rep_f, hk, queues, cfg, pool_i, r, t_end, next_arrival):
    """`_run_ahead` for a roofline stretch, in one jump: the iterations it would step through
    end up to (not including) the first that completes a sequence, leaves no KV for the next
    token, or ends after t_end or at or after next_arrival. Returns the iteration ends applied."""
    p = rep_i[r, PI_POOL]
    if queues[r, QU_HEAD] >= 0 or (rep_i[r, PI_STATE] == ACTIVE and queues[cfg[C_REPLICAS] + p, QU_HEAD] >= 0):
        return 0
    n = rep_i[r, PI_S_N]
    k = rep_i[r, PI_S_K]
    completes = hk[r, 0] - 1 - rep_i[r, PI_S_STEPS]  # its end brings decode step hk[r, 0]
    full = (pool_i[p, Q_KV_CAPACITY] - rep_i[r, PI_S_KV]) // n  # the next token would not fit after it
    last = min(completes, full)
    if last <= k:
        return 0
    target = _stretch_first_end(rep_i, rep_f, r, k, last, t_end, next_arrival)
    if target > k:
        _stretch_at(rep_i, rep_f, cfg, r, target)
        _tree_update(rep_i, rep_f, cfg, r)
    return target - k


@no_refcount_jit(inline="always")
def _run_ahead(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, t_end, next_arrival, iteration_s):
    """Fast-forward replica r through decode-only iterations that change nothing but itself.

    While r's in-flight iteration is decode only, completes no sequence, ends before
    `next_arrival` and before t_end, r's queues are empty and KV holds the next token of every
    decoding sequence, the next iteration is the same batch one token longer: apply the end of
    the iteration and start the next one in place. No other replica or request can see the
    difference, so the result is bit-identical to taking each iteration end as an event; it
    only skips the event machinery. Nothing outside r reads what the run changes, except an
    arrival that joins one of r's queues: from the event loop the run goes on past arrivals
    (`next_arrival` inf) and remembers where it started, and an arrival that r must see takes
    r back to the iteration in flight at its time (`_rewind`, which replays the run up to
    it). (Closed loops are excluded: another replica's completion may release a send, and its
    arrival, earlier than r's next iteration end.)
    """
    if cfg[C_CLIENTS] > 0:
        return
    decodes = rep_i[r, PI_ITER_DECODES]
    if decodes == 0 or rep_i[r, PI_PREFILLING] > 0 or rep_i[r, PI_IN_FLIGHT] == 0:
        return
    if cfg[C_ROOFLINE] == 1:  # a decode stretch: jump, in closed form
        if next_arrival == INF:
            rep_i[r, PI_S_RUN_K] = rep_i[r, PI_S_K]
        if _stretch_ahead(rep_i, rep_f, hk, queues, cfg, pool_i, r, t_end, next_arrival) > 0:
            rep_i[r, PI_AHEAD] = 1
        return
    if next_arrival == INF:  # a new run: remember where it starts
        rep_i[r, PI_CK_ITERATIONS] = rep_i[r, PI_ITERATIONS]
        rep_i[r, PI_CK_STEPS] = rep_i[r, PI_DECODE_STEPS]
        rep_i[r, PI_CK_CONTEXT] = rep_i[r, PI_DECODE_CONTEXT]
        rep_i[r, PI_CK_KV] = rep_i[r, PI_KV_USED]
        rep_f[r, PF_CK_START] = rep_f[r, PF_ITER_START]
        rep_f[r, PF_CK_UNTIL] = rep_f[r, PF_BUSY_UNTIL]
        rep_f[r, PF_CK_BUSY] = rep_f[r, PF_BUSY_TIME]
        rep_f[r, PF_CK_LONGEST] = rep_f[r, PF_LONGEST]
        rep_f[r, PF_CK_TOKENS] = rep_f[r, PF_WORK_TOKENS]
        rep_f[r, PF_CK_PAIRS] = rep_f[r, PF_WORK_PAIRS]
        rep_f[r, PF_CK_KV] = rep_f[r, PF_WORK_KV]
        rep_f[r, PF_CK_LOGITS] = rep_f[r, PF_WORK_LOGITS]
    if _ahead_steps(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, t_end, next_arrival, iteration_s) > 0:
        rep_i[r, PI_AHEAD] = 1


@no_refcount_jit(inline="always")
def _ahead_steps(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, t_end, next_arrival, iteration_s):
    """`_run_ahead`'s steps; returns how many iteration ends it applied."""
    p = rep_i[r, PI_POOL]
    shared_q = cfg[C_REPLICAS] + p
    kv_cap = pool_i[p, Q_KV_CAPACITY]
    decodes = rep_i[r, PI_ITER_DECODES]
    end = rep_f[r, PF_BUSY_UNTIL]
    steps = 0
    while True:
        if end > t_end or end >= next_arrival:
            break
        if rep_i[r, PI_HEAP] > 0 and hk[r, 0] <= rep_i[r, PI_DECODE_STEPS] + 1:
            break
        if queues[r, QU_HEAD] >= 0 or (rep_i[r, PI_STATE] == ACTIVE and queues[shared_q, QU_HEAD] >= 0):
            break
        if rep_i[r, PI_KV_USED] + decodes > kv_cap:
            break
        # the iteration ending at `end`: every decoding sequence produced one token
        rep_i[r, PI_ITERATIONS] += 1
        rep_i[r, PI_DECODE_STEPS] += 1
        rep_i[r, PI_DECODE_CONTEXT] += decodes
        # the next one: the same sequences, one token further
        rep_i[r, PI_KV_USED] += decodes
        dt = _duration(iteration_s, cfg, params, p, 0.0, 0, 0, 0, 0, decodes, rep_i[r, PI_DECODE_CONTEXT], decodes)
        rep_f[r, PF_ITER_START] = end
        end = end + dt
        rep_f[r, PF_BUSY_UNTIL] = end
        rep_f[r, PF_BUSY_TIME] += dt
        if dt > rep_f[r, PF_LONGEST]:
            rep_f[r, PF_LONGEST] = dt
        rep_f[r, PF_WORK_TOKENS] += decodes
        rep_f[r, PF_WORK_PAIRS] += rep_i[r, PI_DECODE_CONTEXT]
        rep_f[r, PF_WORK_KV] += rep_i[r, PI_DECODE_CONTEXT] + decodes
        rep_f[r, PF_WORK_LOGITS] += decodes
        steps += 1
    if steps > 0:
        _tree_update(rep_i, rep_f, cfg, r)
    return steps


@no_refcount_jit(inline="always")
def _rewind(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, ta, iteration_s):
    """A request arrives at ta for one of replica r's queues: if r ran ahead past ta, take it
    back to the iteration in flight at ta (the one it would have been in had its run stopped at
    the arrival): restore where the run started and replay it up to ta. Same arithmetic in the
    same order, so bit-identical."""
    if rep_i[r, PI_AHEAD] == 0 or rep_f[r, PF_ITER_START] < ta:
        return
    _rewind_run(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, ta, iteration_s)


@no_refcount_jit()  # a call: inlined at both of `_arrive`'s call sites it lengthened the cold compile by a third
def _rewind_run(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, ta, iteration_s):
    """`_rewind`'s work, once it must take r back."""
    if cfg[C_ROOFLINE] == 1:  # the first iteration since the run started that ends at or after ta
        k = _stretch_first_end(rep_i, rep_f, r, rep_i[r, PI_S_RUN_K], rep_i[r, PI_S_K] - 1, ta, ta)
        _stretch_at(rep_i, rep_f, cfg, r, k)
        _tree_update(rep_i, rep_f, cfg, r)
        return
    rep_i[r, PI_ITERATIONS] = rep_i[r, PI_CK_ITERATIONS]
    rep_i[r, PI_DECODE_STEPS] = rep_i[r, PI_CK_STEPS]
    rep_i[r, PI_DECODE_CONTEXT] = rep_i[r, PI_CK_CONTEXT]
    rep_i[r, PI_KV_USED] = rep_i[r, PI_CK_KV]
    rep_f[r, PF_ITER_START] = rep_f[r, PF_CK_START]
    rep_f[r, PF_BUSY_UNTIL] = rep_f[r, PF_CK_UNTIL]
    rep_f[r, PF_BUSY_TIME] = rep_f[r, PF_CK_BUSY]
    rep_f[r, PF_LONGEST] = rep_f[r, PF_CK_LONGEST]
    rep_f[r, PF_WORK_TOKENS] = rep_f[r, PF_CK_TOKENS]
    rep_f[r, PF_WORK_PAIRS] = rep_f[r, PF_CK_PAIRS]
    rep_f[r, PF_WORK_KV] = rep_f[r, PF_CK_KV]
    rep_f[r, PF_WORK_LOGITS] = rep_f[r, PF_CK_LOGITS]
    _tree_update(rep_i, rep_f, cfg, r)
    _ahead_steps(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, INF, ta, iteration_s)


@no_refcount_jit()
def _expire(req_i, req_f, rep_i, queues, sorder, glob, cfg, pool_f, i, t):
    """Request i's deadline has come: if it is not admitted in its current attempt (on its way,
    waiting for a path, or queued), it fails (client timeout)."""
    status = req_i[i, RI_STATUS]
    if status == PENDING:
        if np.isnan(req_f[i, RF_SEND]):
            return False  # a closed-loop request not released yet has no deadline
    elif status != WAITING or not np.isnan(req_f[i, RF_DISPATCH]):
        return False
    else:
        q = req_i[i, RI_QUEUE]
        _queue_remove(queues, req_i, q, i)
        if q < cfg[C_REPLICAS]:
            rep_i[q, PI_OUTSTANDING] -= 1
            _least_update(rep_i, cfg, q)
    req_i[i, RI_STATUS] = FAILED
    req_f[i, RF_DONE] = t
    _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, t)
    return True


# ------------------------------------------------------------------------------------------
# Managed model APIs: a rate-limit window counted at the send, token times drawn up front
# ------------------------------------------------------------------------------------------


@no_refcount_jit(inline="always")
def _api_tokens(req_i, i):
    """What a request counts against an API's tokens-per-minute limit: its prompt plus its
    output (providers reserve the input plus the requested output at admission)."""
    return req_i[i, RI_PROMPT] + req_i[i, RI_OUTPUT]


@no_refcount_jit()
def _api_within_limit(req_i, req_f, pool_i, p, i, t):
    """Does API pool p's rate limit admit request i sent at t? First forgets the requests
    admitted RATE_WINDOW_S or more before t (sends are taken in time order, so the window
    only moves forward and forgetting twice at one t changes nothing)."""
    head = pool_i[p, Q_WINDOW_HEAD]
    while head >= 0 and t - req_f[head, RF_LINK_SEND] >= RATE_WINDOW_S:
        pool_i[p, Q_WINDOW_COUNT] -= 1
        pool_i[p, Q_WINDOW_TOKENS] -= _api_tokens(req_i, head)
        head = req_i[head, RI_NEXT]
    pool_i[p, Q_WINDOW_HEAD] = head
    if head < 0:
        pool_i[p, Q_WINDOW_TAIL] = -1
    return (pool_i[p, Q_WINDOW_COUNT] + 1 <= pool_i[p, Q_API_RPM]
            and pool_i[p, Q_WINDOW_TOKENS] + _api_tokens(req_i, i) <= pool_i[p, Q_API_TPM])


@no_refcount_jit(inline="always")
def _api_admit(req_i, pool_i, p, i):
    """Request i, sent now to API pool p within its limit, joins the limit's window (a request
    at an API pool never waits in a queue, so its RI_NEXT links the window)."""
    req_i[i, RI_NEXT] = -1
    tail = pool_i[p, Q_WINDOW_TAIL]
    if tail >= 0:
        req_i[tail, RI_NEXT] = i
    else:
        pool_i[p, Q_WINDOW_HEAD] = i
    pool_i[p, Q_WINDOW_TAIL] = i
    pool_i[p, Q_WINDOW_COUNT] += 1
    pool_i[p, Q_WINDOW_TOKENS] += _api_tokens(req_i, i)


@no_refcount_jit()
def _arrive_api(req_i, req_f, pool_f, sorder, glob, cfg, aheap_t, aheap_i, i, ta):
    """Request i reaches its API pool at ta: answered 429 (REJECTED) if it was over the limit
    when sent, else it starts at once and its first token is due after its TTFT draw."""
    req_f[i, RF_ARRIVAL] = ta
    if req_i[i, RI_LIMITED] == 1:
        req_i[i, RI_STATUS] = REJECTED
        req_f[i, RF_DONE] = ta
        _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, ta)
        return
    p = req_i[i, RI_POOL]
    req_i[i, RI_STATUS] = RUNNING
    req_i[i, RI_VERSION] = 0  # the provider's model: never one of our fine-tuned versions
    req_f[i, RF_DISPATCH] = ta
    ttft = pool_f[p, F_API_TTFT_MEDIAN] * math.exp(pool_f[p, F_API_TTFT_SIGMA] * req_f[i, RF_TTFT_Z])
    _timed_push(aheap_t, aheap_i, glob, G_ARRIVING, ta + ttft, i)


@no_refcount_jit()
def _api_token(req_i, req_f, pool_f, sorder, glob, cfg, aheap_t, aheap_i, i, t):
    """A token event of request i at its API pool at t: its first token (then its last is due
    (output - 1) x its per-token draw later), or its last token (it is done)."""
    p = req_i[i, RI_POOL]
    if np.isnan(req_f[i, RF_FIRST_TOKEN]):
        req_f[i, RF_FIRST_TOKEN] = t
        pool_f[p, F_TTFT_SUM] += t - req_f[i, RF_ARRIVAL]
        pool_f[p, F_FIRST_TOKENS] += 1.0
        rest = req_i[i, RI_OUTPUT] - 1
        if rest > 0:
            tpot = pool_f[p, F_API_TPOT_MEDIAN] * math.exp(pool_f[p, F_API_TPOT_SIGMA] * req_f[i, RF_TPOT_Z])
            _timed_push(aheap_t, aheap_i, glob, G_ARRIVING, t + rest * tpot, i)
            return
    req_i[i, RI_STATUS] = DONE
    req_f[i, RF_DONE] = t
    _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, t)


# ------------------------------------------------------------------------------------------
# Sending: the pool choice and the path
# ------------------------------------------------------------------------------------------


@no_refcount_jit(inline="always")
def _path_back_at(path_w, path_n, k, t):
    """When path k comes back if it is cut at t (inside one of its outage windows), else -1."""
    for w in range(path_n[k]):
        if path_w[k, w, 0] <= t < path_w[k, w, 1]:
            return path_w[k, w, 1]
    return -1.0


@no_refcount_jit()
def _active_lists(rep_i, pool_i, cfg, active):
    """List each pool's active replicas, in order, in `active` from the pool's first replica
    on, and count them (Q_ACTIVE). Replicas change state only between advances (the control
    plane) and when one fails, so the lists are made then, not for every request."""
    for p in range(cfg[C_POOLS]):
        first = pool_i[p, Q_FIRST]
        n = 0
        for r in range(first, first + pool_i[p, Q_COUNT]):
            if rep_i[r, PI_STATE] == ACTIVE:
                active[first + n] = r
                n += 1
        pool_i[p, Q_ACTIVE] = n


@no_refcount_jit(inline="always")
def _over_threshold(req_f, rep_i, queues, cfg, pool_i, route_f, k, p, n_active, t):
    """Is pool p loaded beyond route k's overflow thresholds at t? (requests in the pool,
    waiting or running, per active replica; the oldest waiting request's wait)"""
    if route_f[k, RTF_QUEUE] == INF and route_f[k, RTF_WAIT] == INF:
        return False  # failover only: no need to look at the queues
    first = pool_i[p, Q_FIRST]
    shared_q = cfg[C_REPLICAS] + p
    queued = queues[shared_q, QU_LENGTH]
    oldest = INF
    if queues[shared_q, QU_HEAD] >= 0:
        oldest = req_f[queues[shared_q, QU_HEAD], RF_ARRIVAL]
    for r in range(first, first + pool_i[p, Q_COUNT]):
        queued += queues[r, QU_LENGTH] + rep_i[r, PI_RUNNING]
        head = queues[r, QU_HEAD]
        if head >= 0 and req_f[head, RF_ARRIVAL] < oldest:
            oldest = req_f[head, RF_ARRIVAL]
    if queued > route_f[k, RTF_QUEUE] * n_active:
        return True
    return oldest < INF and t - oldest > route_f[k, RTF_WAIT]


@no_refcount_jit(inline="always")
def _limited(req_i, req_f, pool_i, p, i, t):
    """Is p an API pool whose rate limit refuses request i at t?"""
    return pool_i[p, Q_API] == 1 and not _api_within_limit(req_i, req_f, pool_i, p, i, t)


@no_refcount_jit(inline="always")
def _choose_pool(req_i, req_f, rep_i, queues, cfg, pool_i, path_w, path_n, route_i, route_f, class_route, i, t):
    """The pool request i is sent to at t, and why (see the module docstring), or (-1, the
    time the first candidate's path comes back) when every candidate's path is cut."""
    k = class_route[req_i[i, RI_CLASS]]
    n = route_i[k, RT_LEN]
    first_open = -1  # the first candidate with replicas (a queue) whose path is up
    first_open_j = -1
    first_api = -1  # the first API candidate whose path is up (over its limit: answered 429)
    first_api_j = -1
    soonest_back = INF
    if route_i[k, RT_POLICY] == POLICY_WEIGHTED:
        total = 0.0
        reachable = 0.0  # the weights of the pools whose path is up, with a replica or not
        for j in range(n):
            p = route_i[k, RT_POOLS + j]
            back = _path_back_at(path_w, path_n, pool_i[p, Q_PATH], t)
            if back >= 0.0:
                soonest_back = min(soonest_back, back)
                continue
            if pool_i[p, Q_API] == 1:
                if first_api < 0:
                    first_api, first_api_j = p, j
                if _api_within_limit(req_i, req_f, pool_i, p, i, t):
                    reachable += route_f[k, RTF_WEIGHTS + j]
                    total += route_f[k, RTF_WEIGHTS + j]
                continue
            if first_open < 0:
                first_open, first_open_j = p, j
            reachable += route_f[k, RTF_WEIGHTS + j]
            if pool_i[p, Q_ACTIVE] > 0:
                total += route_f[k, RTF_WEIGHTS + j]
        if reachable > total:
            # demand missed: the draw among every reachable pool picks one without a replica
            target = req_f[i, RF_ROUTE_U] * reachable
            acc = 0.0
            for j in range(n):
                p = route_i[k, RT_POOLS + j]
                if _path_back_at(path_w, path_n, pool_i[p, Q_PATH], t) >= 0.0 or route_f[k, RTF_WEIGHTS + j] <= 0.0:
                    continue
                if _limited(req_i, req_f, pool_i, p, i, t):
                    continue
                acc += route_f[k, RTF_WEIGHTS + j]
                if target < acc:
                    if pool_i[p, Q_API] == 0 and pool_i[p, Q_ACTIVE] == 0:
                        pool_i[p, Q_SOUGHT] += 1
                    break
        if total > 0.0:
            target = req_f[i, RF_ROUTE_U] * total
            acc = 0.0
            last = -1
            for j in range(n):
                p = route_i[k, RT_POOLS + j]
                if _path_back_at(path_w, path_n, pool_i[p, Q_PATH], t) >= 0.0 or route_f[k, RTF_WEIGHTS + j] <= 0.0:
                    continue
                if pool_i[p, Q_API] == 1:
                    if not _api_within_limit(req_i, req_f, pool_i, p, i, t):
                        continue
                elif pool_i[p, Q_ACTIVE] == 0:
                    continue
                last = p
                acc += route_f[k, RTF_WEIGHTS + j]
                if target < acc:
                    return p, float(WEIGHTED)
            return last, float(WEIGHTED)
    else:
        last_available = -1
        last_why = PREFERRED
        skipped_unavailable = False  # a pool before this one was unavailable
        for j in range(n):
            p = route_i[k, RT_POOLS + j]
            back = _path_back_at(path_w, path_n, pool_i[p, Q_PATH], t)
            if back >= 0.0:
                soonest_back = min(soonest_back, back)
                skipped_unavailable = True
                continue
            if pool_i[p, Q_API] == 1:
                if first_api < 0:
                    first_api, first_api_j = p, j
                if _api_within_limit(req_i, req_f, pool_i, p, i, t):  # no queue of ours: thresholds do not apply
                    return p, float(PREFERRED if j == 0 else (FAILOVER if skipped_unavailable else OVERFLOW))
                continue  # over its rate limit: loaded, and never the end of the chain (it cannot take i)
            if first_open < 0:
                first_open, first_open_j = p, j
            n_active = pool_i[p, Q_ACTIVE]
            if n_active == 0:
                pool_i[p, Q_SOUGHT] += 1
                skipped_unavailable = True
                continue
            why = PREFERRED if j == 0 else (FAILOVER if skipped_unavailable else OVERFLOW)
            last_available, last_why = p, why
            if _over_threshold(req_f, rep_i, queues, cfg, pool_i, route_f, k, p, n_active, t):
                continue
            return p, float(why)
        if last_available >= 0:  # every available pool is loaded: the end of the overflow chain
            return last_available, float(last_why)
    if first_open >= 0:  # nothing can serve now: queue at the first pool that can be reached
        return first_open, float(PREFERRED if first_open_j == 0 else FAILOVER)
    if first_api >= 0:  # only APIs over their limit can be reached: the first answers 429
        return first_api, float(PREFERRED if first_api_j == 0 else FAILOVER)
    return -1, soonest_back


@no_refcount_jit(inline="always")
def _send(req_i, req_f, rep_i, queues, glob, cfg, pool_i, path_f, path_w, path_n, route_i, route_f, class_route,
          aheap_t, aheap_i, rheap_t, rheap_i, i, t):
    """Client sends request i at t: choose its pool and put it on the path there (or wait for
    a path to come back)."""
    if req_i[i, RI_STATUS] != PENDING:
        return  # its client gave up while it waited for a path
    p, why = _choose_pool(req_i, req_f, rep_i, queues, cfg, pool_i, path_w, path_n, route_i, route_f,
                          class_route, i, t)
    if p < 0:
        _timed_push(rheap_t, rheap_i, glob, G_RESENDING, why, i)
        return
    req_i[i, RI_POOL] = p
    req_i[i, RI_REASON] = int(why)
    req_f[i, RF_LINK_SEND] = t
    if pool_i[p, Q_API] == 1:
        if _api_within_limit(req_i, req_f, pool_i, p, i, t):
            _api_admit(req_i, pool_i, p, i)
        else:
            req_i[i, RI_LIMITED] = 1
    k = pool_i[p, Q_PATH]
    start = t if t > path_f[k, PA_FREE_AT] else path_f[k, PA_FREE_AT]
    free_at = start + req_f[i, RF_BYTES] / path_f[k, PA_BANDWIDTH]
    path_f[k, PA_FREE_AT] = free_at
    delay = path_f[k, PA_ONE_WAY] + path_f[k, PA_JITTER] * req_f[i, RF_JITTER]
    if delay < 0.0:
        delay = 0.0
    _arrival_push(aheap_t, aheap_i, glob, free_at + delay, i)


# ------------------------------------------------------------------------------------------
# The clock
# ------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)  # a streamed run's tally works on meanwhile (`metrics.tally.TallyThread`)
def advance(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues, prefix_tokens_of_group,
            sorder, deadline_order, glob, cfg, pool_i, pool_f, params, path_f, path_w, path_n, route_i, route_f,
            class_route, aheap_t, aheap_i, rheap_t, rheap_i, t_end, route, router_memory, iteration_s):
    """Run every send, arrival, iteration end and deadline with time <= t_end; returns the
    events processed.

    `route` is the router's numba function (`sim.routers`), `router_memory` its state per
    pool, and `iteration_s` the service model's duration function
    (`sim.kernels.service_models`). The event loop itself (`_advance`) runs without numba's
    reference counting: it allocates nothing, and counting the references of every array
    view it takes (a pool's parameters, a column for the router) was half its time."""
    active = np.empty(max(cfg[C_REPLICAS], 1), dtype=np.int64)  # each pool's active replicas
    return _advance(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues, prefix_tokens_of_group,
                    sorder, deadline_order, glob, cfg, pool_i, pool_f, params, path_f, path_w, path_n, route_i,
                    route_f, class_route, aheap_t, aheap_i, rheap_t, rheap_i, t_end, route, router_memory,
                    iteration_s, active)


@no_refcount_jit()
def _advance(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues, prefix_tokens_of_group,
             sorder, deadline_order, glob, cfg, pool_i, pool_f, params, path_f, path_w, path_n, route_i, route_f,
             class_route, aheap_t, aheap_i, rheap_t, rheap_i, t_end, route, router_memory, iteration_s, active):
    """`advance`'s event loop; `active` holds each pool's active replicas (one slot per replica)."""
    closed = cfg[C_CLIENTS] > 0
    events = 0
    # the control plane may have changed replicas since the last advance
    _tree_build(rep_i, rep_f, cfg)
    _least_build(rep_i, cfg)
    _active_lists(rep_i, pool_i, cfg, active)
    while True:
        # the next send: the next in send order, or a request whose path came back
        ts = INF
        resend = False
        if glob[G_NEXT_SEND] < glob[G_SENDS]:
            ts = req_f[sorder[glob[G_NEXT_SEND]], RF_SEND]
        if glob[G_RESENDING] > 0 and (rheap_t[0] < ts or (rheap_t[0] == ts
                                                           and rheap_i[0] < sorder[glob[G_NEXT_SEND]])):
            ts = rheap_t[0]
            resend = True
        ta, source = _arrival_next(aheap_t, aheap_i, glob)
        te, rmin = _tree_next(rep_i, rep_f, cfg)
        # deadlines (client timeouts): INF without a timeout, so nothing below changes then
        td = INF
        j = -1
        if cfg[C_DEADLINES] == 1:
            deadlines = glob[G_SENDS] if closed else deadline_order.shape[0]
            if glob[G_NEXT_DEADLINE] < deadlines:
                j = deadline_order[glob[G_NEXT_DEADLINE]]
                td = req_f[j, RF_DEADLINE]
        if ts == INF and ta == INF and te == INF and td == INF:
            break
        if ts <= ta and ts <= te and ts <= td:
            if ts > t_end:
                break
            if resend:
                i = _timed_pop(rheap_t, rheap_i, glob, G_RESENDING)
            else:
                i = sorder[glob[G_NEXT_SEND]]
                glob[G_NEXT_SEND] += 1
            events += 1
            _send(req_i, req_f, rep_i, queues, glob, cfg, pool_i, path_f, path_w, path_n, route_i, route_f,
                  class_route, aheap_t, aheap_i, rheap_t, rheap_i, i, ts)
            continue
        if td < ta and td < te:
            if td > t_end:
                break
            glob[G_NEXT_DEADLINE] += 1
            if _expire(req_i, req_f, rep_i, queues, sorder, glob, cfg, pool_f, j, td):
                events += 1
            continue
        if ta <= te:
            if ta > t_end:
                break
            i = _arrival_pop(aheap_t, aheap_i, glob, source)
            if req_i[i, RI_STATUS] == RUNNING:  # only a request at an API pool is RUNNING here
                events += 1
                _api_token(req_i, req_f, pool_f, sorder, glob, cfg, aheap_t, aheap_i, i, ta)
                continue
            if req_i[i, RI_STATUS] != PENDING:
                continue  # its client gave up on the way
            events += 1
            if pool_i[req_i[i, RI_POOL], Q_API] == 1:
                _arrive_api(req_i, req_f, pool_f, sorder, glob, cfg, aheap_t, aheap_i, i, ta)
                continue
            _arrive(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                    prefix_tokens_of_group, sorder, glob, cfg, pool_i, pool_f, params, route, router_memory,
                    iteration_s, active, i, ta)
        else:
            if te > t_end:
                break
            events += 1
            if rep_i[rmin, PI_IN_FLIGHT] == TIMER:
                rep_i[rmin, PI_IN_FLIGHT] = IDLE
                _tree_update(rep_i, rep_f, cfg, rmin)
            elif cfg[C_BATCHING] == DYNAMIC:
                _end_dynamic_batch(req_i, req_f, rep_i, rep_f, running, cache_i, sorder, glob, cfg, pool_f, rmin)
            else:
                _end_iteration(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i,
                               prefix_tokens_of_group, sorder, glob, cfg, pool_i, pool_f, rmin)
            # async scheduling: the next iteration was scheduled when the one ending now
            # started, so it admits only what had arrived by then; with nothing to run, the
            # scheduler looks again at once
            cutoff = rep_f[rmin, PF_ITER_START] if pool_i[rep_i[rmin, PI_POOL], Q_ASYNC] == 1 else te
            if not _compose_untracked(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                                      prefix_tokens_of_group, glob, cfg, pool_i, params, rmin, te, cutoff,
                                      iteration_s) and cutoff < te:
                _compose_untracked(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                                   prefix_tokens_of_group, glob, cfg, pool_i, params, rmin, te, te, iteration_s)
            _run_ahead(rep_i, rep_f, hk, queues, cfg, pool_i, params, rmin, t_end, INF, iteration_s)
            _tree_update(rep_i, rep_f, cfg, rmin)  # once, for all of the above
    return events


@no_refcount_jit(inline="always")
def _arrive(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues, prefix_tokens_of_group,
            sorder, glob, cfg, pool_i, pool_f, params, route, router_memory, iteration_s, active, i, ta):
    """Request i arrives at its pool at ta: rejected if it can never fit, else queued by the
    pool's router, and the replicas that can take it compose."""
    n_rep = cfg[C_REPLICAS]
    req_f[i, RF_ARRIVAL] = ta
    p = req_i[i, RI_POOL]
    total = req_i[i, RI_PROMPT] + req_i[i, RI_OUTPUT]
    if total > pool_i[p, Q_MAX_MODEL_LEN] or total > pool_i[p, Q_KV_CAPACITY]:
        req_i[i, RI_STATUS] = REJECTED
        req_f[i, RF_DONE] = ta
        _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, ta)
        return
    q = _route(req_i, req_f, rep_i, cache_i, cfg, pool_i, i, p, route, router_memory, active)
    if q < n_rep:
        _rewind(rep_i, rep_f, hk, queues, cfg, pool_i, params, q, ta, iteration_s)
    else:  # the shared queue: every active replica of the pool sees it
        first = pool_i[p, Q_FIRST]
        for r in range(first, first + pool_i[p, Q_COUNT]):
            if rep_i[r, PI_STATE] == ACTIVE:
                _rewind(rep_i, rep_f, hk, queues, cfg, pool_i, params, r, ta, iteration_s)
    req_i[i, RI_STATUS] = WAITING
    req_i[i, RI_TARGET] = req_i[i, RI_PROMPT]
    _queue_push(queues, req_i, q, i, cfg[C_PRIORITIES])
    if q < n_rep:
        rep_i[q, PI_OUTSTANDING] += 1
        _least_update(rep_i, cfg, q)
        if rep_i[q, PI_IN_FLIGHT] != BUSY:
            _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                     prefix_tokens_of_group, glob, cfg, pool_i, params, q, ta, ta, iteration_s)
    else:
        first = pool_i[p, Q_FIRST]
        for r in range(first, first + pool_i[p, Q_COUNT]):
            if rep_i[r, PI_IN_FLIGHT] != BUSY and rep_i[r, PI_STATE] == ACTIVE:
                _compose(req_i, req_f, rep_i, rep_f, running, prefilling, hk, hr, cache_i, queues,
                         prefix_tokens_of_group, glob, cfg, pool_i, params, r, ta, ta, iteration_s)
                if queues[q, QU_HEAD] < 0:
                    break


@no_refcount_jit()
def _reroute(req_i, req_f, rep_i, cache_i, queues, cfg, pool_i, i, route, router_memory, active):
    p = req_i[i, RI_POOL]
    q = _route(req_i, req_f, rep_i, cache_i, cfg, pool_i, i, p, route, router_memory, active)
    _queue_push(queues, req_i, q, i, cfg[C_PRIORITIES])
    if q < cfg[C_REPLICAS]:
        rep_i[q, PI_OUTSTANDING] += 1
        _least_update(rep_i, cfg, q)


@njit(cache=True)
def _fail_replica(req_i, req_f, rep_i, rep_f, running, cache_i, queues, sorder, glob, cfg, pool_i, pool_f, r, t,
                  max_attempts, route, router_memory):
    """Replica r fails at t (see the module docstring); returns the requests that failed for good."""
    lost = np.empty(rep_i[r, PI_RUNNING], dtype=np.int64)
    for k in range(rep_i[r, PI_RUNNING]):
        lost[k] = running[r, k]
    # r's own queue: preempted requests were admitted in this attempt, the others were not
    untouched = np.empty(0, dtype=np.int64)
    own = queues[r, QU_LENGTH]
    if own > 0:
        keep = np.empty(own, dtype=np.int64)
        kept = 0
        extra = np.empty(own, dtype=np.int64)
        lost_queued = 0
        while queues[r, QU_HEAD] >= 0:
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
    _tree_update(rep_i, rep_f, cfg, r)
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
    rep_i[r, PI_AHEAD] = 0
    rep_i[r, PI_S_N] = 0
    _least_build(rep_i, cfg)
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
        timed_out = t >= req_f[i, RF_DEADLINE]
        if out_of_attempts or timed_out:
            req_i[i, RI_STATUS] = FAILED
            req_f[i, RF_DONE] = t
            failed[n_failed] = i
            n_failed += 1
            _release_after(req_f, req_i, sorder, glob, cfg, pool_f, i, t)
        else:
            req_i[i, RI_RETRIES] += 1
            req_i[i, RI_STATUS] = WAITING
            retry[n_retry] = i
            n_retry += 1
    # the router places them again, as new arrivals: retried ones first, oldest first
    active = np.empty(max(cfg[C_REPLICAS], 1), dtype=np.int64)
    _active_lists(rep_i, pool_i, cfg, active)  # without r, now DOWN
    for k in range(n_retry):
        _reroute(req_i, req_f, rep_i, cache_i, queues, cfg, pool_i, retry[k], route, router_memory, active)
    for i in untouched:
        _reroute(req_i, req_f, rep_i, cache_i, queues, cfg, pool_i, i, route, router_memory, active)
    return failed[:n_failed]


# The entry points that take the router and the service model's duration are compiled for
# exactly one signature, with both as first-class functions (`sim.routers.ROUTER_TYPE`,
# `sim.kernels.service_models.ITERATION_TYPE`), the first time a kernel is built
# (`_compile_entry_points`). Left to specialise on their arguments, they would be
# compiled once per router function, and such a specialisation is not found in the cache by
# the next process (measured with numba 0.68: every run would compile again).
_I32_2D = types.int32[:, ::1]
_I64_1D, _I64_2D, _I64_3D = types.int64[::1], types.int64[:, ::1], types.int64[:, :, ::1]
_F64_1D, _F64_2D, _F64_3D = types.float64[::1], types.float64[:, ::1], types.float64[:, :, ::1]
ADVANCE_SIGNATURE = types.int64(
    _I32_2D, _F64_2D, _I64_2D, _F64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_3D, _I64_2D, _I64_1D,
    _I64_1D, _I64_1D, _I64_1D, _I64_1D, _I64_2D, _F64_2D, _F64_2D, _F64_2D, _F64_3D, _I64_1D, _I64_2D, _F64_2D,
    _I64_1D, _F64_1D, _I64_1D, _F64_1D, _I64_1D, types.float64, ROUTER_TYPE, _I64_2D, ITERATION_TYPE)
COMPOSE_SIGNATURE = types.boolean(
    _I32_2D, _F64_2D, _I64_2D, _F64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_2D, _I64_3D, _I64_2D,
    _I64_1D, _I64_1D, _I64_1D, _I64_2D, _F64_2D, types.int64, types.float64, types.float64, ITERATION_TYPE)
FAIL_SIGNATURE = types.int64[:](
    _I32_2D, _F64_2D, _I64_2D, _F64_2D, _I64_2D, _I64_3D, _I64_2D, _I64_1D, _I64_1D, _I64_1D, _I64_2D, _F64_2D,
    types.int64, types.float64, types.int64, ROUTER_TYPE, _I64_2D)


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


@njit(cache=True, nogil=True)  # a streamed run writes its next chunk's rows on a thread (`streaming.ReadAhead`)
def _fill_rows(req_i, req_f, row_i, row_f, int_fields, int_values, float_fields, float_values):
    """Row j of req_i / req_f: the template row, then request j's own values of the given
    fields. One pass over memory in row order (numpy's column writes stream the whole array
    once per column)."""
    for j in range(req_i.shape[0]):
        for c in range(row_i.shape[0]):
            req_i[j, c] = row_i[c]
        for k in range(int_fields.shape[0]):
            req_i[j, int_fields[k]] = int_values[k, j]
        for c in range(row_f.shape[0]):
            req_f[j, c] = row_f[c]
        for k in range(float_fields.shape[0]):
            req_f[j, float_fields[k]] = float_values[k, j]


def request_arrays(n: int, row_i: np.ndarray, ints: Mapping[int, np.ndarray], row_f: np.ndarray,
                   floats: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`req_i` (int32) and `req_f` (float64) for n requests: every row the template (`row_i`,
    `row_f`) with each request's values of the fields in `ints` and `floats` (field -> one
    value per request)."""
    req_i = np.empty((n, RI_SIZE), dtype=np.int32)
    req_f = np.empty((n, RF_SIZE), dtype=np.float64)
    int_values = np.empty((len(ints), n), dtype=np.int32)
    for k, values in enumerate(ints.values()):
        int_values[k] = values
    float_values = np.empty((len(floats), n), dtype=np.float64)
    for k, values in enumerate(floats.values()):
        float_values[k] = values
    _fill_rows(req_i, req_f, row_i.astype(np.int32), row_f.astype(np.float64),
               np.array(list(ints), dtype=np.int64), int_values, np.array(list(floats), dtype=np.int64), float_values)
    return req_i, req_f


# ------------------------------------------------------------------------------------------
# The Python face of the kernel: owns the arrays, exposes a handful of calls.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolConfig:
    """One serving pool of the cluster: its replicas, its engine's settings, its path.

    `params` are the service model's parameters for this pool's replica (the roofline's packed
    vector; for dynamic batching `batch_latency` and `max_queue_delay_s` instead). `path` is
    the index of the path (`PathConfig`) its requests take; `loop_delay_s` the closed loop's
    delay from a request completing here to its client's next send (the response's way back
    and the think time)."""

    replicas: int
    max_num_seqs: int
    max_num_batched_tokens: int
    chunked_prefill: bool
    kv_capacity_tokens: int
    max_model_len: int
    active_replicas: int | None = None
    params: np.ndarray | None = None
    prefix_caching: bool = True
    async_scheduling: bool = False
    frontend_s: float = 0.0
    frontend_per_step: float = 0.0
    batch_latency: tuple[float, float] | None = None
    max_queue_delay_s: float = 0.0
    path: int = 0
    loop_delay_s: float = 0.0
    api: ApiConfig | None = None
    """A managed model API instead of replicas (`api_pool`); None for a pool of GPUs."""


@dataclass(frozen=True)
class ApiConfig:
    """A managed model API (module docstring): its latency profile, lognormal time to first
    token and time per output token after the first (median, and sigma of the log; 0: always
    the median), and its rate limit, requests and prompt + output tokens per RATE_WINDOW_S
    (None: no such limit)."""

    ttft_median_s: float
    tpot_median_s: float
    ttft_sigma: float = 0.0
    tpot_sigma: float = 0.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


def api_pool(api: ApiConfig, path: int = 0, loop_delay_s: float = 0.0) -> PoolConfig:
    """The pool of a managed API: no replicas, no engine settings (nothing of ours runs it)."""
    return PoolConfig(replicas=0, max_num_seqs=1, max_num_batched_tokens=1, chunked_prefill=False,
                      kv_capacity_tokens=0, max_model_len=0, path=path, loop_delay_s=loop_delay_s, api=api)


@dataclass(frozen=True)
class PathConfig:
    """The way from the clients to a pool's site: a FIFO at `bandwidth_bytes_per_s`, then the
    one-way delay plus jitter (standard deviation `jitter_s`); cut during `windows` (start, end)."""

    one_way_s: float = 0.0
    bandwidth_bytes_per_s: float = math.inf
    jitter_s: float = 0.0
    windows: Sequence[tuple[float, float]] = ()


@dataclass(frozen=True)
class RouteConfig:
    """Pools in preference order and how to choose among them (module docstring): `overflow`
    with its thresholds (queued requests per active replica, the oldest queued request's
    wait), or `weighted` with one weight per pool."""

    pools: Sequence[int]
    policy: str = "overflow"
    queue_per_replica: float = math.inf
    wait_s: float = math.inf
    weights: Sequence[float] = ()


POLICIES = {"overflow": POLICY_OVERFLOW, "weighted": POLICY_WEIGHTED}


class ClusterKernel:
    """The arrays of a serving cluster and the calls that change them.

    Build it with the pools, the paths and routes, and the requests (send times, token
    counts, payload sizes, traffic classes, prefix groups); then call `advance_to(t)` as often
    as you like, and the control calls (`drain`, `activate`, `deactivate`, `set_version`,
    and for faults `fail`, `restore`) between advances. Replicas are numbered across the
    cluster: pool p's are `pool_replicas(p)`. Results are read from the request arrays
    (`send_s`, `link_send_s`, `pool`, `reason`, `arrival_s`, `dispatch_s`, `first_token_s`,
    `done_s`, `replica`, `version`, `status`, `preemptions`, `attempts`).

    Randomness comes in as arrays drawn up front: `router_u` (a pool's router), `route_u` (a
    weighted pool choice), `jitter_z` (standard normal, times a path's jitter). Faults:
    `timeout_s` is the client timeout from the send (`deadline_s` sets each request's deadline
    instead), `max_attempts` the most attempts a request makes when replicas fail (0: no
    limit). `clients` > 0 makes a closed loop (the first `clients` sends are given).
    """

    def __init__(
        self,
        pools: Sequence[PoolConfig],
        send_s: np.ndarray,
        prompt_tokens: np.ndarray,
        output_tokens: np.ndarray,
        *,
        paths: Sequence[PathConfig] = (PathConfig(),),
        routes: Sequence[RouteConfig] | None = None,
        request_class: np.ndarray | None = None,
        class_route: Sequence[int] | None = None,
        class_priority: Sequence[int] | None = None,
        request_bytes: np.ndarray | None = None,
        jitter_z: np.ndarray | None = None,
        route_u: np.ndarray | None = None,
        router: str = "least_outstanding",
        router_u: np.ndarray | None = None,
        prefix_group: np.ndarray | None = None,
        prefix_tokens: np.ndarray | None = None,
        service_s: np.ndarray | None = None,
        service_model: str | None = None,
        clients: int = 0,
        timeout_s: float = math.inf,
        deadline_s: np.ndarray | None = None,
        max_attempts: int = 0,
        api_z: np.ndarray | None = None,
    ) -> None:
        n = len(send_s)
        if not (len(prompt_tokens) == len(output_tokens) == n):
            raise ValueError("request arrays differ in length")
        if not pools:
            raise ValueError("a cluster needs at least one pool")
        if router not in ROUTERS:
            raise ValueError(f"unknown router {router!r}; allowed: {', '.join(ROUTERS)}")
        gpu_pools = [p for p in pools if p.api is None]
        latencies = [p.batch_latency for p in gpu_pools if p.batch_latency is not None]
        model = SERVICE_MODELS[service_model or default_service_model(service_s, latencies[0] if latencies else None)]
        if service_s is not None and latencies:
            raise ValueError("service_s and batch_latency are two different service models; pick one")
        if model.unit_requests and service_s is None:
            raise ValueError(f"service model {model.name!r} needs service_s: each request's service time")
        dynamic = model.batching == DYNAMIC
        if dynamic and len(latencies) != len(gpu_pools):
            raise ValueError(f"service model {model.name!r} needs batch_latency: (a, c) of a + c x b, for every pool")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0 (0: no limit), got {max_attempts}")
        _compile_entry_points()
        self.route = compiled(ROUTERS[router].choose, ROUTER_SIGNATURE)
        self.iteration_s = compiled(model.iteration_s, ITERATION_SIGNATURE)
        self.service_model = model.name
        self.n = n
        self.max_attempts = int(max_attempts)
        n_pools = len(pools)
        self.n_pools = n_pools
        replicas = sum(p.replicas for p in pools)
        self.replicas = replicas
        self.router_memory = np.zeros((n_pools, ROUTER_MEMORY_SLOTS), dtype=np.int64)
        # -- requests
        routes = list(routes) if routes is not None else [RouteConfig(pools=list(range(n_pools)))]
        n_classes = int(np.max(request_class)) + 1 if request_class is not None and n else 1
        class_route = list(class_route) if class_route is not None else [0] * n_classes
        priorities = list(class_priority) if class_priority is not None else [0] * len(class_route)
        if len(class_route) < n_classes or len(priorities) < n_classes:
            raise ValueError(f"{n_classes} traffic classes need a route and a priority each")
        self.class_route = np.array(class_route, dtype=np.int64)
        self.priority_of = np.array(priorities, dtype=np.int64)
        unit = self.unit_requests = model.unit_requests
        self.req_i, self.req_f = self.request_rows(
            send_s, prompt_tokens, output_tokens, request_class=request_class, prefix_group=prefix_group,
            prefix_tokens=prefix_tokens, service_s=service_s, router_u=router_u, route_u=route_u,
            jitter_z=jitter_z, request_bytes=request_bytes, api_z=api_z)
        longest = max(len(r.pools) for r in routes)
        self.route_i = np.full((len(routes), RT_POOLS + longest), -1, dtype=np.int64)
        self.route_f = np.zeros((len(routes), RTF_WEIGHTS + longest), dtype=np.float64)
        for k, r in enumerate(routes):
            if not r.pools or not all(0 <= p < n_pools for p in r.pools):
                raise ValueError(f"route {k} names pools outside 0..{n_pools - 1}: {list(r.pools)}")
            if r.policy not in POLICIES:
                raise ValueError(f"unknown route policy {r.policy!r}; allowed: {', '.join(POLICIES)}")
            self.route_i[k, RT_POLICY] = POLICIES[r.policy]
            self.route_i[k, RT_LEN] = len(r.pools)
            self.route_i[k, RT_POOLS:RT_POOLS + len(r.pools)] = r.pools
            self.route_f[k, RTF_QUEUE] = r.queue_per_replica
            self.route_f[k, RTF_WAIT] = r.wait_s
            if r.policy == "weighted":
                if len(r.weights) != len(r.pools) or min(r.weights) < 0 or sum(r.weights) <= 0:
                    raise ValueError(f"route {k}: one non-negative weight per pool, some positive")
                self.route_f[k, RTF_WEIGHTS:RTF_WEIGHTS + len(r.pools)] = r.weights
        # -- paths
        self.path_f = np.zeros((len(paths), PA_SIZE), dtype=np.float64)
        most = max((len(p.windows) for p in paths), default=0)
        self.path_w = np.zeros((len(paths), max(most, 1), 2), dtype=np.float64)
        self.path_n = np.zeros(len(paths), dtype=np.int64)
        for k, path in enumerate(paths):
            self.path_f[k, PA_ONE_WAY] = path.one_way_s
            self.path_f[k, PA_BANDWIDTH] = path.bandwidth_bytes_per_s
            self.path_f[k, PA_JITTER] = path.jitter_s
            self.path_f[k, PA_FREE_AT] = -INF
            windows = sorted(path.windows)
            self.path_n[k] = len(windows)
            for w, (start, end) in enumerate(windows):
                self.path_w[k, w] = (start, end)
        # -- pools and replicas
        max_seqs = max(1 if unit else p.max_num_seqs for p in pools)
        self.pool_i = np.zeros((n_pools, Q_SIZE), dtype=np.int64)
        self.pool_f = np.zeros((n_pools, F_SIZE), dtype=np.float64)
        self.rep_i = np.zeros((replicas, PI_SIZE), dtype=np.int64)
        self.rep_f = np.zeros((replicas, PF_SIZE), dtype=np.float64)
        self.rep_f[:, PF_BUSY_UNTIL] = np.inf
        vectors = []
        first = 0
        for p, pool in enumerate(pools):
            if not 0 <= pool.path < len(paths):
                raise ValueError(f"pool {p} takes path {pool.path}, but there are {len(paths)} paths")
            row = self.pool_i[p]
            row[Q_FIRST] = first
            row[Q_COUNT] = pool.replicas
            row[Q_MAX_SEQS] = 1 if unit else pool.max_num_seqs
            row[Q_BUDGET] = pool.max_num_batched_tokens
            row[Q_CHUNKED] = 1 if pool.chunked_prefill and not unit and not dynamic else 0
            row[Q_PREFIX_CACHING] = 1 if pool.prefix_caching else 0
            row[Q_KV_CAPACITY] = pool.kv_capacity_tokens
            row[Q_MAX_MODEL_LEN] = pool.max_model_len
            # an engine's scheduler runs ahead; a service-time server or a batching server does not
            row[Q_ASYNC] = 1 if pool.async_scheduling and not unit and not dynamic else 0
            row[Q_PATH] = pool.path
            self.pool_f[p, F_LOOP_DELAY] = pool.loop_delay_s
            self.pool_f[p, F_FRONTEND_S] = pool.frontend_s
            self.pool_f[p, F_FRONTEND_PER_STEP] = pool.frontend_per_step
            self._set_api(p, pool)
            active = pool.replicas if pool.active_replicas is None else pool.active_replicas
            self.rep_i[first:first + pool.replicas, PI_POOL] = p
            self.rep_i[first:first + active, PI_STATE] = ACTIVE
            if pool.batch_latency is not None:
                vectors.append(np.array([pool.batch_latency[0], pool.batch_latency[1], pool.max_queue_delay_s]))
            else:
                vectors.append(np.zeros(1) if pool.params is None else np.asarray(pool.params, dtype=np.float64))
            first += pool.replicas
        width = max(len(v) for v in vectors)
        self.params = np.zeros((n_pools, width), dtype=np.float64)
        for p, vector in enumerate(vectors):
            self.params[p, :len(vector)] = vector
        self.running = np.zeros((replicas, max_seqs), dtype=np.int64)
        self.prefilling = np.zeros((replicas, max_seqs), dtype=np.int64)
        self.heap_key = np.zeros((replicas, max_seqs), dtype=np.int64)
        self.heap_req = np.zeros((replicas, max_seqs), dtype=np.int64)
        groups = int(self.req_i[:, RI_GROUP].max()) + 1 if n else 0
        groups = max(groups, 1)
        self.prefix_tokens_of_group = np.zeros(groups, dtype=np.int64)
        grouped = self.req_i[:, RI_GROUP] >= 0
        # a group's prefix is its longest request's: a trace's prompt shorter than the prefix holds part of it
        np.maximum.at(self.prefix_tokens_of_group, self.req_i[grouped, RI_GROUP], self.req_i[grouped, RI_PREFIX])
        self.cache_i = np.zeros((max(replicas, 1), groups, K_SIZE), dtype=np.int64)
        self.queues = np.full((replicas + n_pools, QU_SIZE), -1, dtype=np.int64)
        self.queues[:, QU_LENGTH] = 0
        # -- sends, arrivals on their way, sends waiting for a path
        self.glob = np.zeros(G_SIZE, dtype=np.int64)
        if clients > 0:
            self.sorder = np.full(n, -1, dtype=np.int64)
            first_sends = min(clients, n)
            self.sorder[:first_sends] = np.argsort(np.asarray(send_s[:first_sends]), kind="stable")
            self.req_f[first_sends:, RF_SEND] = np.nan
            self.glob[G_SENDS] = first_sends
            self.glob[G_NEXT_UNRELEASED] = first_sends
        else:
            sent = np.flatnonzero(~np.isnan(self.req_f[:, RF_SEND]))
            self.sorder = sent[np.argsort(self.req_f[sent, RF_SEND], kind="stable")].astype(np.int64)
            self.glob[G_SENDS] = len(self.sorder)
            self.glob[G_NEXT_UNRELEASED] = n
        self.aheap_t = np.zeros(2 * max(n, 1), dtype=np.float64)  # heap, then FIFO (`_arrival_push`)
        self.aheap_i = np.zeros(2 * max(n, 1), dtype=np.int64)
        has_windows = bool(self.path_n.sum())
        self.rheap_t = np.zeros(max(n, 1) if has_windows else 1, dtype=np.float64)
        self.rheap_i = np.zeros(max(n, 1) if has_windows else 1, dtype=np.int64)
        # -- configuration and deadlines
        self.cfg = np.zeros(C_SIZE, dtype=np.int64)
        self.cfg[C_REPLICAS] = replicas
        self.cfg[C_POOLS] = n_pools
        self.cfg[C_CLIENTS] = clients
        self.cfg[C_GROUPS] = groups
        self.cfg[C_BATCHING] = model.batching
        self.cfg[C_ROOFLINE] = int(model.name == ROOFLINE)
        self.cfg[C_LEAST] = int(router == LEAST_OUTSTANDING and replicas >= LEAST_TREE_REPLICAS)
        self.cfg[C_PRIORITIES] = int(len(set(priorities)) > 1)
        self.timeout_s = float(timeout_s)
        if deadline_s is not None:
            if clients > 0:
                raise ValueError("per-request deadlines need an open loop; use timeout_s")
            self.req_f[:, RF_DEADLINE] = deadline_s
        elif clients > 0:  # released requests: send + timeout; the others hold the timeout until sent
            self.req_f[:, RF_DEADLINE] = timeout_s
            self.req_f[:min(clients, n), RF_DEADLINE] += self.req_f[:min(clients, n), RF_SEND]
        else:
            self.req_f[:, RF_DEADLINE] = self.req_f[:, RF_SEND] + timeout_s
        self.cfg[C_DEADLINES] = int(bool(np.isfinite(timeout_s) or np.isfinite(self.req_f[:, RF_DEADLINE]).any()))
        self._order_deadlines()
        self.now = 0.0
        self.events = 0
        self.advanced = False

    def request_rows(self, send_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray, *,
                     request_class: np.ndarray | None = None, prefix_group: np.ndarray | None = None,
                     prefix_tokens: np.ndarray | None = None, service_s: np.ndarray | None = None,
                     router_u: np.ndarray | None = None, route_u: np.ndarray | None = None,
                     jitter_z: np.ndarray | None = None, request_bytes: np.ndarray | None = None,
                     api_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The kernel rows (`req_i`, `req_f`) of requests not yet sent: the constructor's, and
        a streaming run's later chunks (`sim.kernels.streaming`). Deadlines are set apart."""
        n = len(send_s)
        # Each row is the template, then the request's own values: written in one pass in row
        # order (`request_arrays`); numpy's column writes took a quarter of building a
        # 1M-request kernel, then a third once the kernel ran faster.
        row_i = np.zeros(RI_SIZE, dtype=np.int32)
        row_i[[RI_REPLICA, RI_VERSION, RI_NEXT, RI_POOL, RI_GROUP]] = -1
        row_i[[RI_PROMPT, RI_OUTPUT]] = 1  # a service-time request is one unit of service: one "token" in, one out
        ints: dict[int, np.ndarray] = {}
        if not self.unit_requests:
            ints.update({RI_PROMPT: prompt_tokens, RI_OUTPUT: output_tokens})
        for field, values in ((RI_GROUP, prefix_group), (RI_PREFIX, prefix_tokens), (RI_CLASS, request_class)):
            if values is not None:
                ints[field] = values
        if request_class is not None:
            ints[RI_PRIORITY] = self.priority_of[np.asarray(request_class)] if n else np.zeros(0, dtype=np.int64)
        else:
            row_i[RI_PRIORITY] = self.priority_of[0]  # every request is of class 0
        row_f = np.full(RF_SIZE, np.nan)
        draws = {RF_SERVICE: service_s, RF_RANDOM: router_u, RF_ROUTE_U: route_u, RF_JITTER: jitter_z,
                 RF_BYTES: request_bytes}
        floats: dict[int, np.ndarray] = {RF_SEND: send_s}
        for field, values in draws.items():
            if values is None:
                row_f[field] = 0.0
            else:
                floats[field] = values
        if api_z is None:
            row_f[[RF_TTFT_Z, RF_TPOT_Z]] = 0.0
        else:
            z = np.asarray(api_z, dtype=np.float64).reshape(n, 2)
            floats.update({RF_TTFT_Z: z[:, 0], RF_TPOT_Z: z[:, 1]})
        return request_arrays(n, row_i, ints, row_f, floats)

    def _set_api(self, p: int, pool: PoolConfig) -> None:
        """Pool p's API settings (nothing for a pool of GPUs)."""
        self.pool_i[p, Q_WINDOW_HEAD] = self.pool_i[p, Q_WINDOW_TAIL] = -1
        api = pool.api
        if api is None:
            return
        if pool.replicas != 0:
            raise ValueError(f"pool {p} is a managed API: it has no replicas (got {pool.replicas})")
        if not (api.ttft_median_s >= 0 and api.tpot_median_s >= 0 and api.ttft_sigma >= 0 and api.tpot_sigma >= 0):
            raise ValueError(f"pool {p}: an API's latency medians and sigmas must be >= 0, got {api}")
        self.pool_i[p, Q_API] = 1
        self.pool_i[p, Q_API_RPM] = NO_LIMIT if api.requests_per_minute is None else api.requests_per_minute
        self.pool_i[p, Q_API_TPM] = NO_LIMIT if api.tokens_per_minute is None else api.tokens_per_minute
        self.pool_f[p, F_API_TTFT_MEDIAN] = api.ttft_median_s
        self.pool_f[p, F_API_TTFT_SIGMA] = api.ttft_sigma
        self.pool_f[p, F_API_TPOT_MEDIAN] = api.tpot_median_s
        self.pool_f[p, F_API_TPOT_SIGMA] = api.tpot_sigma

    def _order_deadlines(self) -> None:
        """Requests in deadline order (then index); a closed loop's is its send order."""
        if self.cfg[C_CLIENTS] > 0 or self.cfg[C_DEADLINES] == 0:
            self.deadline_order = self.sorder  # in a closed loop: send + one timeout, in send order
            return
        index = self.sorder
        deadline = self.req_f[index, RF_DEADLINE]
        self.deadline_order = index[np.lexsort((index, deadline))].astype(np.int64)

    # -- the clock --------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        """Run every send, arrival, iteration end and deadline up to and including time t."""
        if t < self.now:
            raise ValueError(f"cannot advance backwards from {self.now} to {t}")
        self.events += advance(
            self.req_i, self.req_f, self.rep_i, self.rep_f, self.running, self.prefilling,
            self.heap_key, self.heap_req, self.cache_i, self.queues, self.prefix_tokens_of_group,
            self.sorder, self.deadline_order, self.glob, self.cfg, self.pool_i, self.pool_f, self.params,
            self.path_f, self.path_w, self.path_n, self.route_i, self.route_f, self.class_route,
            self.aheap_t, self.aheap_i, self.rheap_t, self.rheap_i, float(t), self.route, self.router_memory,
            self.iteration_s,
        )
        self.advanced = True
        self.now = float(t)

    def next_event_time(self) -> float:
        """The time of the next event `advance_to` would take (a send, an arrival, an iteration
        or batching timer ending, a client deadline); inf when none is left. Nothing in the
        cluster changes before it."""
        glob, cfg = self.glob, self.cfg
        soonest = INF
        if glob[G_NEXT_SEND] < glob[G_SENDS]:
            soonest = float(self.req_f[self.sorder[glob[G_NEXT_SEND]], RF_SEND])
        if glob[G_RESENDING] > 0:
            soonest = min(soonest, float(self.rheap_t[0]))
        if glob[G_ARRIVING] > 0:
            soonest = min(soonest, float(self.aheap_t[0]))
        if glob[G_FIFO_HEAD] < glob[G_FIFO_TAIL]:
            soonest = min(soonest, float(self.aheap_t[len(self.aheap_t) // 2 + glob[G_FIFO_HEAD]]))
        busy = self.rep_i[:, PI_IN_FLIGHT] != IDLE
        if busy.any():
            soonest = min(soonest, float(self.rep_f[busy, PF_BUSY_UNTIL].min()))
        if cfg[C_DEADLINES] == 1:
            deadlines = glob[G_SENDS] if cfg[C_CLIENTS] > 0 else self.deadline_order.shape[0]
            if glob[G_NEXT_DEADLINE] < deadlines:
                soonest = min(soonest, float(self.req_f[self.deadline_order[glob[G_NEXT_DEADLINE]], RF_DEADLINE]))
        return soonest

    def _wake(self, r: int) -> None:
        if self.rep_i[r, PI_IN_FLIGHT] != BUSY:
            _compose(self.req_i, self.req_f, self.rep_i, self.rep_f, self.running, self.prefilling,
                     self.heap_key, self.heap_req, self.cache_i, self.queues,
                     self.prefix_tokens_of_group, self.glob, self.cfg, self.pool_i, self.params, r, self.now,
                     self.now, self.iteration_s)

    def pool_replicas(self, p: int) -> range:
        """The replica numbers of pool p."""
        first = int(self.pool_i[p, Q_FIRST])
        return range(first, first + int(self.pool_i[p, Q_COUNT]))

    def pool_of(self, r: int) -> int:
        return int(self.rep_i[r, PI_POOL])

    def _wake_pool(self, p: int) -> None:
        for other in self.pool_replicas(p):
            if self.rep_i[other, PI_STATE] == ACTIVE:
                self._wake(other)

    # -- control calls (made by the SimPy world, after advance_to(env.now)) -----------------

    def drain(self, r: int) -> None:
        """Stop admitting on replica r; its queued requests move to its pool's shared queue."""
        if self.rep_i[r, PI_STATE] == DOWN:
            self.rep_i[r, PI_WANTED] = DRAINING
            return
        self.rep_i[r, PI_STATE] = DRAINING
        p = self.pool_of(r)
        shared = self.replicas + p
        moved = 0
        while self.queues[r, QU_HEAD] >= 0:
            i = _queue_pop(self.queues, self.req_i, r)
            _queue_push(self.queues, self.req_i, shared, i, self.cfg[C_PRIORITIES])
            moved += 1
        self.rep_i[r, PI_OUTSTANDING] -= moved
        self._wake_pool(p)

    def busy_until(self, r: int) -> float:
        """When replica r's iteration in flight ends (inf when it runs none)."""
        return float(self.rep_f[r, PF_BUSY_UNTIL])

    @property
    def frontend_min_lag_s(self) -> float:
        """The least time from an iteration's end to its tokens reaching the client."""
        return float(self.pool_f[:, F_FRONTEND_S].min())

    def has_queued(self, r: int) -> bool:
        """Requests wait in replica r's own queue (not yet admitted)."""
        return bool(self.queues[r, QU_HEAD] >= 0)

    def queued(self, p: int) -> int:
        """Requests waiting (not admitted) in pool p's queues."""
        queues = self.queues
        rows = [*self.pool_replicas(p), self.replicas + p]
        return int(queues[rows, QU_LENGTH].sum())

    def sought(self, p: int) -> int:
        """Requests so far whose route reached pool p while it had no active replica and so
        went elsewhere (or waited): the demand a pool scaled to zero missed."""
        return int(self.pool_i[p, Q_SOUGHT])

    def running_count(self, p: int) -> int:
        """Sequences admitted and running on pool p's replicas."""
        return int(self.rep_i[self.pool_replicas(p), PI_RUNNING].sum())

    def active_count(self, p: int) -> int:
        return int((self.rep_i[self.pool_replicas(p), PI_STATE] == ACTIVE).sum())

    def ttft_counters(self, p: int) -> tuple[float, float]:
        """(sum of time to first token at the pool, first tokens) of pool p so far."""
        return float(self.pool_f[p, F_TTFT_SUM]), float(self.pool_f[p, F_FIRST_TOKENS])

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
        """Bring replica r into service; it starts taking requests at once (it pulls from its
        pool's shared queue, where requests wait while the pool has no active replica)."""
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
                               self.queues, self.sorder, self.glob, self.cfg, self.pool_i, self.pool_f, r, self.now,
                               self.max_attempts, self.route, self.router_memory)
        self._wake_pool(self.pool_of(r))
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

    def set_version(self, r: int, version: int) -> None:
        self.rep_i[r, PI_VERSION] = version

    def state(self, r: int) -> int:
        return int(self.rep_i[r, PI_STATE])

    def states(self, first: int, count: int) -> np.ndarray:
        """The states of replicas first .. first + count - 1 (a copy)."""
        return self.rep_i[first:first + count, PI_STATE].copy()

    # -- results ----------------------------------------------------------------------------

    @property
    def send_s(self) -> np.ndarray:
        return self.req_f[:, RF_SEND]

    @property
    def link_send_s(self) -> np.ndarray:
        """When each request's payload entered the path to its pool (NaN: it never did)."""
        return self.req_f[:, RF_LINK_SEND]

    @property
    def pool(self) -> np.ndarray:
        """The pool each request was sent to (-1: none)."""
        return self.req_i[:, RI_POOL]

    @property
    def reason(self) -> np.ndarray:
        """Why each request went to its pool: PREFERRED, OVERFLOW, FAILOVER or WEIGHTED."""
        return self.req_i[:, RI_REASON]

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
    def deadline_s(self) -> np.ndarray:
        return self.req_f[:, RF_DEADLINE]

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
    def busy_s(self) -> np.ndarray:
        """Seconds each replica spent in iterations (started ones count in full)."""
        return self.rep_f[:, PF_BUSY_TIME]

    @property
    def work(self) -> np.ndarray:
        """Per replica, the work of the iterations it started: (tokens, attention pairs, KV
        tokens, LM-head tokens), summed (`PF_WORK_*`)."""
        return self.rep_f[:, PF_WORK_TOKENS:PF_WORK_LOGITS + 1]

    @property
    def iterations(self) -> np.ndarray:
        return self.rep_i[:, PI_ITERATIONS]

    def requests_ended(self, p: int) -> int:
        """Requests that ended (done, rejected or failed) in pool p so far."""
        return int(((self.pool == p) & np.isin(self.status, (DONE, FAILED, REJECTED))).sum())

    def frontend_lag_bound(self, p: int) -> float:
        """The longest a token of pool p waits in the front end after its iteration ends, in
        this run so far (a request done by the horizon at the engine may reach its client up to
        this much later)."""
        rows = list(self.pool_replicas(p))
        longest = float(self.rep_f[rows, PF_LONGEST].max()) if rows else 0.0
        return float(self.pool_f[p, F_FRONTEND_S] + self.pool_f[p, F_FRONTEND_PER_STEP] * longest)

    @property
    def frontend_lag_bound_s(self) -> float:
        """The longest lag over every pool (see `frontend_lag_bound`)."""
        return max(self.frontend_lag_bound(p) for p in range(self.n_pools))


class PoolKernel(ClusterKernel):
    """One serving pool whose requests arrive at given times (a path of zero delay): what
    `predict`, calibration and the queueing-theory tests run.

    `arrival_s` are the arrival times at the pool; `timeout_s` is how long a request may wait
    at the pool without being admitted (`patience_s` the same per request, open loop only);
    `loop_delay_s` the closed loop's delay from a completion to the client's next arrival.
    The other arguments are the pool's (`PoolConfig`) and the cluster's (`ClusterKernel`).
    """

    def __init__(
        self,
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
        active_replicas: int | None = None,
        params: np.ndarray | None = None,
        prefix_caching: bool = True,
        async_scheduling: bool = False,
        frontend_s: float = 0.0,
        frontend_per_step: float = 0.0,
        batch_latency: tuple[float, float] | None = None,
        max_queue_delay_s: float = 0.0,
        loop_delay_s: float = 0.0,
        timeout_s: float = math.inf,
        patience_s: np.ndarray | None = None,
        **cluster: Any,
    ) -> None:
        pool = PoolConfig(replicas=replicas, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                          chunked_prefill=chunked_prefill, kv_capacity_tokens=kv_capacity_tokens,
                          max_model_len=max_model_len, active_replicas=active_replicas, params=params,
                          prefix_caching=prefix_caching, async_scheduling=async_scheduling, frontend_s=frontend_s,
                          frontend_per_step=frontend_per_step, batch_latency=batch_latency,
                          max_queue_delay_s=max_queue_delay_s, loop_delay_s=loop_delay_s)
        arrival = np.asarray(arrival_s, dtype=np.float64)
        deadline = None
        if patience_s is not None:
            if cluster.get("clients", 0) > 0:
                raise ValueError("per-request patience_s needs an open loop; use timeout_s")
            patience = np.asarray(patience_s, dtype=np.float64)
            if len(arrival) and np.any(patience < 0):
                raise ValueError("patience_s must be >= 0 (a request with none left never reaches the pool)")
            deadline = arrival + patience
        super().__init__([pool], arrival, prompt_tokens, output_tokens, timeout_s=timeout_s, deadline_s=deadline,
                         **cluster)
