"""Reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over rankings of 1 / (k + rank).

Ties share a rank (competition ranking: 1, 2, 2, 4). A lexical leg often scores many chunks
identically (they match the same one query word); ranking them 2, 3, ..., 50 in arbitrary order
would invent an order that then outvotes the other leg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RRF_K = 60


def ranks(scores: Mapping[str, float], digits: int = 6) -> dict[str, int]:
    """Rank from 1 by descending score; scores equal to `digits` decimals share a rank."""
    ordered = sorted(scores, key=lambda item: -scores[item])
    out: dict[str, int] = {}
    previous: float | None = None
    rank = 0
    for position, item in enumerate(ordered, 1):
        value = round(scores[item], digits)
        if value != previous:
            rank, previous = position, value
        out[item] = rank
    return out


def rrf(rankings: Sequence[Sequence[str] | Mapping[str, int]], k: int = RRF_K) -> dict[str, float]:
    """Fused scores of every id in `rankings`: each a list of ids best first (ranks from 1),
    or a mapping of id to rank (see `ranks`)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        if not isinstance(ranking, Mapping):
            ranking = {item: rank for rank, item in enumerate(ranking, 1)}
        for item, rank in ranking.items():
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def normalised(score: float, legs: int, k: int = RRF_K) -> float:
    """A fused score divided by the best possible one (first in every ranking): in (0, 1]."""
    return score / (legs / (k + 1))
