"""Canary rollouts in the registry: which version takes a share of an adapter's traffic.

A canary is recorded per adapter name: the version on trial, the prod version it is compared
with, the share of traffic it takes (1-99 %), the criteria its judge applies (opaque here: the
serving side defines them) and its state. At most one canary per adapter is `running`; it ends
`completed` (its version was promoted), `rolled_back` (judged worse, or stopped by hand) or
`cancelled` (prod moved elsewhere, or its version was removed). Ended canaries are kept as
history. The registry only records; routing a share of requests and judging happen in `serve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.errors import AdapterConflict, AdapterError
from adapters.models import AdapterRow, CanaryRow

RUNNING = "running"
ENDED = ("completed", "rolled_back", "cancelled")


@dataclass(frozen=True)
class Canary:
    """One canary rollout, as callers see it."""

    id: int
    name: str
    version: int
    prod_version: int
    percent: int
    criteria: dict[str, Any]
    state: str
    reason: str | None
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def ref(self) -> str:
        """`NAME@N` of the version on trial."""
        return f"{self.name}@{self.version}"

    @property
    def prod_ref(self) -> str:
        """`NAME@N` of the prod version it is compared with."""
        return f"{self.name}@{self.prod_version}"

    @property
    def running(self) -> bool:
        """Whether it still takes traffic."""
        return self.state == RUNNING

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "canary": self.ref,
            "prod": self.prod_ref,
            "percent": self.percent,
            "criteria": self.criteria,
            "state": self.state,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
        }


def check_percent(percent: Any) -> int:
    """`percent` if it is a whole number from 1 to 99, else an AdapterError that says so."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
        raise AdapterError(
            f"a canary takes 1 to 99 percent of the traffic, got {percent!r} (100 is a "
            "promotion: `adapters promote NAME@V` without --canary)",
            "invalid_canary_percent",
        )
    return percent


def to_canary(row: CanaryRow) -> Canary:
    """The frozen view of a row."""
    return Canary(
        id=row.id,
        name=row.name,
        version=row.version,
        prod_version=row.prod_version,
        percent=row.percent,
        criteria=dict(row.criteria or {}),
        state=row.state,
        reason=row.reason,
        started_at=_aware(row.started_at),
        ended_at=_aware(row.ended_at) if row.ended_at else None,
    )


def _aware(when: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def running_row(s: Session, name: str) -> CanaryRow | None:
    """The running canary of `name`, if any."""
    query = select(CanaryRow).where(CanaryRow.name == name, CanaryRow.state == RUNNING)
    return s.scalars(query.order_by(CanaryRow.id.desc()).limit(1)).first()


def start(
    s: Session, row: AdapterRow, version: int, percent: int, criteria: dict[str, Any]
) -> CanaryRow:
    """Record a running canary of `row`'s `version`; a canary already running for the adapter
    is cancelled (the new one replaces it)."""
    check_percent(percent)
    prod = row.prod_history[-1] if row.prod_history else None
    if prod is None or prod == version:
        raise AdapterConflict(
            f"{row.name}@{version} is already prod: a canary tries a version that is not",
            "already_prod",
        )
    now = datetime.now(UTC)
    current = running_row(s, row.name)
    if current is not None:
        end(current, "cancelled", f"replaced by a canary of {row.name}@{version}", now)
    canary = CanaryRow(
        name=row.name,
        version=version,
        prod_version=prod,
        percent=percent,
        criteria=dict(criteria),
        state=RUNNING,
        started_at=now,
    )
    s.add(canary)
    return canary


def end(row: CanaryRow, state: str, reason: str, when: datetime | None = None) -> None:
    """Mark a running canary ended."""
    if state not in ENDED:
        raise ValueError(f"a canary ends {ENDED}, not {state!r}")
    row.state = state
    row.reason = reason
    row.ended_at = when or datetime.now(UTC)


def settle_on_promote(s: Session, name: str, version: int) -> None:
    """Promoting the canary's version completes it; promoting any other cancels it."""
    current = running_row(s, name)
    if current is None:
        return
    if current.version == version:
        end(current, "completed", f"promoted to prod ({current.percent}% before)")
    else:
        end(current, "cancelled", f"{name}@{version} was promoted instead")
