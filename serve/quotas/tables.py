"""The quota tables. Schema: alembic revision 0005_quotas.

`quota_usage` holds one counter per tenant, limit and fixed window (a clock minute, or the UTC
calendar period of a token budget), bumped in one statement by whichever gateway replica served
the request; rows of past windows are pruned. `quota_streams` holds one lease per open stream,
with an expiry so that a gateway that dies with streams open does not hold them forever.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from serve.tenants.tables import Base


class QuotaUsageRow(Base):
    __tablename__ = "quota_usage"
    __table_args__ = (Index("ix_quota_usage_window_end", "window_end"),)

    tenant_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    # "rpm", "tpm" or "budget_<period>"
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds
    window_end: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(BigInteger)


class QuotaStreamRow(Base):
    __tablename__ = "quota_streams"
    __table_args__ = (Index("ix_quota_streams_tenant", "tenant_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id", ondelete="CASCADE"))
    expires_at: Mapped[float] = mapped_column(Float)  # epoch seconds
