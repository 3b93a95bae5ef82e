"""The production loop's tables: what each chat completion did, and the feedback on it.

`completions` holds one row per chat completion (and per failed one, under an `err-` id nobody
is given): the facts of the request (tenant id, route, adapter version, router version, status,
latency, sources, grounding, retrieval strength), and its text only where the tenant's policy
captures it. Rows are kept for the tenant's `retention_days`. `feedback` holds at most one
rating per completion, keyed by the completion's id. Both belong to the tenant's immutable id
and go with it (ON DELETE CASCADE, and `TenantAdmin.delete` deletes them explicitly first).
Schema: alembic revision 0004_feedback_drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from serve.tenants.tables import Base


class CompletionRow(Base):
    __tablename__ = "completions"
    __table_args__ = (
        Index("ix_completions_tenant_created", "tenant_id", "created_at"),
        Index("ix_completions_adapter_created", "adapter", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(200))  # what the caller asked for
    route: Mapped[str | None] = mapped_column(String(16), nullable=True)
    adapter: Mapped[str | None] = mapped_column(String(80), nullable=True)  # NAME@N
    router_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    source_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    grounded: Mapped[float | None] = mapped_column(Float, nullable=True)
    retrieval_top: Mapped[float | None] = mapped_column(Float, nullable=True)
    capture: Mapped[str] = mapped_column(String(8), default="off")
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)


class FeedbackRow(Base):
    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the completion's id
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rating: Mapped[str] = mapped_column(String(8))  # up, down, or 1-5
    score: Mapped[float] = mapped_column(Float)  # 0 (worst) to 1 (best)
    negative: Mapped[bool] = mapped_column(Boolean)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Copied from the completion: feedback outlives nothing, but reads need no join.
    route: Mapped[str | None] = mapped_column(String(16), nullable=True)
    adapter: Mapped[str | None] = mapped_column(String(80), nullable=True)
    router_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    completion_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
