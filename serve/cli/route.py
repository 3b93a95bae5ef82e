"""`loraplex route`: explain which path a question would take for a tenant, without generating."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import ConfigOpt, load_settings, services
from serve.routing import Decision, RouteRequest


def explain(d: Decision) -> dict[str, Any]:
    """A decision as the response's `loraplex` block shows it, plus what would be called."""
    return {
        "route": d.route,
        "model": d.model,
        "served_model": d.served_model,
        "adapter": d.adapter_ref,
        "router_version": d.router_version,
        "reason": d.reason,
        "scores": d.scores,
        "alternatives": d.alternatives,
        "latency_ms": d.latency_ms,
    }


def route(
    question: Annotated[str, typer.Argument(help="The user message to route.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant to route for.")],
    model: Annotated[str, typer.Option(help="The request's model field.")] = "auto",
    path: Annotated[
        str, typer.Option("--route", help="loraplex.route: auto, prompt, rag, adapter, combined.")
    ] = "auto",
    adapter: Annotated[str | None, typer.Option(help="loraplex.adapter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Explain which path (prompt, rag, adapter, combined) a question would take, and why.

    Shows the router version that decides, the reason, the signals and every other allowed
    path with its score. Nothing is generated.

    Examples:

      loraplex route --tenant acme "How much does the kettle cost?"

      loraplex route --tenant acme --json "Extract the order from: two mugs to Leeds"
    """
    svc = services(load_settings(config))
    found = svc.tenants.require(tenant)
    req = RouteRequest(model=model, query=question, route=path, adapter=adapter)
    out = explain(svc.router.decide(req, found))
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    console = Console()
    adapter_text = f" with {out['adapter']}" if out["adapter"] else ""
    console.print(
        f"[bold]{out['route']}[/bold]{adapter_text} (answered by {out['model']}); "
        f"router {out['router_version']}"
    )
    console.print(f"reason: {out['reason']}")
    if out["alternatives"]:
        table = Table("other allowed path", "adapter", "score", title=None)
        for alt in out["alternatives"]:
            table.add_row(alt["route"], alt["adapter"] or "", f"{alt['score']:.3f}")
        console.print(table)
    if out["scores"]:
        console.print("scores: " + ", ".join(f"{k}={v:g}" for k, v in out["scores"].items()))
