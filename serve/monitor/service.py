"""The monitor: per-tenant drift reports from the stored statistics, for the CLI and the gateway.

Reports read only sums and counters (`drift_buckets`, feedback ratings), so they work with
capture off; the most frequent weakly answered questions are listed only for tenants that
capture prompts (their text is clustered here, at report time, never on the request path).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from adapters.errors import AdapterNotFound
from adapters.registry import AdapterRegistry, AdapterVersion
from serve.feedback.tables import CompletionRow, FeedbackRow
from serve.monitor.drift import Inputs, cluster_questions, summarise
from serve.monitor.stats import BASE, read_buckets
from serve.tenants import Tenant, TenantService

MAX_QUESTIONS = 500  # weak questions clustered per report: the most recent ones


class Embedder(Protocol):
    """Unit-length embeddings."""

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def last_user_text(messages: list[dict[str, Any]] | None) -> str:
    """The text of the last user message of stored messages ('' if none)."""
    for m in reversed(messages or []):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class Monitor:
    """Drift, knowledge gaps, route mix, feedback and grounding per tenant and adapter."""

    def __init__(
        self,
        engine: Engine,
        tenants: TenantService,
        registry: AdapterRegistry,
        *,
        embedder: Embedder | None = None,
        exemplar_vectors: Callable[[AdapterVersion], list[list[float]]] | None = None,
        window_h: float = 24.0,
        bucket_s: int = 3600,
    ) -> None:
        """`exemplar_vectors`: the router's cached exemplar embeddings (else `embedder`)."""
        self.engine = engine
        self.tenants = tenants
        self.registry = registry
        self.embedder = embedder
        self.exemplar_vectors = exemplar_vectors
        self.window = timedelta(hours=window_h)
        self.bucket_s = bucket_s

    def report(
        self,
        tenant: Tenant,
        now: datetime | None = None,
        window_h: float | None = None,
        questions: bool = True,
    ) -> dict[str, Any]:
        """The tenant's report over the recent window (`window_h` hours; default the setting).
        `questions`: cluster the captured weak questions (costs embeddings; not for gauges)."""
        now = now or datetime.now(UTC)
        window = timedelta(hours=window_h) if window_h else self.window
        since = now - 2 * window - timedelta(seconds=self.bucket_s)
        buckets = read_buckets(self.engine, tenant.id, since)
        references = {key: self.reference(key) for key in buckets if key != BASE}
        inputs = Inputs(buckets, references, self._feedback(tenant.id, since))
        if questions and tenant.policy.capture != "off":
            inputs.questions = self.weak_questions(tenant, now - window)
        report = summarise(
            tenant.name,
            inputs,
            tenant.policy.drift,
            now=now,
            window=window,
            bucket_s=self.bucket_s,
            capture=tenant.policy.capture,
        )
        report["capture"] = tenant.policy.capture
        return report

    def reports(self, tenant: str | None = None, window_h: float | None = None) -> list[dict]:
        """Reports of one tenant (by name) or every tenant."""
        chosen = [self.tenants.require(tenant)] if tenant else self.tenants.list()
        return [self.report(t, window_h=window_h) for t in chosen]

    def reference(self, adapter: str) -> np.ndarray | None:
        """The exemplar embeddings of the adapter's prod version (None without any)."""
        try:
            av = self.registry.get(adapter)
        except AdapterNotFound:
            return None
        if not av.exemplars:
            return None
        if self.exemplar_vectors is not None:
            vectors = self.exemplar_vectors(av)
        elif self.embedder is not None:
            vectors = self.embedder.embed(list(av.exemplars))
        else:
            return None
        return np.asarray(vectors, dtype=np.float32) if vectors else None

    def _feedback(self, tenant_id: str, since: datetime) -> list[tuple[datetime, str, bool]]:
        query = select(FeedbackRow.completion_at, FeedbackRow.adapter, FeedbackRow.negative).where(
            FeedbackRow.tenant_id == tenant_id, FeedbackRow.completion_at >= since
        )
        with Session(self.engine) as s:
            rows = s.execute(query).tuples().all()
        return [
            (at if at.tzinfo else at.replace(tzinfo=UTC), (ref or "").partition("@")[0], down)
            for at, ref, down in rows
        ]

    def weak_questions(self, tenant: Tenant, since: datetime) -> list[dict[str, Any]]:
        """The most frequent captured questions whose retrieval was weak, clustered."""
        weak = tenant.policy.drift.weak_retrieval
        query = (
            select(CompletionRow.messages)
            .where(
                CompletionRow.tenant_id == tenant.id,
                CompletionRow.created_at >= since,
                CompletionRow.route.in_(("rag", "combined")),
                CompletionRow.retrieval_top < weak,
                CompletionRow.messages.is_not(None),
            )
            .order_by(CompletionRow.created_at.desc())
            .limit(MAX_QUESTIONS)
        )
        with Session(self.engine) as s:
            texts = [last_user_text(m) for m in s.scalars(query)]
        texts = [t for t in texts if t.strip()]
        if not texts:
            return []
        vectors = None
        if self.embedder is not None:
            vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        return cluster_questions(texts, vectors)
