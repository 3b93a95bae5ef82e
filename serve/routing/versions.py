"""Calibrated router versions per tenant: stored, numbered, made current, rolled back.

A tenant starts on its policy's thresholds (version label "thresholds"). Each
`loraplex router calibrate` stores a new version (`vN`, numbered from 1 per tenant, never given
out twice) and makes it current; `router rollback` returns to the one before, down to the
thresholds. Tables (alembic revision 0002_router_versions):

    router_versions(tenant, version, kind, params, report, created_at)  PK (tenant, version)
    router_active(tenant PK, history, next_version, updated_at)

`history` lists version numbers, the last in use ([] = the policy's thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from serve.errors import ServiceError
from serve.tenants.tables import Base

THRESHOLDS = "thresholds"


class RouterVersionRow(Base):
    __tablename__ = "router_versions"

    tenant: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.name", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RouterActiveRow(Base):
    __tablename__ = "router_active"

    tenant: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.name", ondelete="CASCADE"), primary_key=True
    )
    history: Mapped[list[int]] = mapped_column(JSON)
    next_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class RouterVersion:
    """One stored router: its number, kind, parameters and calibration report."""

    tenant: str
    version: int
    kind: str
    params: dict[str, Any]
    report: dict[str, Any]
    created_at: datetime
    current: bool = False

    @property
    def label(self) -> str:
        """`vN`, as responses name it."""
        return f"v{self.version}"


def _to_version(row: RouterVersionRow, current: int | None) -> RouterVersion:
    return RouterVersion(
        row.tenant,
        row.version,
        row.kind,
        dict(row.params),
        dict(row.report),
        row.created_at,
        current=row.version == current,
    )


class RouterVersions:
    """Read and write a tenant's router versions (a migrated database)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def current_number(self, tenant: str) -> int | None:
        """The version in use (None: the policy's thresholds). One primary-key read."""
        with Session(self.engine) as s:
            row = s.get(RouterActiveRow, tenant)
            return row.history[-1] if row is not None and row.history else None

    def current(self, tenant: str) -> RouterVersion | None:
        """The version in use, or None for the policy's thresholds."""
        with Session(self.engine) as s:
            active = s.get(RouterActiveRow, tenant)
            if active is None or not active.history:
                return None
            row = s.get(RouterVersionRow, (tenant, active.history[-1]))
            return _to_version(row, active.history[-1]) if row is not None else None

    def get(self, tenant: str, version: int) -> RouterVersion | None:
        """One stored version, or None."""
        with Session(self.engine) as s:
            row = s.get(RouterVersionRow, (tenant, version))
            return _to_version(row, self.current_number(tenant)) if row is not None else None

    def list(self, tenant: str) -> list[RouterVersion]:
        """Every stored version of `tenant`, oldest first."""
        current = self.current_number(tenant)
        with Session(self.engine) as s:
            rows = s.scalars(
                select(RouterVersionRow)
                .where(RouterVersionRow.tenant == tenant)
                .order_by(RouterVersionRow.version)
            )
            return [_to_version(r, current) for r in rows]

    def add(
        self, tenant: str, kind: str, params: dict[str, Any], report: dict[str, Any]
    ) -> RouterVersion:
        """Store a new version and make it current."""
        now = datetime.now(UTC)
        with Session(self.engine) as s:
            active = s.get(RouterActiveRow, tenant)
            if active is None:
                active = RouterActiveRow(tenant=tenant, history=[], next_version=1, updated_at=now)
                s.add(active)
            number = active.next_version
            row = RouterVersionRow(
                tenant=tenant,
                version=number,
                kind=kind,
                params=params,
                report=report,
                created_at=now,
            )
            s.add(row)
            active.history = [*active.history, number]
            active.next_version = number + 1
            active.updated_at = now
            s.commit()
            return _to_version(row, number)

    def rollback(self, tenant: str) -> RouterVersion | None:
        """Return to the version used before the current one (None: the policy's thresholds)."""
        with Session(self.engine) as s:
            active = s.get(RouterActiveRow, tenant)
            if active is None or not active.history:
                raise ServiceError(
                    f"tenant {tenant!r} uses its policy's thresholds: there is no calibrated "
                    "router to roll back (`loraplex router calibrate` makes one)",
                    "nothing_to_roll_back",
                    "conflict",
                )
            history = list(active.history[:-1])
            existing = set(
                s.scalars(select(RouterVersionRow.version).where(RouterVersionRow.tenant == tenant))
            )
            while history and history[-1] not in existing:
                history.pop()
            active.history = history
            active.updated_at = datetime.now(UTC)
            s.commit()
            if not history:
                return None
            row = s.get(RouterVersionRow, (tenant, history[-1]))
            assert row is not None
            return _to_version(row, history[-1])
