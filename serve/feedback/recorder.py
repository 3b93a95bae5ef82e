"""What the gateway remembers of each chat completion, written off the request path.

On the request path a `Trace` collects the completion's id and grounding (and, only where the
tenant's policy captures, the answer's text); when the request ends it becomes a `Record` in an
in-memory queue: a few microseconds. `Recorder.flush()` (every few seconds, from the gateway's
production loop) then does the work: redacts captured text with the curation's PII pass, writes
the records in one transaction, and folds each request into the drift statistics (its query
embedding, taken from the router's cache, its similarity to the serving adapter's exemplars,
weak retrieval, grounding). Feedback looking for a completion not yet written calls `write()`,
the first half only.

With capture off no text is written anywhere: the query stays in memory only until its
embedding is known (the router's cached vector, or one computed here when the request named its
model and nothing embedded the query).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from adapters.registry import AdapterVersion
from serve.chat.protocol import ChatCompletionRequest
from serve.feedback.service import utcnow
from serve.feedback.tables import CompletionRow
from serve.monitor.drift import closest_similarity
from serve.monitor.stats import BASE, Accumulator, write_buckets
from serve.routing import Decision
from serve.tenants import Tenant
from training.pii import redact

log = logging.getLogger("loraplex.feedback")
RAG_ROUTES = ("rag", "combined")
EMBED_BATCH = 8  # the embedder caches calls this small; larger ones are ingest-sized


class Embedder(Protocol):
    """The router's embedder: embeds, and says what it already holds."""

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def cached(self, text: str) -> list[float] | None: ...


@dataclass
class Record:
    """One finished request, waiting to be written."""

    id: str
    tenant: Tenant
    created_at: datetime
    model: str
    status: int
    latency_ms: float
    decision: Decision | None
    source_ids: list[str]
    grounded: float | None
    query: str = ""  # only until the embedding is known
    vector: list[float] | None = None
    request: ChatCompletionRequest | None = None  # only when the tenant captures
    answer: str | None = None  # only when the tenant captures

    @property
    def adapter(self) -> AdapterVersion | None:
        """The adapter version that served it, if one did."""
        return self.decision.adapter if self.decision is not None else None


class Trace:
    """One request's facts while it runs (see the module docstring)."""

    def __init__(self, recorder: Recorder, tenant: Tenant, req: ChatCompletionRequest) -> None:
        self.recorder = recorder
        self.tenant = tenant
        self.req = req
        self.capture = tenant.policy.capture != "off"
        self.id: str | None = None
        self.grounded: float | None = None
        self._parts: list[str] = []

    def chunk(self, chunk: dict[str, Any]) -> None:
        """A streamed chunk as it is sent."""
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        self._grounding(chunk)
        if self.capture:
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) == 0:
                    text = (choice.get("delta") or {}).get("content")
                    if isinstance(text, str):
                        self._parts.append(text)

    def body(self, body: dict[str, Any]) -> None:
        """A whole (non-streamed) response."""
        if isinstance(body.get("id"), str):
            self.id = body["id"]
        self._grounding(body)
        if self.capture:
            choices = body.get("choices") or [{}]
            text = (choices[0].get("message") or {}).get("content")
            self._parts = [text] if isinstance(text, str) else []

    def _grounding(self, payload: dict[str, Any]) -> None:
        value = (payload.get("loraplex") or {}).get("grounded")
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.grounded = float(value)

    def finish(
        self,
        status: int,
        decision: Decision | None,
        seconds: float,
        citations: list[dict[str, Any]] | None = None,
    ) -> str | None:
        """Queue the request's record; returns the id it is kept under (None: not kept)."""
        if decision is None and status != 200:
            return None  # refused before routing: nothing served, nothing to learn from
        rid = self.id if status == 200 and self.id else f"err-{uuid.uuid4().hex}"
        query = self.req.last_user_text()
        vector = self.recorder.cached_vector(query)
        self.recorder.submit(
            Record(
                id=rid,
                tenant=self.tenant,
                created_at=utcnow(),
                model=self.req.model,
                status=status,
                latency_ms=round(seconds * 1000, 1),
                decision=decision,
                source_ids=[str(c["id"]) for c in citations or [] if c.get("id") is not None],
                grounded=self.grounded,
                query=query if vector is None else "",
                vector=vector,
                request=self.req if self.capture else None,
                answer="".join(self._parts) if self.capture else None,
            )
        )
        return rid


@dataclass
class RecorderStats:
    """Counters for the metrics and the benchmark."""

    written: int = 0
    dropped: int = 0
    embedded: int = 0
    failed_flushes: int = 0
    touched: set[str] = field(default_factory=set)  # tenant ids with new statistics


class Recorder:
    """The queue of finished requests and the background work on them."""

    def __init__(
        self,
        engine: Engine,
        *,
        accumulator: Accumulator | None = None,
        embedder: Embedder | None = None,
        exemplar_vectors: Callable[[AdapterVersion], list[list[float]]] | None = None,
        embed_missing: bool = True,
        max_pending: int = 10_000,
    ) -> None:
        """`embed_missing`: embed queries nothing else embedded (for drift); `max_pending`:
        records kept waiting at most (beyond, new ones are dropped and counted)."""
        self.engine = engine
        self.accumulator = accumulator or Accumulator()
        self.embedder = embedder
        self.exemplar_vectors = exemplar_vectors
        self.embed_missing = embed_missing
        self.max_pending = max_pending
        self.stats = RecorderStats()
        self._pending: deque[Record] = deque()
        self._lock = threading.Lock()
        self._written: list[Record] = []  # rows written, statistics not folded yet
        self._write_lock = threading.Lock()
        self._fold_lock = threading.Lock()
        self._exemplars: dict[str, np.ndarray] = {}  # served name -> exemplar embeddings

    def trace(self, tenant: Tenant, req: ChatCompletionRequest) -> Trace:
        """A trace for one request."""
        return Trace(self, tenant, req)

    def cached_vector(self, text: str) -> list[float] | None:
        """The query's embedding if the router computed it (never computed here)."""
        if self.embedder is None or not text.strip():
            return None
        return self.embedder.cached(text)

    def submit(self, record: Record) -> None:
        """Queue a record (the request path: no I/O)."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.stats.dropped += 1
                return
            self._pending.append(record)

    def queued(self) -> int:
        """Records waiting to be written."""
        return len(self._pending)

    def pending(self) -> int:
        """Records waiting to be written or folded."""
        return len(self._pending) + len(self._written)

    def take_touched(self) -> set[str]:
        """Tenant ids whose statistics changed since the last call."""
        with self._lock:
            touched, self.stats.touched = self.stats.touched, set()
        return touched

    def write(self) -> int:
        """Write the queued records' rows now; how many. Their drift statistics follow at the
        next `flush` (feedback looking for a fresh completion needs only the row)."""
        with self._write_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if not batch:
                return 0
            try:
                self._write(batch)
            except OperationalError as exc:  # busy or unreachable: keep them for the next try
                log.warning("request records not written yet (%s); will retry", exc.orig)
                self.stats.failed_flushes += 1
                with self._lock:
                    room = self.max_pending - len(self._pending)
                    self._pending.extendleft(reversed(batch[:room]))
                return 0
            with self._lock:
                self._written.extend(batch)
            self.stats.written += len(batch)
            return len(batch)

    def flush(self) -> int:
        """Write every queued record and fold the written ones into the drift statistics (the
        queries nobody embedded are embedded here); how many were folded."""
        self.write()
        with self._fold_lock:
            with self._lock:
                batch = list(self._written)
                self._written.clear()
            if not batch:
                return 0
            self._embed(batch)
            for record in batch:
                self._fold(record)
                record.query, record.request = "", None  # nothing of the text outlives this
            try:
                write_buckets(self.engine, self.accumulator.drain())
            except (IntegrityError, OperationalError) as exc:
                log.warning("drift statistics not written: %s", exc.orig)
            with self._lock:
                self.stats.touched.update(r.tenant.id for r in batch)
            return len(batch)

    def _embed(self, batch: list[Record]) -> None:
        """Vectors for the records whose query nobody embedded (the request named its model)."""
        missing = [r for r in batch if r.vector is None and r.query.strip()]
        if self.embedder is None or not missing:
            return
        for r in missing:  # embedded meanwhile (the same question asked again)
            r.vector = self.embedder.cached(r.query)
        missing = [r for r in missing if r.vector is None]
        if not self.embed_missing or not missing:
            return
        texts = list(dict.fromkeys(r.query for r in missing))
        vectors: dict[str, list[float]] = {}
        for i in range(0, len(texts), EMBED_BATCH):
            part = texts[i : i + EMBED_BATCH]
            vectors.update(zip(part, self.embedder.embed(part), strict=True))
        self.stats.embedded += len(texts)
        for r in missing:
            r.vector = vectors.get(r.query)

    def _write(self, batch: list[Record]) -> None:
        rows = [self._row(r) for r in batch if r.status == 200 or r.decision is not None]
        if not rows:
            return
        statement = insert(CompletionRow)
        try:
            # One executemany in one transaction: ORM objects would cost ~10x as much per row.
            with self.engine.begin() as conn:
                conn.execute(statement, rows)
        except IntegrityError:
            # A tenant deleted meanwhile, or an id seen twice: write the others one by one.
            for row in rows:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(statement, [row])
                except IntegrityError:
                    pass

    @staticmethod
    def _row(r: Record) -> dict[str, Any]:
        d = r.decision
        capture = r.tenant.policy.capture
        messages, answer = None, None
        if capture != "off" and r.request is not None:
            messages = [m.model_dump(exclude_none=True) for m in r.request.messages]
            answer = r.answer
            if capture == "redacted":
                messages = [_redact_message(m) for m in messages]
                answer = redact(answer)[0] if answer else answer
        return {
            "id": r.id,
            "tenant_id": r.tenant.id,
            "created_at": r.created_at,
            "model": r.model[:200],
            "route": d.route if d is not None else None,
            "adapter": d.adapter_ref if d is not None else None,
            "router_version": d.router_version if d is not None else None,
            "status": r.status,
            "latency_ms": r.latency_ms,
            "source_ids": r.source_ids,
            "grounded": r.grounded,
            "retrieval_top": _retrieval_top(d),
            "capture": capture,
            "messages": messages,
            "answer": answer,
        }

    def _exemplar_matrix(self, av: AdapterVersion) -> np.ndarray | None:
        """The version's exemplar embeddings as one array (versions never change: kept)."""
        found = self._exemplars.get(av.served_name)
        if found is None and self.exemplar_vectors is not None:
            vectors = self.exemplar_vectors(av)
            if vectors:
                found = self._exemplars[av.served_name] = np.asarray(vectors, dtype=np.float32)
        return found

    def _fold(self, r: Record) -> None:
        d = r.decision
        av = r.adapter
        route = d.route if d is not None else None
        top = _retrieval_top(d)
        similarity = None
        vector = None if r.vector is None else np.asarray(r.vector, dtype=np.float64)
        if av is not None and vector is not None and av.exemplars:
            exemplars = self._exemplar_matrix(av)
            if exemplars is not None:
                similarity = closest_similarity(vector, exemplars)
        self.accumulator.add(
            r.tenant.id,
            av.name if av is not None else BASE,
            r.created_at,
            status=r.status,
            latency_ms=r.latency_ms,
            route=route,
            vector=vector,
            similarity=similarity,
            rag=route in RAG_ROUTES,
            weak=top is not None and top < r.tenant.policy.drift.weak_retrieval,
            grounded=r.grounded,
        )


def _retrieval_top(d: Decision | None) -> float | None:
    """The best retrieval score of a rag/combined request (0 when nothing was found)."""
    if d is None or d.route not in RAG_ROUTES:
        return None
    return float(d.scores.get("retrieval_top") or 0.0)


def _redact_message(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = redact(content)[0]
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = redact(part["text"])[0]
    return message
