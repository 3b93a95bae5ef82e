"""Drift statistics: running sums per tenant, adapter and time bucket, never text.

One row per (tenant id, adapter name or '' for the base model, bucket start). Every gateway adds
its counts to the row of the bucket they fall in, so replicas sum up. The embedding sum is a
float64 vector in bytes (a mean vector is the sum over the count). Schema: alembic revision
0004_feedback_drift; rows older than the tenant's retention are deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from serve.tenants.tables import Base


class DriftBucketRow(Base):
    __tablename__ = "drift_buckets"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    adapter: Mapped[str] = mapped_column(String(63), primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    routes: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    vec_n: Mapped[int] = mapped_column(Integer, default=0)
    vec_sum: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sim_n: Mapped[int] = mapped_column(Integer, default=0)
    sim_sum: Mapped[float] = mapped_column(Float, default=0.0)
    sim_hist: Mapped[list[int]] = mapped_column(JSON, default=list)
    rag_n: Mapped[int] = mapped_column(Integer, default=0)
    weak_n: Mapped[int] = mapped_column(Integer, default=0)
    grounded_n: Mapped[int] = mapped_column(Integer, default=0)
    grounded_sum: Mapped[float] = mapped_column(Float, default=0.0)
