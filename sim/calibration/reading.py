"""Reading measurement files of any layout: the one entry point calibration and fidelity use.

A file is read by the reader of its layout: published-points CSV and vLLM benchmark JSON
(`sim.calibration.measurements`), or benchmark runs under load (`sim.calibration.runs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.calibration.measurements import (
    Supplied,
    _check_supplied,
    _read_text,
    read_csv,
    read_vllm_json,
)
from sim.calibration.runs import is_runs_layout, read_runs_csv
from sim.catalog import Catalog, shipped_catalog
from sim.spec.errors import SpecError, SpecIssue


def read_measurements(
    paths: Sequence[str | Path] | str | Path, *, model: str | None = None, gpu: str | None = None,
    gpus: int | None = None, precision: str | None = None, engine: str | None = None,
    catalog: Catalog | None = None,
) -> list[Any]:
    """Every measured point or run of the files: CSV in the published layout, vLLM benchmark
    JSON, or benchmark runs under load (the layout of `shared/data/vllm-v0.15-benchmarks`).

    Returns `Measurement`s and `sim.calibration.runs.BenchmarkRun`s, in file order. Model, GPU,
    GPU count, precision and engine come from the file; the keyword arguments fill what a
    file leaves out (a vLLM JSON never names the GPU). Any problem raises a `SpecError`
    naming the file, the row and the field.
    """
    catalog = catalog or shipped_catalog()
    supplied = Supplied(model, gpu, gpus, precision, engine)
    _check_supplied(supplied, catalog)
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise SpecError([SpecIssue("MEASUREMENTS", "no measurement files given", has_value=False,
                                   allowed="CSV files in the published layout, benchmark runs (runs.csv) "
                                           "or vLLM benchmark JSON files")])
    found: list[Any] = []
    for path in map(Path, paths):
        text = _read_text(path)
        if path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv" and text.lstrip().startswith("{")):
            these: list[Any] = list(read_vllm_json(path, supplied, catalog, text=text))
        elif is_runs_layout(text):
            these = list(read_runs_csv(path, supplied, catalog, text=text))
        else:
            these = list(read_csv(path, supplied, catalog, text=text))
        if not these:  # a header-only CSV would otherwise fit nothing and write an empty catalog
            raise SpecError([SpecIssue("", "no measured points in the file (a header but no rows)", has_value=False,
                                       allowed="at least one row of measurements")], str(path))
        found += these
    return found
