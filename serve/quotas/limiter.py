"""Quotas enforced before the engine is called, counted in the database every replica shares.

Fixed windows: a clock minute for requests and tokens per minute, a UTC calendar period for the
token budget. Admitting a request is one conditional upsert (`used = used + 1 WHERE used <
limit`, row-locked by the database) plus, where tokens are limited, one read of the token
counters; tokens are added from the answer's usage once it has ended (streams too). Open streams
are leases with an expiry, counted and taken in one transaction.

The in-process fast path is the one that stays correct across replicas: within a fixed window a
counter only grows, so once this process has seen a limit reached it refuses the rest of that
window without asking the database. A tenant without quotas costs nothing at all.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, String, Table, and_, delete, func, literal, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from serve.errors import ServiceError
from serve.lru import LRU
from serve.quotas.tables import QuotaStreamRow, QuotaUsageRow
from serve.tenants import Quotas, Tenant

log = logging.getLogger("loraplex.quotas")

USAGE: Table = QuotaUsageRow.__table__  # type: ignore[assignment]
STREAMS: Table = QuotaStreamRow.__table__  # type: ignore[assignment]
PRUNE_EVERY_S = 300.0


def minute_window(now: float) -> tuple[int, int]:
    """The clock minute holding `now`: (start, end) in epoch seconds."""
    start = int(now) - int(now) % 60
    return start, start + 60


def period_window(period: str, now: float) -> tuple[int, int]:
    """The UTC calendar hour, day, week (from Monday) or month holding `now`."""
    at = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = at.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "week":
        start = (at - timedelta(days=at.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        end = start + timedelta(weeks=1)
    elif period == "month":
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return int(start.timestamp()), int(end.timestamp())


# limit field -> (error code, what the number counts)
LIMITS = {
    "requests_per_minute": ("requests_per_minute_exceeded", "requests per minute"),
    "tokens_per_minute": ("tokens_per_minute_exceeded", "tokens per minute"),
    "concurrent_streams": ("concurrent_streams_exceeded", "streams open at once"),
    "token_budget": ("token_budget_exceeded", "tokens per {period}"),
}


def over_limit(field: str, limit: int, retry_after: float, period: str = "") -> ServiceError:
    """The 429 for one limit: which one, its value, and when to retry (whole seconds, >= 1)."""
    code, unit = LIMITS[field]
    seconds = max(1, math.ceil(retry_after))
    return ServiceError(
        f"Rate limit reached: this tenant may use {limit} {unit.format(period=period)} "
        f"(policy quotas.{field}); retry in {seconds} s.",
        code,
        "rate_limited",
        param=f"quotas.{field}",
        retry_after=seconds,
    )


@dataclass
class Admission:
    """A request let through: what to count once it ends."""

    tenant_id: str
    quotas: Quotas
    stream_id: str | None = None
    lease_until: float = 0.0
    tokens: int = 0  # total tokens of the answer, set when it ends
    done: bool = False


class QuotaLimiter:
    """Admits chat requests under their tenant's quotas and counts what they used."""

    def __init__(
        self,
        engine: Engine,
        *,
        stream_lease_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`engine`: a migrated SQLite or PostgreSQL database; `stream_lease_s`: how long an
        open stream holds its slot before it must renew it (a dead gateway's streams free
        themselves after this)."""
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"quotas need SQLite or PostgreSQL, not {engine.dialect.name}")
        self.engine = engine
        self.stream_lease_s = stream_lease_s
        self.clock = clock
        self._insert: Any = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )
        # (tenant id, limit field, limit value) -> (window end, the error's retry base)
        self._blocked: LRU[tuple[str, str, int], float] = LRU(10_000)
        self._pruned = 0.0

    # -- async facade for the gateway -------------------------------------------------------
    async def admit(self, tenant: Tenant, stream: bool) -> Admission | None:
        """Let the request through (an Admission to `finish`) or raise a rate_limited
        ServiceError; None, at no cost, for a tenant without quotas."""
        if not tenant.policy.quotas.active:
            return None
        return await asyncio.to_thread(self.admit_sync, tenant, stream)

    async def finish(self, admission: Admission | None) -> None:
        """Count the tokens the answer used and free its stream slot (once; never raises:
        the answer has been given, a failed count is logged)."""
        if admission is None or admission.done:
            return
        admission.done = True
        try:
            await asyncio.to_thread(self.finish_sync, admission)
        except Exception:  # noqa: BLE001 - the caller has its answer; never fail it here
            log.exception("could not count the usage of tenant %s", admission.tenant_id)

    async def keep(self, admission: Admission | None) -> None:
        """Renew an open stream's lease when half of it has passed."""
        if admission is None or admission.stream_id is None:
            return
        if self.clock() > admission.lease_until - self.stream_lease_s / 2:
            await asyncio.to_thread(self.renew_sync, admission)

    # -- the database work --------------------------------------------------------------------
    def admit_sync(self, tenant: Tenant, stream: bool) -> Admission:
        """`admit`, in the calling thread."""
        q = tenant.policy.quotas
        now = self.clock()
        self._refuse_if_blocked(tenant.id, q, now)
        admission = Admission(tenant.id, q)
        self._check_tokens(tenant.id, q, now)
        if stream and q.concurrent_streams is not None:
            self._open_stream(admission, q.concurrent_streams, now)
        if q.requests_per_minute is not None:
            try:
                self._count_request(tenant.id, q.requests_per_minute, now)
            except ServiceError:
                self._close_stream(admission)
                raise
        return admission

    def finish_sync(self, admission: Admission) -> None:
        """`finish`, in the calling thread."""
        now = self.clock()
        q = admission.quotas
        rows = []
        if admission.tokens > 0 and q.tokens_per_minute is not None:
            rows.append(("tpm", *minute_window(now), q.tokens_per_minute))
        if admission.tokens > 0 and q.token_budget is not None:
            rows.append(
                (f"budget_{q.budget_period}", *period_window(q.budget_period, now), q.token_budget)
            )
        prune = now - self._pruned > PRUNE_EVERY_S
        if not rows and admission.stream_id is None and not prune:
            return
        with self.engine.begin() as conn:
            if rows:
                stmt = self._insert(USAGE).values(
                    [
                        {
                            "tenant_id": admission.tenant_id,
                            "name": name,
                            "window_start": start,
                            "window_end": end,
                            "used": admission.tokens,
                        }
                        for name, start, end, _ in rows
                    ]
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "name", "window_start"],
                    set_={"used": USAGE.c.used + stmt.excluded.used},
                ).returning(USAGE.c.name, USAGE.c.used)
                used = dict(conn.execute(stmt).tuples().all())
                for name, _, end, limit in rows:
                    if used.get(name, 0) >= limit:
                        field = "tokens_per_minute" if name == "tpm" else "token_budget"
                        self._blocked[(admission.tenant_id, field, limit)] = end
            if admission.stream_id is not None:
                conn.execute(delete(STREAMS).where(STREAMS.c.id == admission.stream_id))
            if prune:
                self._pruned = now
                conn.execute(delete(USAGE).where(USAGE.c.window_end < int(now)))
                conn.execute(delete(STREAMS).where(STREAMS.c.expires_at < now))

    def renew_sync(self, admission: Admission) -> None:
        """Push an open stream's lease further out."""
        admission.lease_until = self.clock() + self.stream_lease_s
        with self.engine.begin() as conn:
            conn.execute(
                STREAMS.update()
                .where(STREAMS.c.id == admission.stream_id)
                .values(expires_at=admission.lease_until)
            )

    def usage(self, tenant_id: str) -> dict[str, int]:
        """The tenant's counters in their current windows, and its open streams (for tests,
        operators and benchmarks)."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(USAGE.c.name, USAGE.c.used).where(
                    USAGE.c.tenant_id == tenant_id, USAGE.c.window_end > int(now)
                )
            ).tuples()
            out = dict(rows.all())
            out["streams"] = conn.execute(
                select(func.count())
                .select_from(STREAMS)
                .where(STREAMS.c.tenant_id == tenant_id, STREAMS.c.expires_at > now)
            ).scalar_one()
        return out

    def _refuse_if_blocked(self, tenant_id: str, q: Quotas, now: float) -> None:
        for field in ("requests_per_minute", "tokens_per_minute", "token_budget"):
            limit = getattr(q, field)
            if limit is None:
                continue
            until = self._blocked.get((tenant_id, field, limit))
            if until is not None and until > now:
                raise over_limit(field, limit, until - now, q.budget_period)

    def _check_tokens(self, tenant_id: str, q: Quotas, now: float) -> None:
        """Refuse once the minute's (or the period's) tokens have reached their limit: a
        request's size is known only after it is answered, so the last one may go over."""
        wanted = []
        if q.tokens_per_minute is not None:
            wanted.append(("tpm", *minute_window(now), q.tokens_per_minute, "tokens_per_minute"))
        if q.token_budget is not None:
            name = f"budget_{q.budget_period}"
            wanted.append(
                (name, *period_window(q.budget_period, now), q.token_budget, "token_budget")
            )
        if not wanted:
            return
        with self.engine.connect() as conn:
            used = dict(
                conn.execute(
                    select(USAGE.c.name, USAGE.c.used).where(
                        USAGE.c.tenant_id == tenant_id,
                        or_(
                            *(
                                and_(USAGE.c.name == name, USAGE.c.window_start == start)
                                for name, start, *_ in wanted
                            )
                        ),
                    )
                )
                .tuples()
                .all()
            )
        for name, _, end, limit, field in wanted:
            if used.get(name, 0) >= limit:
                self._blocked[(tenant_id, field, limit)] = end
                raise over_limit(field, limit, end - now, q.budget_period)

    def _count_request(self, tenant_id: str, limit: int, now: float) -> None:
        start, end = minute_window(now)
        stmt = self._insert(USAGE).values(
            tenant_id=tenant_id, name="rpm", window_start=start, window_end=end, used=1
        )
        # Row-locked by the database: two replicas counting at once both see the other's +1,
        # and a refused request is not counted.
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "name", "window_start"],
            set_={"used": USAGE.c.used + 1},
            where=USAGE.c.used < limit,
        ).returning(USAGE.c.used)
        with self.engine.begin() as conn:
            used = conn.execute(stmt).scalar_one_or_none()
        if used is None or used >= limit:
            # Full now: the rest of this minute is refused here without a query.
            self._blocked[(tenant_id, "requests_per_minute", limit)] = end
        if used is None:
            raise over_limit("requests_per_minute", limit, end - now)

    def _open_stream(self, admission: Admission, limit: int, now: float) -> None:
        stream_id = uuid.uuid4().hex
        expires = now + self.stream_lease_s
        count = (
            select(func.count())
            .select_from(STREAMS)
            .where(STREAMS.c.tenant_id == admission.tenant_id, STREAMS.c.expires_at > now)
            .scalar_subquery()
        )
        take = (
            STREAMS.insert()
            .from_select(
                ["id", "tenant_id", "expires_at"],
                select(
                    literal(stream_id, String),
                    literal(admission.tenant_id, String),
                    literal(expires),
                ).where(count < limit),
            )
            .returning(STREAMS.c.id)
        )
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Count-then-insert is one statement, but PostgreSQL's snapshot would let two
                # replicas both see room for one: serialize per tenant for this transaction.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(admission.tenant_id)}
                )
            taken = conn.execute(take).scalar_one_or_none()  # rowcount is -1 on psycopg
        if taken is None:
            raise over_limit("concurrent_streams", limit, 1)
        admission.stream_id = stream_id
        admission.lease_until = expires

    def _close_stream(self, admission: Admission) -> None:
        if admission.stream_id is None:
            return
        with self.engine.begin() as conn:
            conn.execute(delete(STREAMS).where(STREAMS.c.id == admission.stream_id))
        admission.stream_id = None


def _lock_key(tenant_id: str) -> int:
    """A signed 64-bit advisory lock key for one tenant's streams."""
    return int.from_bytes(
        hashlib.sha256(b"streams:" + tenant_id.encode()).digest()[:8], signed=True
    )
