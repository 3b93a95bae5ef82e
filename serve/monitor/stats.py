"""Running statistics of traffic per tenant, adapter and time bucket: sums, never text.

Per request: a count, errors, latency, the route, the query's embedding (added to a sum: a mean
vector is the sum over the count), its similarity to the serving adapter's exemplars (a sum and
a histogram), whether a rag request found weak retrieval, and the answer's grounding score. A
gateway folds requests into `Accumulator` in memory and adds the buckets to the database
(`write_buckets`) every few seconds, so several replicas sum up and the cost per request is a
vector addition.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from serve.monitor.tables import DriftBucketRow

HIST_BINS = 10  # similarity histogram over [0, 1]; below 0 counts in the first bin
BASE = ""  # the adapter key of requests the base model answered
Key = tuple[str, str, datetime]  # (tenant id, adapter name or BASE, bucket start)


@dataclass
class BucketStats:
    """Sums over the requests of one bucket (or of several, merged)."""

    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    routes: Counter[str] = field(default_factory=Counter)
    vec_n: int = 0
    vec_sum: np.ndarray | None = None
    sim_n: int = 0
    sim_sum: float = 0.0
    sim_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))
    rag_n: int = 0
    weak_n: int = 0
    grounded_n: int = 0
    grounded_sum: float = 0.0

    def add(
        self,
        *,
        status: int,
        latency_ms: float,
        route: str | None,
        vector: Any = None,
        similarity: float | None = None,
        rag: bool = False,
        weak: bool = False,
        grounded: float | None = None,
    ) -> None:
        """Fold one request in."""
        self.requests += 1
        self.errors += status >= 500
        self.latency_ms_sum += latency_ms
        self.routes[route or "unrouted"] += 1
        if vector is not None:
            v = np.asarray(vector, dtype=np.float64)
            if self.vec_sum is None:
                self.vec_sum = v.copy()
            else:
                self.vec_sum += v
            self.vec_n += 1
        if similarity is not None:
            self.sim_n += 1
            self.sim_sum += similarity
            self.sim_hist[hist_bin(similarity)] += 1
        self.rag_n += rag
        self.weak_n += rag and weak
        if grounded is not None:
            self.grounded_n += 1
            self.grounded_sum += grounded

    def merge(self, other: BucketStats) -> BucketStats:
        """Add `other`'s sums to these (in place); returns self."""
        self.requests += other.requests
        self.errors += other.errors
        self.latency_ms_sum += other.latency_ms_sum
        self.routes.update(other.routes)
        if other.vec_sum is not None:
            if self.vec_sum is None or len(self.vec_sum) != len(other.vec_sum):
                # A new embedding model changes the dimension: keep the newer statistics only.
                self.vec_sum, self.vec_n = other.vec_sum.copy(), other.vec_n
            else:
                self.vec_sum = self.vec_sum + other.vec_sum
                self.vec_n += other.vec_n
        self.sim_n += other.sim_n
        self.sim_sum += other.sim_sum
        self.sim_hist = self.sim_hist + other.sim_hist
        self.rag_n += other.rag_n
        self.weak_n += other.weak_n
        self.grounded_n += other.grounded_n
        self.grounded_sum += other.grounded_sum
        return self

    @property
    def mean_vector(self) -> np.ndarray | None:
        """The mean query embedding, or None without any."""
        return None if self.vec_sum is None or not self.vec_n else self.vec_sum / self.vec_n

    @property
    def similarity(self) -> float | None:
        """Mean similarity of the queries to the adapter's exemplars."""
        return self.sim_sum / self.sim_n if self.sim_n else None

    @property
    def gap_rate(self) -> float | None:
        """Share of rag/combined requests whose retrieval was weak."""
        return self.weak_n / self.rag_n if self.rag_n else None

    @property
    def grounded(self) -> float | None:
        """Mean grounding score of the answers that had one."""
        return self.grounded_sum / self.grounded_n if self.grounded_n else None

    @property
    def error_rate(self) -> float | None:
        """Share of requests that failed on our side (5xx)."""
        return self.errors / self.requests if self.requests else None

    @classmethod
    def from_row(cls, row: DriftBucketRow) -> BucketStats:
        """The statistics a stored bucket holds."""
        hist = np.zeros(HIST_BINS, dtype=np.int64)
        stored = list(row.sim_hist or [])[:HIST_BINS]
        hist[: len(stored)] = stored
        return cls(
            requests=row.requests,
            errors=row.errors,
            latency_ms_sum=row.latency_ms_sum,
            routes=Counter(row.routes or {}),
            vec_n=row.vec_n,
            vec_sum=np.frombuffer(row.vec_sum, dtype=np.float64).copy() if row.vec_sum else None,
            sim_n=row.sim_n,
            sim_sum=row.sim_sum,
            sim_hist=hist,
            rag_n=row.rag_n,
            weak_n=row.weak_n,
            grounded_n=row.grounded_n,
            grounded_sum=row.grounded_sum,
        )

    def store(self, row: DriftBucketRow) -> None:
        """Write these statistics into `row` (replacing what it held)."""
        row.requests, row.errors, row.latency_ms_sum = (
            self.requests,
            self.errors,
            self.latency_ms_sum,
        )
        row.routes = dict(self.routes)
        row.vec_n = self.vec_n
        row.vec_sum = None if self.vec_sum is None else self.vec_sum.astype(np.float64).tobytes()
        row.sim_n, row.sim_sum = self.sim_n, self.sim_sum
        row.sim_hist = [int(x) for x in self.sim_hist]
        row.rag_n, row.weak_n = self.rag_n, self.weak_n
        row.grounded_n, row.grounded_sum = self.grounded_n, self.grounded_sum


def hist_bin(similarity: float) -> int:
    """The histogram bin of a similarity (bins of 0.1 over [0, 1])."""
    return min(HIST_BINS - 1, max(0, int(similarity * HIST_BINS)))


def bucket_start(when: datetime, bucket_s: int) -> datetime:
    """The start of the bucket `when` falls in (UTC, aligned to the epoch)."""
    ts = when.timestamp()
    return datetime.fromtimestamp(ts - ts % bucket_s, UTC)


class Accumulator:
    """Buckets of statistics in memory until `drain()` hands them to the database. Not
    thread-safe: one thread (the recorder's flush) adds and drains."""

    def __init__(self, bucket_s: int = 3600) -> None:
        self.bucket_s = bucket_s
        self.buckets: dict[Key, BucketStats] = {}

    def add(self, tenant_id: str, adapter: str, when: datetime, **facts: Any) -> None:
        """Fold one request into its bucket (`facts`: `BucketStats.add`'s arguments)."""
        key = (tenant_id, adapter, bucket_start(when, self.bucket_s))
        stats = self.buckets.get(key)
        if stats is None:
            stats = self.buckets[key] = BucketStats()
        stats.add(**facts)

    def drain(self) -> dict[Key, BucketStats]:
        """Everything gathered since the last drain."""
        out, self.buckets = self.buckets, {}
        return out


def write_buckets(engine: Engine, buckets: dict[Key, BucketStats]) -> None:
    """Add `buckets` to the stored ones, in one transaction (rows locked where the database
    can: two gateways adding to the same bucket must not lose each other's counts)."""
    if not buckets:
        return
    with Session(engine) as s:
        for (tenant_id, adapter, start), stats in sorted(buckets.items(), key=lambda kv: kv[0]):
            query = (
                select(DriftBucketRow)
                .where(
                    DriftBucketRow.tenant_id == tenant_id,
                    DriftBucketRow.adapter == adapter,
                    DriftBucketRow.start == start,
                )
                .with_for_update()
            )
            row = s.scalars(query).first()
            if row is None:
                row = DriftBucketRow(tenant_id=tenant_id, adapter=adapter, start=start)
                stats.store(row)
                s.add(row)
            else:
                BucketStats.from_row(row).merge(stats).store(row)
        s.commit()


def read_buckets(
    engine: Engine, tenant_id: str, since: datetime
) -> dict[str, list[tuple[datetime, BucketStats]]]:
    """A tenant's buckets from `since` on, per adapter key, oldest first."""
    query = (
        select(DriftBucketRow)
        .where(DriftBucketRow.tenant_id == tenant_id, DriftBucketRow.start >= since)
        .order_by(DriftBucketRow.start)
    )
    out: dict[str, list[tuple[datetime, BucketStats]]] = {}
    with Session(engine) as s:
        for row in s.scalars(query):
            start = row.start if row.start.tzinfo else row.start.replace(tzinfo=UTC)
            out.setdefault(row.adapter, []).append((start, BucketStats.from_row(row)))
    return out
