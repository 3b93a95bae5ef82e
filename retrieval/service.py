"""Per-tenant retrieval: ingest into Chroma + BM25, delete, and hybrid search.

Consistency between the two indexes: Chroma is the source of truth and is written first; the
tenant's BM25 index is then rebuilt from what Chroma holds (also when the write failed part-way),
and it records the collection version it was built from. A reader whose index is missing, damaged
or of another version rebuilds it from Chroma before searching, so the lexical leg can lag a write
by at most that rebuild, and can never answer with chunks Chroma no longer has.
"""

from __future__ import annotations

import shutil
import threading
from collections import defaultdict
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
from retrieval.store import ChromaStore, check_tenant, version

__all__ = ["Hit", "IngestReport", "RetrievalService", "SearchResult"]


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
        # One lock per tenant around writes and BM25 rebuilds; tenants never wait on each other.
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    # -- lexical leg --------------------------------------------------------------------------
    def _rebuild_lexical(self, tenant: str, col: Any) -> bm25.LexicalIndex:
        data = col.get(include=["documents", "metadatas"])
        index = bm25.build(
            data["ids"], data["documents"] or [], data["metadatas"] or [], version(col)
        )
        bm25.save(index, self.bm25_dir / tenant)
        self._lexical[tenant] = index
        return index

    def _lexical_for(self, tenant: str, col: Any) -> bm25.LexicalIndex:
        current = version(col)
        index = self._lexical.get(tenant)
        if index is None or index.version != current:
            index = bm25.load(self.bm25_dir / tenant)
            if index is None or index.version != current:
                with self._locks[tenant]:
                    index = self._rebuild_lexical(tenant, col)
            self._lexical[tenant] = index
        return index

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
        with self.store.guard(), self._locks[tenant]:
            col = self.store.collection(tenant, self.embedder.name, create=True)
            failed = True
            try:
                with progress_bar(progress, len(docs)) as advance:
                    for start in range(0, len(prepared), INGEST_BATCH):
                        batch = prepared[start : start + INGEST_BATCH]
                        ingest_batch(col, self.embedder, batch, report)
                        advance(len(batch))
                # Only after every batch landed: a failed ingest must not delete what it has
                # not replaced yet.
                drop_unlisted(col, docs, report)
                failed = False
            finally:
                if failed or report.added or report.removed:
                    self.store.bump_version(col)
                    self._rebuild_lexical(tenant, col)
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
        with self._locks[tenant]:
            existed = self.store.drop(tenant)
            self._lexical.pop(tenant, None)
            for path in (self.bm25_dir / tenant, self.bm25_dir / f"{tenant}.old"):
                shutil.rmtree(path, ignore_errors=True)
        return existed

    def _delete(self, tenant: str, where: dict[str, Any]) -> int:
        check_tenant(tenant)
        with self.store.guard(), self._locks[tenant]:
            col = self.store.collection(tenant, self.embedder.name, create=False)
            if col is None:
                return 0
            ids = col.get(where=where, include=[])["ids"]
            if ids:
                try:
                    col.delete(ids=ids)
                finally:
                    self.store.bump_version(col)
                    self._rebuild_lexical(tenant, col)
            return len(ids)

    # -- read ---------------------------------------------------------------------------------
    def stats(self, tenant: str) -> dict[str, Any]:
        """Chunk and document counts, the embedding model and the collection version."""
        with self.store.guard():
            col = self.store.collection(tenant, self.embedder.name, create=False)
            if col is None:
                return {"tenant": tenant, "chunks": 0, "documents": 0,
                        "embedding_model": self.embedder.name, "version": ""}  # fmt: skip
            metas = col.get(include=["metadatas"])["metadatas"] or []
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
        with self.store.guard():
            col = self.store.collection(tenant, self.embedder.name, create=False)
            if col is None:
                check_request(top_k, where, mode)
                return SearchResult([], dict(EMPTY))
            return search_collection(
                col,
                lambda: self._lexical_for(tenant, col),
                self.embedder,
                query,
                top_k=top_k,
                where=where,
                mode=mode,
            )
