"""Registry tables. Their schema is owned by the alembic migrations in adapters/migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the registry's tables (separate from serve's)."""


class AdapterRow(Base):
    __tablename__ = "adapters"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    shared_with: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Versions that have been prod, oldest first; the last one is the current prod ([]: none
    # yet, e.g. a first version registered without promotion after a NO-GO evaluation).
    prod_history: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    versions: Mapped[list[VersionRow]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan", order_by="VersionRow.version"
    )
    canaries: Mapped[list[CanaryRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="CanaryRow.id"
    )


class VersionRow(Base):
    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(ForeignKey("adapters.name", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    base_model: Mapped[str] = mapped_column(String(200))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    target_modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dataset_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    training_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    eval_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    exemplars: Mapped[list[str]] = mapped_column(JSON, default=list)
    forced: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    adapter: Mapped[AdapterRow] = relationship(back_populates="versions")


class VersionCounterRow(Base):
    """The highest version number a name has used. Kept when the adapter is removed, so a
    number (and with it a served name, `NAME-vN`) is never given to different weights."""

    __tablename__ = "adapter_version_counters"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class CanaryRow(Base):
    """A canary rollout: `version` takes `percent` of the traffic for `name` while `prod_version`
    keeps the rest, until it is completed (promoted), rolled back or cancelled."""

    __tablename__ = "adapter_canaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(ForeignKey("adapters.name", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    prod_version: Mapped[int] = mapped_column(Integer)
    percent: Mapped[int] = mapped_column(Integer)
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # running, completed, rolled_back or cancelled
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
