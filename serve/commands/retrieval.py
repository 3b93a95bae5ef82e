"""`loraplex ingest` and `loraplex docs ...`: fill a tenant's collection and look inside it."""

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
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose collection to use.")]


def _service(config: Path | None) -> Any:
    from serve.cli import load_settings
    from serve.routers.documents import build

    return build(load_settings(config), [])


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from retrieval.errors import RetrievalError

    try:
        return fn(*args, **kwargs)
    except RetrievalError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or directories (.txt .md .html .pdf .json .jsonl).")
    ],
    tenant: TenantOpt,
    config: ConfigOpt = None,
) -> None:
    """Ingest documents into a tenant's collection (hybrid dense + BM25 index).

    Unchanged files are skipped; changed files replace their old chunks.

    Example: loraplex ingest --tenant acme docs/ prices.jsonl
    """
    report = _run(_service(config).ingest_paths, tenant, paths, progress=True)
    table = Table("documents", "chunks added", "chunks removed", "unchanged documents")
    table.add_row(
        str(report.documents), str(report.added), str(report.removed), str(report.unchanged)
    )
    Console(stderr=True).print(table)


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="The question.")],
    tenant: TenantOpt,
    top_k: Annotated[int, typer.Option(help="Hits to show.")] = 4,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show what retrieval finds for a query, with each leg's score."""
    result = _run(_service(config).search, tenant, query, top_k, None, mode)
    if as_json:
        typer.echo(
            json.dumps(
                {"hits": [h.to_dict() for h in result.hits], "strength": result.strength}, indent=2
            )
        )
        return
    table = Table("#", "score", "relevance", "dense", "bm25", "source", "text")
    for n, h in enumerate(result.hits, 1):
        table.add_row(str(n), f"{h.score:.3f}", f"{h.relevance:.3f}", str(h.dense), str(h.bm25),
                      h.source, h.text[:80].replace("\n", " "))  # fmt: skip
    Console().print(table)
    err.print(f"strength: {result.strength}")


@app.command("delete")
def delete(
    doc_id: Annotated[
        str, typer.Argument(help="Document id (file path as ingested, or record id).")
    ],
    tenant: TenantOpt,
    source: Annotated[
        bool, typer.Option(help="Treat the argument as a source, not a doc id.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete a document's chunks."""
    service = _service(config)
    fn = service.delete_source if source else service.delete_document
    typer.echo(f"removed {_run(fn, tenant, doc_id)} chunks")
