"""One runner: every simulation goes through `sim.runner.run_point`, leaves its workspace, and
gives the same answer whichever executor runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.experiment import compare
from sim.runner import (
    ERROR_FILE,
    ProcessExecutor,
    SerialExecutor,
    executor,
    point_folder,
    run_point,
)
from sim.spec.errors import SpecError

SMALL_TABLES = {"costs", "gpu_usage", "transfers", "lifecycle", "faults", "utilisation"}


def _double(x: int) -> int:
    if x == 3:
        raise ValueError("three is refused")
    return 2 * x


@pytest.mark.parametrize("run_with", [SerialExecutor(), ProcessExecutor(2)], ids=["serial", "processes"])
def test_executors_return_every_outcome_an_error_included(run_with: Any) -> None:
    outcomes = dict(run_with.run(_double, [1, 2, 3, 4]))
    assert {i: v for i, v in outcomes.items() if i != 2} == {0: 2, 1: 4, 3: 8}
    assert isinstance(outcomes[2], ValueError) and "three" in str(outcomes[2])


def test_executor_choice() -> None:
    assert isinstance(executor(1, 10), SerialExecutor)
    assert isinstance(executor(None, 1), SerialExecutor)  # one task: no process to start
    chosen = executor(2, 10)
    assert isinstance(chosen, ProcessExecutor) and chosen.workers == 2
    assert executor(8, 3).workers == 3  # never more workers than tasks
    assert executor(2, 10, "dask").kind == "dask"


def test_a_point_leaves_its_workspace(tmp_path: Path, minimal_doc: dict[str, Any]) -> None:
    minimal_doc["horizon"] = "2min"
    scenario = sim.load_scenario(minimal_doc)
    folder = tmp_path / "p"
    result = run_point(scenario, 0, folder)
    names = {p.name for p in folder.iterdir()}
    assert {"scenario.yaml", "summary.json"} <= names
    assert {f"{t}.parquet" for t in SMALL_TABLES} <= names
    assert "requests.parquet" not in names and ERROR_FILE not in names
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["requests_total"] == result.summary["requests_total"]
    assert sim.load_scenario(folder / "scenario.yaml").model_dump() == scenario.model_dump()
    run_point(scenario, 0, folder, requests=True)
    assert len(pd.read_parquet(folder / "requests.parquet")) == result.summary["requests_total"]


def test_a_failing_point_leaves_error_txt_and_nothing_stale(tmp_path: Path, minimal_doc: dict[str, Any]) -> None:
    """A point that fails while running (here: too many requests for this process) leaves
    error.txt with the reason and its scenario; what an earlier run left there is gone."""
    folder = tmp_path / "p"
    minimal_doc["horizon"] = "2min"
    run_point(sim.load_scenario(minimal_doc), 0, folder)
    assert (folder / "summary.json").exists()
    too_big = sim.load_scenario(minimal_doc, ["workload.arrivals.rate_per_s=1e7", "horizon=1d"])
    with pytest.raises(SpecError):
        run_point(too_big, 0, folder)
    assert "would need about" in (folder / ERROR_FILE).read_text()
    assert (folder / "scenario.yaml").exists()
    assert not (folder / "summary.json").exists() and not list(folder.glob("*.parquet"))


def test_every_compare_replication_leaves_its_workspace(tmp_path: Path, minimal_doc: dict[str, Any]) -> None:
    """compare: reports/compare/runs/<scenario>/rep-<k>/ for every scenario and replication; the
    same comparison in 1 or 2 processes gives identical summaries."""
    minimal_doc["horizon"] = "2min"
    a = sim.load_scenario(minimal_doc)
    b = sim.load_scenario(minimal_doc, ["name=busier", "workload.arrivals.rate_per_s=2"])
    serial = compare([a, b], replications=2, workers=1, out=tmp_path / "one")
    parallel = compare([a, b], replications=2, workers=2, out=tmp_path / "two")
    for name in ("minimal", "busier"):
        for k in range(2):
            folder = point_folder(tmp_path / "one", name, k)
            assert folder == tmp_path / "one" / "runs" / name / f"rep-{k}"
            assert (folder / "summary.json").exists() and (folder / "scenario.yaml").exists()
            written = json.loads((folder / "summary.json").read_text())
            assert written["meta"]["replication"] == str(k)
            assert serial.runs[name][k].summary == parallel.runs[name][k].summary
            assert (point_folder(tmp_path / "two", name, k) / "summary.json").exists()


def test_a_scenario_named_like_a_path_writes_only_inside_out(tmp_path: Path, minimal_doc: dict[str, Any]) -> None:
    """`name: ../../x` is a label: compare keeps its runs under out/runs/x."""
    work = tmp_path / "work"
    work.mkdir()
    minimal_doc.update(name="../../x", horizon="1min")
    (work / "s.yaml").write_text(yaml.safe_dump(minimal_doc))
    out = work / "out"
    result = CliRunner().invoke(app, ["compare", str(work / "s.yaml"), "-r", "1", "--workers", "1", "-q",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "runs" / "x" / "rep-0" / "summary.json").exists()
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(work)]
    assert outside == []
    assert not (tmp_path.parent / "x").exists()


def test_run_leaves_requests_and_tables(tmp_path: Path, minimal_doc: dict[str, Any]) -> None:
    minimal_doc["horizon"] = "1min"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(minimal_doc))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "-q", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"requests.parquet", "summary.json", "scenario.yaml", "costs.parquet"} <= names
