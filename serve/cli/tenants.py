"""`loraplex tenants ...`: create and list tenants (API keys are shown once)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import ConfigOpt, Typer, err, fail, load_settings
from serve.services import Services

app = Typer(help="Create and list tenants (API keys are shown once).")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Tenant name: lowercase letters, digits, - and _.")],
    policy: Annotated[
        str | None, typer.Option(help='Policy JSON, e.g. \'{"routes": ["prompt", "rag"]}\'.')
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a tenant and print its API key alone on stdout.

    Example: KEY=$(loraplex tenants create acme)
    """
    settings = load_settings(config)
    try:
        parsed = json.loads(policy) if policy else None
    except json.JSONDecodeError as exc:
        fail(f"--policy is not valid JSON: {exc}")
    _, key = Services(settings).tenants.create(name, parsed)
    typer.echo(key)
    err.print(f"created tenant [bold]{name}[/bold]; the key above is shown only once")


@app.command("list")
def list_(config: ConfigOpt = None) -> None:
    """List tenants with their policies and key counts.

    Example: loraplex tenants list
    """
    table = Table("tenant", "keys", "routes", "created")
    for t in Services(load_settings(config)).tenants.list():
        created = t.created_at.strftime("%Y-%m-%d %H:%M") if t.created_at else ""
        table.add_row(t.name, str(t.key_count), ",".join(t.policy.routes), created)
    Console().print(table)
