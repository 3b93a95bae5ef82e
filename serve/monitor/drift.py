"""Drift, knowledge gaps, route mix, down-votes and grounding, from stored sums: pure functions.

Windows: the recent one is the last `window` (buckets that start from there on), the one before
it is the reference for route mix and for the base model's inputs. Definitions:

- input drift: 1 - cosine similarity between the recent prompts' mean embedding and the
  reference: the serving adapter's exemplar prompts (what it was trained on), or for traffic
  without an adapter (or an adapter without exemplars) the window before. 0 = unchanged.
- exemplar similarity: mean similarity of each recent prompt to the adapter's closest exemplar,
  next to the exemplars' own baseline (each exemplar's closest other exemplar).
- knowledge gap rate: share of rag/combined requests whose top retrieval score was weak.
- route mix shift: total variation distance between the recent and the earlier route shares.
- down-vote rate: share of the window's feedback that votes down.
- grounding: mean of `loraplex.grounded` over the answers that carry one.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from serve.monitor.stats import BASE, BucketStats, bucket_start
from serve.tenants import DriftThresholds

WORD = re.compile(r"\w+")


@dataclass
class FeedbackCounts:
    """Feedback in a window: how many, how many down."""

    count: int = 0
    down: int = 0

    @property
    def rate(self) -> float | None:
        """Share voting down, or None without feedback."""
        return self.down / self.count if self.count else None


@dataclass
class Inputs:
    """Everything a tenant's report is computed from."""

    buckets: dict[str, list[tuple[datetime, BucketStats]]]  # adapter key -> (start, stats)
    references: dict[str, np.ndarray | None] = field(default_factory=dict)  # name -> exemplars
    feedback: list[tuple[datetime, str, bool]] = field(default_factory=list)  # (at, key, down)
    questions: list[dict[str, Any]] | None = None  # clustered weak questions, with capture on


def cosine_distance(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """1 - cosine similarity, or None when either side is missing or zero."""
    if a is None or b is None or a.shape != b.shape:
        return None  # missing, or from another embedding model
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return None
    return min(2.0, max(0.0, 1.0 - float(a @ b) / (na * nb)))  # no -0.0 from rounding


def exemplar_baseline(exemplars: np.ndarray | None) -> float | None:
    """Mean similarity of each exemplar to its closest other exemplar (None below two)."""
    if exemplars is None or len(exemplars) < 2:
        return None
    sims = exemplars @ exemplars.T
    np.fill_diagonal(sims, -np.inf)
    return float(sims.max(axis=1).mean())


def closest_similarity(vector: Any, exemplars: np.ndarray) -> float | None:
    """Similarity of one (unit) query embedding to its closest exemplar (None when they come
    from different embedding models)."""
    q = np.asarray(vector, dtype=exemplars.dtype)
    if exemplars.ndim != 2 or exemplars.shape[1] != q.shape[0]:
        return None
    return float((exemplars @ q).max())


def route_shift(recent: Counter[str], before: Counter[str]) -> float | None:
    """Total variation distance between two route mixes (0 same, 1 disjoint)."""
    n_recent, n_before = sum(recent.values()), sum(before.values())
    if not n_recent or not n_before:
        return None
    routes = set(recent) | set(before)
    return 0.5 * sum(abs(recent[r] / n_recent - before[r] / n_before) for r in routes)


def shares(routes: Counter[str]) -> dict[str, float]:
    """Route counts as shares of the total."""
    total = sum(routes.values())
    return {r: round(n / total, 4) for r, n in sorted(routes.items())} if total else {}


def cluster_questions(
    questions: list[str], vectors: np.ndarray | None, threshold: float = 0.75, top: int = 5
) -> list[dict[str, Any]]:
    """The most frequent questions, near-identical ones counted together: greedy clustering by
    cosine similarity of their (unit) embeddings, or by normalised text without embeddings."""
    clusters: list[dict[str, Any]] = []
    centres: list[np.ndarray] = []
    for i, question in enumerate(questions):
        key = " ".join(WORD.findall(question.lower()))
        found = None
        if vectors is not None:
            v = vectors[i]
            if centres:
                sims = np.asarray(centres) @ v
                best = int(sims.argmax())
                found = best if sims[best] >= threshold else None
        else:
            found = next((j for j, c in enumerate(clusters) if c["key"] == key), None)
        if found is None:
            clusters.append({"key": key, "question": question, "count": 0, "examples": []})
            if vectors is not None:
                centres.append(vectors[i])
            found = len(clusters) - 1
        cluster = clusters[found]
        cluster["count"] += 1
        if question not in cluster["examples"] and len(cluster["examples"]) < 3:
            cluster["examples"].append(question)
    clusters.sort(key=lambda c: -c["count"])
    return [{k: c[k] for k in ("question", "count", "examples")} for c in clusters[:top]]


def _sum(items: list[tuple[datetime, BucketStats]], lo: datetime, hi: datetime) -> BucketStats:
    total = BucketStats()
    for start, stats in items:
        if lo <= start < hi:
            total.merge(stats)
    return total


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarise(
    tenant: str,
    inputs: Inputs,
    thresholds: DriftThresholds,
    *,
    now: datetime,
    window: timedelta,
    bucket_s: int,
    capture: str = "off",
) -> dict[str, Any]:
    """One tenant's monitor report: totals, per-adapter drift, trends and warnings."""
    recent_from = bucket_start(now - window, bucket_s)
    before_from = bucket_start(now - 2 * window, bucket_s)
    end = now + timedelta(seconds=bucket_s)
    th = thresholds
    warnings: list[dict[str, Any]] = []
    total, earlier = BucketStats(), BucketStats()
    adapters = []
    for key, items in sorted(inputs.buckets.items()):
        recent = _sum(items, recent_from, end)
        before = _sum(items, before_from, recent_from)
        total.merge(recent)
        earlier.merge(before)
        exemplars = inputs.references.get(key) if key != BASE else None
        if exemplars is not None and len(exemplars):
            reference, kind = exemplars.mean(axis=0), "exemplars"
        else:
            reference, kind = before.mean_vector, "previous window"
        drift = cosine_distance(recent.mean_vector, reference)
        votes = _votes(inputs.feedback, key, recent_from, end)
        name = key or "(base model)"
        entry = {
            "adapter": name,
            "requests": recent.requests,
            "error_rate": _r(recent.error_rate),
            "input_drift": _r(drift),
            "reference": kind if drift is not None else None,
            "exemplar_similarity": _r(recent.similarity),
            "exemplar_baseline": _r(exemplar_baseline(exemplars)),
            "similarity_histogram": [int(x) for x in recent.sim_hist],
            "feedback": votes.count,
            "downvote_rate": _r(votes.rate),
            "grounded_mean": _r(recent.grounded),
            "trend": [
                {
                    "start": start.isoformat(),
                    "requests": stats.requests,
                    "input_drift": _r(cosine_distance(stats.mean_vector, reference)),
                    "exemplar_similarity": _r(stats.similarity),
                }
                for start, stats in items
                if start >= recent_from
            ],
        }
        check(
            warnings,
            "input_drift",
            name,
            drift,
            th.input_drift,
            recent.vec_n >= th.min_requests,
            f"input drift {_f(drift)} > {th.input_drift} for {name} (vs {kind})",
        )
        if key:
            check(
                warnings,
                "downvote_rate",
                name,
                votes.rate,
                th.downvote_rate,
                votes.count >= th.min_feedback,
                f"down-vote rate {_f(votes.rate)} > {th.downvote_rate} for {name} "
                f"({votes.down} of {votes.count})",
            )
        adapters.append(entry)
    votes = _votes(inputs.feedback, None, recent_from, end)
    shift = route_shift(total.routes, earlier.routes)
    gaps: dict[str, Any] = {
        "rag_requests": total.rag_n,
        "weak": total.weak_n,
        "rate": _r(total.gap_rate),
        "questions": inputs.questions,
    }
    if capture == "off":
        gaps["note"] = "capture is off: counts only, no question text"
    check(
        warnings,
        "knowledge_gap_rate",
        None,
        total.gap_rate,
        th.knowledge_gap_rate,
        total.rag_n >= th.min_requests,
        f"knowledge gaps: {total.weak_n} of {total.rag_n} rag requests found weak retrieval "
        f"(rate {_f(total.gap_rate)} > {th.knowledge_gap_rate})",
    )
    check(
        warnings,
        "route_mix_shift",
        None,
        shift,
        th.route_mix_shift,
        min(total.requests, earlier.requests) >= th.min_requests,
        f"route mix shifted by {_f(shift)} (> {th.route_mix_shift})",
    )
    check(
        warnings,
        "downvote_rate",
        None,
        votes.rate,
        th.downvote_rate,
        votes.count >= th.min_feedback,
        f"down-vote rate {_f(votes.rate)} > {th.downvote_rate} ({votes.down} of {votes.count})",
    )
    grounded = total.grounded
    check(
        warnings,
        "grounded_mean",
        None,
        grounded,
        th.grounded_min,
        total.grounded_n >= th.min_requests,
        f"mean grounding {_f(grounded)} < {th.grounded_min}",
        above=False,
    )
    return {
        "tenant": tenant,
        "window_hours": round(window.total_seconds() / 3600, 3),
        "since": recent_from.isoformat(),
        "requests": total.requests,
        "error_rate": _r(total.error_rate),
        "route_mix": shares(total.routes),
        "route_mix_before": shares(earlier.routes),
        "route_mix_shift": _r(shift),
        "knowledge_gaps": gaps,
        "feedback": {"count": votes.count, "down": votes.down, "downvote_rate": _r(votes.rate)},
        "grounded_mean": _r(grounded),
        "adapters": adapters,
        "trend": _trend(inputs, recent_from, bucket_s),
        "warnings": warnings,
    }


def check(
    warnings: list[dict[str, Any]],
    metric: str,
    adapter: str | None,
    value: float | None,
    limit: float,
    enough: bool,
    message: str,
    above: bool = True,
) -> None:
    """Add a warning when `value` is past `limit` (above it, or below with `above=False`) and
    there is `enough` data to say so."""
    if value is None or not enough or (value <= limit if above else value >= limit):
        return
    warnings.append(
        {
            "metric": metric,
            "adapter": adapter,
            "value": round(value, 4),
            "threshold": limit,
            "message": message,
        }
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _votes(
    feedback: list[tuple[datetime, str, bool]], key: str | None, lo: datetime, hi: datetime
) -> FeedbackCounts:
    out = FeedbackCounts()
    for at, adapter, down in feedback:
        if lo <= at < hi and (key is None or adapter == key):
            out.count += 1
            out.down += down
    return out


def _trend(inputs: Inputs, since: datetime, bucket_s: int) -> list[dict[str, Any]]:
    """Tenant-wide figures per bucket, oldest first."""
    per: dict[datetime, BucketStats] = {}
    for items in inputs.buckets.values():
        for start, stats in items:
            if start >= since:
                per.setdefault(start, BucketStats()).merge(stats)
    out = []
    for start in sorted(per):
        stats = per[start]
        votes = _votes(inputs.feedback, None, start, start + timedelta(seconds=bucket_s))
        out.append(
            {
                "start": start.isoformat(),
                "requests": stats.requests,
                "gap_rate": _r(stats.gap_rate),
                "downvote_rate": _r(votes.rate),
                "grounded_mean": _r(stats.grounded),
                "route_mix": shares(stats.routes),
            }
        )
    return out
