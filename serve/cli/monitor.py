"""`loraplex monitor`: drift, knowledge gaps, route mix, feedback and grounding per tenant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import ConfigOpt, err, load_settings, services


def _f(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if pct else f"{value:.3f}"


def monitor(
    tenant: Annotated[str | None, typer.Option(help="One tenant (default: every tenant).")] = None,
    window_hours: Annotated[
        float | None,
        typer.Option(help="The recent window in hours (default: the monitor_window_h setting)."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw the trends into this PNG file (matplotlib).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """How each tenant's traffic has moved over the recent window, per adapter.

    Input drift: how far recent prompts' mean embedding has moved from the adapter's training
    exemplars (the window before, for the base model). Knowledge gaps: share of rag requests
    with weak retrieval, and (where the tenant captures prompts) the most frequent weakly
    answered questions. Route mix shift, down-vote rate, mean grounding. Thresholds come from
    the tenant's policy (`drift`); crossed ones are listed as warnings (exit status 0 still).
    Statistics are written by running gateways every few seconds.

    Examples:

        loraplex monitor

        loraplex monitor --tenant acme --window-hours 6 --plot monitor.png
    """
    svc = services(load_settings(config))
    reports = svc.monitor.reports(tenant, window_hours)
    canaries = svc.canaries.running()
    if as_json:
        typer.echo(json.dumps({"tenants": reports, "canaries": canaries}, indent=2))
    else:
        _print(reports, canaries)
    if plot is not None:
        from serve.monitor.plot import plot_trends

        err.print(f"trends: {plot_trends(reports, plot)}")


def _print(reports: list[dict[str, Any]], canaries: list[dict[str, Any]]) -> None:
    console = Console()
    table = Table(
        "tenant",
        "adapter",
        "requests",
        "input drift",
        "vs",
        "exemplar sim",
        "errors",
        "down-votes",
        "grounded",
    )
    for r in reports:
        for a in r["adapters"]:
            table.add_row(
                r["tenant"],
                a["adapter"],
                str(a["requests"]),
                _f(a["input_drift"]),
                a["reference"] or "",
                _f(a["exemplar_similarity"]),
                _f(a["error_rate"], pct=True),
                f"{_f(a['downvote_rate'], pct=True)} of {a['feedback']}",
                _f(a["grounded_mean"]),
            )
    console.print(table)
    tenants = Table("tenant", "requests", "route mix", "mix shift", "gaps", "down-votes", "capture")
    for r in reports:
        gaps = r["knowledge_gaps"]
        mix = " ".join(f"{k} {v:.0%}" for k, v in r["route_mix"].items())
        tenants.add_row(
            r["tenant"],
            str(r["requests"]),
            mix,
            _f(r["route_mix_shift"]),
            f"{_f(gaps['rate'], pct=True)} of {gaps['rag_requests']} rag",
            f"{_f(r['feedback']['downvote_rate'], pct=True)} of {r['feedback']['count']}",
            r["capture"],
        )
    console.print(tenants)
    for r in reports:
        for q in r["knowledge_gaps"].get("questions") or []:
            console.print(
                f"[dim]{r['tenant']}: weakly answered x{q['count']}:[/dim] {q['question']}"
            )
        for w in r["warnings"]:
            console.print(f"[yellow]warning: {r['tenant']}: {w['message']}[/yellow]")
    for c in canaries:
        arms = c["arms"]
        console.print(
            f"canary {c['canary']} ({c['percent']}%): {arms['canary']['requests']} requests vs "
            f"{arms['prod']['requests']} on {c['prod']}"
            + (f"; worse: {'; '.join(c['verdict']['reasons'])}" if c["verdict"]["worse"] else "")
        )
