"""Reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over legs of 1 / (k + rank)."""

from __future__ import annotations

RRF_K = 60


def rrf(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Fused scores of every id in `rankings` (each a list of ids, best first, rank from 1)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def normalised(score: float, legs: int, k: int = RRF_K) -> float:
    """A fused score divided by the best possible one (first in every leg): in (0, 1]."""
    return score / (legs / (k + 1))
