"""Hardening: every bad input gets a clear error, nothing escapes the output folder, nothing
runs out of memory.

Eleven classes of bad input (ten from the hardening issue, one from the features added since)
are reproduced here, each with the command that used to hang, blow up, write outside its folder
or print a traceback. Each must now exit 2 with a one-screen message naming the file, the
field, the value and what is allowed (or succeed where the input is legal); the ones that used
to blow up run in a subprocess limited to 2 GB of address space and a timeout:

1. YAML a person did not mean: duplicate keys, alias bombs (`name: *i`), nesting too deep.
2. Files that are not files (/dev/zero, a FIFO, a folder) or are too large to read.
3. NaN and infinity in scenarios, catalogs, sweeps and --set/--vary values; a catalog that is
   not a mapping.
4. Errors inside an extends'ed file, a catalog file or a --set, or found while running,
   reported against another file (or none).
5. Printing an error of a huge value (bounded in time and size).
6. User text read as terminal markup (`[/]`) or carrying control characters (ANSI escapes).
7. Names that become paths (`name: ../../../tmp/x`, `/tmp/escape_abs`, a sweep's name and
   `out:`), and an --out that is a file or unwritable, found only after the simulation.
8. Sizes that would not fit in memory or would hang: predict's batch and requests, sweep
   grids and samples x replications, pools of a million GPUs, rates x horizons, token counts.
9. Measurement files with impossible numbers (vLLM JSON `completed: 0.5`, `1e300`, deep
   nesting; CSV `1e999`) or no rows at all.
10. Sweep point files a power loss damaged (zero bytes, garbage) and a damaged manifest.
11. Traffic classes, routing rules and autoscalers written carelessly (shares that do not sum
    to 1, unknown classes and sites, NaN, negative or overflowing thresholds and weights,
    min_replicas above max_replicas), periodic processes and random faults that would fire
    billions of times (a 1 us autoscaler, monitor, retraining period or mtbf hung `run`), and
    a class's trace path read from the cwd instead of beside its scenario file.

A hypothesis test then throws random command lines over random small scenarios, sweeps,
traces, catalogs and measurement files at the CLI: exit code 0 or 2, no traceback, bounded
time, nothing written outside --out.
"""

from __future__ import annotations

import copy
import importlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sim
from sim.cli import app
from sim.spec.errors import SpecError, SpecIssue, short_repr
from sim.spec.files import MAX_YAML_BYTES
from sim.spec.safe_yaml import MAX_ALIAS_NODES, MAX_DEPTH
from sim.workload.limits import MAX_PERIODIC_EVENTS

ROOT = Path(__file__).parent.parent
ONE_SCREEN_LINES = 40
ADDRESS_SPACE_BYTES = 2 * 2**30  # the RLIMIT_AS of commands that used to blow up


# ------------------------------------------------------------------------------------------
# Running the command
# ------------------------------------------------------------------------------------------


def cli(*args: str) -> Any:
    """`deploysim ARGS` in this process (typer's CliRunner), stdout and stderr apart."""
    return CliRunner().invoke(app, list(args), terminal_width=200)


def assert_user_error(result: Any, *expected: str) -> str:
    """Exit code 2, no traceback, a one-screen message on stderr holding every `expected` text."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    text = result.stderr
    assert "Traceback" not in result.output
    assert len(text.splitlines()) <= ONE_SCREEN_LINES, text
    for part in expected:
        assert part in text, f"{part!r} not in:\n{text}"
    return text


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))


def limited(args: list[str], cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """`deploysim ARGS` in a fresh process limited to 2 GB of address space and `timeout_s`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s, preexec_fn=_limit_memory)


def assert_limited_user_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) <= ONE_SCREEN_LINES, done.stderr
    for part in expected:
        assert part in done.stderr, f"{part!r} not in:\n{done.stderr}"


@pytest.fixture
def scenario_file(write_yaml, minimal_doc) -> Path:
    """The minimal scenario with a two-minute horizon (a run takes well under a second)."""
    minimal_doc["horizon"] = "2min"
    return write_yaml(minimal_doc, "scenario.yaml")


# ------------------------------------------------------------------------------------------
# Class 1: YAML that PyYAML accepts but a person did not mean (duplicates, aliases, depth)
# ------------------------------------------------------------------------------------------


def test_duplicate_keys_are_errors_with_both_lines(write_yaml) -> None:
    """A key written twice in one mapping is an error naming its path and both lines."""
    path = write_yaml("name: a\nsites:\n  edge: {zone: private}\n  edge: {zone: third_party}\n", "dup.yaml")
    text = assert_user_error(cli("validate", str(path)), str(path), "sites.edge: duplicate key 'edge'",
                             "first on line 3, again on line 4")
    assert "name" not in text.split("found", 1)[1]  # the first key is fine


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines)


def test_alias_bomb_in_a_value_is_refused_fast(write_yaml) -> None:
    """`name: *i` where `i` expands to 10^10 values is refused while reading, within a second."""
    path = write_yaml(_alias_bomb() + "\nname: *a9\n", "bomb.yaml")
    started = time.perf_counter()
    assert_user_error(cli("validate", str(path)), f"aliases expand to more than {MAX_ALIAS_NODES:,} values")
    assert time.perf_counter() - started < 2.0


def test_aliases_within_budget_still_work(write_yaml, minimal_doc) -> None:
    """Ordinary anchors and aliases (a block reused twice) load as before."""
    text = yaml.safe_dump(minimal_doc, sort_keys=False).replace("zone: private", "zone: &z private")
    path = write_yaml(text + "description: *z\n", "aliases.yaml")
    assert sim.load_scenario(path).description == "private"


def test_self_containing_alias_is_refused(write_yaml) -> None:
    """An alias to the node that contains it is an error at its line, not a recursive structure."""
    path = write_yaml("sites: &s {premises: {pools: [*s]}}\n", "loop.yaml")
    assert_user_error(cli("validate", str(path)), "refers to a node that contains it", "line 1")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * 40 + "v"],
                         ids=["flow", "block"])
def test_deep_nesting_is_an_error_not_a_recursion_error(write_yaml, text: str) -> None:
    """Nesting beyond MAX_DEPTH (flow or block) is a clear error, never a RecursionError traceback."""
    path = write_yaml(text, "deep.yaml")
    assert_user_error(cli("validate", str(path)), f"nested more than {MAX_DEPTH} levels deep")


def test_set_values_use_the_strict_loader() -> None:
    """A `--set` value with a duplicate key is an error, not silently the last value."""
    result = cli("validate", str(ROOT / "scenarios" / "s1_local.yaml"), "--set", "slo={ttft_p99: 1s, ttft_p99: 2s}")
    assert_user_error(result, "--set slo", "duplicate key 'ttft_p99'")


# ------------------------------------------------------------------------------------------
# Class 2: files that are not files, or too large to read
# ------------------------------------------------------------------------------------------


def test_validate_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    """`validate /dev/zero` (which never ends) is refused as not a regular file, in a 2 GB process."""
    done = limited(["validate", "/dev/zero"], tmp_path, timeout_s=30)
    assert_limited_user_error(done, "/dev/zero", "not a regular file")


def test_oversized_yaml_is_refused_with_the_cap(tmp_path: Path) -> None:
    """A YAML file over MAX_YAML_BYTES is refused with its size and the cap, before parsing."""
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 10))
    assert_user_error(cli("validate", str(path)), str(path), "over the 1 MiB cap for a YAML file")


def test_folder_and_fifo_are_refused(tmp_path: Path) -> None:
    """A folder and a FIFO (which would block a reader) are refused, naming each."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    text = assert_user_error(cli("validate", str(tmp_path), str(fifo)), "is a folder", "not a regular file")
    assert str(fifo) in text


# ------------------------------------------------------------------------------------------
# Class 3: NaN and infinity, wherever a number enters
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "value", "allowed"), [
    ("workload.arrivals.rate_per_s", ".inf", "a finite number > 0"),
    ("workload.bytes_per_token", ".inf", "a finite number > 0"),
    ("links.wan.egress_usd_per_gb", "{cloud->premises: .nan}", "a finite number"),
    ("workload.arrivals.rate_per_s", "'nan'", "a finite number > 0"),
    ("lifecycle.monitor.params.delta", "-.inf", "a finite number"),
])
def test_non_finite_numbers_in_a_scenario_are_refused(path: str, value: str, allowed: str) -> None:
    """`validate` refuses NaN and infinities (that `run` would misuse) with path, value and range."""
    result = cli("validate", str(ROOT / "scenarios" / "s2_cloud_training.yaml"), "--set", f"{path}={value}")
    expected_path = path + (".cloud->premises" if "egress" in path else "")
    assert_user_error(result, expected_path, "not a finite number", f"allowed: {allowed}")


def test_non_finite_catalog_number_names_the_catalog_file(write_yaml, minimal_doc) -> None:
    """`peak_flops: .nan` in a scenario's catalog file is an error naming that file and the field."""
    catalog = write_yaml("gpus:\n  l4:\n    peak_flops: {bf16: .nan}\n", "my_hw.yaml")
    minimal_doc["catalog"] = "my_hw.yaml"
    scenario = write_yaml(minimal_doc, "uses_catalog.yaml")
    text = assert_user_error(cli("validate", str(scenario)), str(scenario), "gpus.l4.peak_flops.bf16",
                             f"(in {catalog})", "not a finite number (got nan)")
    assert text.count("problem") == 1


@pytest.mark.parametrize("price", [".nan", ".inf"])
def test_non_finite_catalog_prices_are_refused_by_catalog_command(write_yaml, price: str) -> None:
    """`catalog prices --catalog` with a NaN or infinite egress price exits 2 naming the field."""
    catalog = write_yaml(f"prices:\n  egress:\n    aws: {{usd_per_gb: {price}}}\n", "prices.yaml")
    assert_user_error(cli("catalog", "prices", "--catalog", str(catalog)), str(catalog),
                      "prices.egress.aws.usd_per_gb: not a finite number", "allowed: a finite number >= 0")


def test_non_finite_sweep_values_are_refused(tmp_path: Path, scenario_file: Path) -> None:
    """An infinite range end in a sweep file, or a NaN among --vary values, is refused at its path
    (a range to infinity made NaN points before)."""
    sweep = {"base": [scenario_file.name], "factors": {"workload.arrivals.rate_per_s": {"low": 1, "high": ".inf",
                                                                                         "steps": 2}}}
    path = tmp_path / "inf.yaml"
    path.write_text(yaml.safe_dump(sweep).replace("'.inf'", ".inf"))
    assert_user_error(cli("sweep", str(path), "--workers", "0", "-q", "--out", str(tmp_path / "o")),
                      "factors.workload.arrivals.rate_per_s.high: not a finite number (got inf)")
    result = cli("compare", str(scenario_file), "-r", "1", "-q", "--out", str(tmp_path / "c"),
                 "--vary", "workload.arrivals.rate_per_s=1,.nan")
    assert_user_error(result, "factors.workload.arrivals.rate_per_s[1]: not a finite number (got nan)")


# ------------------------------------------------------------------------------------------
# Class 4: every error names its file (extends, catalogs, --set)
# ------------------------------------------------------------------------------------------


def test_error_in_an_extended_file_names_that_file(write_yaml, minimal_doc) -> None:
    """A bad value written in the base file is reported with the base file's name."""
    minimal_doc["workload"]["arrivals"]["rate_per_s"] = -1
    base = write_yaml(minimal_doc, "base.yaml")
    top = write_yaml({"extends": "base.yaml", "name": "top", "horizon": -5}, "top.yaml")
    text = assert_user_error(cli("validate", str(top)), f"{top}: 2 problems",
                             f"workload.arrivals.rate_per_s (in {base.resolve()}): out of range (got -1)")
    assert "horizon: out of range" in text  # written in top.yaml itself: no "(in ...)"


def test_yaml_error_in_an_extended_file_names_that_file(write_yaml) -> None:
    """A duplicate key in the base file is reported in the base file, while validating the top one."""
    base = write_yaml("name: a\nname: b\n", "base.yaml")
    top = write_yaml("extends: base.yaml\n", "top.yaml")
    assert_user_error(cli("validate", str(top)), f"{top}: 1 problem", f"name (in {base.resolve()}): duplicate key")


def test_error_from_a_set_says_so(scenario_file: Path) -> None:
    """A value given by `--set` is reported as coming from the --set, not from the file."""
    result = cli("validate", str(scenario_file), "--set", "workload.arrivals.rate_per_s=-3")
    assert_user_error(result, "workload.arrivals.rate_per_s (in --set): out of range (got -3)")


@pytest.mark.parametrize("command", [["run"], ["compare", "-r", "1", "--workers", "1"]])
def test_run_time_errors_name_the_scenario_file(scenario_file: Path, command: list[str]) -> None:
    """A problem found only while running (a workload too large to hold) names the scenario file."""
    out = scenario_file.parent / "out"
    result = cli(command[0], str(scenario_file), *command[1:], "--out", str(out), "-q",
                 "--set", "workload.arrivals.rate_per_s=1e9")
    assert_user_error(result, f"{scenario_file}: 1 problem", "workload.arrivals")


def test_catalog_list_file_is_an_error(write_yaml) -> None:
    """A catalog file holding a YAML list is refused as 'must be a mapping', naming the file."""
    path = write_yaml("- 1\n- 2\n", "list.yaml")
    assert_user_error(cli("catalog", "gpus", "--catalog", str(path)), str(path), "must be a mapping")


# ------------------------------------------------------------------------------------------
# Class 5: printing an error is bounded whatever the value
# ------------------------------------------------------------------------------------------


def test_error_rendering_is_bounded_for_huge_values() -> None:
    """A value of 10^10 shared items, a huge int and a long string render short and fast."""
    bomb: Any = ["x"] * 10
    for _ in range(10):
        bomb = [bomb] * 10
    values = [bomb, 10**100_000, "y" * 10_000_000, {i: i for i in range(1_000_000)}, b"z" * 1_000_000]
    started = time.perf_counter()
    error = SpecError([SpecIssue("name", "m" * 100_000, value, "a" * 100_000) for value in values], "f.yaml")
    text = error.render()
    assert time.perf_counter() - started < 1.0
    assert len(text) < 5000
    assert "a whole number of about 100001 digits" in text
    assert all(len(short_repr(value)) <= 60 for value in values)


# ------------------------------------------------------------------------------------------
# Class 6: user text printed as terminal markup or with control characters
# ------------------------------------------------------------------------------------------


def test_brackets_in_a_description_are_printed_literally(write_yaml, minimal_doc) -> None:
    """`description: "GPUs [/] cloud"` (a closing tag to rich) validates and prints as written."""
    minimal_doc["description"] = "GPUs [/] cloud [red]not red[/red] :warning:"
    path = write_yaml(minimal_doc, "brackets.yaml")
    result = cli("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "GPUs [/] cloud [red]not red[/red] :warning:" in result.stdout


def test_compare_with_a_bracketed_name_keeps_its_results(scenario_file: Path, tmp_path: Path) -> None:
    """A scenario named `team[/]a` compares, prints its name literally and writes the report."""
    doc = yaml.safe_load(scenario_file.read_text())
    doc["name"] = "team[/]a"
    path = tmp_path / "bracketed.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "report"
    result = cli("compare", str(path), "-r", "1", "--workers", "1", "-q", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "team[/]a" in result.stdout
    assert (out / "index.html").is_file() and (out / "summary.csv").is_file()


def test_control_characters_in_names_are_escaped(write_yaml, minimal_doc) -> None:
    """An ANSI escape in a scenario name is shown as the text `\\x1b`, never sent to the terminal."""
    minimal_doc["name"] = "a\x1b[31mred\x1b[0m\rb\u202ec"
    path = write_yaml(minimal_doc, "ansi.yaml")
    result = cli("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\u202e" not in result.stdout
    assert "a\\x1b[31mred\\x1b[0m\\x0db\\u202ec" in result.stdout


def test_markup_in_an_error_value_is_printed_literally(scenario_file: Path) -> None:
    """A bad value that looks like markup appears as written in the error, with exit code 2."""
    result = cli("validate", str(scenario_file), "--set", "sites.edge.pools[0].gpu=[bold]h100[/]\x1b[2J")
    assert_user_error(result, "sites.edge.pools[0].gpu", "[bold]h100[/]\\x1b[2J")
    assert "\x1b" not in result.stderr


@pytest.mark.parametrize("site", ["[/]e", "a/b", " "])
def test_a_site_name_with_a_slash_is_an_error(write_yaml, minimal_doc: dict[str, Any], tmp_path: Path,
                                              site: str) -> None:
    """Pools are named 'site/pool', so a site named `[/]e` (a KeyError traceback in `run` after
    validation passed) or a blank one is refused at the site's key."""
    minimal_doc["sites"] = {site: minimal_doc["sites"]["edge"]}
    minimal_doc["workload"]["origin"] = site
    minimal_doc["placement"] = {"inference": site, "model_registry": site}
    path = write_yaml(minimal_doc, "slash.yaml")
    assert_user_error(cli("run", str(path), "-q", "--out", str(tmp_path / "out")), f"sites.{site}: a site name",
                      "hold no '/'", "allowed: a name without '/'")


# ------------------------------------------------------------------------------------------
# Class 7: names that become paths, and output folders that fail only after the work
# ------------------------------------------------------------------------------------------

MEASUREMENTS_CSV = """id,model,gpu,n_gpus,precision,input_tokens,output_tokens,batch_or_concurrency,metric,value,unit
a,llama-3.1-8b,h100-sxm,1,bf16,128,1,1,TTFT,12,ms
b,llama-3.1-8b,h100-sxm,1,bf16,2048,1,1,TTFT,120,ms
c,llama-3.1-8b,h100-sxm,1,bf16,128,128,1,TPOT,8,ms
"""


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and modification time (folders: that they exist)."""
    return {str(p.relative_to(root)): (0, 0) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def _changed_outside(root: Path, before: dict[str, tuple[int, int]], out: Path) -> list[str]:
    after = _tree(root)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    inside = str(out.relative_to(root))
    return sorted(p for p in changed if p != inside and not p.startswith(inside + os.sep))


@pytest.mark.parametrize("name", ["../escaped", "/tmp/deploysim-escape-abs", "a/../../b", "..", "team[/]a"])
def test_a_scenario_name_is_a_label_not_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               minimal_doc: dict[str, Any], name: str) -> None:
    """`run` without --out writes under ./reports/<safe name>/run, whatever the name says."""
    work = tmp_path / "work"
    work.mkdir()
    minimal_doc.update(name=name, horizon="30s")
    (work / "s.yaml").write_text(yaml.safe_dump(minimal_doc))
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    result = cli("run", "s.yaml", "-q")
    assert result.exit_code == 0, result.output
    assert _changed_outside(tmp_path, before, work / "reports") == []
    assert not Path("/tmp/deploysim-escape-abs").exists()
    runs = list((work / "reports").glob("*/run/summary.json"))
    assert len(runs) == 1 and ".." not in runs[0].parts


def test_a_sweep_name_is_a_label_and_its_out_stays_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          scenario_file: Path) -> None:
    """A sweep named `../../x` writes under reports/sweeps/x; `out: /abs` in the file is refused."""
    monkeypatch.chdir(tmp_path)
    sweep = {"name": "../../x", "base": [scenario_file.name], "set": ["horizon=30s"],
             "factors": {"workload.arrivals.rate_per_s": [1]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    result = cli("sweep", "sweep.yaml", "--workers", "0", "-q", "--no-report")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "reports" / "sweeps" / "x" / "points").glob("*.parquet"))) == 1
    sweep["out"] = str(tmp_path.parent / "elsewhere")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert_user_error(cli("sweep", "sweep.yaml", "--workers", "0", "-q"), "out: a sweep file may only name")
    assert not (tmp_path.parent / "elsewhere").exists()


def _no_simulation(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the output folder must be checked before any simulation")


@pytest.mark.parametrize("command", ["run", "compare", "fidelity"])
@pytest.mark.parametrize("bad", ["a_file", "a_file/below"])
def test_unusable_out_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            scenario_file: Path, command: str, bad: str) -> None:
    """`--out` that is a file (or below one) exits 2 before a simulation or prediction starts."""
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setattr("sim.runner._simulate", _no_simulation)
    fidelity_module = importlib.import_module("sim.calibration.fidelity")  # the package exports the function
    monkeypatch.setattr(fidelity_module, "predict_measurement", _no_simulation)
    monkeypatch.setattr(fidelity_module, "simulate_run", _no_simulation)
    target = str(scenario_file)
    if command == "fidelity":
        target = str(tmp_path / "m.csv")
        Path(target).write_text(MEASUREMENTS_CSV)
    args = [command, target, "--out", str(tmp_path / bad)] + (["-q"] if command != "fidelity" else [])
    assert_user_error(cli(*args), "--out", bad)


def test_calibrate_out_that_is_a_folder_fails_before_fitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calibrate --out <a folder>` exits 2 before any point is predicted."""
    monkeypatch.setattr("sim.calibration.calibrate", _no_simulation)
    (tmp_path / "m.csv").write_text(MEASUREMENTS_CSV)
    assert_user_error(cli("calibrate", str(tmp_path / "m.csv"), "--out", str(tmp_path)), "--out", "is a folder")


def test_commands_write_nothing_outside_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            scenario_file: Path) -> None:
    """run, compare, sweep, report, calibrate and fidelity change nothing but their --out."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.csv").write_text(MEASUREMENTS_CSV)
    sweep = {"name": "s", "base": [scenario_file.name], "set": ["horizon=30s"],
             "factors": {"workload.arrivals.rate_per_s": [1, 2]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (tmp_path / "outs").mkdir()
    commands = [
        ("run", ["run", str(scenario_file), "-q", "--set", "horizon=30s"]),
        ("compare", ["compare", str(scenario_file), "-r", "1", "--workers", "1", "-q", "--set", "horizon=30s"]),
        ("sweep", ["sweep", "sweep.yaml", "--workers", "0", "-q"]),
        ("report", ["report", "sweep"]),
        ("fidelity", ["fidelity", "m.csv"]),
        ("calibrate", ["calibrate", "m.csv"]),
    ]
    for out_name, args in commands:
        out = tmp_path / "outs" / out_name
        target = out / "fit.yaml" if out_name == "calibrate" else out
        if out_name == "report":
            args = ["report", str(tmp_path / "outs" / "sweep")]
        before = _tree(tmp_path)
        result = cli(*args, "--out", str(target))
        assert result.exit_code == 0, (out_name, result.output)
        assert _changed_outside(tmp_path, before, out) == [], out_name
        assert out.is_dir() and any(out.iterdir()), out_name


# ------------------------------------------------------------------------------------------
# Class 8: sizes that would not fit in memory (or would hang), refused with the estimate
# ------------------------------------------------------------------------------------------

GRID_1E10 = {"base": ["s.yaml"], "factors": {"workload.arrivals.rate_per_s": {"low": 1, "high": 2, "steps": 100_000},
                                              "horizon": {"low": 60, "high": 120, "steps": 100_000}}}
LHS_1E9 = {"base": ["s.yaml"], "factors": {"workload.arrivals.rate_per_s": {"low": 1, "high": 2}},
           "design": "lhs", "samples": 1_000_000, "replications": 1000}


@pytest.mark.parametrize(("args", "expected"), [
    (["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--batch", "1000000000"],
     ["--batch: would need about", "1,000,000,000 requests x"]),
    (["predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--concurrency", "4", "--requests", "1000000000"],
     ["--requests: would need about"]),
    (["sweep", "grid.yaml", "--workers", "0", "-q"], ["10,000,000,000 points", "fewer points"]),
    (["sweep", "lhs.yaml", "--workers", "0", "-q"], ["1,000,000 points x 1000 replication(s)"]),
    (["run", "s.yaml", "-q", "--set", "sites.edge.pools[0].count=1000000000"],
     ["sites.edge.pools[0].count (in --set): out of range (got 1000000000)", "a value <= 100000"]),
    (["run", "s.yaml", "-q", "--set", "workload.arrivals.rate_per_s=1e7", "--set", "horizon=1d"],
     ["would need about", "requests x", "available", "a lower rate or a shorter horizon"]),
], ids=["predict-batch", "predict-requests", "sweep-grid", "sweep-lhs", "pool-count", "run-rate"])
def test_oversized_work_is_refused_in_a_2gb_process(tmp_path: Path, minimal_doc: dict[str, Any],
                                                    args: list[str], expected: list[str]) -> None:
    """What grew to 15 GB, hung or tried to allocate 104 GiB now exits 2 quickly in 2 GB of address
    space, with the memory estimate, what is available and what to change."""
    minimal_doc["horizon"] = "1min"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(minimal_doc))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID_1E10))
    (tmp_path / "lhs.yaml").write_text(yaml.safe_dump(LHS_1E9))
    started = time.perf_counter()
    done = limited(args, tmp_path)
    assert_limited_user_error(done, *expected)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").rglob("*.parquet"))


def test_a_pool_of_a_million_gpus_is_refused_before_building_it(scenario_file: Path) -> None:
    """`--set sites...count=1000000` (which hung) is out of the documented range, also for validate."""
    result = cli("validate", str(scenario_file), "--set", "sites.edge.pools[0].count=1000000")
    assert_user_error(result, "sites.edge.pools[0].count (in --set): out of range (got 1000000)",
                      "allowed: a value <= 100000")


def test_validate_refuses_what_run_would_refuse(scenario_file: Path) -> None:
    """validate runs the same memory estimate as run: a rate that cannot fit is refused by both."""
    overrides = ["--set", "workload.arrivals.rate_per_s=1e8", "--set", "horizon=1d"]
    assert_user_error(cli("validate", str(scenario_file), *overrides), "would need about", "available")


@pytest.mark.parametrize(("override", "path"), [
    ("workload.prompt_tokens.value=1000000000000", "workload.prompt_tokens.value"),
    ("workload.classes=[{name: a, share: 1, output_tokens: {dist: lognormal, mean: 100, sigma: 1, "
     "max: 1000000000000}}]", "workload.classes[0].output_tokens.max"),
], ids=["workload", "class"])
def test_validate_refuses_token_lengths_run_would_refuse(scenario_file: Path, override: str, path: str) -> None:
    """A token bound past int32 passed `validate` and failed only in `run`; now both refuse it."""
    assert_user_error(cli("validate", str(scenario_file), "--set", override),
                      f"{path} (in --set): more tokens than a run can hold", "allowed: at most 2,147,483,647")


def test_legal_sizes_still_run(scenario_file: Path, tmp_path: Path) -> None:
    """A small run, a small predict and a small sweep are untouched by the guards."""
    assert cli("run", str(scenario_file), "-q", "--out", str(tmp_path / "r")).exit_code == 0
    answer = cli("predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--batch", "64", "--json")
    assert answer.exit_code == 0, answer.output
    assert '"completed": 64' in answer.stdout


@pytest.mark.parametrize(("tokens", "message"), [
    (["--input-tokens", "99999999999999999999999"], "--input-tokens: out of range"),
    (["--input-tokens", "300000", "--output-tokens", "200000"], "needs more KV cache than one replica holds"),
    (["--gpus", "100000"], "--gpus: out of range"),
])
def test_predict_token_counts_have_a_sane_cap(tokens: list[str], message: str) -> None:
    """Token counts past any context (OverflowError before) or the replica's KV cache (NaN
    latencies before) are exit-2 errors naming the flag."""
    result = cli("predict", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", *tokens)
    text = assert_user_error(result, message)
    assert "nan" not in text.lower()


# ------------------------------------------------------------------------------------------
# Class 9: measurement files (vLLM JSON, CSV) with impossible numbers or nothing in them
# ------------------------------------------------------------------------------------------

VLLM = {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "completed": 10, "total_input_tokens": 1000,
        "total_output_tokens": 1000, "mean_ttft_ms": 50, "request_rate": "inf"}


@pytest.mark.parametrize(("change", "expected"), [
    ({"completed": 0.5}, "completed: not a whole number (got 0.5)"),
    ({"completed": 1e300}, "completed: out of range (got 1e+300)"),
    ({"total_input_tokens": 1e300}, "total_input_tokens: is 1e+299 tokens per request"),
    ({"input_lens": [1e300, 5], "output_lens": [5, 5]}, "input_lens: a token count that is negative"),
    ({"input_lens": [100_000, 5], "output_lens": [100_000, 5]}, "longer than llama-3.1-8b's context"),
    ({"mean_ttft_ms": float("nan")}, "mean_ttft_ms: not finite"),
], ids=["half-request", "1e300-requests", "1e300-tokens", "1e300-lens", "beyond-context", "nan-metric"])
def test_impossible_vllm_json_numbers_are_errors(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    """vLLM JSON that gave ZeroDivisionError, 'Maximum allowed dimension exceeded' or silent
    overflow is an exit-2 error naming the key (fidelity and calibrate read it the same way)."""
    import json

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({**VLLM, **change}))
    assert_user_error(cli("fidelity", str(path), "--gpu", "h100-sxm", "--out", str(tmp_path / "f")),
                      str(path), expected)


def test_deeply_nested_json_is_an_error(tmp_path: Path) -> None:
    """A JSON file nested 100,000 deep is an error, not a RecursionError traceback."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_user_error(cli("calibrate", str(path), "--gpu", "h100-sxm", "--out", str(tmp_path / "c.yaml")),
                      "nested too deeply")


def test_header_only_csv_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    """`calibrate` on a CSV with a header but no rows exits 2 instead of writing `gpus: {}`."""
    path = tmp_path / "m.csv"
    path.write_text(MEASUREMENTS_CSV.splitlines()[0] + "\n")
    assert_user_error(cli("calibrate", str(path), "--out", str(tmp_path / "fit.yaml")), "no measured points")
    assert not (tmp_path / "fit.yaml").exists()


@pytest.mark.parametrize(("cell", "value"), [("input_tokens", "1e999"), ("batch_or_concurrency", "1e30"),
                                             ("n_gpus", "100000")])
def test_csv_counts_are_bounded(tmp_path: Path, cell: str, value: str) -> None:
    """A count cell of 1e999 (OverflowError before), 1e30 or an absurd GPU count names row and field."""
    header, first, *_ = MEASUREMENTS_CSV.splitlines()
    cells = dict(zip(header.split(","), first.split(","), strict=True))
    cells[cell] = value
    path = tmp_path / "m.csv"
    path.write_text(header + "\n" + ",".join(cells.values()) + "\n")
    assert_user_error(cli("fidelity", str(path), "--out", str(tmp_path / "f")), f"line 2 (id a).{cell}: out of range")


# ------------------------------------------------------------------------------------------
# Class 10: point files a power loss damaged (zero bytes, garbage), and durable writes
# ------------------------------------------------------------------------------------------


@pytest.fixture
def finished_sweep(tmp_path: Path, scenario_file: Path) -> tuple[Path, Path]:
    """A three-point sweep run to the end: (its sweep file, its results folder)."""
    sweep = {"name": "tiny", "base": [scenario_file.name], "set": ["horizon=30s"],
             "factors": {"workload.arrivals.rate_per_s": [1, 2, 3]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "tiny_out"
    result = cli("sweep", str(path), "--workers", "0", "-q", "--no-report", "--out", str(out))
    assert result.exit_code == 0, result.output
    return path, out


def _damage(out: Path) -> list[str]:
    """Truncate one point file to zero bytes and overwrite another with garbage."""
    files = sorted((out / "points").glob("*.parquet"))
    files[0].write_bytes(b"")
    files[1].write_bytes(b"PAR1 not really parquet")
    return [files[0].name, files[1].name]


def test_report_skips_and_names_damaged_points(finished_sweep: tuple[Path, Path], tmp_path: Path) -> None:
    """`report` on a folder with a zero-byte and a garbage point file (a pyarrow traceback before)
    writes the report from the good point and names the damaged ones."""
    _, out = finished_sweep
    damaged = _damage(out)
    result = cli("report", str(out), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert "2 damaged point file(s)" in result.stderr
    assert all(name in result.stderr for name in damaged)
    assert "Traceback" not in result.output
    assert (tmp_path / "report" / "index.html").is_file()


def test_resumed_sweep_recomputes_damaged_points(finished_sweep: tuple[Path, Path]) -> None:
    """A rerun names the damaged point files, recomputes them and ends with every point readable."""
    sweep_file, out = finished_sweep
    damaged = _damage(out)
    result = cli("sweep", str(sweep_file), "--workers", "0", "-q", "--no-report", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "(1 done before, skipped)" in result.stdout
    assert all(name in result.stderr for name in damaged) and "recomputed" in result.stderr
    assert "3 rows" in result.stdout and "3 ok" in result.stdout
    assert all(pd.read_parquet(f)["status"].item() == "ok" for f in (out / "points").glob("*.parquet"))


@pytest.mark.parametrize("manifest", [b"", b'{"points": [', b'{"factors": 5}', b'{"points": [1], "name": 3}'],
                         ids=["zero-bytes", "truncated", "factors-not-a-list", "wrong-types"])
def test_a_damaged_manifest_does_not_wedge_report(finished_sweep: tuple[Path, Path], tmp_path: Path,
                                                  manifest: bytes) -> None:
    """A sweep.json that is empty, cut short or of the wrong shape (`factors: 5` gave a TypeError
    traceback) is read as missing: factors guessed from the points, every point reported."""
    _, out = finished_sweep
    (out / "sweep.json").write_bytes(manifest)
    result = cli("report", str(out), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 3


def test_points_are_written_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A point file's data is fsynced before its rename and the folder after it; no temporary stays."""
    from sim import outputs
    from sim.sweep import write_row

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b))[1])
    target = write_row(tmp_path, {"point": "abc", "seed": 1, "status": "ok"})
    assert calls == ["fsync", "rename", "fsync"]
    assert pd.read_parquet(target)["point"].item() == "abc"
    assert [p.name for p in (tmp_path / "points").iterdir()] == ["abc.parquet"]


# ------------------------------------------------------------------------------------------
# Class 11: traffic classes, routing rules and autoscalers written carelessly
# ------------------------------------------------------------------------------------------


def classes_doc(minimal: dict[str, Any]) -> dict[str, Any]:
    """The minimal scenario with a cloud pool that scales from zero, two classes (one kept on
    premises) and one overflow rule: premises first, the cloud past 8 requests per replica."""
    doc = copy.deepcopy(minimal)
    doc["horizon"] = "1min"
    doc["sites"]["edge"]["pools"][0].update(name="a", roles=["serving"])
    doc["sites"]["cloud"] = {"zone": "third_party", "pools": [{
        "name": "b", "gpu": "l4", "count": 0, "elastic": True, "max_count": 2, "roles": ["serving"],
        "autoscale": {"min_replicas": 0, "max_replicas": 2, "target": 4, "interval": "30s"}}]}
    doc["links"] = {"wan": {"ends": ["edge", "cloud"], "rtt": "40ms", "bandwidth": "1Gbps"}}
    doc["workload"]["classes"] = [{"name": "gen", "share": 0.6}, {"name": "conf", "share": 0.4, "residency": ["private"]}]
    doc["routing"] = [{"pools": ["edge/a", "cloud/b"], "overflow": {"queue_per_replica": 8}}]
    return doc


WEIGHTED = ["routing[0].policy=weighted", "routing[0].overflow=null"]
AUTOSCALE = "sites.cloud.pools[0].autoscale"


@pytest.mark.parametrize(("overrides", "expected"), [
    (["workload.classes[0].share=0.5"], ["workload.classes: the shares", "sum to 0.9", "allowed: shares that sum to 1"]),
    (["workload.classes[0].share=.nan"], ["workload.classes[0].share (in --set): not a finite number",
                                          "allowed: a finite number > 0 and <= 1"]),
    (["workload.classes[0].share=-0.6"], ["workload.classes[0].share (in --set): out of range", "a value > 0"]),
    (["routing[0].classes=[gen, nope]"], ["routing[0].classes[1] (in --set): no traffic class named 'nope'",
                                          "allowed: gen, conf"]),
    (["workload.classes[1].residency=[moon]"], ["workload.classes[1].residency[0] (in --set): no zone or site named "
                                                "'moon'", "allowed: a zone (private, third_party) or a site (edge, cloud)"]),
    (["routing[0].overflow.queue_per_replica=-1"], ["routing[0].overflow.queue_per_replica (in --set): out of range",
                                                    "a value >= 0"]),
    (["routing[0].overflow.queue_per_replica=.nan"], ["queue_per_replica (in --set): not a finite number",
                                                      "allowed: a finite number >= 0"]),
    (["routing[0].overflow.queue_per_replica=.inf"], ["queue_per_replica (in --set): not a finite number (got inf)"]),
    (["routing[0].overflow.wait=.nan"], ["routing[0].overflow.wait (in --set): nan is not a finite duration",
                                         "allowed: a finite duration, e.g. '250ms'"]),
    ([*WEIGHTED, "routing[0].weights=[0, 0]"], ["routing[0].weights (in --set): the weights sum to 0",
                                                "allowed: weights >= 0 with at least one > 0"]),
    ([*WEIGHTED, "routing[0].weights=[-1, 2]"], ["routing[0].weights[0] (in --set): out of range", "a value >= 0"]),
    ([*WEIGHTED, "routing[0].weights=[.nan, 1]"], ["routing[0].weights[0] (in --set): not a finite number"]),
    ([*WEIGHTED, "routing[0].weights=[1]"], ["routing[0].weights (in --set): 1 weights for 2 pools"]),
    ([*WEIGHTED, "routing[0].weights=[1e308, 1e308]"], ["routing[0].weights (in --set): the weights sum past the "
                                                        "largest number", "allowed: weights whose sum is finite"]),
    ([f"{AUTOSCALE}.min_replicas=3"], [f"{AUTOSCALE}.min_replicas (in --set): pool 'b': min_replicas is above "
                                       "max_replicas (2) (got 3)", "allowed: a value <= 2"]),
    ([f"{AUTOSCALE}.target=.nan"], [f"{AUTOSCALE}.target (in --set): not a finite number", "a finite number > 0"]),
    ([f"{AUTOSCALE}.target=.inf"], [f"{AUTOSCALE}.target (in --set): not a finite number (got inf)"]),
    ([f"{AUTOSCALE}.interval=0"], [f"{AUTOSCALE}.interval (in --set): out of range", "a value > 0"]),
    ([f"{AUTOSCALE}.cooldown=.inf"], [f"{AUTOSCALE}.cooldown (in --set): inf is not a finite duration",
                                      "allowed: a finite duration"]),
    ([f"{AUTOSCALE}.max_replicas=1000000"], [f"{AUTOSCALE}.max_replicas (in --set): out of range",
                                             "a value <= 100000"]),
    (["sites.cloud.pools[0].max_count=1000000000"], ["sites.cloud.pools[0].max_count (in --set): out of range"]),
], ids=["shares-0.9", "share-nan", "share-negative", "rule-unknown-class", "residency-unknown-site",
        "overflow-negative", "overflow-nan", "overflow-inf", "wait-nan", "weights-zero", "weights-negative",
        "weights-nan", "weights-short", "weights-sum-inf", "autoscale-min-above-max", "autoscale-target-nan",
        "autoscale-target-inf", "autoscale-interval-0", "autoscale-cooldown-inf", "autoscale-max-huge",
        "pool-max-count-huge"])
def test_careless_classes_routing_and_autoscale_values_are_errors(write_yaml, minimal_doc: dict[str, Any],
                                                                  overrides: list[str], expected: list[str]) -> None:
    """Each careless value of the traffic classes, routing rules and autoscalers, given by
    --set, exits 2 naming the field, the --set, the value and what is allowed. Weights of
    1e308 used to pass and send every request to the last pool (the draw was u x inf)."""
    path = write_yaml(classes_doc(minimal_doc), "classes.yaml")
    sets = [arg for override in overrides for arg in ("--set", override)]
    assert_user_error(cli("validate", str(path), *sets), f"{path}: ", *expected)


def test_the_classes_scenario_itself_is_legal(write_yaml, minimal_doc: dict[str, Any], tmp_path: Path) -> None:
    """The scenario the table above breaks runs as written, so each error is the value's."""
    path = write_yaml(classes_doc(minimal_doc), "classes.yaml")
    result = cli("run", str(path), "-q", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output


PERIODIC = [
    ("examples/s5_cloud_burst.yaml", ["sites.cloud.pools[0].autoscale.interval=1e-6"],
     "sites.cloud.pools[0].autoscale.interval"),
    ("s2_cloud_training.yaml", ["lifecycle.monitor.interval=1e-6"], "lifecycle.monitor.interval"),
    ("s2_cloud_training.yaml", ["lifecycle.retraining.policy=scheduled", "lifecycle.retraining.every=1e-6"],
     "lifecycle.retraining.every"),
    ("s2_cloud_training.yaml", ["lifecycle.development.rate_per_week=1e12"], "lifecycle.development.rate_per_week"),
    ("s2_cloud_training.yaml", ["lifecycle.vendor_updates={cadence: 1e-6}"], "lifecycle.vendor_updates.cadence"),
    ("s1_local.yaml", ["faults.replica_failures=[{site: premises, mtbf: 1e-6, mttr: 1e-6}]"],
     "faults.replica_failures[0].mtbf"),
    ("s1_local.yaml", ["faults.link_outages=[{link: wan, mtbf: 1e-6, mttr: 1e-6}]"], "faults.link_outages[0].mtbf"),
    ("s1_local.yaml", ["faults.site_outages=[{site: premises, mtbf: 1ms, mttr: 1ms}]"], "faults.site_outages[0].mtbf"),
]


@pytest.mark.parametrize(("scenario", "overrides", "path"), PERIODIC,
                         ids=["autoscale", "monitor", "retraining", "development", "vendor", "replica-failures",
                              "link-outages", "site-outages"])
def test_a_process_that_would_fire_billions_of_times_is_refused(scenario: str, overrides: list[str],
                                                                path: str) -> None:
    """A microsecond interval, period or mtbf (the autoscaler, monitor, scheduled retraining and
    every random fault hung `run`; a development rate of 1e12 a week tried to allocate 133 GiB)
    is refused at its field with the count, the cap and the least period that fits."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    assert_user_error(cli("validate", str(ROOT / "scenarios" / scenario), *sets),
                      f"{path} (in --set): would fire about", f"at most {MAX_PERIODIC_EVENTS:,} per process",
                      "allowed: ", "or a shorter horizon")


def test_the_periodic_cap_is_a_count_of_firings(write_yaml, minimal_doc: dict[str, Any]) -> None:
    """MAX_PERIODIC_EVENTS firings over the horizon are allowed; one more interval's worth is not
    (horizon 1000 s: an interval of 1 ms fires exactly 1,000,000 times)."""
    doc = classes_doc(minimal_doc)
    doc["horizon"] = "1000s"
    path = write_yaml(doc, "classes.yaml")
    at_cap = cli("validate", str(path), "--set", f"{AUTOSCALE}.interval={1000 / MAX_PERIODIC_EVENTS!r}")
    assert at_cap.exit_code == 0, at_cap.output
    assert_user_error(cli("validate", str(path), "--set", f"{AUTOSCALE}.interval=0.0009"),
                      "would fire about 1,111,111 times", "a period of at least 1ms")


def test_a_microsecond_autoscaler_exits_fast_in_a_2gb_process(tmp_path: Path, minimal_doc: dict[str, Any]) -> None:
    """`run` with `autoscale.interval: 1us` (which ran past any timeout) exits 2 within seconds."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(classes_doc(minimal_doc)))
    started = time.perf_counter()
    done = limited(["run", "c.yaml", "-q", "--out", "out", "--set", f"{AUTOSCALE}.interval=1e-6"], tmp_path)
    assert_limited_user_error(done, f"{AUTOSCALE}.interval (in --set): would fire about 60,000,000 times")
    assert time.perf_counter() - started < 30


TRACE = "t,p,o\n0,100,50\n1,100,50\n2.5,100,50\n"
TRACE_ARRIVALS = {"process": "trace", "path": "trace.csv", "format": "csv", "time_unit": "s",
                  "columns": {"time": "t", "prompt_tokens": "p", "output_tokens": "o"}}


@pytest.mark.parametrize("via_extends", [False, True], ids=["in-the-file", "in-an-extended-file"])
def test_a_class_trace_path_is_relative_to_the_file_that_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  minimal_doc: dict[str, Any], via_extends: bool) -> None:
    """`workload.classes[k].arrivals.path: trace.csv` is read beside the scenario file that
    wrote it (it had to be absolute before), whatever the folder the command runs in; its three
    requests are generated."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "trace.csv").write_text(TRACE)
    doc = copy.deepcopy(minimal_doc)
    doc["horizon"] = "10s"
    doc["workload"]["classes"] = [{"name": "live", "share": 1.0}, {"name": "replay", "arrivals": TRACE_ARRIVALS}]
    (scenarios / "s.yaml").write_text(yaml.safe_dump(doc))
    target = scenarios / "s.yaml"
    if via_extends:
        (tmp_path / "top").mkdir()
        target = tmp_path / "top" / "top.yaml"
        target.write_text(yaml.safe_dump({"extends": "../scenarios/s.yaml", "name": "top"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    scenario = sim.load_scenario(target)
    arrivals = scenario.workload.classes[1].arrivals
    assert arrivals is not None and Path(arrivals.path) == scenarios / "trace.csv"
    result = cli("run", str(target), "-q", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    requests = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    assert (requests["traffic_class"] == "replay").sum() == 3


# ------------------------------------------------------------------------------------------
# Every class at once: random command lines over random small files
# ------------------------------------------------------------------------------------------

ODD_NUMBERS = [0, -1, 1, 3, 0.5, 1e9, 1e300, -1e300, ".nan", ".inf", "-.inf", 2**70, "1e999", "[]", "{}", "'x'",
               "1e-9"]
ODD_TEXT = ["", "[/]", "[bold]x", "\x1b[2J", "../../x", "/tmp/deploysim-fuzz-abs", "a\rb", "::", "\u202e"]
SCENARIO_PATHS = ["horizon", "warmup", "seed", "name", "description", "workload.arrivals.rate_per_s",
                  "workload.bytes_per_token", "sites.edge.pools[0].count", "sites.edge.pools[0].gpu",
                  "model.tensor_parallel", "model.serving.max_num_seqs", "workload.prompt_tokens.value",
                  "workload.output_tokens.value", "workload.arrivals", "sites", "replications", "x",
                  "workload.classes", "routing", "sites.edge.pools[0].autoscale", "sites.edge.pools[0].name",
                  "faults.replica_failures"]
# Whole blocks of the newer features, carelessly filled in, for the paths above that take them.
ODD_BLOCKS = ["[{name: a, share: .nan}]", "[{name: a, share: 0.5}, {name: b, share: 0.6}]", "[{name: '[/]'}]",
              "[{pools: [edge/l4], policy: weighted, weights: [1e308]}]", "[{classes: [nope], pools: [x/y]}]",
              "{min_replicas: 3, max_replicas: 1, target: .nan}", "{max_replicas: 1, target: 1, interval: 1e-9}",
              "[{site: edge, mtbf: 1e-9, mttr: 1e-9}]", "a/b"]


def _override(data: Any) -> str:
    path = data.draw(st.sampled_from(SCENARIO_PATHS), label="set path")
    value = data.draw(st.sampled_from([*map(str, ODD_NUMBERS), *ODD_TEXT, *ODD_BLOCKS, "20s"]), label="set value")
    return f"{path}={value}"


def _scenario_text(data: Any, minimal: dict[str, Any]) -> str:
    doc = copy.deepcopy(minimal)
    doc["horizon"] = "20s"
    if data.draw(st.sampled_from([False, False, False, True]), label="trace arrivals"):
        doc["workload"]["arrivals"] = {"process": "trace", "path": "trace.csv", "format": "csv", "time_unit": "s",
                                       "columns": {"time": "t", "prompt_tokens": "p", "output_tokens": "o"}}
    text = yaml.safe_dump(doc, sort_keys=False)
    extra = data.draw(st.sampled_from(["", "", "", "", "description: '[/] \\x1b[2J'\n", "name: a\n", "{", "seed: .nan\n",
                                       "horizon: 1e999\n", "catalog: cat.yaml\n"]), label="extra yaml")
    return text + extra


def _trace_text(data: Any) -> str:
    rows = data.draw(st.lists(st.tuples(*[st.sampled_from(["0", "1", "2.5", "-1", "nan", "inf", "1e300", "x", ""])] * 3),
                              max_size=5), label="trace rows")
    return "t,p,o\n" + "".join(",".join(row) + "\n" for row in rows)


def _measurements(data: Any) -> tuple[str, str]:
    if data.draw(st.booleans(), label="json"):
        doc = dict(VLLM)
        for key in data.draw(st.lists(st.sampled_from(list(VLLM) + ["input_lens", "output_lens"]), max_size=3)):
            doc[key] = data.draw(st.sampled_from([0, 1, -1, 0.5, 1e300, "inf", None, [1, 2], [1e300], "x"]))
        import json

        return "m.json", json.dumps(doc, allow_nan=True)
    lines = MEASUREMENTS_CSV.splitlines()
    cells = data.draw(st.lists(st.sampled_from(["", "1e999", "-5", "0", "nan", "h100", "x,y", "1 (static batch)"]),
                               min_size=11, max_size=11), label="csv cells")
    return "m.csv", "\n".join([lines[0], lines[1], ",".join(cells)]) + "\n"


def _sweep_text(data: Any) -> str:
    factors = data.draw(st.sampled_from([
        {"workload.arrivals.rate_per_s": [1, 2]}, {"workload.arrivals.rate_per_s": {"low": 1, "high": 2, "steps": 2}},
        {"horizon": [".nan"]}, {"x..y": [1]}, {"workload.arrivals.rate_per_s": {"low": 1, "high": 2, "steps": 10**9}}]))
    extra = data.draw(st.sampled_from(["", "design: lhs\nsamples: 2\n", "out: /tmp/deploysim-fuzz-out\n",
                                       "name: ../../esc\n", "replications: 1000\nsamples: 1000000\ndesign: random\n"]))
    return yaml.safe_dump({"base": ["s.yaml"], "set": ["horizon=10s"], "factors": factors}) + extra


def _command(data: Any, out: str) -> list[str]:
    count = data.draw(st.sampled_from([0, 0, 1, 2]), label="sets")
    sets = [arg for _ in range(count) for arg in ("--set", _override(data))]
    measurement_file = "m.json" if data.draw(st.booleans(), label="use json") else "m.csv"
    templates = [
        ["validate", "s.yaml", *sets], ["validate", "s.yaml", *sets], ["run", "s.yaml", "-q", "--out", out, *sets],
        ["run", "s.yaml", "-q", "--out", out, *sets], ["sweep", "sw.yaml", "--workers", "0", "-q", "--out", out],
        ["report", out], ["catalog", data.draw(st.sampled_from(["gpus", "models", "prices"])), "--catalog", "cat.yaml"],
        ["predict", "--model", data.draw(st.sampled_from(["llama-3.1-8b", "llama-3.1-70b", "x"])), "--gpu",
         data.draw(st.sampled_from(["h100-sxm", "l4", "nope"])), "--batch", str(data.draw(st.sampled_from(ODD_NUMBERS[:6]))),
         "--input-tokens", data.draw(st.sampled_from(["1", "128", "200000", "99999999999999999999"]))],
        ["fidelity", measurement_file, "--gpu", "h100-sxm", "--out", out],
        ["calibrate", measurement_file, "--gpu", "h100-sxm", "--out", f"{out}/fit.yaml"],
    ]
    return data.draw(st.sampled_from(templates), label="command")


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_command_lines_exit_0_or_2_and_stay_inside_out(data: Any, minimal_doc: dict[str, Any]) -> None:
    """Random command lines over random small scenarios, sweeps, traces, catalogs and measurement
    files: exit code 0 or 2, never a traceback, a few seconds at most, and no file written
    anywhere but --out (commands without --out write nothing)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "s.yaml").write_text(_scenario_text(data, minimal_doc))
        (root / "trace.csv").write_text(_trace_text(data))
        (root / "sw.yaml").write_text(_sweep_text(data))
        (root / "cat.yaml").write_text(data.draw(st.sampled_from(["gpus: {l4: {tdp_w: .nan}}", "- 1", "{}", "a: &a [*a]",
                                                                   "gpus: {l4: {tdp_w: 80}}"]), label="catalog"))
        name, text = _measurements(data)
        (root / name).write_text(text)
        out = root / "out"
        command = _command(data, str(out))
        before = _tree(root)
        previous = os.getcwd()
        os.chdir(root)
        try:
            started = time.perf_counter()
            result = cli(*command)
            elapsed = time.perf_counter() - started
        finally:
            os.chdir(previous)
        event(f"{command[0]} exit {result.exit_code}")
        assert result.exit_code in (0, 2), (command, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, result.exception)
        assert "Traceback" not in result.output, command
        assert elapsed < 30, (command, elapsed)
        out.mkdir(exist_ok=True)
        assert _changed_outside(root, before, out) == [], command
    assert not Path("/tmp/deploysim-fuzz-abs").exists() and not Path("/tmp/deploysim-fuzz-out").exists()
