"""Shared prompt prefixes: requests that start with the same system prompt.

With `prefixes` set, each request independently belongs to a prefix group with probability
`share`, and its group is uniform over the `groups` groups. A grouped request's prompt is the
prefix followed by its own text: prompt_tokens = sampled + prefix_tokens, and a prefix cache
may serve the first `prefix_tokens` of it. Ungrouped requests have group -1 and no prefix.

Request i uses the i-th pair of uniforms of the "prefixes" stream (one for membership, one
for the group), so, as for lengths, its group does not depend on how many requests there are.
`PrefixGroups` (the scenario's `workload.prefixes`) lives here beside the code that reads it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from sim.spec.base import Spec


class PrefixGroups(Spec):
    """Requests share system prompts: a share of requests belongs to one of `groups` prefixes."""

    groups: int = Field(ge=1)
    prefix_tokens: int = Field(ge=1)
    share: float = Field(default=1.0, ge=0, le=1, description="share of requests with a prefix")


def assign_prefixes(spec: PrefixGroups, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prefix_group, prefix_tokens) as int32 arrays: group -1 and 0 tokens when ungrouped."""
    draws = rng.random((n, 2))
    grouped = draws[:, 0] < spec.share
    group = np.minimum((draws[:, 1] * spec.groups).astype(np.int64), spec.groups - 1)
    prefix_group = np.where(grouped, group, -1).astype(np.int32)
    prefix_tokens = np.where(grouped, spec.prefix_tokens, 0).astype(np.int32)
    return prefix_group, prefix_tokens


def no_prefixes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every request ungrouped."""
    return np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.int32)
