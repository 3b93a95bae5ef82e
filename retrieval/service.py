"""Per-tenant retrieval: ingest into Chroma + BM25, hybrid search with reciprocal rank fusion.

Each loraplex tenant has its own Chroma collection; the tenant is a required argument of every
call and never a caller-supplied collection name, so no query can reach another tenant's chunks.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from retrieval import bm25
from retrieval.chunking import chunk_id, chunk_text
from retrieval.embeddings import Embedder, SentenceTransformerEmbedder
from retrieval.errors import RetrievalError
from retrieval.fusion import normalised, rrf
from retrieval.loaders import Document, load_bytes, record_to_document

CODE_RE = re.compile(r"\b[A-Za-z]*[-_]?\d[\w-]*\b")
MODES = ("hybrid", "dense", "bm25")
INGEST_BATCH = 500


@dataclass
class Hit:
    """One retrieved chunk. `score` orders hits (normalised RRF in hybrid mode); `relevance`
    says how well it matches: the dense cosine similarity, or 1.0 when the chunk holds an exact
    identifier from the query (a code like SKU-4471), which embeddings match poorly."""

    id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    relevance: float
    dense: float | None = None
    bm25: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class SearchResult:
    hits: list[Hit]
    strength: dict[str, float]


@dataclass
class IngestReport:
    documents: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    doc_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RetrievalService:
    """Ingest, delete and search a tenant's documents."""

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
        self.bm25_dir = Path(bm25_dir)
        self.chroma_path = chroma_path
        self.chroma_url = chroma_url
        self.embedder = embedder or SentenceTransformerEmbedder()
        self.max_file_bytes = max_file_bytes
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self._client: Any = None
        self._lexical: dict[str, bm25.LexicalIndex] = {}
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._client_lock = threading.Lock()

    # -- chroma -------------------------------------------------------------------------------
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                settings = ChromaSettings(anonymized_telemetry=False)
                if self.chroma_url:
                    url = urlparse(self.chroma_url)
                    self._client = chromadb.HttpClient(
                        host=url.hostname or "127.0.0.1",
                        port=url.port or 8000,
                        ssl=url.scheme == "https",
                        settings=settings,
                    )
                else:
                    assert self.chroma_path is not None
                    self._client = chromadb.PersistentClient(
                        str(self.chroma_path), settings=settings
                    )
            return self._client

    @staticmethod
    def collection_name(tenant: str) -> str:
        return f"lpx_{tenant}_docs"

    def _collection(self, tenant: str, create: bool) -> Any:
        name = self.collection_name(tenant)
        try:
            if create:
                col = self.client().get_or_create_collection(
                    name,
                    metadata={
                        "hnsw:space": "cosine",
                        "embedding_model": self.embedder.name,
                        "lpx_version": "empty",
                    },  # fmt: skip
                    embedding_function=None,
                )
            else:
                try:
                    col = self.client().get_collection(name, embedding_function=None)
                except Exception as exc:  # chroma raises NotFoundError / ValueError by version
                    if "does not exist" in str(exc) or "not found" in str(exc).lower():
                        return None
                    raise
        except RetrievalError:
            raise
        except Exception as exc:
            if self.chroma_url:
                raise RetrievalError(
                    f"the Chroma server at {self.chroma_url} is unreachable ({type(exc).__name__})",
                    "retrieval_unavailable",
                    503,
                ) from None
            raise
        recorded = (col.metadata or {}).get("embedding_model")
        if recorded and recorded != self.embedder.name:
            raise RetrievalError(
                f"this tenant's documents were embedded with {recorded!r}, but the gateway uses "
                f"{self.embedder.name!r}; configure the same embedding model or re-ingest",
                "embedding_model_mismatch",
                409,
            )
        return col

    # -- lexical leg --------------------------------------------------------------------------
    def _rebuild_lexical(self, tenant: str, col: Any) -> bm25.LexicalIndex:
        data = col.get(include=["documents", "metadatas"])
        version = (col.metadata or {}).get("lpx_version", "")
        index = bm25.build(data["ids"], data["documents"] or [], data["metadatas"] or [], version)
        bm25.save(index, self.bm25_dir / tenant)
        self._lexical[tenant] = index
        return index

    def _lexical_for(self, tenant: str, col: Any) -> bm25.LexicalIndex:
        version = (col.metadata or {}).get("lpx_version", "")
        index = self._lexical.get(tenant)
        if index is None or index.version != version:
            index = bm25.load(self.bm25_dir / tenant)
            if index is None or index.version != version:
                with self._locks[tenant]:
                    index = self._rebuild_lexical(tenant, col)
            self._lexical[tenant] = index
        return index

    # -- ingest -------------------------------------------------------------------------------
    def ingest_documents(
        self, tenant: str, docs: list[Document], progress: bool = False
    ) -> IngestReport:
        """Add or replace documents: unchanged chunks stay, stale ones go, new ones are embedded.

        Work is batched (one lookup, one embedding pass, one upsert per batch of documents):
        per-document round trips made a 10,000-record ingest take minutes.
        """
        report = IngestReport()
        with self._locks[tenant]:
            col = self._collection(tenant, create=True)
            bar = _progress(progress, len(docs))
            try:
                for start in range(0, len(docs), INGEST_BATCH):
                    batch = docs[start : start + INGEST_BATCH]
                    self._ingest_batch(col, batch, report)
                    bar.update(len(batch))
            finally:
                bar.close()
                if report.added or report.removed:
                    col.modify(metadata={**_user_meta(col), "lpx_version": uuid.uuid4().hex})
                    col = self._collection(tenant, create=False)
                # Rebuilt even after a failure part-way: BM25 always mirrors what Chroma holds.
                self._rebuild_lexical(tenant, col)
        return report

    def _ingest_batch(self, col: Any, docs: list[Document], report: IngestReport) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        latest = {doc.doc_id: doc for doc in docs}  # a repeated id: the last one wins
        have = col.get(where={"doc_id": {"$in": list(latest)}}, include=["metadatas"])
        existing: dict[str, set[str]] = defaultdict(set)
        for cid, meta in zip(have["ids"], have["metadatas"], strict=True):
            existing[str(meta["doc_id"])].add(cid)
        new_ids: list[str] = []
        new_texts: list[str] = []
        new_inputs: list[str] = []
        new_metas: list[dict[str, Any]] = []
        stale: list[str] = []
        for doc in latest.values():
            chunks = chunk_text(doc.text, self.chunk_tokens, self.overlap)
            wanted = {chunk_id(doc.source, c.position, c.text): c for c in chunks}
            old = existing.get(doc.doc_id, set())
            report.documents += 1
            report.doc_ids.append(doc.doc_id)
            fresh = [i for i in wanted if i not in old]
            gone = sorted(old - set(wanted))
            if not fresh and not gone:
                report.unchanged += 1
                continue
            stale += gone
            for cid in fresh:
                c = wanted[cid]
                new_ids.append(cid)
                new_texts.append(c.text)
                new_inputs.append(f"{c.heading}\n{c.text}" if c.heading else c.text)
                new_metas.append({**doc.metadata, "doc_id": doc.doc_id, "source": doc.source,
                                  "title": doc.title, "heading": c.heading,
                                  "position": c.position, "ingested_at": now})  # fmt: skip
        if new_ids:
            embeddings = self.embedder.embed(new_inputs)
            for i in range(0, len(new_ids), 1000):  # below Chroma's largest batch
                j = i + 1000
                col.upsert(ids=new_ids[i:j], documents=new_texts[i:j],
                           embeddings=embeddings[i:j], metadatas=new_metas[i:j])  # fmt: skip
            report.added += len(new_ids)
        if stale:
            col.delete(ids=stale)  # only after the new chunks are in: fresh facts replace stale
            report.removed += len(stale)

    def ingest_bytes(self, tenant: str, filename: str, data: bytes) -> IngestReport:
        return self.ingest_documents(tenant, load_bytes(filename, data, self.max_file_bytes))

    def ingest_paths(self, tenant: str, paths: list[Path], progress: bool = False) -> IngestReport:
        docs: list[Document] = []
        for path in _expand(paths):
            docs += load_bytes(str(path), path.read_bytes(), self.max_file_bytes)
        return self.ingest_documents(tenant, docs, progress=progress)

    def ingest_records(self, tenant: str, records: list[Any]) -> IngestReport:
        docs = [record_to_document(r, f"record {i + 1}") for i, r in enumerate(records)]
        return self.ingest_documents(tenant, docs)

    def delete_document(self, tenant: str, doc_id: str) -> int:
        return self._delete(tenant, {"doc_id": doc_id})

    def delete_source(self, tenant: str, source: str) -> int:
        return self._delete(tenant, {"source": source})

    def _delete(self, tenant: str, where: dict[str, str]) -> int:
        with self._locks[tenant]:
            col = self._collection(tenant, create=False)
            if col is None:
                return 0
            ids = col.get(where=where, include=[])["ids"]
            if ids:
                col.delete(ids=ids)
                col.modify(metadata={**_user_meta(col), "lpx_version": uuid.uuid4().hex})
                self._rebuild_lexical(tenant, self._collection(tenant, create=False))
            return len(ids)

    def stats(self, tenant: str) -> dict[str, Any]:
        col = self._collection(tenant, create=False)
        return {"tenant": tenant, "chunks": col.count() if col is not None else 0,
                "embedding_model": self.embedder.name}  # fmt: skip

    # -- search -------------------------------------------------------------------------------
    def search(
        self, tenant: str, query: str, top_k: int = 4, where: dict[str, Any] | None = None,
        mode: str = "hybrid",
    ) -> SearchResult:  # fmt: skip
        """Top-k chunks for `query`; an empty result for a tenant without documents."""
        if mode not in MODES:
            raise RetrievalError(f"mode must be one of {MODES}, got {mode!r}", "invalid_mode")
        if not 1 <= top_k <= 50:
            raise RetrievalError("top_k must be between 1 and 50", "invalid_top_k")
        if where is not None and (
            not isinstance(where, dict)
            or not all(isinstance(v, str | int | float | bool) for v in where.values())
        ):
            raise RetrievalError("where must map metadata fields to plain values", "invalid_filter")
        col = self._collection(tenant, create=False)
        count = col.count() if col is not None else 0
        if not count or not query.strip():
            return SearchResult([], {"top": 0.0, "margin": 0.0})
        pool = max(top_k * 5, 20)
        dense: dict[str, float] = {}
        records: dict[str, tuple[str, dict[str, Any]]] = {}
        if mode in ("hybrid", "dense"):
            res = col.query(
                query_embeddings=self.embedder.embed([query]),
                n_results=min(pool, count),
                where=_chroma_where(where),
                include=["documents", "metadatas", "distances"],
            )
            rows = zip(
                res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0],
                strict=True,
            )  # fmt: skip
            for cid, text, meta, dist in rows:
                dense[cid] = 1.0 - float(dist)
                records[cid] = (text, dict(meta))
        lexical: dict[str, float] = {}
        if mode in ("hybrid", "bm25"):
            index = self._lexical_for(tenant, col)
            lexical = dict(index.search(query, pool, where))
            for cid in lexical:
                if cid not in records and (held := index.record(cid)) is not None:
                    records[cid] = (held[0], dict(held[1]))
            missing = [cid for cid in lexical if cid not in records]
            if missing:
                got = col.get(ids=missing, include=["documents", "metadatas"])
                for cid, text, meta in zip(
                    got["ids"], got["documents"], got["metadatas"], strict=True
                ):
                    records[cid] = (text, dict(meta))
        # A third ranking for exact identifiers (SKU-4471, E1234): chunks holding codes from
        # the query, most codes first. Embeddings blur such tokens and BM25 splits them, so
        # without it a chunk that matches a code exactly can lose to ones that share the prose.
        codes = {c.lower() for c in CODE_RE.findall(query) if len(c) >= 3}
        exact: dict[str, float] = {}
        if codes and mode == "hybrid":
            for cid, (text, _) in records.items():
                found = sum(code in text.lower() for code in codes)
                if found:
                    exact[cid] = float(found)
        legs = [
            sorted(leg, key=leg.__getitem__, reverse=True) for leg in (dense, lexical, exact) if leg
        ]
        fused = rrf(legs)
        hits = []
        for cid in sorted(fused, key=fused.__getitem__, reverse=True)[:top_k]:
            text, meta = records[cid]
            has_code = cid in exact
            hits.append(Hit(
                id=cid, doc_id=str(meta.get("doc_id", "")), source=str(meta.get("source", "")),
                title=str(meta.get("title", "")), text=text,
                score=round(min(1.0, normalised(fused[cid], max(1, len(legs) - bool(exact)))), 4),
                relevance=round(max(dense.get(cid, 0.0), 1.0 if has_code else 0.0), 4),
                dense=round(dense[cid], 4) if cid in dense else None,
                bm25=round(lexical[cid], 4) if cid in lexical else None,
                metadata={k: v for k, v in meta.items() if k not in ("doc_id", "source", "title")},
            ))  # fmt: skip
        best = sorted((h.relevance for h in hits), reverse=True)
        top = best[0] if best else 0.0
        margin = top - best[1] if len(best) > 1 else top
        return SearchResult(hits, {"top": round(top, 4), "margin": round(margin, 4)})


def _chroma_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    if not where:
        return None
    if len(where) == 1:
        return dict(where)
    return {"$and": [{k: v} for k, v in where.items()]}


def _user_meta(col: Any) -> dict[str, Any]:
    # Chroma refuses to change the distance function after creation; pass the rest back.
    return {k: v for k, v in (col.metadata or {}).items() if not k.startswith("hnsw:")}


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            out.append(path)
        else:
            raise RetrievalError(f"{path} does not exist", "file_not_found", 404)
    return out


def _progress(enabled: bool, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="ingesting", unit="doc", disable=not enabled)
