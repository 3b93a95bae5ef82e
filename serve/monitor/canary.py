"""Canary rollouts: route a share of an adapter's traffic to a new version, compare, roll back.

`Rollout.apply` runs on each request: when the routing decision serves an adapter's prod version
and that adapter has a running canary, the canary version serves the request instead for its
share of the traffic, sticky per end user when the request carries OpenAI's `user` field (the
same user always sees the same version), at random otherwise. A request that names a version
(`NAME@N`) gets that version.

`CanaryService` compares the two arms since the canary started, from the request records and
feedback (so every gateway replica's traffic counts): error rate, median latency, down-vote rate
and grounding. `judge` says whether the canary is worse beyond the margins of its
`CanaryCriteria` once it has served `min_requests`; the gateway then ends it as `rolled_back`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from adapters.canary import Canary
from adapters.errors import AdapterNotFound
from adapters.registry import AdapterRegistry, AdapterVersion
from serve.errors import ServiceError
from serve.feedback.tables import CompletionRow, FeedbackRow
from serve.routing import Decision

log = logging.getLogger("loraplex.canary")
MAX_ROWS = 20_000  # most recent requests per arm read for a comparison


@dataclass
class CanaryCriteria:
    """When a canary counts as worse than prod (checked once it has `min_requests`)."""

    min_requests: int = field(default=20, metadata={"help": "canary requests before judging"})
    max_error_increase: float = field(
        default=0.05, metadata={"help": "error rate above prod's by more than this"}
    )
    max_latency_ratio: float = field(
        default=1.5, metadata={"help": "median latency above prod's times this"}
    )
    max_downvote_increase: float = field(
        default=0.15, metadata={"help": "down-vote rate above prod's by more than this"}
    )
    min_feedback: int = field(default=5, metadata={"help": "feedback per arm to compare votes"})
    max_grounding_drop: float = field(
        default=0.1, metadata={"help": "mean grounding below prod's by more than this"}
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ServiceError(
                    f"canary criterion {f.name} must be a number >= 0, got {value!r}",
                    "invalid_canary_criteria",
                    param=f.name,
                )
        if self.min_requests < 1 or self.max_latency_ratio < 1:
            raise ServiceError(
                "canary min_requests must be >= 1 and max_latency_ratio >= 1",
                "invalid_canary_criteria",
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CanaryCriteria:
        """Criteria from stored or sent JSON; unknown names are an error that lists the known."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ServiceError(
                f"unknown canary criteria {unknown}; known: {sorted(known)}",
                "invalid_canary_criteria",
            )
        return cls(**values)


@dataclass
class ArmStats:
    """One arm of a canary (prod or canary) since the canary started."""

    ref: str
    requests: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    feedback: int = 0
    down: int = 0
    grounded_n: int = 0
    grounded_mean: float | None = None

    @property
    def error_rate(self) -> float | None:
        """Share of requests that failed on our side (5xx)."""
        return self.errors / self.requests if self.requests else None

    @property
    def downvote_rate(self) -> float | None:
        """Share of feedback voting down."""
        return self.down / self.feedback if self.feedback else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the rates."""
        out = asdict(self)
        out["error_rate"] = None if self.error_rate is None else round(self.error_rate, 4)
        out["downvote_rate"] = None if self.downvote_rate is None else round(self.downvote_rate, 4)
        return out


@dataclass
class Verdict:
    """Whether the canary has served enough to judge, and why it is worse (if it is)."""

    ready: bool
    reasons: list[str]

    @property
    def worse(self) -> bool:
        """Judged worse than prod."""
        return self.ready and bool(self.reasons)


def judge(prod: ArmStats, canary: ArmStats, c: CanaryCriteria) -> Verdict:
    """Compare the arms. Error rates compare with prod's (0 while prod has none); latency only
    once prod has `min_requests` too; votes and grounding once both arms have enough."""
    reasons: list[str] = []
    ready = canary.requests >= c.min_requests
    if not ready:
        return Verdict(False, reasons)
    c_err, p_err = canary.error_rate or 0.0, prod.error_rate or 0.0
    if c_err > p_err + c.max_error_increase:
        reasons.append(
            f"error rate {c_err:.0%} vs prod {p_err:.0%} (allowed +{c.max_error_increase:.0%})"
        )
    if (
        prod.requests >= c.min_requests
        and canary.latency_p50_ms is not None
        and prod.latency_p50_ms
        and canary.latency_p50_ms > prod.latency_p50_ms * c.max_latency_ratio
    ):
        reasons.append(
            f"median latency {canary.latency_p50_ms:.0f} ms vs prod {prod.latency_p50_ms:.0f} ms "
            f"(allowed x{c.max_latency_ratio})"
        )
    c_down, p_down = canary.downvote_rate, prod.downvote_rate
    if (
        c_down is not None
        and p_down is not None
        and min(canary.feedback, prod.feedback) >= c.min_feedback
        and c_down > p_down + c.max_downvote_increase
    ):
        reasons.append(
            f"down-vote rate {c_down:.0%} vs prod {p_down:.0%} "
            f"(allowed +{c.max_downvote_increase:.0%})"
        )
    c_g, p_g = canary.grounded_mean, prod.grounded_mean
    if (
        c_g is not None
        and p_g is not None
        and min(canary.grounded_n, prod.grounded_n) >= c.min_feedback
        and c_g < p_g - c.max_grounding_drop
    ):
        reasons.append(
            f"mean grounding {c_g:.2f} vs prod {p_g:.2f} (allowed -{c.max_grounding_drop})"
        )
    return Verdict(True, reasons)


def arm_stats(engine: Engine, ref: str, since: datetime) -> ArmStats:
    """What the requests served by `ref` (NAME@N) since `since` did, and their feedback."""
    query = (
        select(CompletionRow.status, CompletionRow.latency_ms, CompletionRow.grounded)
        .where(CompletionRow.adapter == ref, CompletionRow.created_at >= since)
        .order_by(CompletionRow.created_at.desc())
        .limit(MAX_ROWS)
    )
    votes = select(FeedbackRow.negative).where(
        FeedbackRow.adapter == ref, FeedbackRow.completion_at >= since
    )
    with Session(engine) as s:
        rows = s.execute(query).tuples().all()
        negatives = list(s.scalars(votes))
    ok = [lat for status, lat, _ in rows if status < 500]
    grounded = [g for _, _, g in rows if g is not None]
    return ArmStats(
        ref=ref,
        requests=len(rows),
        errors=sum(status >= 500 for status, _, _ in rows),
        latency_p50_ms=round(statistics.median(ok), 1) if ok else None,
        feedback=len(negatives),
        down=sum(negatives),
        grounded_n=len(grounded),
        grounded_mean=round(statistics.fmean(grounded), 4) if grounded else None,
    )


class CanaryService:
    """Canary comparisons and automatic rollback."""

    def __init__(self, registry: AdapterRegistry, engine: Engine) -> None:
        self.registry = registry
        self.engine = engine

    def compare(self, canary: Canary) -> dict[str, Any]:
        """The canary, both arms and the verdict."""
        criteria = CanaryCriteria.from_dict(canary.criteria)
        prod = arm_stats(self.engine, canary.prod_ref, canary.started_at)
        trial = arm_stats(self.engine, canary.ref, canary.started_at)
        verdict = judge(prod, trial, criteria)
        return {
            **canary.to_dict(),
            "criteria": asdict(criteria),
            "arms": {"prod": prod.to_dict(), "canary": trial.to_dict()},
            "verdict": {"ready": verdict.ready, "worse": verdict.worse, "reasons": verdict.reasons},
        }

    def report(self, name: str) -> dict[str, Any]:
        """The adapter's running canary compared (or its latest, ended one) and its history."""
        self.registry.get(name)  # not_found, with a message, when unknown
        history = self.registry.canaries(name)
        if not history:
            return {"name": name, "canary": None, "history": []}
        latest = next((c for c in reversed(history) if c.running), history[-1])
        return {
            "name": name,
            "canary": self.compare(latest),
            "history": [c.to_dict() for c in history],
        }

    def running(self) -> list[dict[str, Any]]:
        """Every running canary, compared."""
        return [self.compare(c) for c in self.registry.canaries(running=True)]

    def check(self) -> list[tuple[Canary, list[str]]]:
        """Judge every running canary; end those judged worse as rolled back. Returns the ended
        canaries with the reasons."""
        ended = []
        for canary in self.registry.canaries(running=True):
            report = self.compare(canary)
            if not report["verdict"]["worse"]:
                continue
            reasons = report["verdict"]["reasons"]
            done = self.registry.end_canary(
                canary.name,
                "rolled_back",
                "automatic rollback: " + "; ".join(reasons),
                canary_id=canary.id,
            )
            if done is not None:
                ended.append((done, reasons))
        return ended


@dataclass(frozen=True)
class Trial:
    """A running canary as the request path needs it."""

    canary: Canary
    version: AdapterVersion


class Rollout:
    """The per-request split between an adapter's prod version and its running canary."""

    def __init__(self, registry: AdapterRegistry, check_s: float = 2.0, seed: int | None = None):
        """Running canaries are re-read at most every `check_s` seconds (a canary started or
        ended from the CLI or another replica reaches this process within that time)."""
        self.registry = registry
        self.check_s = check_s
        self._trials: dict[str, Trial] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def invalidate(self, name: str | None = None) -> None:
        """Re-read the running canaries on the next request."""
        with self._lock:
            self._read_at = float("-inf")

    def trials(self) -> dict[str, Trial]:
        """Running canaries by adapter name."""
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < self.check_s:
                return self._trials
        trials = {}
        try:
            for c in self.registry.canaries(running=True):
                with contextlib.suppress(AdapterNotFound):  # removed meanwhile: no trial
                    trials[c.name] = Trial(c, self.registry.get(c.ref))
        except SQLAlchemyError as exc:
            # The database is busy or down: prod and canaries as last known, rather than
            # failing requests the router could serve.
            log.warning("running canaries not read (%s); using the last known", exc)
            with self._lock:
                return self._trials
        with self._lock:
            self._trials, self._read_at = trials, now
        return trials

    def takes(self, canary: Canary, user: str | None) -> bool:
        """Whether this request goes to the canary: a stable hash of the user, else chance."""
        if user:
            digest = hashlib.blake2b(f"{canary.id}:{user}".encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") % 100 < canary.percent
        return self._random.randrange(100) < canary.percent

    def apply(self, decision: Decision, pinned: bool, user: str | None) -> Decision:
        """The decision, with the canary version serving when this request falls in its share.
        `pinned`: the caller named a version (`NAME@N`), which always serves."""
        adapter = decision.adapter
        if adapter is None or pinned:
            return decision
        trial = self.trials().get(adapter.name)
        if trial is None or adapter.version != trial.canary.prod_version:
            return decision
        if not self.takes(trial.canary, user):
            return decision
        decision.adapter = trial.version
        decision.served_model = trial.version.served_name
        decision.reason += (
            f"; canary {trial.canary.ref} takes {trial.canary.percent}% of {adapter.name}'s "
            f"traffic (prod {adapter.ref})"
        )
        return decision
