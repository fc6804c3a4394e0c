"""Routers: which queue a request joins when it reaches a serving pool.

A serving pool is a router in front of R replicas (`sim.kernels.batching`). When a request
arrives, the router picks one of the pool's replicas that take new requests (the *active*
ones), or the pool's shared queue that every replica of the pool pulls from. (Which *pool* a
request goes to is decided earlier, when its client sends it, by the scenario's routing rules:
`sim.kernels.batching`'s pool choice.) Each router is one `Router` in the
`ROUTERS` registry, with three things side by side:

- its **name**, as a scenario writes it (`model.serving.router`); the spec's list of allowed
  names is generated from this registry;
- `choose`, a numba function the serving kernel calls at every arrival (and when a failed
  replica's requests are placed again). All routers share one signature, `ROUTER_SIGNATURE`:

      choose(active, n_active, outstanding, u, memory, group, cached) -> queue

  `active[:n_active]` are the indices of the pool's active replicas, in increasing order
  (there is at least one: with none, the request waits in the shared queue without asking
  the router); replica indices are the kernel's, over every pool, and `outstanding[r]` is how
  many requests replica r has been given and not finished; `u` is the request's own uniform
  draw from the "router" stream; `memory` is the router's own state for this pool,
  `ROUTER_MEMORY_SLOTS` integers that start at 0 and persist for the run; `group` is the
  request's prefix group (-1: none) and `cached[r]` is 1 when replica r holds that group's
  prefix in its cache (meaningless when `group` < 0). It returns an active replica's index,
  or `SHARED_QUEUE`;
- `reference`, the same rule written the obvious way in Python, with the same arguments
  (`active` and `outstanding` as sequences). The pure-SimPy oracle of the test suite routes
  with it, so the kernel is checked against an independent reading of every router.

The kernel receives the chosen `choose` as a first-class function (numba's `FunctionType` of
that one signature): the kernel is compiled once, and cached, for every router, and a router
registered later (a test's toy) runs in it without touching the kernel or recompiling it.
A router's rule is registered as plain Python and compiled by numba (cached on disk) the first
time a kernel asks for its `choose`, and the signature is built on first use too: the spec
reads this registry for its names, and `deploysim validate` must not pay for importing numba.
Adding a router is registering one here. A router that needs to know more (a replica's KV
use) changes the signature: the kernel's one call site (`sim.kernels.batching._route`) and
every router.

- **shared_queue**: every request joins the shared FIFO; idle replicas pull from it.
- **round_robin**: the active replicas in turn: the first active index at or after a
  pointer (cyclically), and the pointer moves past it.
- **least_outstanding**: the active replica with the fewest outstanding requests, the lowest
  index on ties.
- **random**: active replica number floor(u x n_active) (u is drawn up front per request).
- **prefix_affinity**: a request with a prefix group goes to an active replica that holds
  that prefix in its cache (the one with the fewest outstanding requests, the lowest index on
  ties), as cache-aware routers (SGLang's, llm-d's) do; without one, or without a group, to
  the least outstanding replica.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.spec.families import Family

SHARED_QUEUE = -1
"""What `choose` returns to put a request in the shared queue."""

ROUTER_MEMORY_SLOTS = 4
"""Integers of state each router may keep across a run (round robin keeps its pointer)."""

Reference = Callable[[Sequence[int], Sequence[int], float, Any, int, Sequence[int]], int]


def __getattr__(name: str) -> Any:
    """`ROUTER_SIGNATURE` (every router's numba signature) and `ROUTER_TYPE` (the numba type of
    every router's `choose`, as the kernel declares its argument), built when first asked for."""
    if name == "ROUTER_SIGNATURE":
        return _numba_types()[0]
    if name == "ROUTER_TYPE":
        return _numba_types()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _numba_types() -> tuple[Any, Any]:
    from numba import types

    signature = types.int64(types.int64[::1], types.int64, types.int64[:], types.float64, types.int64[::1],
                            types.int64, types.int64[:])
    return signature, types.FunctionType(signature)


@functools.cache
def _compiled(rule: Callable[..., int]) -> Any:
    """`rule` compiled by numba (cached on disk), once per process; a numba function as it is."""
    if hasattr(rule, "py_func"):  # already a numba function (registered with @njit)
        return rule
    from sim.jit import no_refcount_jit

    return no_refcount_jit()(rule)  # a router allocates nothing (sim.jit)


@dataclass(frozen=True)
class Router:
    """One member of the family: its name, its rule (compiled by numba into `choose`) and its
    Python `reference`."""

    name: str
    rule: Callable[..., int]  # plain Python numba can compile, or a numba function; ROUTER_SIGNATURE
    reference: Reference

    @property
    def choose(self) -> Any:
        """The rule as a numba function, compiled (or loaded from numba's cache) on first use."""
        return _compiled(self.rule)


ROUTERS: Family[Router] = Family("router")


def _shared_queue(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    return SHARED_QUEUE


def _shared_queue_reference(active: Sequence[int], outstanding: Sequence[int], u: float, memory: Any, group: int,
                            cached: Sequence[int]) -> int:
    return SHARED_QUEUE


def _round_robin(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    pick = active[0]
    for k in range(n_active):
        if active[k] >= memory[0]:
            pick = active[k]
            break
    memory[0] = (pick + 1) % outstanding.shape[0]
    return pick


def _round_robin_reference(active: Sequence[int], outstanding: Sequence[int], u: float, memory: Any, group: int,
                           cached: Sequence[int]) -> int:
    pick = min((r for r in active if r >= memory[0]), default=min(active))
    memory[0] = (pick + 1) % len(outstanding)
    return pick


def _least_outstanding(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    best = active[0]
    for k in range(1, n_active):
        if outstanding[active[k]] < outstanding[best]:
            best = active[k]
    return best


def _least_outstanding_reference(active: Sequence[int], outstanding: Sequence[int], u: float, memory: Any, group: int,
                                 cached: Sequence[int]) -> int:
    return min(active, key=lambda r: (outstanding[r], r))


def _random(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    pick = int(u * n_active)
    if pick >= n_active:
        pick = n_active - 1
    return active[pick]


def _random_reference(active: Sequence[int], outstanding: Sequence[int], u: float, memory: Any, group: int,
                      cached: Sequence[int]) -> int:
    return active[min(int(u * len(active)), len(active) - 1)]


def _prefix_affinity(active, n_active, outstanding, u, memory, group, cached):  # noqa: ANN001, ANN202
    best = -1
    if group >= 0:
        for k in range(n_active):
            r = active[k]
            if cached[r] == 1 and (best < 0 or outstanding[r] < outstanding[best]):
                best = r
    if best >= 0:
        return best
    best = active[0]  # least_outstanding's rule (a rule calls no other: each is compiled alone)
    for k in range(1, n_active):
        if outstanding[active[k]] < outstanding[best]:
            best = active[k]
    return best


def _prefix_affinity_reference(active: Sequence[int], outstanding: Sequence[int], u: float, memory: Any,
                               group: int, cached: Sequence[int]) -> int:
    holding = [r for r in active if group >= 0 and cached[r] == 1]
    return min(holding or active, key=lambda r: (outstanding[r], r))


ROUTERS.register(Router("round_robin", _round_robin, _round_robin_reference))
LEAST_OUTSTANDING = "least_outstanding"
"""The default router; the kernel answers it from a tree of the replicas' counts, the same
choice as its rule (`sim.kernels.batching._least_in`), in O(log R) instead of a scan."""
ROUTERS.register(Router(LEAST_OUTSTANDING, _least_outstanding, _least_outstanding_reference))
ROUTERS.register(Router("random", _random, _random_reference))
ROUTERS.register(Router("shared_queue", _shared_queue, _shared_queue_reference))
ROUTERS.register(Router("prefix_affinity", _prefix_affinity, _prefix_affinity_reference))


def new_router_memory() -> np.ndarray:
    """A router's state at the start of a run: `ROUTER_MEMORY_SLOTS` zeros."""
    return np.zeros(ROUTER_MEMORY_SLOTS, dtype=np.int64)
