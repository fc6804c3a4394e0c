"""The one way a simulation runs: `run_point`, its workspace, and the executors that run many.

`run_point(scenario, replication, workspace)` builds the world, runs it to its horizon, takes
its `RunRecord`, measures it (`sim.result.collect`) and checks the conservation laws on the
record (`sim.metrics.invariants`). Every command that simulates (`run`, `compare`, `sweep`,
`plan`) calls it, so each gets the same checks and leaves the same files.

**Workspaces.** Given a folder, a point leaves there, like desmod's workspaces:

- `scenario.yaml`: the resolved scenario, exactly as it ran;
- `summary.json`: the summary, with the seed, replication and spec hash;
- its small tables as Parquet (`lifecycle`, `transfers`, `costs`, `gpu_usage`, ...), and
  `requests.parquet` when asked (`run` asks; compare, sweeps and plans keep their folders
  small);
- or, when the point fails, `error.txt` saying why (and the scenario, when it loaded).

A point's folder is emptied of these files before it runs, so what is there after a run is
what that run left. `point_folder(out, label, replication)` is `out/runs/<label>/rep-<k>`, the
label a name made safe by `sim.outputs.folder_name`: names are labels, never paths.

**Executors.** `executor(workers, kind)` gives one interface to three ways of running many
calls: `serial` (here, one after another), `processes` (a local process pool) and `dask` (a
local Dask cluster, or an existing one given its scheduler address). `Executor.run(fn, items)`
yields `(index, outcome)` as each call finishes, an exception being an outcome too, so one
failing point never loses the others. Results never depend on the executor or the number of
workers: every point's randomness comes from its scenario's seed and its replication.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from sim.outputs import folder_name
from sim.record import RunRecord
from sim.result import Result, collect
from sim.spec.errors import SpecError, SpecIssue
from sim.spec.scenario import Scenario
from sim.workload.streaming import ResultsMode, results_mode

RUNS_DIR = "runs"
ERROR_FILE = "error.txt"
WORKSPACE_FILES = ("scenario.yaml", "summary.json", ERROR_FILE)
ExecutorKind = Literal["serial", "processes", "dask"]


# ------------------------------------------------------------------------------------------
# One point
# ------------------------------------------------------------------------------------------


def point_folder(out: str | Path, label: str, replication: int) -> Path:
    """`out/runs/<label>/rep-<k>`: where one replication of one labelled point leaves its files."""
    return Path(out) / RUNS_DIR / folder_name(label) / f"rep-{replication}"


def clear_workspace(workspace: Path) -> None:
    """Remove what an earlier run of this point left (its files only, nothing else)."""
    if not workspace.is_dir():
        return
    for name in WORKSPACE_FILES:
        (workspace / name).unlink(missing_ok=True)
    for file in workspace.glob("*.parquet"):
        file.unlink()


def run_point(scenario: Scenario, replication: int = 0, workspace: str | Path | None = None, *,
              requests: bool = False, on_progress: Callable[[float], None] | None = None,
              on_record: Callable[[RunRecord, Result], None] | None = None, mode: ResultsMode = "exact") -> Result:
    """Run one replication of a scenario to its horizon and measure it (see the module doc).

    `mode` (`results_mode`): keep every request (exact), summarise them as they end
    (streamed: counts and sums exact, percentiles from a sketch, no requests.parquet), or
    choose by the run's size (auto). An exact run whose estimated memory exceeds what this
    process can use is refused (SpecError). With a `workspace`, leaves the point's files there
    (`requests`: also requests.parquet, exact runs only), or `error.txt` and re-raises when it
    fails. `on_record(record, result)` is called once the run is measured, for callers that
    re-measure the same record (`sim.decision` prices it again under other prices without
    simulating again).
    """
    folder = Path(workspace) if workspace is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        clear_workspace(folder)
    try:
        result = _simulate(scenario, replication, on_progress, on_record, results_mode(scenario, mode))
    except BaseException as exc:
        if folder is not None and not isinstance(exc, KeyboardInterrupt):
            write_error(folder, scenario, exc)
        raise
    if folder is not None:
        result.write(folder, requests=requests)
    return result


def _simulate(scenario: Scenario, replication: int, on_progress: Callable[[float], None] | None,
              on_record: Callable[[RunRecord, Result], None] | None = None,
              mode: Literal["exact", "streamed"] = "exact") -> Result:
    from sim.metrics.invariants import check_invariants, check_ledger, check_streamed
    from sim.workload.limits import check_run_fits

    streamed = mode == "streamed"
    check_run_fits(scenario, streamed=streamed)
    started = time.perf_counter()
    record = run_world(scenario, replication, streamed=streamed, on_progress=on_progress)
    result = collect(record)
    if streamed:
        check_streamed(record)
        check_ledger(record, result.tables["transfers"])
    else:
        check_invariants(record, result.requests, result.tables.get("transfers"))
    if on_record is not None:
        on_record(record, result)
    result.wall_s = time.perf_counter() - started
    return result


def run_world(scenario: Scenario, replication: int = 0, *, streamed: bool = False,
              on_progress: Callable[[float], None] | None = None, chunk_requests: int | None = None) -> RunRecord:
    """Build the world, run it to its horizon and return its record. A streamed world hands
    its requests, as they end, to a `RequestTally` (`sim.metrics.tally`), attached to the
    record as `tally`; `chunk_requests` sets its chunks (default `sim.world.world.CHUNK_REQUESTS`)."""
    from sim.metrics.tally import RequestTally, TallyThread
    from sim.spec.routing import serving_pool_names
    from sim.world import World

    tally = RequestTally(scenario, serving_pool_names(scenario)) if streamed else None
    behind = TallyThread(tally.add) if tally is not None else None  # the tally keeps up on the second core
    options: dict[str, Any] = {} if chunk_requests is None else {"chunk_requests": chunk_requests}
    world = World(scenario, replication, streamed=streamed, on_requests=behind, **options)
    try:
        record = world.run(on_progress=on_progress)
    except BaseException:
        if behind is not None:
            behind.abandon()
        raise
    if behind is not None:
        behind.join()
    record.tally = tally
    return record


def error_text(exc: BaseException) -> str:
    """What went wrong, for a person: a spec error's own message, else the exception and where."""
    if isinstance(exc, SpecError):
        return exc.render()
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"{type(exc).__name__}: {exc}\n\n" + "".join(lines)


def write_error(workspace: Path, scenario: Scenario | None, exc: BaseException) -> Path:
    """Leave `error.txt` (and the scenario that failed, when there is one) in a workspace."""
    from sim.spec import dump_scenario

    workspace.mkdir(parents=True, exist_ok=True)
    if scenario is not None:
        # the error is what matters; a scenario that cannot be dumped is part of it
        with contextlib.suppress(Exception):
            (workspace / "scenario.yaml").write_text(dump_scenario(scenario))
    target = workspace / ERROR_FILE
    target.write_text(error_text(exc).rstrip() + "\n")
    return target


# ------------------------------------------------------------------------------------------
# Executors
# ------------------------------------------------------------------------------------------


class Executor(ABC):
    """Runs `fn(item)` for many items; `run` yields (index, result or exception) as each ends."""

    kind: ExecutorKind
    workers: int

    @abstractmethod
    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield (index of the item, its result, or the exception it raised) as calls finish.

        `fn` and the items must be picklable for the process and Dask executors (a function
        defined at module level, plain data)."""

    def __enter__(self) -> Executor:
        """Keep the workers between calls of `run` (a process pool starts once), until exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class SerialExecutor(Executor):
    kind: ExecutorKind = "serial"
    workers = 1

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            try:
                outcome = fn(item)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - an outcome like any other
                outcome = exc
            yield i, outcome


class ProcessExecutor(Executor):
    """A local process pool (`concurrent.futures`), one process per worker."""

    kind: ExecutorKind = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: Any = None

    def __enter__(self) -> ProcessExecutor:
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is not None:
            yield from self._run(self._pool, fn, items)
            return
        with ProcessPoolExecutor(max_workers=self.workers) as pool:
            yield from self._run(pool, fn, items)

    @staticmethod
    def _run(pool: Any, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from concurrent.futures import as_completed

        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                exc = future.exception()
                yield futures[future], exc if exc is not None else future.result()
        finally:
            for future in futures:
                future.cancel()


class DaskExecutor(Executor):
    """A Dask cluster: a LocalCluster of `workers` processes started and closed here, or an
    existing cluster given its scheduler address (its workers need deploysim installed and
    must be able to read any trace or catalog file the scenarios name)."""

    kind: ExecutorKind = "dask"

    def __init__(self, workers: int, scheduler: str | None = None) -> None:
        self.workers = workers
        self.scheduler = scheduler

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        with dask_client(self.workers, self.scheduler) as client:
            futures = {client.submit(fn, item, pure=False, retries=0): i for i, item in enumerate(items)}
            try:
                for future in as_completed(list(futures)):
                    i = futures.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # a worker that died (KilledWorker), a lost task, fn's error
                        outcome = exc
                    future.release()
                    yield i, outcome
            finally:
                if futures:  # interrupted: stop what is still queued or running
                    client.cancel(list(futures))


def executor(workers: int | None, tasks: int, kind: ExecutorKind | None = None,
             scheduler: str | None = None) -> Executor:
    """An executor for `tasks` calls: `kind` (default: processes when more than one worker is
    useful, else serial) with `workers` (default: one per CPU, at most one per task); a
    `scheduler` address means Dask."""
    if scheduler is not None:
        kind = "dask"
    n = max(1, min(workers or os.cpu_count() or 1, max(tasks, 1)))
    if kind is None:
        kind = "processes" if n > 1 else "serial"
    if kind == "serial":
        return SerialExecutor()
    if kind == "processes":
        return ProcessExecutor(n) if n > 1 else SerialExecutor()
    return DaskExecutor(n, scheduler)


@contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A Dask client to an existing scheduler, or to a LocalCluster started (and closed) here."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise SpecError([SpecIssue("--scheduler", f"cannot reach the Dask scheduler: {exc}", scheduler,
                                       "the address of a running scheduler, e.g. tcp://10.0.0.5:8786")]) from None
        with client:
            yield client
        return
    cluster_context: AbstractContextManager[Any]
    with _workers_ignore_ctrl_c():
        cluster_context = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    with cluster_context as cluster, Client(cluster) as client:
        yield client


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (a disposition they inherit): Ctrl-C then
    stops only this process, which cancels the tasks and closes the cluster in order, instead
    of every worker dying mid-task with its own traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
