"""A sweep against a Dask cluster started with Dask's own command-line tools.

This is the path a team takes on its own machines: `dask scheduler` on one host, `dask worker`
on others, and `deploysim sweep FILE --scheduler ADDRESS`. Here the scheduler and two workers
are separate processes on this machine (the scheduler on a port the system picks, its address
read from its scheduler file); the rows must equal a serial run's, bit for bit. Every process
is stopped however the test ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sim
from sim.sweep import load_sweep_results, sweep

REPO = Path(sim.__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


def _dask() -> list[str]:
    """The `dask` console script that `distributed` installs, next to this Python or on PATH."""
    beside = Path(sys.executable).parent / "dask"
    found = str(beside) if beside.is_file() else shutil.which("dask")
    assert found is not None, "the dask command (from distributed) is not installed"
    return [found]


def _environment() -> dict[str, str]:
    """This checkout first on the path, for the workers and the deploysim command alike."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _scheduler_address(scheduler_file: Path, scheduler: subprocess.Popen[bytes], log: Path) -> str:
    """The address the scheduler wrote to its file once listening (its port chosen by the system)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            pytest.fail(f"dask scheduler exited with {scheduler.returncode}:\n{log.read_text()[-2000:]}")
        try:
            return str(json.loads(scheduler_file.read_text())["address"])
        except (OSError, ValueError, KeyError):  # not written yet, or half written
            time.sleep(0.1)
    pytest.fail(f"dask scheduler did not start in {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes (one thread each); yields the address."""
    scheduler_file = tmp_path / "scheduler.json"
    processes: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()
    env = _environment()

    def start(name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        log = logs / f"{name}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen([*_dask(), *arguments], stdout=handle, stderr=subprocess.STDOUT,
                                       cwd=tmp_path, env=env)
        processes.append(process)
        return process

    try:
        scheduler = start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                        "--scheduler-file", str(scheduler_file)])
        address = _scheduler_address(scheduler_file, scheduler, logs / "scheduler.log")
        for i in range(2):
            start(f"worker-{i}", ["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                  "--host", "127.0.0.1", "--name", f"worker-{i}",
                                  "--local-directory", str(tmp_path / f"worker-{i}")])
        _wait_for_workers(address, 2, logs)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def _wait_for_workers(address: str, count: int, logs: Path) -> None:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        try:
            client.wait_for_workers(count, timeout=START_TIMEOUT_S)
        except TimeoutError:
            text = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in sorted(logs.iterdir()))
            pytest.fail(f"{count} dask workers did not join in {START_TIMEOUT_S:.0f} s:\n{text}")


def test_a_sweep_on_a_cluster_started_with_the_dask_commands_equals_a_serial_run(
        dask_cluster: str, scenarios_dir: Path, tmp_path: Path) -> None:
    """`deploysim sweep FILE --scheduler ADDRESS` against `dask scheduler` + 2 `dask worker`
    processes: exit 0, one row per point, each point run by one of the two workers, and the
    same rows (every metric bit-identical) as the same sweep run serially here."""
    sweep_file = tmp_path / "cluster.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "cluster", "base": [str(scenarios_dir / "s2_cloud_training.yaml")],
        "set": ["horizon=5min", "warmup=1min"],
        "factors": {"workload.arrivals.rate_per_s": [2, 4, 8], "links.wan.rtt": ["10ms", "80ms"]},
        "metrics": ["ttft_p99_s", "e2e_p99_s", "cost_usd_per_1m_requests", "exposure_score"],
    }))
    clustered_out = tmp_path / "on-cluster"
    done = subprocess.run([sys.executable, "-m", "sim.cli", "sweep", str(sweep_file), "--scheduler", dask_cluster,
                           "--out", str(clustered_out), "--quiet", "--no-report"],
                          capture_output=True, text=True, timeout=120, env=_environment(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6 rows" in done.stdout and "6 ok" in done.stdout

    clustered = load_sweep_results(clustered_out)
    serial = sweep(sweep_file, workers=0, out=tmp_path / "serial")
    assert len(clustered) == 6 and set(clustered["status"]) == {"ok"}
    assert _workers_that_ran(dask_cluster) == {"worker-0", "worker-1"}

    def comparable(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns=["wall_s", "cpu_s"]).sort_values("point").reset_index(drop=True)

    pd.testing.assert_frame_equal(comparable(clustered), comparable(serial), check_exact=True)


def _workers_that_ran(address: str) -> set[str]:
    """Names of the workers that have executed at least one task."""
    from distributed import Client

    with Client(address, timeout="10s") as client:
        # a lambda travels by value: the workers cannot import this test module
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        names = {worker: info["name"] for worker, info in client.scheduler_info(n_workers=-1)["workers"].items()}
        return {names[worker] for worker, count in executed.items() if count > 0}
