"""Random number streams: one named `numpy.random.Generator` per purpose, per replication.

Common random numbers are how placements are compared fairly: replication k of every scenario
draws its arrivals, token lengths, drift outcomes and router choices from the same streams, so
the differences between scenarios come from placement, not noise. Each purpose has its own
stream, so that, say, changing the arrival rate does not change the length of request i.

A stream is determined by (seed, replication, name) alone. Nothing in deploysim uses global
random state.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, replication: int, name: str) -> np.random.Generator:
    """The generator for one purpose (`"arrivals"`, `"prompt_tokens"`, ...) of one replication."""
    key = zlib.crc32(name.encode("utf-8"))
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(replication, key))
    return np.random.Generator(np.random.PCG64(sequence))
