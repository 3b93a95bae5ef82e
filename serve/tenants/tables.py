"""The tenants' tables. Their schema is owned by the alembic migrations in serve/migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of serve's tables (the registry's live in adapters.models)."""


class TenantRow(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # What the tenant's adapters, documents and feedback belong to: never given out twice, so a
    # tenant created later under the same name inherits nothing. (Tenants from before ids were
    # kept have their name as id, which is what their data was keyed by.)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    keys: Mapped[list[ApiKeyRow]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan"
    )


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    tenant_name: Mapped[str] = mapped_column(ForeignKey("tenants.name", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tenant: Mapped[TenantRow] = relationship(back_populates="keys")
