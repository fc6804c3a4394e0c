"""The `deploysim` command: `validate` and `catalog`, with exit code 2 and no traceback on mistakes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import USER_ERROR, app

SCENARIOS_DIR = Path(__file__).parent.parent / "scenarios"
SHIPPED = sorted(SCENARIOS_DIR.glob("*.yaml"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def broken_file(write_yaml, minimal_doc) -> Path:
    """A scenario whose one pool names a GPU that does not exist."""
    minimal_doc["sites"]["edge"]["pools"][0]["gpu"] = "h100-sxx"
    return write_yaml(minimal_doc, "broken.yaml")


def test_validate_shipped_scenarios(runner: CliRunner) -> None:
    """`validate scenarios/*.yaml` exits 0 and prints every scenario's name."""
    result = runner.invoke(app, ["validate", *map(str, SHIPPED)])
    assert result.exit_code == 0, result.output
    for path in SHIPPED:
        name = path.stem
        assert f": {name}" in result.stdout
    assert result.stdout.count("ok ") == len(SHIPPED)


def test_validate_summarises_the_resolved_scenario(runner: CliRunner) -> None:
    """The summary names the sites, the link, the model sizing, the workload and the placement."""
    result = runner.invoke(app, ["validate", str(SCENARIOS_DIR / "s3_local_training.yaml")])
    assert result.exit_code == 0, result.output
    for text in ("site premises (private)", "link wan", "llama-3.1-8b", "diurnal at 3 req/s",
                 "serving pool premises/gpus: 4 replicas of l40s", "class default (1 of arrivals)",
                 "training=premises", "horizon 1d"):
        assert text in result.stdout


def test_validate_broken_file_exits_2_with_the_field_path(runner: CliRunner, broken_file: Path) -> None:
    """A bad file exits 2, naming the file, the field path and the allowed ids, with no traceback."""
    result = runner.invoke(app, ["validate", str(broken_file)])
    assert result.exit_code == USER_ERROR == 2
    assert "sites.edge.pools[0].gpu" in result.stderr
    assert "did you mean 'h100-sxm'?" in result.stderr
    assert str(broken_file) in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped error


def test_validate_checks_every_file(runner: CliRunner, broken_file: Path) -> None:
    """One broken file does not stop the others being checked, but the exit code is still 2."""
    good = SCENARIOS_DIR / "s1_local.yaml"
    result = runner.invoke(app, ["validate", str(broken_file), str(good)])
    assert result.exit_code == 2
    assert "s1_local" in result.stdout
    assert "sites.edge.pools[0].gpu" in result.stderr


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("workload.arrivals.rate_per_s=-3", "workload.arrivals.rate_per_s"),
        ("horizon=6x", "horizon"),
        ("sites.premises.pools[9].count=1", "--set sites.premises.pools[9].count=1"),
        ("workload.arrivals.rate_per_s", "--set workload.arrivals.rate_per_s"),
    ],
)
def test_validate_with_bad_override_exits_2(runner: CliRunner, override: str, shown: str) -> None:
    """A `--set` that breaks the scenario (bad value or malformed override) exits 2 and says where."""
    result = runner.invoke(app, ["validate", str(SCENARIOS_DIR / "s1_local.yaml"), "--set", override])
    assert result.exit_code == 2
    assert shown in result.stderr
    assert "Traceback" not in result.output


def test_validate_with_good_override(runner: CliRunner) -> None:
    """A valid `--set` is applied before the summary is printed."""
    result = runner.invoke(
        app, ["validate", str(SCENARIOS_DIR / "s1_local.yaml"), "--set", "workload.arrivals.rate_per_s=40"]
    )
    assert result.exit_code == 0, result.output
    assert "diurnal at 40 req/s" in result.stdout


def test_validate_missing_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    """A file that does not exist is a user mistake: exit 2 with its path, not a crash."""
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert "file not found" in result.stderr
    assert str(missing) in result.stderr


@pytest.mark.parametrize(
    ("kind", "ids"),
    [
        ("gpus", ("h100-sxm", "l40s", "l4", "mi300x")),
        ("models", ("llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b")),
        ("prices", ("aws", "gcp", "azure")),
        ("apis", ("bedrock-llama-3.1-8b", "groq-llama-3.1-8b", "fireworks-llama-3.1-70b")),
    ],
)
def test_catalog_lists_ids(runner: CliRunner, kind: str, ids: tuple[str, ...]) -> None:
    """`catalog gpus|models|prices|apis` exits 0 and lists the shipped ids."""
    result = runner.invoke(app, ["catalog", kind], terminal_width=400)
    assert result.exit_code == 0, result.output
    for catalog_id in ids:
        assert catalog_id in result.stdout


def test_catalog_with_broken_user_catalog_exits_2(runner: CliRunner, write_yaml) -> None:
    """A user catalog that is not valid YAML exits 2 and names the file."""
    path = write_yaml("gpus: {a: [1, 2\n", "catalog.yaml")
    result = runner.invoke(app, ["catalog", "gpus", "--catalog", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.stderr
    assert "Traceback" not in result.output


def _deploysim() -> list[str]:
    """The installed console script, found next to this Python or on PATH."""
    beside = Path(sys.executable).parent / "deploysim"
    found = str(beside) if beside.is_file() else shutil.which("deploysim")
    assert found is not None, "the deploysim console script is not installed (pip install -e .)"
    return [found]


def test_console_script_exit_codes(broken_file: Path) -> None:
    """The real `deploysim` exits 0 on good files and 2 on a broken one, without a traceback."""
    good = subprocess.run([*_deploysim(), "validate", *map(str, SHIPPED)],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([*_deploysim(), "validate", str(broken_file)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "sites.edge.pools[0].gpu" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "Traceback" not in bad.stdout


# Each command runs in one fresh interpreter, in turn; after each, the heavy libraries it loaded.
_IMPORTS_OF_COMMANDS = """
import json, sys
import sim.cli
heavy = ("numba", "pandas", "matplotlib", "pyarrow", "scipy", "simpy", "pydantic")
loaded = {"import sim.cli": [m for m in heavy if m in sys.modules]}
for args in json.loads(sys.argv[1]):
    sys.argv = ["deploysim", *args]
    try:
        sim.cli.main()
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
    loaded[" ".join(args)] = [m for m in heavy if m in sys.modules]
print(json.dumps(loaded))
"""


def test_help_validate_and_catalog_start_without_the_heavy_libraries() -> None:
    """`deploysim --help`, `validate` (every shipped scenario) and `catalog` (every table) load
    neither numba, pandas nor matplotlib (nor pyarrow; --help and catalog not SciPy and SimPy
    either, --help not even pydantic): the commands that simulate or plot import them.
    (validate reads River's detector signatures to check a monitor's parameters, and River
    brings SciPy.)"""
    import json
    import subprocess
    import sys

    commands = [["--help"], ["catalog", "gpus"], ["catalog", "models"], ["catalog", "engines"],
                ["catalog", "prices"], ["validate", *map(str, SHIPPED)]]
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF_COMMANDS, json.dumps(commands)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert list(loaded) == ["import sim.cli", *(" ".join(c) for c in commands)]
    for command, modules in loaded.items():
        allowed = {"--help": set(), "import sim.cli": set()}.get(command, {"pydantic"})
        if command.startswith("validate"):
            allowed |= {"scipy", "simpy"}
        assert set(modules) <= allowed, f"{command} imported {modules}"
