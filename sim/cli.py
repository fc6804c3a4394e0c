"""The `deploysim` command.

Each subcommand is a thin layer over the public API (`sim.load_scenario`, ...). A user's
mistake (a bad scenario, an unknown id, a malformed override) is printed as the one-screen
`SpecError` text on stderr with exit code 2; a traceback means a bug in deploysim.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sim.outputs import folder_name, prepare_out_dir, prepare_out_file
from sim.report.console import SafeConsole, console, escape_control, styled
from sim.spec.errors import SpecError, SpecIssue


def load_scenario(source: Any, overrides: Any = ()) -> Any:
    """`sim.spec.load_scenario`, imported on first use: the scenario pulls in numba and pandas,
    which `deploysim --help` and `catalog` do not need."""
    from sim.spec.loader import load_scenario as load

    return load(source, overrides)


app = typer.Typer(
    name="deploysim",
    help="Where should an AI model be trained, hosted and run? Simulate and compare placements.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Show the shipped catalogs (GPUs, models, engines, prices, APIs) with sources.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

# Every string printed goes out literally (user text is never markup; controls are escaped).
out = console()
err = console(stderr=True)

USER_ERROR = 2

EngineOption = Annotated[str, typer.Option(help="Serving-engine profile from the catalog (deploysim catalog engines).")]

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field: --set workload.arrivals.rate_per_s=40 (repeatable)."),
]


def print_error(error: SpecError) -> None:
    err.print(Text.assemble(styled("error", "bold red"), styled(": " + error.render())), soft_wrap=True)


def fail(error: SpecError) -> typer.Exit:
    print_error(error)
    return typer.Exit(USER_ERROR)


def wide() -> SafeConsole:
    """The console for wide tables: the terminal's, or 160 columns when output is redirected."""
    return out if out.is_terminal else console(width=160)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario files to check.")],
    set_: SetOption = None,
) -> None:
    """Check scenario files and print a short resolved summary of each (exit 2 on errors)."""
    from sim.workload.limits import check_run_fits
    from sim.workload.streaming import results_mode

    failed = False
    for file in files:
        try:
            scenario = load_scenario(file, set_ or [])
            # what run would refuse, validate refuses (run streams a large run that can stream)
            check_run_fits(scenario, streamed=results_mode(scenario, "auto") == "streamed")
            text = describe(scenario)  # reads a trace for its mean rate: may find it empty
        except SpecError as exc:
            failed = True
            print_error(exc.within(str(file)))
            continue
        out.print(text, soft_wrap=True)
    if failed:
        raise typer.Exit(USER_ERROR)


def describe(scenario) -> Text:  # noqa: ANN001 - Scenario, imported lazily for a fast CLI
    """A few lines a person can check against the file: who runs what where, on what."""
    from sim.catalog.sizing import engine_replica_memory
    from sim.spec.units import format_bandwidth, format_bytes, format_duration

    catalog = scenario.resolved_catalog
    model = catalog.models[scenario.model.id]
    m = scenario.model
    head = Text.assemble(styled("ok", "bold green"), styled(f" {scenario.source or scenario.name}: "),
                         styled(scenario.name, "bold"))
    lines = []
    if scenario.description:
        lines.append(f"  {scenario.description}")
    lines.append(
        f"  run: horizon {format_duration(scenario.horizon)}, warm-up {format_duration(scenario.warmup)}, "
        f"seed {scenario.seed}, {scenario.replications} replication(s)"
    )
    for name, site in scenario.sites.items():
        pools = ", ".join(
            (f"{p.name}: managed API {p.api}" if p.is_api else
             f"{p.name}: {p.count}x {p.gpu}" + (f" (elastic to {p.max_count})" if p.elastic else ""))
            + f" ({'/'.join(p.roles)})"
            for p in site.pools
        ) or "no GPUs"
        lines.append(f"  site {name} ({site.zone}): {pools}")
    for name, link in scenario.links.items():
        lines.append(
            f"  link {name}: {link.ends[0]} <-> {link.ends[1]}, rtt {format_duration(link.rtt)}, "
            f"{format_bandwidth(link.bandwidth)}"
        )
    from sim.spec.routing import class_routes, serving_pools

    for name, (site_name, pool) in serving_pools(scenario).items():
        if pool.is_api:
            lines.append(f"  serving pool {name}: {describe_api(scenario, site_name, pool)}")
            continue
        if model.kind == "transformer":
            memory = engine_replica_memory(
                catalog, m.id, pool.gpu, m.precision, pool.tp(m), pool.engine_of(m),
                gpu_memory_utilization=m.serving.gpu_memory_utilization, max_model_len=m.serving.max_model_len,
                max_num_batched_tokens=m.serving.max_num_batched_tokens, kv_precision=m.serving.kv_cache_precision,
                block_size=m.serving.block_size,
            )
            what = (f"model {m.id} at {m.precision}, TP={pool.tp(m)}, engine {pool.engine_of(m)}: "
                    f"{format_bytes(memory.weights_per_gpu_bytes)} weights per GPU, KV cache "
                    f"{memory.kv_tokens:,} tokens per replica")
        else:
            what = f"model {m.id} ({model.kind})"
        scale = pool.autoscale
        size = (f"autoscaled {scale.min_replicas}-{scale.max_replicas} replicas on {scale.metric} "
                f"(target {scale.target:g})" if scale is not None else f"{pool.capacity // pool.tp(m)} replicas")
        lines.append(f"  serving pool {name}: {size} of {pool.gpu}; {what}")
    workload = scenario.workload
    rate = workload.mean_rate_per_s(scenario.horizon)
    load = f"{workload.arrivals.process}" + (f" at {rate:.4g} req/s on average" if rate is not None else "")
    lines.append(f"  workload: {load} from {workload.origin}")
    routes = class_routes(scenario)
    for traffic_class in workload.class_specs():
        route = routes[traffic_class.name]
        rule = "implicit rule" if route.rule is None else f"routing[{route.rule}]"
        share = f"{traffic_class.share:.3g} of arrivals" if traffic_class.share is not None else "own arrivals"
        lines.append(f"  class {traffic_class.name} ({share}): {route.policy} over {' > '.join(route.pools)} ({rule})")
    placed = ", ".join(f"{k}={v}" for k, v in scenario.placement.sites_named().items())
    lines.append(f"  placement: {placed}")
    return Text("\n").join([head, *(styled(line) for line in lines)])


def describe_api(scenario, site: str, pool) -> str:  # noqa: ANN001 - Scenario and Pool, imported lazily
    """A managed API pool in one line: provider, prices, latency profile, rate limit (as it runs)."""
    from sim.spec.units import format_duration
    from sim.world.serving import api_setup

    api = api_setup(scenario, site, pool).api
    assert api is not None
    limits = ", ".join(f"{v:,} {what}/min" for v, what in ((api.requests_per_minute, "requests"),
                                                          (api.tokens_per_minute, "tokens")) if v) or "no rate limit"
    return (f"managed API {pool.api} ({api.provider}, {api.model}): ${api.usd_per_1m_input_tokens:g} / "
            f"${api.usd_per_1m_output_tokens:g} per 1M input / output tokens, TTFT median "
            f"{format_duration(api.ttft.median)} (p90 {format_duration(api.ttft.p90)}), "
            f"{format_duration(api.time_per_output_token.median)} per output token; {limits}")


@app.command()
def run(
    scenario_file: Annotated[Path, typer.Argument(help="Scenario file to run.")],
    set_: SetOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default reports/<name>/run).")] = None,
    replication: Annotated[int, typer.Option(help="Which replication's random streams to use.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    keep_requests: Annotated[bool, typer.Option(
        "--keep-requests", help="Keep every request (exact percentiles, requests.parquet), however large the run; "
                                "by default a run expected to generate over 1M requests streams.")] = False,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Summarise requests as they end (bounded memory, percentiles from a sketch, no "
                         "requests.parquet), however small the run.")] = False,
) -> None:
    """Simulate one scenario and print its latency, throughput and utilisation summary."""
    from sim.report.terminal import print_run_summary
    from sim.runner import run_point
    from sim.workload.streaming import ResultsMode

    try:
        scenario = load_scenario(scenario_file, set_ or [])
    except SpecError as exc:
        raise fail(exc.within(str(scenario_file))) from None
    if replication < 0:
        raise fail(SpecError([SpecIssue("--replication", "must not be negative", replication, "0, 1, 2, ...")]))
    if keep_requests and stream:
        raise fail(SpecError([SpecIssue("--stream", "a run either keeps its requests or streams them", True,
                                        "one of --keep-requests and --stream")]))
    mode: ResultsMode = "exact" if keep_requests else "streamed" if stream else "auto"
    target = _ready(out_dir or Path("reports") / folder_name(scenario.name) / "run")
    try:
        result = _with_progress(
            lambda progress: run_point(scenario, replication, target, requests=True, on_progress=progress, mode=mode),
            f"simulating {scenario.name}", quiet)
    except SpecError as exc:  # found while running (a trace file, a workload too large): name the file
        raise fail(exc.with_source(exc.source or str(scenario_file))) from None
    print_run_summary(out, result)
    if result.summary.get("results_mode") == "streamed":
        out.print(f"streamed: percentiles within {result.summary['latency_relative_error']:.2%} of exact; "
                  "requests.parquet not written (every request was summarised as it ended; --keep-requests keeps "
                  "them)", style="dim", soft_wrap=True)
        written = "summary.json, scenario.yaml"
    else:
        written = "requests.parquet, summary.json, scenario.yaml"
    out.print(f"wrote {target}/{written} ({result.wall_s:.1f} s wall)", style="dim", soft_wrap=True)


def _ready(folder: Path, option: str = "--out") -> Path:
    """The output folder, created and proven writable before any work (exit 2 if it cannot be)."""
    try:
        return prepare_out_dir(folder, option)
    except SpecError as exc:
        raise fail(exc) from None


SEED_SCENARIOS = "s[0-9]*_*.yaml"


@app.command()
def compare(
    scenario_files: Annotated[list[Path] | None, typer.Argument(
        help="Scenario files (default: the seed scenarios in ./scenarios).")] = None,
    replications: Annotated[int | None, typer.Option(
        "--replications", "-r", help="Replications per scenario (default: the scenarios' own).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: all CPUs).")] = None,
    set_: SetOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default reports/<name>).")] = None,
    name: Annotated[str, typer.Option(help="Report name, used for the default folder.")] = "compare",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    vary: Annotated[list[str] | None, typer.Option(
        "--vary", help="Sweep a field: --vary workload.arrivals.rate_per_s=10,20,40 "
                       "(repeatable: every combination).")] = None,
) -> None:
    """Compare scenarios side by side on latency, privacy, drift recovery and cost, with a report."""
    from sim.experiment import compare as run_compare
    from sim.report.terminal import print_comparison
    from sim.spec.scenario import MAX_REPLICATIONS

    files = list(scenario_files or [])
    if not files:
        files = sorted(Path("scenarios").glob(SEED_SCENARIOS))
        if not files:
            raise fail(SpecError([SpecIssue(
                "SCENARIO", "no scenario files given and none found in ./scenarios", str(Path.cwd()),
                "scenario files as arguments, or run from the folder that holds scenarios/")]))
    if replications is not None and not 1 <= replications <= MAX_REPLICATIONS:
        raise fail(SpecError([SpecIssue("--replications", "out of range", replications,
                                        f"a whole number from 1 to {MAX_REPLICATIONS}")]))
    if workers is not None and workers < 1:
        raise fail(SpecError([SpecIssue("--workers", "out of range", workers, "a whole number >= 1")]))
    target = out_dir or Path("reports") / folder_name(name, "compare")
    if vary:
        _compare_vary(files, vary, replications, workers, set_ or [], name, target, quiet)
        return
    scenarios = []
    for file in files:
        try:
            scenarios.append(load_scenario(file, set_ or []))
        except SpecError as exc:
            raise fail(exc.within(str(file))) from None
    _ready(target)
    try:
        comparison = _with_steps(
            lambda progress: run_compare(scenarios, replications=replications, workers=workers,
                                         on_progress=progress, out=target),
            "simulating", quiet)
    except SpecError as exc:
        raise fail(exc) from None
    from sim.report.document import write_report

    index = write_report(comparison, target)  # first: the results are safe whatever printing does
    print_comparison(wide(), comparison)
    out.print(f"report: {index} (also report.md, summary.csv, figures/)", soft_wrap=True)


def _with_steps(work, label: str, quiet: bool):  # noqa: ANN001, ANN202
    """Run work(progress) with a bar counting finished runs (progress(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet or not err.is_terminal:
        return work(None)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(escape_control(f"{label} (replications x scenarios)"), total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Model id from the catalog.")],
    gpu: Annotated[str, typer.Option(help="GPU id from the catalog.")],
    gpus: Annotated[int, typer.Option(help="GPUs per replica (tensor parallel).")] = 1,
    precision: Annotated[str, typer.Option(help="bf16, fp16, fp8, int8 or int4.")] = "bf16",
    input_tokens: Annotated[int, typer.Option(help="Prompt tokens per request.")] = 1000,
    output_tokens: Annotated[int, typer.Option(help="Output tokens per request.")] = 1000,
    batch: Annotated[int, typer.Option(help="Static batch: identical requests sent together.")] = 1,
    concurrency: Annotated[int | None, typer.Option(help="Closed loop with this many clients.")] = None,
    requests: Annotated[int | None, typer.Option(help="Requests in the closed loop.")] = None,
    engine: EngineOption = "vllm",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The quick answer without a scenario: TTFT, TPOT, E2E and throughput of a batch."""
    import json

    from sim.predict import predict as run_predict

    try:
        answer = run_predict(model=model, gpu=gpu, gpus=gpus, precision=precision,
                             input_tokens=input_tokens, output_tokens=output_tokens, batch=batch,
                             concurrency=concurrency, requests=requests, engine=engine)
    except SpecError as exc:
        raise fail(exc) from None
    if as_json:
        out.print_json(json.dumps(answer))
        return
    table = Table(title=f"{model} on {gpus}x {gpu} at {precision} ({engine}): {answer['mode']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, scale, unit in (("ttft_s", "TTFT", 1e3, "ms"), ("tpot_s", "TPOT", 1e3, "ms"),
                                    ("e2e_s", "E2E", 1.0, "s"),
                                    ("output_tokens_per_s", "output tokens/s", 1.0, "")):
        value = answer[key]
        table.add_row(label, "-" if value is None else f"{value * scale:,.4g} {unit}")
    table.add_row("KV cache", f"{answer['kv_cache_tokens']:,} tokens")
    out.print(table)


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep file (YAML): base scenarios, factors, design.")],
    workers: Annotated[int | None, typer.Option(
        help="Local Dask worker processes (default: all CPUs; 0: in this process, no Dask).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (instead of a local cluster).")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Results folder (default: the file's out:, else reports/sweeps/<name>).")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run again the points that failed.")] = False,
    report_: Annotated[bool, typer.Option("--report/--no-report", help="Render the report when done.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a sweep on a Dask cluster; each finished point is saved at once, so a rerun resumes."""
    from sim.sweep import iter_failures, load_sweep, point_file, point_is_whole
    from sim.sweep import sweep as run_sweep

    try:
        spec = load_sweep(sweep_file, out_dir)
        prepare_out_dir(spec.out_dir)
        tasks = spec.tasks()
        done = sum(point_is_whole(point_file(spec.out_dir, task.point)) for task in tasks)
        out.print(f"sweep {spec.name}: {len(tasks)} runs (points x replications) -> {spec.out_dir}"
                  + (f" ({done} done before, skipped)" if done else ""), soft_wrap=True)
        results = _with_eta(
            lambda progress: run_sweep(spec, workers=workers, scheduler=scheduler, on_progress=progress,
                                       retry_failed=retry_failed, on_damaged=_warn_damaged("recomputed")),
            f"sweep {spec.name}", quiet)
    except SpecError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: finished points are saved in {spec.out_dir}; run the same command again to "
                  "resume", soft_wrap=True)
        raise typer.Exit(130) from None
    failed = list(iter_failures(results))
    out.print(f"{len(results)} rows in {spec.out_dir}/points/: {len(results) - len(failed)} ok, "
              f"{len(failed)} failed", soft_wrap=True)
    for where, error in failed[:5]:
        last_line = error.splitlines()[-1] if error else ""
        err.print(Text.assemble(styled("failed", "yellow"), styled(f" {where}: {last_line}")), soft_wrap=True)
    if report_ and len(results):
        from sim.report.sweep_figures import write_sweep_report

        index = write_sweep_report(results, spec.out_dir)
        out.print(f"report: {index} (also report.md, results.csv, summary.csv, figures/)", soft_wrap=True)


def _warn_damaged(action: str):  # noqa: ANN202
    """A callback that names point files that did not read back (what a power loss leaves)."""

    def warn(files: list) -> None:  # noqa: ANN001 - file names or paths
        names = [getattr(f, "name", str(f)) for f in files]
        listed = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        err.print(Text.assemble(styled(f"{len(names)} damaged point file(s)", "yellow"),
                                styled(f" did not read back and are {action}: {listed}")), soft_wrap=True)

    return warn


def _with_eta(work, label: str, quiet: bool):  # noqa: ANN001, ANN202
    """Run work(progress) with a bar of finished runs and an ETA (progress(done, total))."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if quiet or not err.is_terminal:
        return work(None)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(escape_control(label), total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


DEFAULT_PLAN_GPUS = "l4,l40s,a100-80gb,h100-sxm"


@app.command()
def plan(
    scenario_file: Annotated[Path, typer.Argument(help="Scenario whose serving pool is sized.")],
    slo: Annotated[list[str] | None, typer.Option(
        "--slo", help='Latency target, e.g. "ttft_p99<0.8s" (repeatable; default ttft_p99<0.8s, e2e_p99<20s).')] = None,
    rate: Annotated[float | None, typer.Option(help="Arrival rate to plan for, requests/s.")] = None,
    gpus: Annotated[str, typer.Option(help="GPU types to try, comma-separated.")] = DEFAULT_PLAN_GPUS,
    max_gpus: Annotated[int, typer.Option(help="Most GPUs of one type.")] = 32,
    tp: Annotated[str | None, typer.Option(
        help="Tensor-parallel degrees to try, e.g. 1,2 (default: the smallest that fits and the next).")] = None,
    max_rate: Annotated[bool, typer.Option(
        "--max-rate", help="The inverse question: the highest rate the scenario's own pool sustains.")] = False,
    replications: Annotated[int, typer.Option("--replications", "-r", help="Replications per probe.")] = 1,
    horizon: Annotated[str, typer.Option(help="Simulated time per probe, warm-up included.")] = "1h",
    warmup: Annotated[str, typer.Option(help="Warm-up left out of the percentiles.")] = "10min",
    workers: Annotated[int | None, typer.Option(help="Options searched in parallel (default: all CPUs).")] = None,
    set_: SetOption = None,
    engine: Annotated[str | None, typer.Option(
        help="Serving-engine profile to plan with (default: the scenario's model.engine).")] = None,
    pool: Annotated[str | None, typer.Option(
        help="The pool to size, SITE/POOL (default: the first serving pool at placement.inference); "
             "the other pools run as the scenario has them (deploysim decide sizes them all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for every simulation's workspace (default reports/<name>/plan).")] = None,
) -> None:
    """The fewest GPUs of each type that meet every SLO at a rate, ranked by cost (or --max-rate)."""
    import json
    import math

    from sim import planning
    from sim.spec.units import format_duration

    if engine is not None:  # the same as --set model.engine=..., checked like the file
        set_ = [*(set_ or []), f"model.engine={engine}"]
    try:
        slos = planning.parse_slos(slo)
        tp_options = _int_list(tp, "--tp") if tp else None
        name = load_scenario(scenario_file, set_ or []).name
    except SpecError as exc:
        raise fail(exc.with_source(exc.source or str(scenario_file))) from None
    target = _ready(out_dir or Path("reports") / folder_name(name) / "plan")
    try:
        if max_rate:
            answer = planning.max_rate(scenario_file, slos, replications=replications, horizon=horizon,
                                       warmup=warmup, overrides=set_ or [], out=target, pool_name=pool)
        else:
            if rate is None:
                raise SpecError([SpecIssue("--rate", "the rate to plan for is needed", has_value=False,
                                           allowed="requests per second, e.g. --rate 40 (or --max-rate)")])
            result = _with_steps(
                lambda progress: planning.plan(
                    scenario_file, rate, slos, gpus=[g.strip() for g in gpus.split(",") if g.strip()],
                    max_gpus=max_gpus, tp_options=tp_options, replications=replications, horizon=horizon,
                    warmup=warmup, overrides=set_ or [], workers=workers, on_progress=progress, out=target,
                    pool=pool),
                "planning (GPU types x TP degrees)", quiet)
    except SpecError as exc:
        raise fail(exc.with_source(exc.source or str(scenario_file))) from None
    targets = ", ".join(f"{name}<{format_duration(value)}" for name, value in slos.items())
    if max_rate:
        if as_json:
            out.print_json(json.dumps({"scenario": answer.scenario, "pool": answer.pool, "gpu": answer.gpu, "gpus": answer.gpus,
                                       "tp": answer.tp, "slos": answer.slos, "max_rate_per_s": answer.rate_per_s,
                                       "fails_at_rate_per_s": None if math.isinf(answer.upper_rate_per_s)
                                       else answer.upper_rate_per_s, "simulations": answer.simulations}))
            return
        above = ("" if math.isinf(answer.upper_rate_per_s)
                 else f"; misses them at {answer.upper_rate_per_s:.3g} req/s")
        out.print(Text.assemble(
            styled(f"{answer.scenario}'s {answer.pool} on {answer.gpus}x {answer.gpu} (TP {answer.tp}) sustains "),
            styled(f"{answer.rate_per_s:.3g} req/s", "bold"),
            styled(f" within {targets}{above} ({answer.simulations} simulations, {answer.wall_s:.0f} s)")),
            soft_wrap=True)
        return
    table = result.table()
    if as_json:
        out.print_json(table.to_json(orient="records"))
        return
    view = Table(title=f"{result.scenario} at {result.rate_per_s:g} req/s: fewest GPUs in {result.pool} meeting {targets}, "
                       f"cheapest first ({format_duration(result.horizon_s)} per simulation)")
    for column in ("rank", "GPU", "TP", "GPUs", *(f"{n} (s)" for n in slos), "$/month", "$/1M req",
                   "exposure", "sims", "note"):
        view.add_column(column, justify="left" if column in ("GPU", "note") else "right")
    for option in result.options:
        row = option.row()
        view.add_row(
            str(result.options.index(option) + 1) if option.feasible else "-", option.gpu, str(option.tp),
            str(option.gpus) if option.gpus else "-",
            *(f"{row[f'{n}_s']:.3g}" if f"{n}_s" in row else "-" for n in slos),
            f"{row['cost_usd_per_month']:,.0f}" if option.feasible else "-",
            f"{row['cost_usd_per_1m_requests']:,.2f}" if option.feasible else "-",
            f"{row['exposure_score']:,.0f}" if option.feasible else "-", str(option.simulations), option.reason)
    wide().print(view)
    out.print(f"{result.simulations} simulations ({result.brute_force_simulations} to simulate every size), "
              f"{result.wall_s:.0f} s; their workspaces in {target}/runs", soft_wrap=True)


@app.command()
def decide(
    scenario_files: Annotated[list[Path] | None, typer.Argument(
        help="Candidate scenario files (default: the seed scenarios and scenarios/examples/).")] = None,
    require: Annotated[list[str] | None, typer.Option(
        "--require", help='A hard rule over a summary field, e.g. "exposure_score==0", "recovery_time_s<6h", '
                          '"ttft_p99_s<0.8s", "cost_per_day<100" (repeatable).')] = None,
    weight: Annotated[list[str] | None, typer.Option(
        "--weight", help="A ranking weight, e.g. cost=0.5 (repeatable; criteria cost, ttft_p99, e2e_p99, "
                         "exposure, recovery, energy; default cost=0.5 ttft_p99=0.2 exposure=0.2 "
                         "recovery=0.1).")] = None,
    replications: Annotated[int, typer.Option("--replications", "-r", help="Replications per candidate.")] = 3,
    headroom: Annotated[int, typer.Option(help="Spare replicas added to each right-sized pool (1: N+1).")] = 0,
    pin: Annotated[list[str] | None, typer.Option(
        "--pin", help="Fix a pool's size instead of right-sizing it: [SCENARIO:]SITE/POOL=N (GPUs; most "
                      "replicas for an autoscaled pool; repeatable).")] = None,
    sensitivity: Annotated[bool, typer.Option(
        "--sensitivity/--no-sensitivity", help="Vary the uncertain inputs one at a time.")] = True,
    ranges: Annotated[Path | None, typer.Option(
        help="YAML file of input ranges (default: the shipped sim/catalog/sensitivity.yaml).")] = None,
    input_: Annotated[list[str] | None, typer.Option(
        "--input", help="Only these sensitivity inputs (repeatable; default: every input in the ranges).")] = None,
    sizing_horizon: Annotated[str, typer.Option(help="Simulated time per right-sizing probe.")] = "1h",
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: all CPUs).")] = None,
    set_: SetOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default reports/decide).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Which placement, right-sized, meets the SLOs and rules at the lowest cost, and what would change it."""
    import json

    from sim.decision import decide as run_decide
    from sim.decision import default_candidates

    files = list(scenario_files or []) or default_candidates(Path("scenarios"))
    if not files:
        raise fail(SpecError([SpecIssue(
            "SCENARIO", "no scenario files given and none found in ./scenarios", str(Path.cwd()),
            "scenario files as arguments, or run from the folder that holds scenarios/")]))
    if workers is not None and workers < 1:
        raise fail(SpecError([SpecIssue("--workers", "out of range", workers, "a whole number >= 1")]))
    target = _ready(out_dir or Path("reports") / "decide")
    try:
        decision = _with_stages(
            lambda progress: run_decide(files, requires=require or [], weights=weight, replications=replications,
                                        headroom=headroom, pins=pin or [], sensitivity=sensitivity, ranges=ranges,
                                        inputs=input_, overrides=set_ or [], sizing_horizon=sizing_horizon,
                                        workers=workers, out=target, on_progress=progress), quiet)
    except SpecError as exc:
        raise fail(exc) from None
    from sim.report.decision_page import write_decision_report

    index = write_decision_report(decision, target)  # first: the results are safe whatever printing does
    if as_json:
        out.print_json(json.dumps(decision.to_json()))
        return
    print_decision(decision)
    out.print(f"decision page: {index} (also report.md, decision.json, compare/)", soft_wrap=True)


def _with_stages(work, quiet: bool):  # noqa: ANN001, ANN202
    """Run work(progress) with a bar per stage (progress(stage, done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet or not err.is_terminal:
        return work(None)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(escape_control(stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return work(progress)


def print_decision(decision) -> None:  # noqa: ANN001 - a sim.decision.Decision, imported lazily
    from sim.report.decision_page import _ranking_rows, _sensitivity_rows

    console_ = wide()
    for line in decision.verdict():
        console_.print(Text(line, style="bold"), soft_wrap=True)
    for title, rows, keep in (
        ("Ranking (score 1 = best; * Pareto set)", _ranking_rows(decision),
         ("rank", "candidate", "score", "cost per day", "TTFT p99", "exposure score", "drift recovery",
          "right-sized pools", "broken rules")),
        ("What would change the answer", _sensitivity_rows(decision),
         ("input", "as simulated", "range", "margin (low / base / high)", "flips at")),
    ):
        if not rows:
            continue
        view = Table(title=title)
        for column in keep:
            view.add_column(column, overflow="fold")
        for row in rows:
            view.add_row(*(row[c] for c in keep))
        console_.print(view)
    for note in decision.notes:
        console_.print(Text(f"note: {note}"), soft_wrap=True)


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise SpecError([SpecIssue(option, "not a list of whole numbers >= 1", text, "e.g. 1,2")])
    return values


@app.command()
def report(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep's results folder (the one holding points/).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default: SWEEP_DIR).")] = None,
) -> None:
    """Render a sweep's report: metrics against each factor with CI bands, and the cost/latency Pareto front."""
    from sim.report.sweep_figures import write_sweep_report
    from sim.sweep import load_sweep_results

    if not (sweep_dir / "points").is_dir():
        raise fail(SpecError([SpecIssue("SWEEP_DIR", "not a sweep's results folder (no points/ inside)",
                                        str(sweep_dir), "the folder deploysim sweep wrote, e.g. "
                                        "reports/sweeps/rate_x_rtt")]))
    target = _ready(out_dir or sweep_dir)
    results = load_sweep_results(sweep_dir)
    if results.attrs.get("damaged"):
        _warn_damaged("left out (deploysim sweep recomputes them)")(results.attrs["damaged"])
    if not len(results):
        raise fail(SpecError([SpecIssue("SWEEP_DIR", "the sweep has no finished points yet", str(sweep_dir),
                                        "run deploysim sweep first")]))
    index = write_sweep_report(results, target)
    out.print(f"report: {index} (also report.md, results.csv, summary.csv, figures/)", soft_wrap=True)


def _compare_vary(files: list[Path], vary: list[str], replications: int | None, workers: int | None,
                  overrides: list[str], name: str, target: Path, quiet: bool) -> None:
    """`compare --vary`: the scenarios x every combination of the varied values, as a sweep."""
    from sim.report.sweep_figures import label, write_sweep_report
    from sim.sweep import summarise, sweep_from_vary
    from sim.sweep import sweep as run_sweep

    try:
        spec = sweep_from_vary(files, vary, overrides, replications, name, target)
        prepare_out_dir(target)
        results = _with_eta(lambda progress: run_sweep(spec, workers=workers, on_progress=progress),
                            "simulating (scenarios x values x replications)", quiet)
    except SpecError as exc:
        raise fail(exc) from None
    index = write_sweep_report(results, target)  # first: the results are safe whatever printing does
    summary = summarise(results)
    factors = [f.path for f in spec.factors]
    metrics = [m for m in ("ttft_p99_s", "e2e_p99_s", "slo_attainment", "exposure_score", "recovery_time_s",
                           "recovered_error_rate", "cost_usd_per_1m_requests") if m in summary]
    view = Table(title=f"{name}: mean ± 95% CI half-width over {spec.replications} replication(s)")
    for column in ("scenario", *(f.split(".")[-1] for f in factors), *(label(m) for m in metrics)):
        view.add_column(column, justify="left" if column == "scenario" else "right")
    for _, row in summary.iterrows():
        cells = [_plus_minus(row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"]) for m in metrics]
        view.add_row(str(row["base"]), *(str(row[f]) for f in factors), *cells)
    wide().print(view)
    failed = int((results["status"] == "failed").sum())
    if failed:
        err.print(Text.assemble(styled(f"{failed} run(s) failed", "yellow"),
                                styled(f"; see {target}/results.csv")), soft_wrap=True)
    out.print(f"report: {index} (also report.md, results.csv, summary.csv, figures/)", soft_wrap=True)


def _plus_minus(mean: float, low: float, high: float) -> str:
    """'1,035 ± 9.1': the mean and the CI half-width, without exponents for everyday sizes;
    '2.33 (0 to 5.2)' when the metric's domain cut the interval (`metric_domain`)."""
    if mean != mean:  # NaN: no replication had a value
        return "-"

    def number(x: float, digits: int) -> str:
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}g}"

    if high != high or low != low:
        return number(mean, 4)
    if abs((mean - low) - (high - mean)) > 1e-9 * max(high - mean, mean - low, 1e-300):
        return number(mean, 4) + f" ({number(low, 2)} to {number(high, 2)})"
    return number(mean, 4) + f" ± {number(high - mean, 2)}"


def _with_progress(work, label: str, quiet: bool):  # noqa: ANN001, ANN202
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if quiet or not err.is_terminal:
        return work(None)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(escape_control(label), total=1.0)
        return work(lambda fraction: bar.update(task, completed=fraction))


MeasurementFiles = Annotated[
    list[Path], typer.Argument(help="Measurements: CSV in the published layout, benchmark runs under load "
                                    "(runs.csv layout), or vLLM benchmark JSON.")
]
ModelOption = Annotated[str | None, typer.Option(help="Model id, for files that do not name the model.")]
GpuOption = Annotated[str | None, typer.Option(help="GPU id, for files that do not name it (vLLM JSON never does).")]
GpusOption = Annotated[int | None, typer.Option(help="GPUs per replica (tensor parallel), if the file does not say.")]
PrecisionOption = Annotated[str | None, typer.Option(
    help="bf16, fp16, fp8, int8 or int4, if the file does not say (vLLM JSON: default bf16).")]
MeasuredEngineOption = Annotated[str | None, typer.Option(
    "--engine", help="Engine profile the measurements were taken with, if the file does not say (default vllm).")]


def _shown(metric: str, value: float | None) -> str:
    from sim.calibration import display_value

    return "-" if value is None else f"{display_value(metric, value)[0]:,.4g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _calibration_table(title: str, frame, loo: bool) -> Table:  # noqa: ANN001 - a pandas DataFrame
    """Measured, fitted and leave-one-out values, one row per benchmark and quoted metric."""
    table = Table(title=title)
    columns = ["id", "gpu", "model", "metric", "measured", "fitted", "error"]
    if loo:
        columns += ["leave-one-out", "LOO error"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("id", "gpu", "model", "metric") else "right")
    for row in frame.itertuples(index=False):
        cells = [str(row.id), row.gpu, row.model, row.metric, _shown(row.metric, row.measured),
                 _shown(row.metric, row.predicted), _percent(row.relative_error)]
        if loo:
            cells += [_shown(row.metric, row.loo_predicted), _percent(row.loo_relative_error)]
        table.add_row(*cells)
    return table


@app.command()
def calibrate(
    measurements: MeasurementFiles,
    out_file: Annotated[Path, typer.Option("--out", help="Catalog file to write; name it in a scenario "
                                                          "with `catalog: <file>`.")],
    model: ModelOption = None,
    gpu: GpuOption = None,
    gpus: GpusOption = None,
    precision: PrecisionOption = None,
    engine: MeasuredEngineOption = None,
    fit: Annotated[str | None, typer.Option(
        help="Factors that may be fitted, comma-separated (default: all; the data decides which it can pin).")] = None,
    stage_seconds: Annotated[float, typer.Option(
        help="Fitting shortens each load stage of a run to this many seconds (0: whole runs).")] = 30.0,
    loo: Annotated[bool, typer.Option("--loo/--no-loo", help="Leave-one-out errors (one refit per benchmark).")] = True,
    workers: Annotated[int, typer.Option(help="Processes for the leave-one-out refits.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Fit engine profiles (and GPU training MFU) to measurements; write them as a catalog file."""
    from sim.calibration import calibrate as run_calibrate
    from sim.calibration import read_measurements, write_catalog_override

    def progress(message: str) -> None:
        if not quiet:
            err.print(styled(message, "dim"))

    try:
        if not 0 <= stage_seconds <= 1e6:
            raise SpecError([SpecIssue("--stage-seconds", "out of range", stage_seconds, "0 to 1,000,000 seconds")])
        if not 1 <= workers <= 64:
            raise SpecError([SpecIssue("--workers", "out of range", workers, "1 to 64 processes")])
        prepare_out_file(out_file)
        benchmarks = read_measurements(measurements, model=model, gpu=gpu, gpus=gpus, precision=precision,
                                       engine=engine)
        result = run_calibrate(benchmarks, fit=[f.strip() for f in fit.split(",") if f.strip()] if fit else None,
                               cap_s=stage_seconds or None, loo=loo, workers=workers, progress=progress)
    except SpecError as exc:
        raise fail(exc) from None
    for name, engine_fit in result.engines.items():
        out.print(_calibration_table(f"{name}: measured, fitted and leave-one-out (fitted without the benchmark)",
                                     engine_fit.table(), loo))
        out.print(engine_fit.summary(), soft_wrap=True)
    for gpu_id, training in result.training.items():
        out.print(_calibration_table(f"{gpu_id}: fine-tuning throughput", training.table(), loo))
        out.print(f"{gpu_id}: training MFU " + ", ".join(f"{k} {v:.3g}" for k, v in training.values.items())
                  + "".join(f"\n  note: {n}" for n in training.notes), soft_wrap=True)
    written = write_catalog_override(result, out_file)
    out.print(f"wrote {written}; use it with `catalog: {written.name}` in a scenario, or "
              f"`deploysim fidelity ... --catalog {written}`", soft_wrap=True, markup=False)


@app.command()
def fidelity(
    measurements: MeasurementFiles,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default reports/fidelity).")] = None,
    catalog_file: Annotated[Path | None, typer.Option(
        "--catalog", help="A catalog file merged over the shipped one (e.g. what calibrate wrote).")] = None,
    model: ModelOption = None,
    gpu: GpuOption = None,
    gpus: GpusOption = None,
    precision: PrecisionOption = None,
    engine: MeasuredEngineOption = None,
) -> None:
    """How far off is the simulator? Predictions against measurements, without fitting, with a report."""
    from sim.calibration import fidelity as run_fidelity
    from sim.calibration import load_catalog_file, read_measurements
    from sim.report.fidelity import write_fidelity_report

    target = out_dir or Path("reports") / "fidelity"
    try:
        catalog = load_catalog_file(catalog_file)
        prepare_out_dir(target)
        benchmarks = read_measurements(measurements, model=model, gpu=gpu, gpus=gpus, precision=precision,
                                       engine=engine, catalog=catalog)
        result = run_fidelity(benchmarks, catalog_file)
    except SpecError as exc:
        raise fail(exc) from None
    if result.points:
        table = Table(title=f"predicted ({result.catalog_label}) against measured points")
        for column in ("id", "engine", "gpu", "metric", "setup", "measured", "predicted", "error", "KS"):
            table.add_column(column, justify="left" if column in ("id", "engine", "gpu", "metric", "setup") else "right")
        for p in result.points:
            m = p.measurement
            table.add_row(m.id, m.engine_id or "training", m.gpu, m.metric, m.describe_setup,
                          _shown(m.metric, m.value), _shown(m.metric, p.predicted), _percent(p.relative_error),
                          "-" if p.ks_distance is None else f"{p.ks_distance:.3f}")
        out.print(table)
        errors = ", ".join(f"{metric} {mape:.1%}" for metric, mape in result.mape_by_metric.items())
        out.print(f"points: MAPE {result.mape:.1%} over {len(result.points)} ({errors})", soft_wrap=True)
    if result.runs:
        out.print(_runs_table(result))
        for stat in ("mean", "p90", "p99"):
            overall = result.run_errors(stat)
            if not overall:
                continue
            by_gpu = "; ".join(f"{g} " + ", ".join(f"{m.upper()} {v:.1%}" for m, v in result.run_errors(stat, gpu=g).items())
                               for g in result.run_gpus)
            out.print(f"runs, {stat}: median |error| " + ", ".join(f"{m.upper()} {v:.1%}" for m, v in overall.items())
                      + f" over {len(result.runs)} runs (by GPU: {by_gpu})", soft_wrap=True, markup=False)
    target = write_fidelity_report(result, target)
    out.print(f"report: {target / 'index.html'} (also report.md, the tables as CSV, scatter.png)",
              soft_wrap=True, markup=False)


def _runs_table(result) -> Table:  # noqa: ANN001 - a FidelityResult
    from sim.calibration import run_key

    table = Table(title=f"runs under load: whole-run means, measured / predicted ({result.catalog_label})")
    for column in ("id", "model", "gpu", "TP", "E2E ms", "E2E err", "TTFT ms", "TTFT err", "TPOT ms", "TPOT err"):
        table.add_column(column, justify="left" if column in ("id", "model", "gpu") else "right")
    for r in result.runs:
        cells = [r.run.id, r.run.model, r.run.gpu, str(r.run.gpus)]
        for metric in ("e2e", "ttft", "tpot"):
            key = run_key("all", metric)
            cells += [f"{_shown(metric, r.run.measured.get(key))} / {_shown(metric, r.prediction.values.get(key))}",
                      _percent(r.error(key))]
        table.add_row(*cells)
    return table


@catalog_app.command("gpus")
def catalog_gpus(
    catalog_file: Annotated[Path | None, typer.Option("--catalog", help="Add a user catalog file.")] = None,
) -> None:
    """GPUs: dense peaks, memory, bandwidth, power, prices and where the numbers come from."""
    from sim.spec.units import format_bytes

    catalog = _catalog(catalog_file)
    table = Table(title="GPU catalog (dense peaks; sources below)", show_lines=False)
    for column in ("id", "bf16 TFLOP/s", "fp8 TFLOP/s", "memory", "bandwidth", "TDP W", "idle W",
                   "interconnect", "purchase $", "cloud $/GPU-h", "as of"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for gpu_id, gpu in sorted(catalog.gpus.items()):
        bf16 = gpu.peak_flops.get("bf16") or gpu.peak_flops.get("fp16")
        fp8 = gpu.peak_flops.get("fp8")
        prices = sorted(c.usd_per_gpu_hour for c in gpu.cloud_prices)
        price = f"{prices[0]:.2f}-{prices[-1]:.2f}" if len(prices) > 1 else (f"{prices[0]:.2f}" if prices else "-")
        table.add_row(
            gpu_id, f"{bf16 / 1e12:,.0f}" if bf16 else "-", f"{fp8 / 1e12:,.0f}" if fp8 else "-",
            format_bytes(gpu.memory), f"{format_bytes(gpu.memory_bandwidth)}/s", f"{gpu.tdp_w:g}",
            f"{gpu.idle_w:g}", f"{format_bytes(gpu.interconnect_bandwidth)}/s", f"{gpu.purchase_usd:,.0f}",
            price, str(gpu.as_of),
        )
    out.print(table)
    for gpu_id, gpu in sorted(catalog.gpus.items()):
        out.print(f"{gpu_id}: {gpu.source}", style="dim", soft_wrap=True)


@catalog_app.command("models")
def catalog_models(
    catalog_file: Annotated[Path | None, typer.Option("--catalog", help="Add a user catalog file.")] = None,
) -> None:
    """Models: architecture numbers and their sources."""
    from sim.spec.units import format_bytes

    catalog = _catalog(catalog_file)
    table = Table(title="Model catalog")
    for column in ("id", "kind", "params", "layers", "hidden", "heads", "kv heads", "ffn", "experts",
                   "context", "KV/token bf16", "as of"):
        table.add_column(column, justify="left" if column in ("id", "kind") else "right")
    for model_id, model in sorted(catalog.models.items()):
        experts = f"{model.experts_per_token}/{model.experts}" if model.is_moe else "-"
        ffn = model.expert_ffn if model.is_moe else model.ffn
        table.add_row(
            model_id, model.kind, f"{model.params / 1e9:.2f}B", str(model.layers), _opt(model.hidden),
            _opt(model.heads), _opt(model.kv_heads), _opt(ffn), experts, _opt(model.max_context),
            format_bytes(model.kv_bytes_per_token("bf16")) if model.kind == "transformer" else "-",
            str(model.as_of),
        )
    out.print(table)
    for model_id, model in sorted(catalog.models.items()):
        out.print(f"{model_id}: {model.source}", style="dim", soft_wrap=True)


@catalog_app.command("engines")
def catalog_engines(
    catalog_file: Annotated[Path | None, typer.Option("--catalog", help="Add a user catalog file.")] = None,
) -> None:
    """Serving-engine profiles: the factors of the step-time model, what they were fitted to, and how well."""
    # the factors of sim.kernels.roofline's profile, read from the catalog's model: no numba
    from sim.catalog import EngineFactors

    catalog = _catalog(catalog_file)
    engines = sorted(catalog.engines)
    table = Table(title="Engine profiles (defaults; per-GPU values below each)")
    table.add_column("factor")
    for name in engines:
        table.add_column(name, justify="right")
    for factor in EngineFactors.model_fields:
        table.add_row(factor, *(_factor(factor, catalog.engines[e].defaults.values().get(factor)) for e in engines))
    table.add_row("async scheduling", *("yes" if catalog.engines[e].async_scheduling else "no" for e in engines))
    out.print(table)
    for name in engines:
        engine = catalog.engines[name]
        lines = [f"{name}: {engine.name} {engine.version}".rstrip()]
        for gpu_id, factors in sorted(engine.gpus.items()):
            lines.append(f"  on {gpu_id}: " + ", ".join(f"{k} {_factor(k, v)}" for k, v in factors.values().items()))
        lines.append(f"  fitted to: {engine.fitted_to}")
        if engine.fit_error:
            lines.append(f"  fit error: {engine.fit_error}")
        lines.append(f"  source: {engine.source} (as of {engine.as_of})")
        out.print("\n".join(lines), soft_wrap=True)


def _factor(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name.endswith("_s"):
        return f"{value * 1e3:.3g} ms" if value >= 1e-4 or value == 0 else f"{value * 1e6:.3g} us"
    return f"{value:.3g}"


@catalog_app.command("prices")
def catalog_prices(
    catalog_file: Annotated[Path | None, typer.Option("--catalog", help="Add a user catalog file.")] = None,
) -> None:
    """Egress, storage and power prices, with sources."""
    prices = _catalog(catalog_file).prices
    table = Table(title="Prices")
    for column in ("kind", "id", "price", "detail", "as of", "source"):
        table.add_column(column)
    for key, egress in sorted(prices.egress.items()):
        table.add_row("egress", key, f"${egress.usd_per_gb}/GB", f"{egress.free_gb_per_month:g} GB/month free",
                      str(egress.as_of), egress.source)
    for key, storage in sorted(prices.storage.items()):
        table.add_row("storage", key, f"${storage.usd_per_gb_month}/GB-month", "", str(storage.as_of), storage.source)
    for key, power in sorted(prices.power.items()):
        table.add_row("power", key, f"${power.usd_per_kwh}/kWh",
                      f"PUE {power.pue}, {power.grid_kgco2e_per_kwh} kgCO2e/kWh", str(power.as_of), power.source)
    out.print(table)


@catalog_app.command("apis")
def catalog_apis(
    catalog_file: Annotated[Path | None, typer.Option("--catalog", help="Add a user catalog file.")] = None,
) -> None:
    """Managed model APIs (pools of kind api): prices, latency profiles, rate limits, sources."""
    from sim.spec.units import format_duration

    apis = _catalog(catalog_file).apis
    table = Table(title="Managed model APIs (USD per 1M tokens; latency at the provider)")
    for column in ("id", "model", "$ in / out", "TTFT median / p90", "per token median / p90", "rate limit", "as of",
                   "source"):
        table.add_column(column, no_wrap=column in ("id", "model"))
    for key, api in sorted(apis.items()):
        limits = ", ".join(f"{v:,} {what}/min" for v, what in ((api.requests_per_minute, "req"),
                                                              (api.tokens_per_minute, "tok")) if v) or "-"
        table.add_row(key, api.model, f"{api.usd_per_1m_input_tokens:g} / {api.usd_per_1m_output_tokens:g}",
                      f"{format_duration(api.ttft.median)} / {format_duration(api.ttft.p90)}",
                      f"{format_duration(api.time_per_output_token.median)} / "
                      f"{format_duration(api.time_per_output_token.p90)}", limits, str(api.as_of), api.source)
    out.print(table)


def _opt(value: object) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _catalog(path: Path | None):  # noqa: ANN202
    from sim.spec.loader import load_catalog_file

    try:
        return load_catalog_file(path)
    except SpecError as exc:
        raise fail(exc.within(str(path))) from None


def main() -> None:
    try:
        app()
    except SpecError as exc:  # any user mistake that escaped a command
        print_error(exc)
        sys.exit(USER_ERROR)


if __name__ == "__main__":
    main()
