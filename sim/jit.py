"""How the kernels are compiled: numba without reference counting.

Numba counts the references of every array it passes or slices (an atomic increment and
decrement on the array's memory record, for a view such as a pool's parameter row or one
column handed to the router). In the serving kernel's event loop, which allocates nothing and
only reads and writes arrays its caller owns, that counting was most of the time: turning it
off (numba's `_nrt=False`) took `benchmarks/serving.py` from 0.29M to 1.6M simulated requests
per second with bit-identical results. The price is that a function compiled so cannot
allocate (no `np.empty`, no copies, no returned arrays), and neither can anything it calls:
numba compiles callees with the caller's options. An entry point that must allocate does so
in a thin function with counting on and calls into one of these (see
`sim.kernels.batching.advance`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from numba import njit


def no_refcount_jit(inline: Literal["never", "always"] = "never") -> Callable[[Callable[..., Any]], Any]:
    """`numba.njit`, cached on disk, without reference counting (see the module doc)."""
    options: dict[str, Any] = {"cache": True, "_nrt": False, "inline": inline}
    return njit(**options)
