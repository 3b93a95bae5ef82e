"""`loraplex tenants ...`: create and list tenants (API keys are shown once)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import (
    AdminKeyOpt,
    ConfigOpt,
    GatewayOpt,
    Typer,
    err,
    fail,
    load_settings,
    services,
)
from serve.services import Services
from serve.tenants import KeyInfo

app = Typer(help="Create, list and delete tenants; list, revoke and rotate their API keys.")
keys_app = Typer(help="A tenant's API keys: list them, revoke one, rotate them all.")
app.add_typer(keys_app, name="keys")


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


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Tenant to delete.")],
    delete_adapters: Annotated[
        bool, typer.Option(help="Also remove the adapters it owns (refused otherwise).")
    ] = False,
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Delete a tenant with its keys and documents (and, if asked, its adapters).

    A tenant created later under the same name starts empty: it inherits nothing.

    Example: loraplex tenants delete acme --delete-adapters
    """
    admin = services(load_settings(config), gateway, admin_key).tenant_admin
    done = asyncio.run(admin.delete(name, delete_adapters))
    removed = done["adapters_removed"]
    typer.echo(f"deleted tenant {name}" + (f" and adapters {removed}" if removed else ""))


def _keys_table(keys: list[KeyInfo], title: str) -> Table:
    table = Table("key id", "prefix", "created", title=title)
    for k in keys:
        table.add_row(k.id, k.prefix + "...", k.created_at.strftime("%Y-%m-%d %H:%M"))
    return table


@keys_app.command("list")
def keys_list(
    name: Annotated[str, typer.Argument(help="Tenant.")], config: ConfigOpt = None
) -> None:
    """A tenant's keys by id and prefix (a key itself is shown only when it is made).

    Example: loraplex tenants keys list acme
    """
    keys = Services(load_settings(config)).tenants.keys(name)
    Console().print(_keys_table(keys, f"keys of {name}"))


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="Tenant.")],
    key_id: Annotated[str, typer.Argument(help="Key id, from `tenants keys list`.")],
    config: ConfigOpt = None,
) -> None:
    """Revoke one key. Gateways refuse it within seconds (their key cache lasts 5 s).

    Example: loraplex tenants keys revoke acme 3f2a9c0b7d1e
    """
    gone = Services(load_settings(config)).tenants.revoke_key(name, key_id)
    typer.echo(f"revoked key {gone.id} ({gone.prefix}...) of {name}")


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[str, typer.Argument(help="Tenant.")], config: ConfigOpt = None
) -> None:
    """Make a new key (printed alone on stdout, once) and revoke every other key of the tenant.

    Example: KEY=$(loraplex tenants keys rotate acme)
    """
    key, old = Services(load_settings(config)).tenants.rotate_keys(name)
    typer.echo(key)
    err.print(f"revoked {len(old)} older key(s) of {name}; the key above is shown only once")
