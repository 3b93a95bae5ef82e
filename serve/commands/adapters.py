"""`loraplex adapters ...`: register, list, promote, roll back and remove adapters.

The CLI writes the registry directly. A running gateway picks changes up on the next request:
an adapter version vLLM does not hold yet is loaded on demand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file.")]


def _registry(config: Path | None) -> Any:
    from serve.cli import load_settings
    from serve.routers.adapters import build

    registry, _ = build(load_settings(config), [])
    return registry


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
    exemplars: Annotated[
        Path | None,
        typer.Option(help="Typical prompts (JSON list or one per line) for the router."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Validate an adapter, store it and record a new version.

    Example: loraplex adapters register runs/support/adapter --name support --tenant acme
    """
    registry = _registry(config)
    lineage = _lineage(directory)
    av = _run(
        registry.register,
        directory,
        name,
        owner=tenant,
        shared_with=[s.strip() for s in (share or "").split(",") if s.strip()],
        promote=promote,
        lineage=lineage,
        exemplars=_read_exemplars(exemplars) or _exemplars_beside(directory),
    )
    verb = "already registered as" if av.existing else "registered"
    typer.echo(f"{verb} {av.ref}{' (prod)' if av.is_prod else ''} digest {av.digest[:12]}")


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
    """List adapter versions: prod marked, owner, rank, digest."""
    table = Table("adapter", "version", "prod", "owner", "shared with", "rank", "digest", "created")
    for av in _registry(config).versions(tenant):
        table.add_row(
            av.name, str(av.version), "*" if av.is_prod else "", av.owner or "(admin)",
            ",".join(av.shared_with), str(av.rank), av.digest[:12],
            av.created_at.strftime("%Y-%m-%d %H:%M"),
        )  # fmt: skip
    Console().print(table)


@app.command("promote")
def promote_(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")], config: ConfigOpt = None
) -> None:
    """Make NAME@VERSION the prod version: requests for NAME use it from now on."""
    av = _run(_registry(config).promote, ref)
    typer.echo(f"{av.name} prod -> v{av.version}")


@app.command("rollback")
def rollback(name: Annotated[str, typer.Argument(help="NAME")], config: ConfigOpt = None) -> None:
    """Point prod back at the version that was prod before the current one."""
    av = _run(_registry(config).rollback, name)
    typer.echo(f"{av.name} prod -> v{av.version}")


@app.command("remove")
def remove(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@VERSION")],
    config: ConfigOpt = None,
) -> None:
    """Remove an adapter or one version (not the prod one while others remain)."""
    gone = _run(_registry(config).remove, ref)
    typer.echo("removed " + ", ".join(av.ref for av in gone))
