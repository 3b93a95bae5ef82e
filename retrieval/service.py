"""Per-tenant retrieval: ingest into Chroma + BM25, delete, and hybrid search.

Consistency between the two indexes. Chroma is the source of truth and is written first; each
change then goes into the tenant's in-memory BM25 index (`bm25.LexicalIndex`), and the write
ends by giving the collection a new version. A reader whose index is of another version (a
write by another process, or a gateway replica) catches up by diffing chunk ids with Chroma,
fetching only what it lacks; if the write came from another process, an embedded Chroma client
is reopened first (see `store.py`), so the dense leg sees the same chunks. Search only returns a
chunk both legs hold: one known to one leg only (mid-write in another process) is skipped.

Writers on one embedded path serialise per tenant with a file lock in `bm25_dir` (processes that
share a Chroma path share its data directory, and so this lock), so two processes never
interleave their writes to one tenant.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrieval import bm25
from retrieval.embeddings import Embedder, SentenceTransformerEmbedder
from retrieval.ingest import (
    INGEST_BATCH,
    IngestReport,
    drop_unlisted,
    ingest_batch,
    load_paths,
    prepare,
    progress_bar,
)
from retrieval.loaders import Document, load_bytes, record_to_document
from retrieval.search import EMPTY, Hit, SearchResult, check_request, search_collection
from retrieval.store import ChromaStore, check_tenant, get_all, version

__all__ = ["Hit", "IngestReport", "RetrievalService", "SearchResult"]

log = logging.getLogger(__name__)
# A snapshot of a tenant's BM25 index is written when this share of it changed since the last
# one (a process starting up loads it and fetches only what changed after it).
SNAPSHOT_SHARE = 0.1


class RetrievalService:
    """Ingest, delete and search a tenant's documents; safe to share between request threads."""

    def __init__(
        self,
        *,
        bm25_dir: Path,
        chroma_path: Path | None = None,
        chroma_url: str | None = None,
        embedder: Embedder | None = None,
        max_file_bytes: int = 32 << 20,
        chunk_tokens: int = 200,
        overlap: int = 40,
    ) -> None:
        """`chroma_url` selects server mode (replicas share it); else embedded at `chroma_path`.

        `bm25_dir` holds one BM25 index per tenant; `max_file_bytes` bounds one file;
        `chunk_tokens` and `overlap` size the chunks (see `chunking.chunk_text`).
        """
        self.store = ChromaStore(chroma_path if not chroma_url else None, chroma_url or None)
        self.bm25_dir = Path(bm25_dir)
        self.embedder: Embedder = embedder or SentenceTransformerEmbedder()
        self.max_file_bytes = max_file_bytes
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self._lexical: dict[str, bm25.LexicalIndex] = {}
        # Per tenant: one lock around writes (with a file lock across processes), one around
        # bringing the BM25 index up to date; tenants never wait on each other.
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._sync_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    # -- consistency --------------------------------------------------------------------------
    @contextmanager
    def _collection(self, tenant: str, create: bool) -> Iterator[Any]:
        """The tenant's collection (None if absent and not `create`) inside a store session,
        on a client that has seen every write other processes made to it."""
        for attempt in (0, 1):
            with self.store.guard(), self.store.session():
                col = self.store.collection(tenant, self.embedder.name, create=create)
                if col is None or attempt or not self.store.changed_elsewhere(col):
                    if col is not None:
                        self.store.saw(col)
                    yield col
                    return
            self.store.reopen()

    @contextmanager
    def _writing(self, tenant: str) -> Iterator[None]:
        """Exclusive write access to a tenant: threads of this process, and other processes."""
        with self._locks[tenant]:
            self.bm25_dir.mkdir(parents=True, exist_ok=True)
            with open(self.bm25_dir / f".{tenant}.lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _lexical_for(self, tenant: str, col: Any) -> bm25.LexicalIndex:
        """The tenant's BM25 index at the collection's current version."""
        current = version(col)
        index = self._lexical.get(tenant)
        if index is not None and index.version == current:
            return index
        with self._sync_locks[tenant]:
            index = self._lexical.get(tenant)
            if index is None:
                index = bm25.load(self.bm25_dir / tenant) or bm25.LexicalIndex()
                self._lexical[tenant] = index
            if index.version != current:
                bm25.catch_up(index, col, current)
                self._maybe_save(tenant, index)
        return index

    def _maybe_save(self, tenant: str, index: bm25.LexicalIndex) -> None:
        if index.changes and index.changes >= SNAPSHOT_SHARE * len(index):
            try:
                index.save(self.bm25_dir / tenant)
            except OSError as exc:  # a snapshot only speeds up start-up; another process won
                log.info("BM25 snapshot for %s not written: %s", tenant, exc)

    def _finish_write(self, tenant: str, col: Any, index: bm25.LexicalIndex, ok: bool) -> None:
        """Give the collection a new version and leave the index at it (after a failed write,
        by diffing with what Chroma holds)."""
        before = version(self.store.collection(tenant, self.embedder.name, create=False) or col)
        new = self.store.bump_version(col)
        if ok and before == index.version and (self.store.embedded or len(index) == col.count()):
            index.version = new
        else:
            # A failed write, or (server mode) another replica wrote meanwhile: diff.
            bm25.catch_up(index, col, new)
        self._maybe_save(tenant, index)

    # -- ingest -------------------------------------------------------------------------------
    def ingest_documents(
        self, tenant: str, docs: list[Document], progress: bool = False
    ) -> IngestReport:
        """Add or replace documents: unchanged chunks stay, stale ones go, new ones are embedded.

        Documents from a file replace everything earlier ingests took from that file.
        """
        check_tenant(tenant)
        prepared = prepare(docs, self.chunk_tokens, self.overlap)
        report = IngestReport()
        with self._writing(tenant), self._collection(tenant, create=True) as col:
            index = self._lexical_for(tenant, col)
            failed = True
            try:
                with progress_bar(progress, len(docs)) as advance:
                    for start in range(0, len(prepared), INGEST_BATCH):
                        batch = prepared[start : start + INGEST_BATCH]
                        ingest_batch(col, self.embedder, batch, report, index)
                        advance(len(batch))
                # Only after every batch landed: a failed ingest must not delete what it has
                # not replaced yet.
                drop_unlisted(col, docs, report, index)
                failed = False
            finally:
                if failed or report.added or report.removed:
                    self._finish_write(tenant, col, index, ok=not failed)
        return report

    def ingest_bytes(self, tenant: str, filename: str, data: bytes) -> IngestReport:
        """Ingest one uploaded file; its name gives the type, the doc id and the source."""
        return self.ingest_files(tenant, [(filename, data)])

    def ingest_files(self, tenant: str, files: list[tuple[str, bytes]]) -> IngestReport:
        """Ingest uploaded (name, bytes) pairs; every file is parsed before any is written."""
        docs = [doc for name, data in files for doc in load_bytes(name, data, self.max_file_bytes)]
        return self.ingest_documents(tenant, docs)

    def ingest_paths(self, tenant: str, paths: list[Path], progress: bool = False) -> IngestReport:
        """Ingest files and directories from disk (every file is validated before any write)."""
        return self.ingest_documents(
            tenant, load_paths(paths, self.max_file_bytes), progress=progress
        )

    def ingest_records(self, tenant: str, records: list[Any]) -> IngestReport:
        """Ingest JSON records `{"text", "id"?, "source"?, "title"?, ...scalar metadata}`."""
        docs = [record_to_document(r, f"record {i + 1}") for i, r in enumerate(records)]
        return self.ingest_documents(tenant, docs)

    # -- delete -------------------------------------------------------------------------------
    def delete_document(self, tenant: str, doc_id: str) -> int:
        """Remove a document's chunks (a JSON/JSONL file's name: all its records); returns how
        many there were (0: no such document)."""
        return self._delete(tenant, {"$or": [{"doc_id": doc_id}, {"ingested_from": doc_id}]})

    def delete_source(self, tenant: str, source: str) -> int:
        """Remove every chunk from `source` (a file's name: also all its records); returns how
        many there were."""
        return self._delete(tenant, {"$or": [{"source": source}, {"ingested_from": source}]})

    def drop_tenant(self, tenant: str) -> bool:
        """Delete the tenant's collection and BM25 index, so a tenant created later under the
        same name starts empty; returns whether there was a collection."""
        check_tenant(tenant)
        with self._writing(tenant), self.store.guard(), self.store.session():
            existed = self.store.drop(tenant)
            self._lexical.pop(tenant, None)
            for path in (self.bm25_dir / tenant, self.bm25_dir / f"{tenant}.old"):
                shutil.rmtree(path, ignore_errors=True)
        return existed

    def _delete(self, tenant: str, where: dict[str, Any]) -> int:
        check_tenant(tenant)
        with self._writing(tenant), self._collection(tenant, create=False) as col:
            if col is None:
                return 0
            index = self._lexical_for(tenant, col)
            ids = col.get(where=where, include=[])["ids"]
            if ids:
                ok = False
                try:
                    col.delete(ids=ids)
                    index.remove(ids)
                    ok = True
                finally:
                    self._finish_write(tenant, col, index, ok)
            return len(ids)

    # -- read ---------------------------------------------------------------------------------
    def stats(self, tenant: str) -> dict[str, Any]:
        """Chunk and document counts, the embedding model and the collection version."""
        with self._collection(tenant, create=False) as col:
            if col is None:
                return {
                    "tenant": tenant,
                    "chunks": 0,
                    "documents": 0,
                    "embedding_model": self.embedder.name,
                    "version": "",
                }
            metas = get_all(col, ["metadatas"])["metadatas"]
            return {
                "tenant": tenant,
                "chunks": len(metas),
                "documents": len({m.get("doc_id") for m in metas}),
                "embedding_model": self.embedder.name,
                "version": version(col),
            }

    def search(
        self,
        tenant: str,
        query: str,
        top_k: int = 4,
        where: dict[str, Any] | None = None,
        mode: str = "hybrid",
    ) -> SearchResult:
        """Top-k chunks for `query` (see `retrieval.search`); empty for a tenant without documents."""
        check_request(top_k, where, mode)
        with self._collection(tenant, create=False) as col:
            if col is None:
                return SearchResult([], dict(EMPTY))
            return search_collection(
                col,
                self._lexical_for(tenant, col),
                self.embedder,
                query,
                top_k=top_k,
                where=where,
                mode=mode,
            )
