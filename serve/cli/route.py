"""`loraplex route`: explain which path a question would take for a tenant, without generating."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from serve.cli.common import ConfigOpt, load_settings, services
from serve.routing import RouteRequest


def route(
    question: Annotated[str, typer.Argument(help="The user message to route.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant to route for.")],
    model: Annotated[str, typer.Option(help="The request's model field.")] = "auto",
    config: ConfigOpt = None,
) -> None:
    """Explain which path (prompt, rag, adapter, combined) a question would take, and why.

    Example: loraplex route --tenant acme "How much does the kettle cost?"
    """
    svc = services(load_settings(config))
    found = svc.tenants.require(tenant)
    d = svc.router.decide(RouteRequest(model=model, query=question), found)
    out = {"route": d.route, "model": d.served_model, "adapter": d.adapter_ref, "reason": d.reason}
    typer.echo(json.dumps({**out, "scores": d.scores}, indent=2))
