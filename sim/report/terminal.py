"""Terminal summaries of a run, as a person reads them: latency first, then its parts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from sim.result import Result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"


def print_run_summary(console: Console, result: Result) -> None:
    s = result.summary
    scenario = result.scenario
    console.print(f"[bold]{scenario.name}[/] (replication {result.replication}, seed {scenario.seed})")
    latency = Table(title="Latency at the client (ms), steady state")
    for column in ("metric", "p50", "p90", "p99", "mean"):
        latency.add_column(column, justify="left" if column == "metric" else "right")
    for stem, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E")):
        latency.add_row(label, *(_ms(s.get(f"{stem}_{q}_s")) for q in ("p50", "p90", "p99", "mean")))
    console.print(latency)
    parts = Table(title="Where the time goes (mean, ms)")
    for column in ("", "network", "queueing", "prefill", "decode"):
        parts.add_column(column, justify="left" if not column else "right")
    t = s["ttft_parts_mean_s"]
    e = s["e2e_parts_mean_s"]
    parts.add_row("TTFT", _ms(t["network"]), _ms(t["queueing"]), _ms(t["prefill"]), "-")
    parts.add_row("E2E", _ms(e["network"]), _ms(e["queueing"]), _ms(e["prefill"]), _ms(e["decode"]))
    console.print(parts)
    lines = [
        f"requests: {s['requests_total']:,} generated, {s['requests_completed']:,} completed, "
        f"{s['requests_rejected']:,} rejected, {s['requests_unfinished']:,} unfinished at the horizon",
        f"throughput: {s['throughput_rps']:.3g} req/s, {s['output_tokens_per_s']:,.0f} output tokens/s",
        "GPU busy: " + ", ".join(f"{pool} {frac:.1%}" for pool, frac in s["gpu_utilisation"].items()),
    ]
    attainment = s.get("slo_attainment")
    if attainment is not None:
        lines.append(f"SLO attainment: {attainment:.2%} of requests within every target")
    for name, check in s.get("slo", {}).items():
        mark = "[green]met[/]" if check["met"] else "[bold red]MISSED[/]"
        lines.append(f"  {name}: {_ms(check['measured_s'])} ms vs target {_ms(check['target_s'])} ms: {mark}")
    for line in lines:
        console.print(line, soft_wrap=True)
