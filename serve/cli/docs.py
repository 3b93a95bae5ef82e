"""`loraplex ingest` and `loraplex docs ...`: fill a tenant's collection and look inside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from retrieval.service import RetrievalService
from serve.cli.common import ConfigOpt, Typer, err, fail, load_settings, services

app = Typer(help="Search, inspect and delete a tenant's ingested documents.")
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose collection to use.")]


def _service(config: Path | None, tenant: str) -> tuple[RetrievalService, str]:
    """The retrieval service and the id the tenant's documents are kept under."""
    svc = services(load_settings(config))
    return svc.retrieval, svc.tenants.require(tenant).id


def _parse_where(pairs: list[str]) -> dict[str, Any] | None:
    where: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--where takes FIELD=VALUE, got {pair!r}")
        try:
            parsed = json.loads(value)  # numbers and booleans as such; anything else a string
        except json.JSONDecodeError:
            parsed = value
        where[key] = parsed if isinstance(parsed, str | int | float | bool) else value
    return where or None


def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files or directories (.txt .md .html .htm .pdf .json .jsonl)."),
    ],
    tenant: TenantOpt,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Ingest documents into a tenant's collection (dense vectors + BM25 index).

    Unchanged files are skipped; a changed file replaces its old chunks, so stale facts vanish.
    A file's path, as given, is its document id (use it with `loraplex docs delete`).
    JSON/JSONL files hold records: {"id", "text", "source", "title", ...scalar metadata}; each
    record is a document, and re-ingesting the file drops the records it no longer holds.

    Examples:

        loraplex ingest --tenant acme docs/ prices.jsonl

        loraplex ingest -t acme handbook.pdf --no-progress
    """
    retrieval, tenant_id = _service(config, tenant)
    report = retrieval.ingest_paths(tenant_id, paths, progress=progress)
    table = Table(
        "documents",
        "chunks added",
        "chunks removed",
        "unchanged documents",
        title=f"ingested into tenant {tenant!r}",
    )
    table.add_row(
        str(report.documents), str(report.added), str(report.removed), str(report.unchanged)
    )
    Console().print(table)


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="The question.")],
    tenant: TenantOpt,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Hits to show (1-50).")] = 4,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    where: Annotated[
        list[str] | None, typer.Option(help="Metadata filter FIELD=VALUE (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show what retrieval finds for a query, with each leg's score.

    score: fused rank score in [0, 1]; relevance: cosine similarity, or 1.0 for an exact
    identifier match; strength: what the router compares with the tenant's rag_min_score.

    Examples:

        loraplex docs search --tenant acme "How much does SKU-4471 cost?"

        loraplex docs search -t acme "returns policy" --mode dense --where lang=en
    """
    retrieval, tenant_id = _service(config, tenant)
    result = retrieval.search(tenant_id, query, top_k, _parse_where(where or []), mode)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table("#", "score", "relevance", "dense", "bm25", "source", "text")
    for n, h in enumerate(result.hits, 1):
        table.add_row(
            str(n),
            f"{h.score:.3f}",
            f"{h.relevance:.3f}",
            "-" if h.dense is None else f"{h.dense:.3f}",
            "-" if h.bm25 is None else f"{h.bm25:.2f}",
            h.source,
            h.text[:80].replace("\n", " "),
        )
    Console().print(table)
    err.print(f"strength: {result.strength}")


@app.command("delete")
def delete(
    doc_id: Annotated[
        str, typer.Argument(help="Document id (file path as ingested, or record id).")
    ],
    tenant: TenantOpt,
    source: Annotated[
        bool, typer.Option("--source", help="Treat the argument as a source, not a doc id.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete a document's chunks (or, with --source, every chunk from a source).

    A JSON/JSONL file's path deletes every record ingested from it.

    Example: loraplex docs delete --tenant acme docs/returns.md
    """
    retrieval, tenant_id = _service(config, tenant)
    fn = retrieval.delete_source if source else retrieval.delete_document
    removed = fn(tenant_id, doc_id)
    if not removed:
        fail(
            f"tenant {tenant!r} has no {'source' if source else 'document'} {doc_id!r}; see "
            "`loraplex docs search` for ids",
            1,
        )
    typer.echo(f"removed {removed} chunks")


@app.command("stats")
def stats(tenant: TenantOpt, config: ConfigOpt = None) -> None:
    """Count a tenant's documents and chunks, and name its embedding model.

    Example: loraplex docs stats --tenant acme
    """
    retrieval, tenant_id = _service(config, tenant)
    typer.echo(json.dumps({**retrieval.stats(tenant_id), "tenant": tenant}, indent=2))
