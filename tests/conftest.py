"""Tiny fixtures shared by the tests: where the scenarios live, a YAML writer, a minimal scenario."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"


@pytest.fixture
def scenarios_dir() -> Path:
    """The shipped scenario files (`scenarios/` next to `tests/`)."""
    return SCENARIOS_DIR


WriteYaml = Callable[..., Path]


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteYaml:
    """`write_yaml(content, name="scenario.yaml")`: write a dict (as YAML) or text to tmp_path."""

    def write(content: dict[str, Any] | list[Any] | str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def make_minimal_doc() -> dict[str, Any]:
    """One private site with one L4 serving llama-3.1-8b at bf16.

    It fits: 16.06 GB of weights, 21.6 GB usable (0.9 x 24 GB), so ~4.8 GB is left for KV cache,
    about 36k tokens at 128 KiB per token, against the 8192 one max-length sequence needs.
    """
    return {
        "name": "minimal",
        "horizon": "1h",
        "sites": {"edge": {"zone": "private", "pools": [{"gpu": "l4", "count": 1}]}},
        "model": {"id": "llama-3.1-8b", "precision": "bf16"},
        "workload": {
            "origin": "edge",
            "arrivals": {"process": "poisson", "rate_per_s": 1},
            "prompt_tokens": {"dist": "fixed", "value": 100},
            "output_tokens": {"dist": "fixed", "value": 50},
        },
        "placement": {"inference": "edge", "model_registry": "edge"},
    }


@pytest.fixture
def minimal_doc() -> dict[str, Any]:
    """A small valid scenario document (a fresh copy per test, so tests may mutate it)."""
    return make_minimal_doc()
