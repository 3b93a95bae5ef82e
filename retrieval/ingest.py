"""Write documents into a tenant's collection: chunk, diff against what is stored, embed, upsert.

Chunk ids are content-addressed (`chunking.chunk_id`), so re-ingesting an unchanged document
finds every id already stored and writes nothing (`unchanged`), and a changed document adds its
new chunks and then deletes the ones that are no longer produced: fresh facts win, stale ones
vanish. New chunks go in before stale ones are deleted, so a search in between sees old or new
facts, never neither. Each chunk records the file it came from (`ingested_from`): a JSON or JSONL
file holds one document per record, and re-ingesting the file also deletes the documents of
records it no longer holds (`drop_unlisted`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.bm25 import LexicalIndex
from retrieval.chunking import Chunk, chunk_ids, chunk_text
from retrieval.embeddings import Embedder
from retrieval.errors import RetrievalError
from retrieval.loaders import Document, load_bytes
from retrieval.store import get_all

# Documents per round trip (one lookup, one embedding pass, one upsert): per-document round trips
# made a 10,000-record ingest take minutes.
INGEST_BATCH = 500
# Chroma refuses batches above its max_batch_size (5,461 on SQLite builds); stay well below.
UPSERT_BATCH = 1000


@dataclass
class IngestReport:
    """What an ingest did, in documents and chunks."""

    documents: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    doc_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {**self.__dict__, "doc_ids": list(self.doc_ids)}

    def merge(self, other: IngestReport) -> IngestReport:
        """This report plus `other` (for several uploads in one request)."""
        return IngestReport(
            self.documents + other.documents,
            self.added + other.added,
            self.removed + other.removed,
            self.unchanged + other.unchanged,
            self.doc_ids + other.doc_ids,
        )


Prepared = tuple[Document, list[Chunk]]


def prepare(docs: list[Document], chunk_tokens: int, overlap: int) -> list[Prepared]:
    """Each document with its chunks; refuses one without text before anything is written."""
    out = []
    for doc in docs:
        chunks = chunk_text(doc.text, chunk_tokens, overlap)
        if not chunks:  # e.g. a Markdown or HTML file holding only headings
            what = doc.origin if doc.origin == doc.doc_id else f"record {doc.doc_id!r}"
            if doc.origin and doc.origin != doc.doc_id:
                what += f" in {doc.origin}"
            raise RetrievalError(
                f"{what} has no text to index, only headings or markup", "empty_file"
            )
        out.append((doc, chunks))
    return out


def ingest_batch(
    col: Any,
    embedder: Embedder,
    batch: list[Prepared],
    report: IngestReport,
    lexical: LexicalIndex | None = None,
) -> None:
    """Add or replace the batch's documents in `col`, counting into `report`; `lexical` (the
    tenant's BM25 index) follows each change right after Chroma took it."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    latest = {doc.doc_id: (doc, chunks) for doc, chunks in batch}  # a repeated id: the last wins
    have = get_all(col, ["metadatas"], where={"doc_id": {"$in": list(latest)}})
    existing: dict[str, dict[str, str]] = defaultdict(dict)
    positions: dict[str, Any] = {}
    for cid, meta in zip(have["ids"], have["metadatas"], strict=True):
        existing[str(meta["doc_id"])][cid] = str(meta.get("ingested_from", ""))
        positions[cid] = meta.get("position")
    ids: list[str] = []
    texts: list[str] = []
    inputs: list[str] = []
    metas: list[dict[str, Any]] = []
    stale: list[str] = []
    moved: dict[str, int] = {}
    for doc, chunks in latest.values():
        wanted = dict(zip(chunk_ids(doc.source, chunks), chunks, strict=True))
        old = existing.get(doc.doc_id, {})
        report.documents += 1
        report.doc_ids.append(doc.doc_id)
        # A chunk stored under another file (or before files were recorded) is written again,
        # so that re-ingesting or deleting its file finds it.
        fresh = [i for i in wanted if old.get(i) != doc.origin]
        gone = sorted(set(old) - set(wanted))
        if not fresh and not gone:
            report.unchanged += 1
            continue
        stale += gone
        # Unchanged chunks that only moved keep their embedding; their position is updated.
        moved.update(
            {
                i: c.position
                for i, c in wanted.items()
                if i in old and i not in fresh and positions.get(i) != c.position
            }
        )
        for cid in fresh:
            c = wanted[cid]
            ids.append(cid)
            texts.append(c.text)
            # The heading path is embedded with the chunk (it often names the subject) but not
            # stored in the text, so citations quote the document as written.
            inputs.append(f"{c.heading}\n{c.text}" if c.heading else c.text)
            metas.append(
                {
                    **doc.metadata,
                    "doc_id": doc.doc_id,
                    "source": doc.source,
                    "title": doc.title,
                    "heading": c.heading,
                    "position": c.position,
                    "ingested_at": now,
                    # Chroma merges metadata on upsert; None removes a file recorded before.
                    "ingested_from": doc.origin or None,
                }
            )
    if ids:
        vectors = embedder.embed(inputs)
        for i in range(0, len(ids), UPSERT_BATCH):
            j = i + UPSERT_BATCH
            col.upsert(
                ids=ids[i:j], documents=texts[i:j], embeddings=vectors[i:j], metadatas=metas[i:j]
            )
            if lexical is not None:
                stored = [{k: v for k, v in m.items() if v is not None} for m in metas[i:j]]
                lexical.add(ids[i:j], texts[i:j], stored)
        report.added += len(ids)
    if moved:
        # Chroma merges the given keys into the stored metadata.
        col.update(ids=list(moved), metadatas=[{"position": p} for p in moved.values()])
        if lexical is not None:
            lexical.update_metadata({cid: {"position": p} for cid, p in moved.items()})
    if stale:
        col.delete(ids=stale)
        if lexical is not None:
            lexical.remove(stale)
        report.removed += len(stale)


def drop_unlisted(
    col: Any, docs: list[Document], report: IngestReport, lexical: LexicalIndex | None = None
) -> None:
    """Delete documents that earlier ingests took from these files and that they no longer hold
    (records removed from a JSONL file, or records without an id whose text changed)."""
    listed: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        if doc.origin:
            listed[doc.origin].add(doc.doc_id)
    if not listed:
        return
    have = get_all(col, ["metadatas"], where={"ingested_from": {"$in": list(listed)}})
    stale = [
        cid
        for cid, meta in zip(have["ids"], have["metadatas"], strict=True)
        if str(meta["doc_id"]) not in listed[str(meta["ingested_from"])]
    ]
    for i in range(0, len(stale), UPSERT_BATCH):
        col.delete(ids=stale[i : i + UPSERT_BATCH])
        if lexical is not None:
            lexical.remove(stale[i : i + UPSERT_BATCH])
    report.removed += len(stale)


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files named, plus the files under directories named (hidden ones skipped), sorted."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            out.append(path)
        else:
            raise RetrievalError(f"{path} does not exist", "file_not_found", "not_found")
    return out


def load_paths(paths: list[Path], max_bytes: int) -> list[Document]:
    """Documents from files on disk; each file's path (as given) is its doc id and source
    (for JSON and JSONL: the origin of its records)."""
    docs: list[Document] = []
    for path in expand_paths(paths):
        size = path.stat().st_size
        if size > max_bytes:  # checked before reading, so a huge file is never loaded
            raise RetrievalError(
                f"{path} is {size} bytes; the limit is {max_bytes}", "file_too_large", "too_large"
            )
        docs += load_bytes(str(path), path.read_bytes(), max_bytes)
    return docs


@contextmanager
def progress_bar(enabled: bool, total: int) -> Iterator[Any]:
    """A rich progress bar on stderr counting documents (a no-op when not `enabled`)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("ingesting documents", total=total)
        yield lambda n: bar.advance(task, n)
