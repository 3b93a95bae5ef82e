"""`loraplex adapters ...`: register, list, promote, roll back and remove adapters.

The CLI writes the registry (database + artifact store from the settings) directly. When a
gateway is running, it is then asked to load the new prod version into every vLLM replica
(`POST /v1/adapters/reload`); when none answers, nothing is lost: the gateway loads an adapter
version vLLM does not hold on its first request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    no_args_is_help=True,
    help="""Register, version, promote, roll back and remove LoRA adapters.

    NAME means the adapter's prod version; NAME@N a given version. Examples:

      loraplex adapters register runs/support/adapter --name support --tenant acme

      loraplex adapters promote support@2

      loraplex adapters rollback support
    """,
)
err = Console(stderr=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.")]
GatewayOpt = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        help="Running gateway to tell about the change (default: the configured host and "
        "port, http://127.0.0.1:8000, when it answers).",
    ),
]
AdminKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-key", help="Admin key for --gateway (default: LORAPLEX_ADMIN_KEY or "
        "data_dir/admin_key).",
    ),
]  # fmt: skip


def open_registry(settings: Any) -> Any:
    """The registry `settings` describe (migrated), or exit with the reason."""
    from serve.routers.adapters import build

    registry, _ = _run(build, settings, [])
    return registry


def _open(config: Path | None) -> tuple[Any, Any]:
    """Settings and the registry they describe."""
    from serve.cli import load_settings

    settings = load_settings(config)
    return settings, open_registry(settings)


def _notify(
    settings: Any, gateway: str | None, admin_key: str | None, name: str, removed: bool = False
) -> None:
    """Ask a running gateway to bring vLLM in line with the registry for `name`."""
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = (gateway or f"http://{host}:{settings.port}").rstrip("/")
    key = admin_key or _stored_admin_key(settings)
    later = (
        "a gateway refuses it from now on" if removed
        else f"a gateway loads {name}'s prod version into vLLM on the first request for it"
    )  # fmt: skip
    if key is None:
        typer.echo(f"no admin key to tell a running gateway with (--admin-key): {later}")
        return
    try:
        resp = httpx.post(f"{url}/v1/adapters/reload", json={"name": name},
                          headers={"Authorization": f"Bearer {key}"}, timeout=60)  # fmt: skip
    except httpx.HTTPError:
        typer.echo(f"no gateway answers at {url}: {later}")
        return
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:200]
        err.print(f"[yellow]gateway at {url} answered {resp.status_code}:[/yellow] {message}")
        return
    body = resp.json()
    for ref, results in body.get("load", {}).items():
        ok = sum(r["ok"] for r in results)
        typer.echo(f"gateway {url}: {ref} loaded on {ok}/{len(results)} vLLM replica(s)")
        for r in results:
            if not r["ok"]:
                err.print(f"[yellow]  {r['replica']}: {r['detail']}[/yellow]")
    for served in body.get("unload", {}):
        typer.echo(f"gateway {url}: unloaded {served}")


def _stored_admin_key(settings: Any) -> str | None:
    # Read, never create: a missing key means no gateway was ever started with this data_dir.
    if settings.admin_key is not None:
        return str(settings.admin_key.get_secret_value())
    path = settings.data_dir / "admin_key"
    return path.read_text().strip() if path.is_file() else None


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from adapters.errors import AdapterError

    try:
        return fn(*args, **kwargs)
    except AdapterError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


def _read_exemplars(path: Path | None) -> list[str]:
    if path is None:
        return []
    text = path.read_text()
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return [str(x) for x in data]
    except json.JSONDecodeError:
        pass
    return [line.strip() for line in text.splitlines() if line.strip()]


@app.command("register")
def register(
    directory: Annotated[Path, typer.Argument(help="PEFT adapter directory.", exists=True)],
    name: Annotated[str, typer.Option(help="Adapter name; registering again adds a version.")],
    tenant: Annotated[str | None, typer.Option(help="Owner tenant (default: admin-owned).")] = None,
    share: Annotated[
        str | None, typer.Option(help="Other tenants, comma-separated; * = all.")
    ] = None,
    promote: Annotated[bool, typer.Option(help="Make this version prod.")] = True,
    force: Annotated[
        bool, typer.Option(help="Register and promote even when eval.json says NO-GO.")
    ] = False,
    exemplars: Annotated[
        Path | None,
        typer.Option(help="Typical prompts (JSON list or one per line) for the router."),
    ] = None,
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Validate, store and version an adapter directory.

    DIR holds adapter_config.json + adapter_model.safetensors (peft's save_pretrained).
    Registering identical bytes again under the same name returns the existing version.
    Lineage (report.json, eval.json) and exemplars.json next to the adapter are recorded.

    Examples:

      loraplex adapters register runs/support/adapter --name support --tenant acme

      loraplex adapters register ./adapter --name faq --share '*' --no-promote
    """
    settings, registry = _open(config)
    shared_with = [s.strip() for s in (share or "").split(",") if s.strip()]
    _check_tenants(settings, [tenant] if tenant else [], shared_with)
    lineage = _lineage(directory)
    if promote and not force and (lineage.get("eval_report") or {}).get("go") is False:
        # The same gate as `adapters promote`: a NO-GO evaluation never becomes prod silently.
        # A first version is prod whatever is asked (a name always resolves), so it is refused.
        if not registry.versions(name=name):
            err.print(f"error: eval.json beside the adapter says NO-GO and {name!r} has no "
                      "version yet, so it would serve: improve it, or pass --force", style="red")  # fmt: skip
            raise typer.Exit(2)
        err.print("eval.json beside the adapter says NO-GO: registering without promoting "
                  "(`adapters promote NAME@N --force` overrides)", style="yellow")  # fmt: skip
        promote = False
    av = _run(
        registry.register,
        directory,
        name,
        owner=tenant,
        shared_with=shared_with,
        promote=promote,
        lineage=lineage,
        exemplars=_read_exemplars(exemplars) or _exemplars_beside(directory),
    )
    verb = "already registered as" if av.existing else "registered"
    typer.echo(f"{verb} {av.ref}{' (prod)' if av.is_prod else ''} digest {av.digest[:12]}")
    if av.is_prod:
        _notify(settings, gateway, admin_key, av.name)


def _check_tenants(settings: Any, owners: list[str], shared_with: list[str]) -> None:
    """Exit unless every named tenant exists (as the HTTP route requires): an adapter owned by
    a tenant that does not exist could never be used, nor registered again by anyone else."""
    from rich.markup import escape

    from serve.cli import _tenant_service

    tenants = _tenant_service(settings)
    for option, names in (("--tenant", owners), ("--share", [t for t in shared_with if t != "*"])):
        for t in names:
            if tenants.get(t) is None:
                err.print(escape(f"error: {option}: no tenant named {t!r}; create it with "
                                 f"`loraplex tenants create {t}`"), style="red")  # fmt: skip
                raise typer.Exit(2)


def _lineage(directory: Path) -> dict[str, Any]:
    """Lineage the training module writes next to the adapter (report.json), if present."""
    lineage: dict[str, Any] = {}
    for folder in (directory, directory.parent):
        if (folder / "report.json").is_file() and not lineage:
            report = json.loads((folder / "report.json").read_text())
            lineage = {"dataset_digest": report.get("dataset_digest"),
                       "training_config": report.get("config")}  # fmt: skip
        if (folder / "eval.json").is_file():
            lineage["eval_report"] = json.loads((folder / "eval.json").read_text())
    return lineage


def _exemplars_beside(directory: Path) -> list[str]:
    for candidate in (directory / "exemplars.json", directory.parent / "exemplars.json"):
        if candidate.is_file():
            return _read_exemplars(candidate)
    return []


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="Only what this tenant may use.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List adapter versions: prod marked, owner, rank, digest.

    Example: loraplex adapters list --tenant acme
    """
    _, registry = _open(config)
    table = Table("adapter", "version", "prod", "owner", "shared with", "rank", "digest", "created")
    for av in registry.versions(tenant):
        table.add_row(
            av.name, str(av.version), "*" if av.is_prod else "", av.owner or "(admin)",
            ",".join(av.shared_with), str(av.rank), av.digest[:12],
            av.created_at.strftime("%Y-%m-%d %H:%M"),
        )  # fmt: skip
    Console().print(table)


@app.command("promote")
def promote_(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
    force: Annotated[
        bool, typer.Option(help="Promote even when its recorded evaluation is NO-GO.")
    ] = False,
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Make NAME@VERSION the prod version: requests for NAME use it from now on.

    A version whose `loraplex eval` came out NO-GO is refused unless --force.

    Example: loraplex adapters promote support@2
    """
    settings, registry = _open(config)
    av = _run(registry.promote, ref, force)
    typer.echo(f"{av.name} prod -> v{av.version}")
    _notify(settings, gateway, admin_key, av.name)


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="NAME")],
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Point prod back at the version that was prod before the current one.

    Example: loraplex adapters rollback support
    """
    settings, registry = _open(config)
    av = _run(registry.rollback, name)
    typer.echo(f"{av.name} prod -> v{av.version}")
    _notify(settings, gateway, admin_key, av.name)


@app.command("remove")
def remove(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@VERSION")],
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Remove an adapter or one version, stored files included.

    The prod version cannot be removed while other versions remain: promote or roll back first.

    Examples: loraplex adapters remove support@1    loraplex adapters remove support
    """
    settings, registry = _open(config)
    gone = _run(registry.remove, ref)
    typer.echo("removed " + ", ".join(av.ref for av in gone))
    _notify(settings, gateway, admin_key, gone[0].name, removed=True)
